"""The OpenAPI document and its browsable page describe every jobs endpoint and its errors."""

from __future__ import annotations

from typing import Any

import pytest
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
    assert b"/api/schema/" in response.content


def test_it_documents_the_workflow_parameters_a_client_may_set(api_client: APIClient) -> None:
    schemas = api_client.get("/api/schema/?format=json").json()["components"]["schemas"]
    restore = schemas["RestoreInputRequest"]["properties"]["parameters"]
    assert restore["additionalProperties"] is False
    assert restore["properties"]["steps"] == {"type": "integer", "minimum": 1, "maximum": 50, "default": 20}
    assert "seed" in restore["properties"]
    animate = schemas["AnimateInputRequest"]["properties"]["parameters"]
    assert animate["additionalProperties"] is False
    assert {"seconds", "fps", "width", "height"} <= set(animate["properties"])
