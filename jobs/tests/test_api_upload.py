"""POST /api/v1/jobs/upload on PostgreSQL: the bad-image corpus, size limits, normalization, the token."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.core.handlers.wsgi import LimitedStream
from django.db import DataError
from django.test import RequestFactory, override_settings
from PIL import Image
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from jobs.access import hash_token
from jobs.api import JobUploadView
from jobs.models import Job
from jobs.services import job_create
from rekindle import storage
from rekindle.images import UploadSizeLimitHandler
from rekindle.testing import imagedata
from rekindle.testing.factories import UserFactory
from rekindle.testing.s3 import S3Bucket, reset_storages

URL = "/api/v1/jobs/upload"

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture(autouse=True)
def _tiny_photos_allowed(settings: Settings) -> None:
    # The photos here are a few pixels wide so the suite stays fast; the shortest-side limit has its own tests.
    settings.UPLOAD_MIN_SIDE = 1


def post_upload(client: APIClient, data: bytes, *, name: str = "photo.jpg", email: str | None = "a@example.com") -> Any:
    payload: dict[str, Any] = {"image": _named(data, name)}
    if email is not None:
        payload["email"] = email
    return client.post(URL, payload, format="multipart")


def _named(data: bytes, name: str) -> io.BytesIO:
    buffer = io.BytesIO(data)
    buffer.name = name
    return buffer


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    error: dict[str, Any] = body["error"]
    return error


def test_it_creates_a_job_with_a_token_shown_once_and_stores_only_its_hash(api_client: APIClient) -> None:
    response = post_upload(api_client, imagedata.jpeg(64, 48))

    assert response.status_code == 201
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert body["email"] == job.email == "a@example.com"
    assert len(body["token"]) >= 40
    assert job.token_hash == hash_token(body["token"])
    assert body["token"] not in str(Job.objects.filter(pk=job.pk).values().get())
    assert job.owner is None
    assert job.original_key == f"processed/{job.id}.jpg"
    stored = storage.read_bytes(job.original_key)
    assert (job.original_format, job.original_width, job.original_height) == ("jpeg", 64, 48)
    assert job.original_bytes == len(stored)
    assert job.original_sha256 == hashlib.sha256(stored).hexdigest()
    assert body["original_url"] == f"http://testserver/media/{job.original_key}"
    assert body["restore_attempts"] == []
    assert body["animation_attempts"] == []
    assert body["selected_restore"] is None
    assert body["latest_animation"] is None


def test_it_makes_a_signed_in_caller_the_owner(api_client: APIClient) -> None:
    user = UserFactory.create()
    api_client.force_authenticate(user)
    response = post_upload(api_client, imagedata.jpeg())
    assert response.status_code == 201
    assert Job.objects.get(pk=response.json()["id"]).owner == user


# The corpus: each file with the status and error code it must get (None: accepted).
CORPUS = [
    ("zero-bytes", b"", "empty.jpg", 415, "unsupported_media_type"),
    ("text-named-jpg", imagedata.text_named_jpeg(), "photo.jpg", 415, "unsupported_media_type"),
    ("pdf", imagedata.pdf(), "scan.pdf", 415, "unsupported_media_type"),
    ("animated-gif", imagedata.animated_gif(), "wave.gif", 415, "unsupported_media_type"),
    ("animated-webp", imagedata.animated_webp(), "wave.webp", 415, "unsupported_media_type"),
    ("truncated-jpeg", imagedata.truncated_jpeg(), "cut.jpg", 400, "invalid_image"),
    ("png-20000x20000", imagedata.png_declaring(20000, 20000), "huge.png", 400, "image_too_large"),
    ("png-8000x8000", imagedata.png_declaring(8000, 8000), "big.png", 400, "image_too_large"),
    ("cmyk-jpeg", imagedata.cmyk_jpeg(), "print.jpg", 201, None),
    ("16-bit-gray-png", imagedata.gray16_png(), "scan.png", 201, None),
    ("16-bit-rgb-png", imagedata.rgb16_png(), "scan.png", 201, None),
    ("exif-rotated-jpeg-with-gps", imagedata.exif_rotated_jpeg_with_gps(), "phone.jpg", 201, None),
    ("jpeg-named-png", imagedata.jpeg(), "photo.png", 201, None),
    ("tiff", imagedata.encode(imagedata.solid(), "TIFF"), "scan.tif", 201, None),
    ("bmp", imagedata.encode(imagedata.solid(), "BMP"), "scan.bmp", 201, None),
    ("webp", imagedata.encode(imagedata.solid(), "WEBP"), "photo.webp", 201, None),
]


@pytest.mark.parametrize(("data", "name", "status", "code"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_it_answers_each_file_of_the_corpus(
    api_client: APIClient, data: bytes, name: str, status: int, code: str | None
) -> None:
    response = post_upload(api_client, data, name=name)

    assert response.status_code == status, response.content
    if code is None:
        job = Job.objects.get()
        image = Image.open(io.BytesIO(storage.read_bytes(job.original_key)))
        assert image.mode == "RGB"
        assert image.size == (job.original_width, job.original_height)
    else:
        assert _error(response)["code"] == code
        assert not Job.objects.exists()
        assert storage.list_keys("processed/") == []


def test_it_refuses_the_one_pixel_png_of_the_corpus_at_upload(api_client: APIClient, settings: Settings) -> None:
    # What the schema fuzz sends first as a schema-valid image (the tests above allow 1-pixel sides).
    settings.UPLOAD_MIN_SIDE = 32
    response = post_upload(api_client, (imagedata.FIXTURES / "pixel_1x1.png").read_bytes(), name="image.png")

    assert response.status_code == 400
    assert _error(response)["code"] == "image_too_small"
    assert not Job.objects.exists()


def test_it_stores_the_exif_rotated_photo_upright_without_any_exif(api_client: APIClient) -> None:
    response = post_upload(api_client, imagedata.exif_rotated_jpeg_with_gps())

    assert response.status_code == 201
    job = Job.objects.get()
    stored = storage.read_bytes(job.original_key)
    image = Image.open(io.BytesIO(stored))
    assert image.size == (20, 60) == (job.original_width, job.original_height)
    top = image.getpixel((10, 5))
    assert isinstance(top, tuple)
    assert top[0] > 200  # the red third is on top
    assert not image.getexif()
    assert b"Exif" not in stored
    assert b"GPS" not in stored


def test_it_converts_cmyk_and_16_bit_to_8_bit_rgb(api_client: APIClient) -> None:
    cmyk = post_upload(api_client, imagedata.cmyk_jpeg())
    deep = post_upload(api_client, imagedata.rgb16_png(), name="deep.png")

    cmyk_image = Image.open(io.BytesIO(storage.read_bytes(Job.objects.get(pk=cmyk.json()["id"]).original_key)))
    deep_job = Job.objects.get(pk=deep.json()["id"])
    deep_image = Image.open(io.BytesIO(storage.read_bytes(deep_job.original_key)))
    assert cmyk_image.mode == deep_image.mode == "RGB"
    assert deep_job.original_format == "png"
    assert deep_image.getpixel((0, 0)) == (0xC0, 0x80, 0x40)


def test_it_refuses_a_30_mb_file_with_413(api_client: APIClient, tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    with big.open("wb") as handle:
        handle.write(imagedata.jpeg())
        handle.truncate(30 * 1024 * 1024)
    with big.open("rb") as handle:
        response = api_client.post(URL, {"image": handle, "email": "a@example.com"}, format="multipart")

    assert response.status_code == 413
    error = _error(response)
    assert error["code"] == "file_too_large"
    assert error["details"] == {"max_bytes": 25 * 1024 * 1024}
    assert not Job.objects.exists()


def test_it_counts_the_streamed_bytes_when_the_body_is_only_a_little_too_big(
    api_client: APIClient, settings: Settings
) -> None:
    # Within the allowance for form fields, Content-Length passes; counting the file catches it.
    data = imagedata.jpeg()
    settings.UPLOAD_MAX_BYTES = len(data) - 10
    response = post_upload(api_client, data)
    assert response.status_code == 413
    assert _error(response)["code"] == "file_too_large"
    settings.UPLOAD_MAX_BYTES = len(data)
    assert post_upload(api_client, data).status_code == 201


def test_it_answers_413_from_content_length_without_reading_the_body() -> None:
    class Unreadable(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise AssertionError("the request body was read")

        def readline(self, size: int | None = -1) -> bytes:
            raise AssertionError("the request body was read")

    request = RequestFactory().generic(
        "POST",
        URL,
        b"--rekindle-boundary",
        content_type="multipart/form-data; boundary=rekindle-boundary",
        CONTENT_LENGTH=str(30 * 1024 * 1024),
    )
    request.META["wsgi.input"] = Unreadable()
    request._stream = LimitedStream(request.META["wsgi.input"], 30 * 1024 * 1024)  # type: ignore[assignment]

    response = JobUploadView.as_view()(request)

    assert response.status_code == 413
    assert response.data["error"]["code"] == "file_too_large"
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("email", "message_part"),
    [
        (None, "required"),
        ("not-an-email", "valid email"),
        ("", "blank"),
        # Quoted local parts Django's own check passes; each would break the ready email's To: header.
        ('"a\x0bb"@example.com', "control characters"),
        ('"a\x1fb"@example.com', "control characters"),
        ('"a\\\tb"@example.com', "control characters"),
    ],
    ids=["missing", "malformed", "blank", "vertical-tab", "unit-separator", "escaped-tab"],
)
def test_it_validates_the_email(api_client: APIClient, email: str | None, message_part: str) -> None:
    response = post_upload(api_client, imagedata.jpeg(), email=email)
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "invalid"
    assert list(error["details"]["fields"]) == ["email"]
    assert message_part in error["details"]["fields"]["email"][0]
    assert not Job.objects.exists()
    assert storage.list_keys("processed/") == []


def test_it_requires_an_image_file(api_client: APIClient) -> None:
    missing = api_client.post(URL, {"email": "a@example.com"}, format="multipart")
    not_a_file = api_client.post(URL, {"email": "a@example.com", "image": "hello"}, format="multipart")
    as_json = api_client.post(URL, {"email": "a@example.com", "image": "aGVsbG8="}, format="json")

    assert missing.status_code == 400
    assert list(_error(missing)["details"]["fields"]) == ["image"]
    assert not_a_file.status_code == 400
    assert list(_error(not_a_file)["details"]["fields"]) == ["image"]
    assert as_json.status_code == 415
    assert _error(as_json)["code"] == "unsupported_media_type"


def test_it_removes_the_stored_file_when_the_job_row_cannot_be_written() -> None:
    # PostgreSQL refuses NUL characters in text: the insert fails after the file is written.
    with pytest.raises((DataError, ValueError)):
        job_create(email="a\x00@example.com", image=io.BytesIO(imagedata.jpeg()))
    assert not Job.objects.exists()
    assert storage.list_keys("processed/") == []


def test_it_writes_the_original_to_s3_and_serves_a_presigned_url(api_client: APIClient, s3_bucket: S3Bucket) -> None:
    response = post_upload(api_client, imagedata.jpeg(40, 30))

    assert response.status_code == 201
    body = response.json()
    job_id = uuid.UUID(body["id"])
    assert s3_bucket.keys() == [f"processed/{job_id}.jpg"]
    stored = s3_bucket.get(f"processed/{job_id}.jpg")
    assert hashlib.sha256(stored).hexdigest() == body["original_sha256"]
    assert body["original_url"].startswith(f"{s3_bucket.server.endpoint_url}/{s3_bucket.name}/processed/")
    assert "X-Amz-Signature=" in body["original_url"]
    fetched = requests.get(body["original_url"], timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == stored


def test_it_streams_the_upload_to_a_temporary_file() -> None:
    client_request = RequestFactory().post(
        URL, {"image": _named(imagedata.jpeg(), "photo.jpg"), "email": "a@example.com"}
    )

    response = JobUploadView.as_view()(client_request)

    assert response.status_code == 201
    upload = client_request.FILES["image"]
    assert isinstance(upload, TemporaryUploadedFile)
    assert [type(handler) for handler in client_request.upload_handlers] == [
        UploadSizeLimitHandler,
        TemporaryFileUploadHandler,
    ]


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _descriptor_targets() -> list[str]:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return sorted(targets)


def test_it_removes_the_temporary_file_of_every_refused_upload_at_once(
    api_client: APIClient, settings: Settings, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(spool)
    photo = imagedata.jpeg()
    refusals = [
        (imagedata.pdf(), 415),  # wrong type
        (imagedata.truncated_jpeg(), 400),  # cannot be decoded
        (imagedata.png_declaring(20000, 20000), 400),  # too many pixels
    ]
    settings.UPLOAD_MAX_BYTES = max(len(data) for data, _ in [*refusals, (photo, 201)]) + 1
    # Within the allowance for the form's other parts, so only counting the streamed bytes catches it.
    refusals.append((photo + b"\0" * settings.UPLOAD_MAX_BYTES, 413))
    post_upload(api_client, photo)  # warm up: the first request opens what every request keeps open
    descriptors = _open_descriptors()
    before = _descriptor_targets()

    for _ in range(3):
        for data, status in refusals:
            assert post_upload(api_client, data).status_code == status
            assert list(spool.iterdir()) == []

    assert _open_descriptors() <= descriptors, sorted(set(_descriptor_targets()) - set(before))
    assert post_upload(api_client, photo).status_code == 201
    assert list(spool.iterdir()) == []  # a stored upload's spool file goes too


class _SlowDownS3(ThreadingHTTPServer):
    """Answers every request as S3 does when it sheds load: 503 SlowDown."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SlowDownHandler)


class _SlowDownHandler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("outage", ["refused", "slow_down"])
def test_it_answers_503_storage_unavailable_while_s3_is_down_and_writes_nothing(
    api_client: APIClient, s3_bucket: S3Bucket, outage: str
) -> None:
    server = _SlowDownS3()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    if outage == "refused":
        port = server.server_address[1]
        server.shutdown()
        server.server_close()
    endpoint = f"http://127.0.0.1:{server.server_address[1] if outage == 'slow_down' else port}"
    try:
        with override_settings(AWS_S3_ENDPOINT_URL=endpoint):
            reset_storages()
            response = post_upload(api_client, imagedata.jpeg(40, 30))
    finally:
        reset_storages()
        if outage == "slow_down":
            server.shutdown()
            server.server_close()

    assert response.status_code == 503
    error = _error(response)
    assert error["code"] == "storage_unavailable"
    assert "storage" in error["message"]
    assert int(response["Retry-After"]) > 0
    assert not Job.objects.exists()
    assert s3_bucket.keys() == []
