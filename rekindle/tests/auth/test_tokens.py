"""Auth0 access tokens on the API: what is accepted, what is a 401, and when the key set is fetched."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient
from social_django.models import UserSocialAuth

from rekindle.auth import jwks
from rekindle.testing.auth0 import Auth0Tenant, bearer, rsa_key

pytestmark = [pytest.mark.django_db, pytest.mark.urls("rekindle.tests.auth.urls")]


@pytest.fixture
def client() -> APIClient:
    return APIClient()


def _get(client: APIClient, token: str, path: str = "/whoami") -> Any:
    return client.get(path, headers=bearer(token))


def _assert_invalid_token(response: Any, fragment: str = "") -> None:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["error"]["code"] == "invalid_token"
    assert fragment.lower() in body["error"]["message"].lower()
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="api"')
    assert 'error="invalid_token"' in challenge


def test_it_authenticates_a_valid_token_and_creates_the_user(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    email: dict[str, Any] = {"https://rekindle.example/email": "alice@example.com"}
    token = auth0_tenant.token(sub="auth0|alice", **email)

    response = _get(client, token)

    assert response.status_code == 200
    assert response.json() == {"authenticated": True, "username": "auth0|alice"}
    social = UserSocialAuth.objects.select_related("user").get(provider="auth0", uid="auth0|alice")
    assert social.user.email == "alice@example.com"
    assert social.id_key == "user_id"
    assert not social.user.has_usable_password()


def test_it_maps_one_subject_to_one_user_and_fills_a_missing_email(
    client: APIClient, auth0_tenant: Auth0Tenant
) -> None:
    assert _get(client, auth0_tenant.token(sub="google-oauth2|42")).status_code == 200
    user = User.objects.get(social_auth__provider="auth0", social_auth__uid="google-oauth2|42")
    assert user.email == ""

    email: dict[str, Any] = {"https://rekindle.example/email": "bob@example.com"}
    token = auth0_tenant.token(sub="google-oauth2|42", **email)
    assert _get(client, token).status_code == 200

    assert User.objects.filter(social_auth__uid="google-oauth2|42").count() == 1
    user.refresh_from_db()
    assert user.email == "bob@example.com"


def test_it_maps_a_subject_to_the_user_a_browser_login_created(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    person = User.objects.create_user(username="carol", email="carol@example.com")
    UserSocialAuth.objects.create(user=person, provider="auth0", uid="auth0|carol", id_key="user_id")

    response = _get(client, auth0_tenant.token(sub="auth0|carol"))

    assert response.json() == {"authenticated": True, "username": "carol"}


def test_it_gives_a_username_clash_a_suffix(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    User.objects.create_user(username="auth0|dave")

    assert _get(client, auth0_tenant.token(sub="auth0|dave")).status_code == 200

    social = UserSocialAuth.objects.select_related("user").get(uid="auth0|dave")
    assert social.user.username.startswith("auth0|dave-")


def test_it_rejects_an_expired_token(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    now = int(time.time())
    _assert_invalid_token(_get(client, auth0_tenant.token(iat=now - 7200, exp=now - 120)), "expired")


def test_it_allows_clock_skew_within_the_leeway(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    now = int(time.time())
    assert _get(client, auth0_tenant.token(exp=now - 10)).status_code == 200
    assert _get(client, auth0_tenant.token(nbf=now + 10)).status_code == 200


def test_it_rejects_a_token_not_yet_valid(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    _assert_invalid_token(_get(client, auth0_tenant.token(nbf=int(time.time()) + 600)), "not valid yet")


def test_it_rejects_a_token_for_another_audience(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    _assert_invalid_token(_get(client, auth0_tenant.token(aud="https://another-api.example")), "audience")


def test_it_rejects_a_token_from_another_issuer(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    _assert_invalid_token(_get(client, auth0_tenant.token(iss="https://evil.eu.auth0.com/")), "issued")


def test_it_rejects_a_token_without_expiry_or_subject(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    _assert_invalid_token(_get(client, auth0_tenant.token(exp=None)), "exp")
    _assert_invalid_token(_get(client, auth0_tenant.token(sub=None)), "sub")
    _assert_invalid_token(_get(client, auth0_tenant.token(sub="  ")), "sub")


def test_it_takes_a_subject_up_to_the_longest_an_account_can_have(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    longest = "auth0|" + "a" * 249
    assert _get(client, auth0_tenant.token(sub=longest)).status_code == 200
    assert UserSocialAuth.objects.filter(uid=longest).exists()
    _assert_invalid_token(_get(client, auth0_tenant.token(sub=longest + "b")), "255")
    assert UserSocialAuth.objects.count() == 1


def test_it_ignores_an_email_claim_longer_than_an_address_can_be(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    # Well formed, but 300 characters: no mail server takes it and the user table holds 254.
    too_long = "x" * 60 + "@" + ".".join(["d" * 58] * 4) + ".com"
    assert len(too_long) > 254
    email: dict[str, Any] = {"https://rekindle.example/email": too_long}
    token = auth0_tenant.token(sub="auth0|long-mail", **email)

    assert _get(client, token).status_code == 200
    assert UserSocialAuth.objects.get(uid="auth0|long-mail").user.email == ""


def test_it_rejects_a_token_signed_by_a_key_outside_the_jwks(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    forged = auth0_tenant.token(kid="key-1", key=rsa_key(1))
    _assert_invalid_token(_get(client, forged), "signature")


def test_it_rejects_alg_none(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    _assert_invalid_token(_get(client, auth0_tenant.unsigned_token()), "RS256")


def test_it_rejects_hs256_signed_with_the_public_key(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    _assert_invalid_token(_get(client, auth0_tenant.hs256_with_public_key()), "RS256")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer a.b",
        "Bearer eyJhbGciOiJSUzI1NiJ9.e30",
        "Bearer eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",
        "Bearer ....",
        "Bearer",
        "Bearer two tokens",
        "bearer \u00e9t\u00e9",
    ],
)
def test_it_answers_garbage_with_a_401_not_a_500(
    client: APIClient, auth0_tenant: Auth0Tenant, authorization: str
) -> None:
    response = client.get("/whoami", HTTP_AUTHORIZATION=authorization.encode().decode("latin-1"))
    _assert_invalid_token(response)


def test_it_leaves_requests_without_a_bearer_token_anonymous(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    assert client.get("/whoami").json() == {"authenticated": False, "username": ""}
    assert client.get("/whoami", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz").json()["authenticated"] is False

    response = client.get("/private")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert auth0_tenant.fetches == 0


def test_it_refuses_bearer_tokens_when_auth0_is_not_configured(
    client: APIClient, auth0_tenant: Auth0Tenant, settings: Any
) -> None:
    settings.AUTH0_API_ENABLED = False

    _assert_invalid_token(_get(client, auth0_tenant.token()), "does not accept")
    assert auth0_tenant.fetches == 0


def test_it_rejects_a_disabled_account(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    token = auth0_tenant.token(sub="auth0|erin")
    assert _get(client, token).status_code == 200
    User.objects.filter(social_auth__uid="auth0|erin").update(is_active=False)

    _assert_invalid_token(_get(client, token), "disabled")


def test_it_fetches_the_jwks_once_for_many_requests(client: APIClient, auth0_tenant: Auth0Tenant) -> None:
    for subject in ("auth0|a", "auth0|b", "auth0|c"):
        assert _get(client, auth0_tenant.token(sub=subject)).status_code == 200

    assert auth0_tenant.fetches == 1


def test_it_refetches_for_an_unknown_kid_at_most_once_a_minute(
    client: APIClient, auth0_tenant: Auth0Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(jwks, "_now", lambda: clock[0])
    assert _get(client, auth0_tenant.token()).status_code == 200
    assert auth0_tenant.fetches == 1

    # Right after a fetch an unknown kid does not fetch again.
    _assert_invalid_token(_get(client, auth0_tenant.token(kid="made-up", key=rsa_key(1))), "key")
    assert auth0_tenant.fetches == 1

    # A minute later it does, once; then a minute of silence however many come.
    clock[0] += 61
    _assert_invalid_token(_get(client, auth0_tenant.token(kid="made-up", key=rsa_key(1))), "key")
    assert auth0_tenant.fetches == 2
    clock[0] += 30
    for _ in range(5):
        _assert_invalid_token(_get(client, auth0_tenant.token(kid="made-up-too", key=rsa_key(1))), "key")
    assert auth0_tenant.fetches == 2

    # Auth0 rotates in a new key: within the minute it is still unknown, after it is fetched.
    auth0_tenant.rotate_in("key-2", 2)
    _assert_invalid_token(_get(client, auth0_tenant.token(kid="key-2")), "key")
    assert auth0_tenant.fetches == 2
    clock[0] += 31
    assert _get(client, auth0_tenant.token(kid="key-2")).status_code == 200
    assert auth0_tenant.fetches == 3
    assert _get(client, auth0_tenant.token(kid="key-1")).status_code == 200
    assert auth0_tenant.fetches == 3


def test_it_answers_503_when_the_jwks_cannot_be_fetched_and_recovers(
    client: APIClient, auth0_tenant: Auth0Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(jwks, "_now", lambda: clock[0])
    auth0_tenant.available = False

    response = _get(client, auth0_tenant.token())

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_unavailable"
    # Failures are retried after a short pause, not on every request.
    assert _get(client, auth0_tenant.token()).status_code == 503
    assert auth0_tenant.fetches == 1

    auth0_tenant.available = True
    clock[0] += 6
    assert _get(client, auth0_tenant.token()).status_code == 200
    assert auth0_tenant.fetches == 2


def test_it_keeps_cached_keys_when_a_refresh_fails(
    client: APIClient, auth0_tenant: Auth0Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(jwks, "_now", lambda: clock[0])
    assert _get(client, auth0_tenant.token()).status_code == 200

    auth0_tenant.available = False
    clock[0] += 7200  # past the cache's max age: a refresh is due and fails

    assert _get(client, auth0_tenant.token()).status_code == 200
    assert auth0_tenant.fetches == 2
