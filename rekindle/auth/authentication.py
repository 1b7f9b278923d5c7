"""DRF authentication with Auth0 access tokens: ``Authorization: Bearer <jwt>``.

A request without a Bearer header is left to the next authentication class (the
session, for people signed in to the admin) and otherwise stays anonymous. A
request with a Bearer header either authenticates or fails:

- 401 ``invalid_token`` when the token is malformed, expired, not yet valid, for
  another audience or issuer, signed with an unknown key or another algorithm, or
  when this deployment takes no Auth0 tokens at all. The response carries
  ``WWW-Authenticate: Bearer realm="api", error="invalid_token"`` (RFC 6750).
- 503 ``auth_unavailable`` when the tenant's key set cannot be fetched and no copy
  is cached: the token may well be good, so telling the client to sign in again
  (a 401) would be wrong; it should retry later.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from rekindle.auth.jwks import JwksUnavailable
from rekindle.auth.services import auth0_user_get_or_create, email_from_claims
from rekindle.auth.tokens import AccessTokenSettings, InvalidToken, decode_access_token

REALM = "api"


class InvalidBearerToken(exceptions.AuthenticationFailed):
    default_code = "invalid_token"
    default_detail = "The access token is not valid."


# Plain DRF exceptions: DRF imports this module while rest_framework.views is still
# loading, so nothing here may import it (rekindle.api_errors does). The API's
# exception handler gives both the JSON error shape with these codes.
class AuthUnavailable(exceptions.APIException):
    status_code = 503
    default_code = "auth_unavailable"
    default_detail = "Sign-in cannot be checked right now; try again shortly."


class Auth0JWTAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[User, dict[str, Any]] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise self._fail(request, "The Authorization header must be 'Bearer <token>'.")
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise self._fail(request, "The token is not a well-formed JWT.") from None

        config = AccessTokenSettings.from_settings()
        if config is None:
            raise self._fail(request, "This service does not accept bearer tokens.")
        try:
            claims = decode_access_token(token, config)
        except InvalidToken as exc:
            raise self._fail(request, str(exc)) from None
        except JwksUnavailable:
            raise AuthUnavailable() from None

        user = auth0_user_get_or_create(subject=claims["sub"], email=email_from_claims(claims))
        if not user.is_active:
            raise self._fail(request, "This account is disabled.")
        return user, claims

    def authenticate_header(self, request: Request) -> str:
        error = getattr(request, "bearer_error", None)
        if error:
            return f'Bearer realm="{REALM}", error="invalid_token", error_description="{error}"'
        return f'Bearer realm="{REALM}"'

    @staticmethod
    def _fail(request: Request, message: str) -> InvalidBearerToken:
        # Read back by authenticate_header for the WWW-Authenticate challenge.
        request.bearer_error = message.replace('"', "'")  # type: ignore[attr-defined]
        return InvalidBearerToken(message)
