"""The OpenAPI document and its browsable page describe every jobs endpoint and its errors."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.staticfiles import finders
from rest_framework.test import APIClient

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def schema(api_client: APIClient) -> dict[str, Any]:
    response = api_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _error_ref(operation: dict[str, Any], status: str) -> str:
    ref: str = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
    return ref


def test_it_documents_every_jobs_endpoint_with_its_body_and_errors(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    upload = paths["/api/v1/jobs/upload"]["post"]
    detail = paths["/api/v1/jobs/{job_id}"]
    listing = paths["/api/v1/jobs"]["get"]

    request_schema = upload["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    assert set(schema["components"]["schemas"][request_schema]["required"]) == {"image", "email"}
    assert set(upload["responses"]) >= {"201", "400", "413", "415"}
    for status in ("400", "413", "415"):
        assert _error_ref(upload, status) == "#/components/schemas/Error"
    created = schema["components"]["schemas"]["JobCreated"]["properties"]
    assert {"token", "restore_attempts", "animation_attempts", "original_url"} <= set(created)

    # 401 (a bad bearer token), 503 (its keys unreachable) and 403 (a session without CSRF) come from
    # rekindle.openapi, for every operation.
    assert set(detail["get"]["responses"]) == {"200", "401", "404", "503"}
    assert set(detail["delete"]["responses"]) == {"204", "401", "403", "404", "503"}
    assert "auth_unavailable" in detail["get"]["responses"]["503"]["description"]
    for operation in (upload, detail["get"], detail["delete"], listing):
        assert "database_unavailable" in operation["responses"]["503"]["description"]
        assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert _error_ref(detail["get"], "404") == "#/components/schemas/Error"
    parameters = {(p["in"], p["name"]) for p in detail["get"]["parameters"]}
    assert {("header", "X-Job-Token"), ("query", "token"), ("path", "job_id")} <= parameters

    assert set(listing["responses"]) >= {"200", "401"}
    assert _error_ref(listing, "401") == "#/components/schemas/Error"


def test_it_describes_the_error_shape(schema: dict[str, Any]) -> None:
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["$ref"] == "#/components/schemas/ErrorBody"
    body = schema["components"]["schemas"]["ErrorBody"]
    assert set(body["properties"]) == {"code", "message", "details"}
    assert set(body["required"]) == {"code", "message", "details"}


def test_it_serves_the_browsable_docs(api_client: APIClient) -> None:
    response = api_client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger-ui" in response.content
    # The start-up script, a file of its own, points Swagger UI at the schema.
    assert b"/api/schema/" in api_client.get("/api/docs/", {"script": ""}).content


class _References(HTMLParser):
    """Every URL a page's elements load or link to (src, href)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]
        self._in_script = tag == "script" and not dict(attrs).get("src")
        if tag == "style":
            self.inline_scripts += 1

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def test_it_serves_the_docs_from_this_origin_alone(api_client: APIClient) -> None:
    response = api_client.get("/api/docs/")
    page = _References()
    page.feed(response.content.decode())

    assert response.status_code == 200
    assert len(page.urls) >= 4  # the stylesheet, the favicon, the two bundles, the start-up script
    assert [url for url in page.urls if urlsplit(url).scheme or urlsplit(url).netloc] == []
    assert page.inline_scripts == 0  # nothing inline for the CSP to refuse
    for url in page.urls:
        path = urlsplit(url).path
        if path.startswith("/static/"):
            assert finders.find(path.removeprefix("/static/")), f"{path} is not a static file here"
    script = next(url for url in page.urls if "script" in urlsplit(url).query)
    start_up = api_client.get(script)
    assert start_up.status_code == 200
    assert re.findall(r"https?://", start_up.content.decode()) == []
    csp = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    assert csp["script-src"] == "'self'"
    assert csp["default-src"] == "'none'"


def test_it_documents_the_workflow_parameters_a_client_may_set(api_client: APIClient) -> None:
    schemas = api_client.get("/api/schema/?format=json").json()["components"]["schemas"]
    restore = schemas["RestoreInputRequest"]["properties"]["parameters"]
    assert restore["additionalProperties"] is False
    assert restore["properties"]["steps"] == {"type": "integer", "minimum": 1, "maximum": 50, "default": 20}
    assert "seed" in restore["properties"]
    animate = schemas["AnimateInputRequest"]["properties"]["parameters"]
    assert animate["additionalProperties"] is False
    assert {"seconds", "fps", "width", "height"} <= set(animate["properties"])
