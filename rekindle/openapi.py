"""OpenAPI document: the answers every operation can give, added once instead of in each view.

Authentication, the body parser and CSRF run before any view code, so their errors can come from
any operation; the views document only what is their own.
"""

from __future__ import annotations

from typing import Any

_ERROR_REF = {"$ref": "#/components/schemas/Error"}

_BAD_BEARER = (
    "`invalid_token`: an `Authorization: Bearer` token that is malformed, expired or not accepted "
    "(leave the header out to call anonymously)."
)
_CSRF = "`permission_denied`: a browser session cookie without its CSRF token (bearer tokens need none)."
_BAD_BODY = "`parse_error`: the body is not valid JSON (or is nested too deeply); `invalid`: a field is wrong."
_TOO_LARGE = "`request_too_large`: the body is over the size limit."
_NOT_JSON = "`unsupported_media_type`: the body is not `application/json`."

_AUTH_UNAVAILABLE = (
    "`auth_unavailable`: a bearer token was sent and the sign-in service's keys cannot be fetched right now; "
    "retry later (the token may be fine)."
)

_DATABASE_UNAVAILABLE = (
    "`database_unavailable`: the database cannot be reached for a moment (a restart, a failover); "
    "retry after the `Retry-After` seconds."
)

_STORAGE_UNAVAILABLE = (
    "`storage_unavailable`: the photo storage failed or timed out for a moment; retry after the `Retry-After` seconds."
)

_RETRY_AFTER = {
    "schema": {"type": "integer", "minimum": 1},
    "description": "Seconds to wait before asking again (sent when the outage's length is known).",
}

_UNSAFE_METHODS = {"post", "put", "patch", "delete"}

# Request bodies whose `parameters` are a workflow's parameter map: component -> the kind of work whose
# configured workflow (REKINDLE_WORKFLOW_<KIND>) defines them.
WORKFLOW_PARAMETERS = {"RestoreInputRequest": "restore", "AnimateInputRequest": "animate_preview"}


def _add(responses: dict[str, Any], status: str, description: str) -> None:
    if status not in responses:
        responses[status] = {"content": {"application/json": {"schema": _ERROR_REF}}, "description": description}
    elif description not in responses[status].get("description", ""):
        responses[status]["description"] = f"{responses[status].get('description', '')} {description}".strip()


def add_common_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            _add(responses, "401", _BAD_BEARER)
            _add(responses, "503", _AUTH_UNAVAILABLE)
            _add(responses, "503", _DATABASE_UNAVAILABLE)
            _add(responses, "503", _STORAGE_UNAVAILABLE)
            responses["503"].setdefault("headers", {}).setdefault("Retry-After", _RETRY_AFTER)
            if method in _UNSAFE_METHODS:
                _add(responses, "403", _CSRF)
            content = operation.get("requestBody", {}).get("content", {})
            if content:
                _add(responses, "400", _BAD_BODY)
                _add(responses, "413", _TOO_LARGE)
                if "application/json" in content:
                    _add(responses, "415", _NOT_JSON)
    _document_workflow_parameters(result)
    return result


def _document_workflow_parameters(result: dict[str, Any]) -> None:
    """Each `parameters` object as the configured workflow's map says: its keys, types, ranges, defaults."""
    from rekindle.workflows import workflow_for_kind

    schemas = result.get("components", {}).get("schemas", {})
    for component, kind in WORKFLOW_PARAMETERS.items():
        properties = schemas.get(component, {}).get("properties", {})
        if "parameters" not in properties:
            continue
        workflow = workflow_for_kind(kind)
        documented = workflow.parameters_schema()
        documented["description"] = (
            f"{properties['parameters'].get('description', '')} These are the parameters of the "
            f"`{workflow.name}` workflow this deployment runs; a key not listed is refused."
        ).strip()
        properties["parameters"] = documented
