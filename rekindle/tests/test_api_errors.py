"""Every API error has one JSON shape and the right status, and bad input from a client is never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from animation.models import AnimationAttempt
from rekindle.testing import imagedata
from rekindle.testing.factories import JobFactory
from restoration.models import RestoreAttempt

pytestmark = [pytest.mark.django_db]


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


def test_it_answers_json_404_for_an_unknown_url_under_the_api() -> None:
    client = Client(raise_request_exception=False)
    assert_error(client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(client.get("/api/v2/jobs"), 404, "not_found")


def test_it_answers_405_for_a_wrong_method(api_client: APIClient) -> None:
    job = JobFactory.create(token="t")
    error = assert_error(api_client.put(f"/api/v1/jobs/{job.id}", {}, headers={"X-Job-Token": "t"}), 405)
    assert error["code"] == "method_not_allowed"
    assert_error(api_client.get("/api/v1/jobs/upload"), 405, "method_not_allowed")
    assert_error(api_client.post("/api/v1/jobs", {}), 405, "method_not_allowed")


def test_it_puts_validation_errors_under_details_fields(api_client: APIClient) -> None:
    error = assert_error(api_client.post("/api/v1/jobs/upload", {}, format="multipart"), 400, "invalid")
    assert set(error["details"]["fields"]) == {"image", "email"}
    assert all(isinstance(message, str) for messages in error["details"]["fields"].values() for message in messages)


def _multipart(body: bytes, boundary: str = "b0undary") -> dict[str, Any]:
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}


BAD_REQUESTS = [
    ("json-body", "/api/v1/jobs/upload", {"data": b'{"email": "a@example.com"}', "content_type": "application/json"}),
    ("broken-json", "/api/v1/jobs/upload", {"data": b'{"email": ', "content_type": "application/json"}),
    ("no-boundary", "/api/v1/jobs/upload", {"data": b"--x\r\n", "content_type": "multipart/form-data"}),
    ("garbage-multipart", "/api/v1/jobs/upload", _multipart(b"\x00\xff garbage \r\n--b0undary--")),
    (
        "unterminated-multipart",
        "/api/v1/jobs/upload",
        _multipart(
            b'--b0undary\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
            + imagedata.jpeg()[:100]
        ),
    ),
    (
        "huge-text-field",
        "/api/v1/jobs/upload",
        _multipart(
            b'--b0undary\r\nContent-Disposition: form-data; name="email"\r\n\r\n'
            + b"a" * (2 * 1024 * 1024)
            + b"\r\n--b0undary--\r\n"
        ),
    ),
    (
        "too-many-fields",
        "/api/v1/jobs/upload",
        _multipart(
            b"".join(b'--b0undary\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % n for n in range(1100))
            + b"--b0undary--\r\n"
        ),
    ),
    (
        "form-urlencoded",
        "/api/v1/jobs/upload",
        {"data": b"email=a%40example.com", "content_type": "application/x-www-form-urlencoded"},
    ),
    (
        "nul-in-email",
        "/api/v1/jobs/upload",
        {"data": {"email": "a\x00@example.com", "image": ""}, "format": "multipart"},
    ),
]


@pytest.mark.parametrize(("path", "request_args"), [r[1:] for r in BAD_REQUESTS], ids=[r[0] for r in BAD_REQUESTS])
def test_it_never_answers_a_bad_request_with_a_500(path: str, request_args: dict[str, Any]) -> None:
    client = APIClient(raise_request_exception=False)
    response = client.post(path, **request_args)
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code)


@pytest.mark.parametrize(
    ("path", "params", "headers"),
    [
        ("/api/v1/jobs/%00", {}, {}),
        ("/api/v1/jobs/" + "9" * 300, {}, {}),
        ("/api/v1/jobs/0f8fad5b-d9cb-469f-a165-70867728950e", {"token": "\x00"}, {}),
        ("/api/v1/jobs/0f8fad5b-d9cb-469f-a165-70867728950e", {}, {"X-Job-Token": "é" * 5000}),
        ("/api/v1/jobs/0f8fad5b-d9cb-469f-a165-70867728950e", {"access": "x:y:z"}, {}),
        ("/api/v1/jobs", {"page": "abc"}, {}),
    ],
    ids=["nul-id", "long-id", "nul-token", "long-token", "bad-access", "bad-page"],
)
def test_it_never_answers_a_bad_read_with_a_500(path: str, params: dict[str, str], headers: dict[str, str]) -> None:
    client = APIClient(raise_request_exception=False)
    response = client.get(path, params, headers=headers)
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code)


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("action", ["restore", "animate", "select-restore"])
def test_it_answers_400_to_json_nested_too_deeply(action: str, depth: int) -> None:
    job = JobFactory.create(token="t")
    client = APIClient(raise_request_exception=False)
    body = b'{"parameters": {"prompt": ' + b"[" * depth + b"]" * depth + b"}}"

    response = client.post(
        f"/api/v1/jobs/{job.id}/{action}", data=body, content_type="application/json", headers={"X-Job-Token": "t"}
    )

    error = assert_error(response, 400, "parse_error")
    assert "nested too deeply" in error["message"]


@pytest.mark.parametrize(
    "body",
    [b'{"parameters": {"prompt": "\\ud800"}}', b'{"parameters": {"\\udfff": 1}}', b'{"restore_id": ["\\ud83d"]}'],
    ids=["value", "key", "nested"],
)
@pytest.mark.parametrize("action", ["restore", "animate", "select-restore"])
def test_it_answers_400_to_a_string_with_a_lone_surrogate(action: str, body: bytes) -> None:
    job = JobFactory.create(token="t")
    client = APIClient(raise_request_exception=False)

    response = client.post(
        f"/api/v1/jobs/{job.id}/{action}", data=body, content_type="application/json", headers={"X-Job-Token": "t"}
    )

    error = assert_error(response, 400, "parse_error")
    assert "surrogate" in error["message"]
    # Nothing was stored that would make the job unreadable.
    assert client.get(f"/api/v1/jobs/{job.id}", headers={"X-Job-Token": "t"}).status_code == 200


@pytest.mark.parametrize("action", ["restore", "animate", "select-restore"])
@pytest.mark.parametrize(
    "request_args",
    [
        {"data": {"parameters": '{"seed": 1}'}, "format": "multipart"},
        {"data": b"parameters=abc&restore_id=", "content_type": "application/x-www-form-urlencoded"},
    ],
    ids=["multipart", "form-urlencoded"],
)
def test_it_refuses_a_form_body_where_the_api_takes_json(action: str, request_args: dict[str, Any]) -> None:
    # Forms cannot carry the nested `parameters`; read as forms, they would run with the defaults.
    job = JobFactory.create(token="t")
    client = APIClient(raise_request_exception=False)

    response = client.post(f"/api/v1/jobs/{job.id}/{action}", headers={"X-Job-Token": "t"}, **request_args)

    assert_error(response, 415, "unsupported_media_type")
    assert not RestoreAttempt.objects.filter(job=job).exists()
    assert not AnimationAttempt.objects.filter(job=job).exists()


def test_it_answers_a_host_header_not_allowed_with_a_json_400_under_the_api() -> None:
    client = Client(raise_request_exception=False)

    api = client.get("/api/v1/jobs/0f8fad5b-d9cb-469f-a165-70867728950e", headers={"host": "evil..example"})
    page = client.get("/admin/login/", headers={"host": "evil..example"})

    assert_error(api, 400, "bad_request")
    assert page.status_code == 400
    assert not page["Content-Type"].startswith("application/json")
