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

_UNSAFE_METHODS = {"post", "put", "patch", "delete"}


def _add(responses: dict[str, Any], status: str, description: str) -> None:
    if status not in responses:
        responses[status] = {"content": {"application/json": {"schema": _ERROR_REF}}, "description": description}


def add_common_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            _add(responses, "401", _BAD_BEARER)
            if method in _UNSAFE_METHODS:
                _add(responses, "403", _CSRF)
            content = operation.get("requestBody", {}).get("content", {})
            if content:
                _add(responses, "400", _BAD_BODY)
                _add(responses, "413", _TOO_LARGE)
                if "application/json" in content:
                    _add(responses, "415", _NOT_JSON)
    return result
