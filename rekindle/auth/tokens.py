"""Validation of Auth0 access tokens: RS256 JWTs signed by a key of the tenant's JWKS.

Only RS256 is accepted, whatever the token's header claims, so neither ``alg: none``
nor an HS256 token "signed" with the public key can pass. ``iss``, ``aud``, ``exp``
and ``nbf`` are checked with a small leeway for clock skew; ``sub`` must be present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from django.conf import settings

from rekindle.auth.jwks import UnknownSigningKey, jwks_client

ALGORITHM = "RS256"


class InvalidToken(Exception):
    """The token is not one we accept; the message says why, for the client."""


@dataclass(frozen=True)
class AccessTokenSettings:
    jwks_url: str
    issuer: str
    audience: str
    leeway_seconds: int
    jwks_refetch_seconds: float
    jwks_max_age_seconds: float
    jwks_timeout_seconds: float

    @classmethod
    def from_settings(cls) -> AccessTokenSettings | None:
        """The current settings, or None when the API does not take Auth0 tokens."""
        if not settings.AUTH0_API_ENABLED:
            return None
        return cls(
            jwks_url=settings.AUTH0_JWKS_URL,
            issuer=settings.AUTH0_ISSUER,
            audience=settings.AUTH0_AUDIENCE,
            leeway_seconds=settings.AUTH0_LEEWAY_SECONDS,
            jwks_refetch_seconds=settings.AUTH0_JWKS_REFETCH_SECONDS,
            jwks_max_age_seconds=settings.AUTH0_JWKS_MAX_AGE_SECONDS,
            jwks_timeout_seconds=settings.AUTH0_JWKS_TIMEOUT_SECONDS,
        )


# The longest subject an account can be keyed by (social-auth's uid column).
MAX_SUBJECT_LENGTH = 255


def decode_access_token(token: str, config: AccessTokenSettings) -> dict[str, Any]:
    """The token's verified claims.

    Raises ``InvalidToken`` for anything wrong with the token and
    ``JwksUnavailable`` when the key set cannot be fetched.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("The token is not a well-formed JWT.") from None
    if header.get("alg") != ALGORITHM:
        raise InvalidToken(f"The token must be signed with {ALGORITHM}.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("The token names no signing key (kid).")

    client = jwks_client(
        config.jwks_url,
        refetch_interval=config.jwks_refetch_seconds,
        max_age=config.jwks_max_age_seconds,
        timeout=config.jwks_timeout_seconds,
    )
    try:
        key = client.signing_key(kid)
    except UnknownSigningKey:
        raise InvalidToken("The token is signed with a key this service does not know.") from None

    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=[ALGORITHM],
            audience=config.audience,
            issuer=config.issuer,
            leeway=config.leeway_seconds,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("The token has expired.") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken("The token is not valid yet.") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("The token is not meant for this API (audience).") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken("The token was not issued by this service's Auth0 tenant.") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("The token's signature does not verify.") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"The token lacks the {exc.claim!r} claim.") from None
    except jwt.PyJWTError:
        raise InvalidToken("The token is not valid.") from None

    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidToken("The token's subject (sub) is empty.")
    if len(subject) > MAX_SUBJECT_LENGTH:
        # Auth0's subjects are far shorter; one this long is not one of the tenant's users.
        raise InvalidToken(f"The token's subject (sub) is longer than {MAX_SUBJECT_LENGTH} characters.")
    return claims
