"""How the OpenAPI document describes Auth0 bearer tokens (imported by RekindleConfig.ready)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class Auth0JWTScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "rekindle.auth.authentication.Auth0JWTAuthentication"
    name = "auth0"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An Auth0 access token for this API's audience.",
        }
