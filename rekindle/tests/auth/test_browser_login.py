"""Browser login: the admin offers Auth0 only when it is configured, and CORS lets only the frontend in."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

AUTH0_BACKEND = "social_core.backends.auth0.Auth0OAuth2"


@pytest.fixture
def auth0_login(settings: Any) -> None:
    settings.AUTHENTICATION_BACKENDS = [AUTH0_BACKEND, "django.contrib.auth.backends.ModelBackend"]
    settings.SOCIAL_AUTH_AUTH0_DOMAIN = "rekindle-test.eu.auth0.com"
    settings.SOCIAL_AUTH_AUTH0_KEY = "client-id-123"
    settings.SOCIAL_AUTH_AUTH0_SECRET = "client-secret-456"


def test_it_offers_only_the_password_login_without_auth0(client: Client, settings: Any) -> None:
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]

    page = client.get("/admin/login/?next=/admin/")

    assert page.status_code == 200
    assert b'name="password"' in page.content
    assert b"Sign in with Auth0" not in page.content
    assert client.post("/auth/login/auth0/").status_code == 404


def test_it_offers_auth0_next_to_the_password_login(client: Client, auth0_login: None) -> None:
    page = client.get("/admin/login/?next=/admin/jobs/job/")

    assert page.status_code == 200
    assert b'name="password"' in page.content
    assert b"Sign in with Auth0" in page.content
    assert b'action="/auth/login/auth0/"' in page.content
    assert b'name="next" value="/admin/jobs/job/"' in page.content


def test_it_sends_the_browser_to_the_auth0_tenant(client: Client, auth0_login: None) -> None:
    # The form's POST, as the login page sends it (CSRF is checked by the middleware in real use).
    response = client.post("/auth/login/auth0/", {"next": "/admin/"})

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "rekindle-test.eu.auth0.com", "/authorize")
    query = parse_qs(location.query)
    assert query["client_id"] == ["client-id-123"]
    assert query["redirect_uri"][0].split("?")[0] == "https://testserver/auth/complete/auth0/"
    assert set(query["scope"][0].split()) == {"openid", "profile", "email"}
    assert query["state"][0]


def test_it_answers_cors_preflights_for_the_frontend_only(client: Client, settings: Any) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://rekindle.example"]

    def preflight(origin: str) -> Any:
        headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        return client.options(
            "/api/v1/jobs/upload", headers={**headers, "Access-Control-Request-Headers": "authorization"}
        )

    allowed = preflight("https://rekindle.example")
    other = preflight("https://evil.example")

    assert allowed["Access-Control-Allow-Origin"] == "https://rekindle.example"
    assert "authorization" in allowed["Access-Control-Allow-Headers"]
    assert "x-job-token" in allowed["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Origin" not in other


def test_it_sends_hsts_over_https(client: Client) -> None:
    response = client.get("/admin/login/", secure=True)

    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
