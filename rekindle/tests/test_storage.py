"""Storage keys, URLs and prefix deletes, on local files and on moto's S3 server over HTTP."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import RequestFactory
from pytest_django.fixtures import Settings

from rekindle import storage
from rekindle.testing.s3 import S3Bucket, reset_storages

JOB = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
ROOT = Path(__file__).resolve().parents[2]
OTHER = uuid.UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")
TS = "20250314T092653123456Z-9f3a"


def _fill_job(job_id: uuid.UUID, ts: str) -> list[str]:
    keys = [
        storage.processed_key(job_id, "jpg"),
        storage.restored_key(job_id, ts),
        storage.animation_preview_key(job_id, ts),
        storage.animation_result_key(job_id, ts),
        storage.thumbnail_key(job_id, ts),
    ]
    for key in keys:
        storage.put(key, f"data of {key}".encode())
    return keys


def test_it_builds_keys_in_the_original_layout() -> None:
    ts = TS
    assert storage.processed_key(JOB, "PNG") == f"processed/{JOB}.png"
    assert storage.processed_key(JOB, ".jpg") == f"processed/{JOB}.jpg"
    assert storage.restored_key(JOB, ts) == f"restored/{JOB}/{ts}.jpg"
    assert storage.animation_preview_key(JOB, ts) == f"animated/{JOB}/{ts}_preview.mp4"
    assert storage.animation_result_key(JOB, ts) == f"animated/{JOB}/{ts}_result.mp4"
    assert storage.thumbnail_key(JOB, ts) == f"thumbnails/{JOB}/{ts}.jpg"
    assert storage.job_prefixes(JOB) == [
        f"processed/{JOB}.",
        f"restored/{JOB}/",
        f"animated/{JOB}/",
        f"thumbnails/{JOB}/",
    ]


def test_it_stores_lists_and_deletes_a_jobs_files_locally(settings: Settings) -> None:
    media = Path(settings.MEDIA_ROOT)
    ts = TS
    keys = _fill_job(JOB, ts)
    others = _fill_job(OTHER, ts)
    storage.put(keys[0], b"replaced")

    assert storage.read_bytes(keys[0]) == b"replaced"
    assert storage.list_keys(f"animated/{JOB}/") == sorted(keys[2:4])
    assert (media / keys[1]).is_file()

    assert storage.delete_job_files(JOB) == 5
    assert not any((media / key).exists() for key in keys)
    assert all((media / key).exists() for key in others)
    assert storage.delete_job_files(JOB) == 0


def test_it_lists_local_files_in_pages_with_their_modified_times(settings: Settings) -> None:
    media = Path(settings.MEDIA_ROOT)
    keys = [storage.restored_key(JOB, f"{TS}-{n}") for n in range(4)] + [storage.restored_key(OTHER, TS)]
    for key in keys:
        storage.put(key, b"x")
    stamp = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
    os.utime(media / keys[2], (stamp.timestamp(), stamp.timestamp()))

    pages = list(storage.stored_object_pages(f"restored/{JOB}/", page_size=3))

    assert [[obj.key for obj in page] for page in pages] == [keys[:3], keys[3:4]]
    assert pages[0][2].modified == stamp


def test_it_refuses_to_save_under_another_name_when_the_storage_would_not_overwrite(settings: Settings) -> None:
    # Django's own default: a FileSystemStorage that picks a new name for a taken one.
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    key = storage.restored_key(JOB, TS)
    storage.put(key, b"first")
    with pytest.raises(RuntimeError, match="allow_overwrite"):
        storage.put(key, b"second")
    assert storage.list_keys(f"restored/{JOB}/") == [key]
    assert storage.read_bytes(key) == b"first"


def test_it_makes_media_urls_that_follow_the_server_locally(settings: Settings) -> None:
    # SITE_URL names another port: local media links must not point there (PORT=18610 make run).
    settings.SITE_URL = "http://127.0.0.1:8000"
    key = storage.processed_key(JOB, "jpg")
    assert storage.url_for(key) == f"/media/{key}"
    request = RequestFactory().get("/api/v1/jobs/x", HTTP_HOST="127.0.0.1:18610")
    assert storage.url_for(key, request) == f"http://127.0.0.1:18610/media/{key}"
    assert storage.url_or_none("", request) is None


def test_it_refuses_to_delete_an_empty_prefix() -> None:
    with pytest.raises(ValueError, match="empty prefix"):
        storage.delete_prefixes([""])


def test_it_writes_job_keys_to_the_s3_bucket(s3_bucket: S3Bucket) -> None:
    assert storage.is_s3()
    ts = TS
    keys = _fill_job(JOB, ts)
    assert s3_bucket.keys() == sorted(keys)
    assert s3_bucket.get(keys[1]) == f"data of {keys[1]}".encode()
    assert storage.list_keys(f"processed/{JOB}.") == [keys[0]]
    assert storage.read_bytes(keys[2]) == f"data of {keys[2]}".encode()


def test_it_presigns_short_lived_urls_that_return_the_stored_bytes(s3_bucket: S3Bucket, settings: Settings) -> None:
    key = storage.restored_key(JOB, TS)
    storage.put(key, b"\xff\xd8restored bytes", content_type="image/jpeg")

    url = storage.url_for(key)

    query = parse_qs(urlparse(url).query)
    assert url.startswith(f"{s3_bucket.server.endpoint_url}/{s3_bucket.name}/{key}?")
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == [str(settings.AWS_QUERYSTRING_EXPIRE)]
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"\xff\xd8restored bytes"
    assert response.headers["Content-Type"] == "image/jpeg"


def test_it_deletes_a_jobs_objects_in_batches_of_at_most_1000(s3_bucket: S3Bucket) -> None:
    ts = TS
    job_keys = [storage.processed_key(JOB, "png")] + [storage.restored_key(JOB, f"{ts}-{n:04d}") for n in range(1203)]
    other_keys = _fill_job(OTHER, ts)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: s3_bucket.put(key, b"x"), job_keys))
    batch_sizes: list[int] = []
    client = default_storage.connection.meta.client  # type: ignore[attr-defined]

    def record(params: dict[str, Any], **kwargs: object) -> None:
        batch_sizes.append(len(params["Delete"]["Objects"]))

    client.meta.events.register("provide-client-params.s3.DeleteObjects", record)

    assert storage.delete_job_files(JOB) == len(job_keys)

    assert s3_bucket.keys() == sorted(other_keys)
    assert max(batch_sizes) <= 1000
    assert sum(batch_sizes) == len(job_keys)
    assert len(batch_sizes) == 3  # 1 processed original, then 1000 + 203 restored images
    assert storage.delete_job_files(JOB) == 0


def test_it_points_another_process_at_the_same_bucket_through_env(s3_bucket: S3Bucket) -> None:
    # What a worker started by an end-to-end test sees: settings read from the AWS_* variables.
    script = (
        "import django; django.setup()\n"
        "from rekindle import storage\n"
        "assert storage.is_s3()\n"
        f"storage.put(storage.restored_key('{JOB}', 'from-worker'), b'written elsewhere')\n"
    )
    env = {**os.environ, **s3_bucket.env, "DJANGO_SETTINGS_MODULE": "rekindle.settings"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert s3_bucket.get(f"restored/{JOB}/from-worker.jpg") == b"written elsewhere"


def _count_s3_requests(store: Any) -> list[str]:
    """The HTTP methods of every request the storage's S3 client sends from now on (this thread's client)."""
    sent: list[str] = []
    store.connection.meta.client.meta.events.register(
        "before-send.s3", lambda request, **kwargs: sent.append(request.method)
    )
    return sent


def test_it_reads_and_writes_an_s3_object_in_one_request_each(s3_bucket: S3Bucket) -> None:
    key = storage.restored_key(JOB, TS)
    sent = _count_s3_requests(default_storage)

    storage.put(key, b"\xff\xd8restored bytes", content_type="image/jpeg")
    assert sent == ["PUT"]
    assert storage.read_bytes(key) == b"\xff\xd8restored bytes"
    assert sent == ["PUT", "GET"]
    head = s3_bucket.server.client().head_object(Bucket=s3_bucket.name, Key=key)
    assert head["ContentType"] == "image/jpeg"


def test_it_reports_a_missing_s3_object_as_file_not_found(s3_bucket: S3Bucket) -> None:
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.processed_key(OTHER, "jpg"))


@pytest.fixture
def located_bucket(s3_bucket: S3Bucket, settings: Settings) -> S3Bucket:
    """The bucket, with the storage's files under a ``location`` (``AWS_LOCATION``).

    Torn down before ``s3_bucket``, which forgets the storage once the setting is back.
    """
    settings.AWS_LOCATION = "tenant/a"
    reset_storages()
    return s3_bucket


def test_it_names_objects_under_the_location_as_s3storage_does(located_bucket: S3Bucket) -> None:
    ours, theirs, large = (storage.restored_key(JOB, f"{TS}-{n}") for n in range(3))
    storage.put(ours, b"written by put")  # one PutObject
    storage.put(large, io.BytesIO(b"a stream"))  # Storage.save
    default_storage.save(theirs, ContentFile(b"written by S3Storage"))

    assert located_bucket.keys() == sorted(f"tenant/a/{key}" for key in (ours, theirs, large))
    assert default_storage.exists(ours)
    with default_storage.open(ours, "rb") as handle:
        assert handle.read() == b"written by put"
    assert storage.read_bytes(theirs) == b"written by S3Storage"
    assert storage.read_bytes(large) == b"a stream"
    assert storage.list_keys(f"restored/{JOB}/") == sorted([ours, theirs, large])
    assert [obj.key for page in storage.stored_object_pages("restored/") for obj in page] == sorted(
        [ours, theirs, large]
    )

    assert storage.delete_keys([ours, theirs]) == 2
    assert located_bucket.keys() == [f"tenant/a/{large}"]
    assert storage.delete_job_files(JOB) == 1
    assert located_bucket.keys() == []


def test_it_refuses_a_key_s3storage_would_have_to_normalize(located_bucket: S3Bucket) -> None:
    for key in ("restored/../../secret", "/restored/x.jpg", "restored//x.jpg", "restored\\x.jpg"):
        with pytest.raises(ValueError, match="not a storage key"):
            storage.read_bytes(key)
        with pytest.raises(ValueError, match="not a storage key"):
            storage.put(key, b"x")
    assert located_bucket.keys() == []


def test_it_gives_an_object_the_headers_s3storage_save_would(s3_bucket: S3Bucket, settings: Settings) -> None:
    settings.AWS_S3_OBJECT_PARAMETERS = {"CacheControl": "max-age=86400"}
    reset_storages()
    client = s3_bucket.server.client()

    def headers(key: str) -> dict[str, Any]:
        head = client.head_object(Bucket=s3_bucket.name, Key=key)
        return {name: head.get(name) for name in ("ContentType", "ContentEncoding", "CacheControl", "Metadata")}

    for name, content_type in [("a.jpg", "image/jpeg"), ("b.mp4", None), ("c.unknown", None), ("d.tar.gz", None)]:
        upload = ContentFile(b"x")
        if content_type:
            upload.content_type = content_type  # type: ignore[attr-defined]
        default_storage.save(f"theirs/{name}", upload)
        storage.put(f"ours/{name}", b"x", content_type=content_type)
        assert headers(f"ours/{name}") == headers(f"theirs/{name}"), name
    assert headers("ours/a.jpg")["CacheControl"] == "max-age=86400"
    assert headers("ours/d.tar.gz")["ContentEncoding"] == "gzip"


def test_it_raises_on_a_key_s3_refuses_to_delete_but_not_on_one_already_gone(s3_bucket: S3Bucket) -> None:
    keys = [storage.restored_key(JOB, f"{TS}-{n}") for n in range(3)]
    for key in keys:
        s3_bucket.put(key, b"x")
    # Per-key errors moto does not produce: added to DeleteObjects' parsed answer.
    injected: list[dict[str, str]] = []
    client = default_storage.connection.meta.client  # type: ignore[attr-defined]
    client.meta.events.register(
        "after-call.s3.DeleteObjects", lambda parsed, **kwargs: parsed.setdefault("Errors", []).extend(injected)
    )

    injected[:] = [{"Key": keys[0], "Code": "NoSuchKey", "Message": "The specified key does not exist."}]
    assert storage.delete_keys(keys[:1]) == 1
    injected[:] = [{"Key": keys[1], "Code": "AccessDenied", "Message": "Access Denied"}]
    with pytest.raises(RuntimeError, match="refused to delete 1 object"):
        storage.delete_keys(keys[1:])
    assert s3_bucket.keys() == []  # S3 did delete what it did not refuse (here: all of it)


def _count_signing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys the S3 storage presigns from now on (each call still signs, for real)."""
    signed: list[str] = []
    assert storage.is_s3()
    store = default_storage._wrapped  # type: ignore[attr-defined]  # the S3Storage itself, not the lazy proxy
    sign = store.url

    def url(name: str) -> str:
        signed.append(name)
        made: str = sign(name)
        return made

    monkeypatch.setattr(store, "url", url)
    return signed


def test_it_hands_out_a_presigned_url_again_within_the_reuse_window(
    s3_bucket: S3Bucket, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.PRESIGNED_URL_REUSE_SECONDS = 60
    now = [1000.0]
    monkeypatch.setattr(storage.presigned_urls, "clock", lambda: now[0])
    storage.presigned_urls.clear()
    signed = _count_signing(monkeypatch)
    key = storage.restored_key(JOB, TS)

    first = storage.url_for(key)
    now[0] += 59
    assert storage.url_for(key) == first
    assert storage.url_or_none(storage.thumbnail_key(JOB, TS)) != first
    assert signed == [key, storage.thumbnail_key(JOB, TS)]

    now[0] += 2  # 61 s after the first: signed anew
    storage.url_for(key)
    assert signed == [key, storage.thumbnail_key(JOB, TS), key]


def test_it_signs_every_url_anew_with_reuse_off(
    s3_bucket: S3Bucket, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.PRESIGNED_URL_REUSE_SECONDS = 0
    storage.presigned_urls.clear()
    signed = _count_signing(monkeypatch)
    key = storage.restored_key(JOB, TS)
    storage.url_for(key)
    storage.url_for(key)
    assert signed == [key, key]
