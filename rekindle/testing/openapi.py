"""Check real API responses against the OpenAPI document the API serves at /api/schema/.

``assert_documented(response, document, path, method)`` fails when the status is not documented for
the operation or the JSON body does not match the documented schema, the two things schemathesis
checks from outside.
"""

from __future__ import annotations

from typing import Any

from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker
from rest_framework.test import APIClient


def served_document(client: APIClient) -> dict[str, Any]:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _nullable_refs(schema: Any) -> Any:
    """``{allOf: [ref], nullable: true}`` as ``{anyOf: [ref, null]}``.

    drf-spectacular writes a nullable reference the first way; OpenAPI 3.0 leaves open whether
    ``nullable`` reaches into ``allOf``, and clients and schemathesis read it as "or null".
    """
    if isinstance(schema, list):
        return [_nullable_refs(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _nullable_refs(value) for key, value in schema.items()}
    if converted.get("nullable") is True and "allOf" in converted:
        converted["anyOf"] = [{"allOf": converted.pop("allOf")}, {"enum": [None]}]
        del converted["nullable"]
    return converted


def assert_documented(response: Any, document: dict[str, Any], path: str, method: str) -> None:
    """``path`` is the template as documented, e.g. ``/api/v1/jobs/{job_id}``."""
    operation = document["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], (
        f"{method} {path} answered {status}, documented: {sorted(operation['responses'])}; {response.content[:300]!r}"
    )
    content = operation["responses"][status].get("content")
    if not content:
        return
    assert response["Content-Type"].startswith("application/json")
    schema = content["application/json"]["schema"]
    # The components travel with the schema so its "#/components/..." references resolve.
    validator = OAS30ReadValidator(
        _nullable_refs({**schema, "components": document["components"]}), format_checker=oas30_format_checker
    )
    problems = [f"{error.message} at {list(error.absolute_path)}" for error in validator.iter_errors(response.json())]
    assert not problems, f"{method} {path} {status}: {problems}"
