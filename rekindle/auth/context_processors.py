"""Template context for the admin's login page: whether to offer "Sign in with Auth0"."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

AUTH0_BACKEND = "social_core.backends.auth0.Auth0OAuth2"


def auth0_login(request: HttpRequest) -> dict[str, bool]:
    return {"auth0_login_enabled": AUTH0_BACKEND in settings.AUTHENTICATION_BACKENDS}
