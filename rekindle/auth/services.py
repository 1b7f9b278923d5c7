"""Writes for accounts: the Django user behind an Auth0 subject."""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from social_django.models import UserSocialAuth

AUTH0_PROVIDER = "auth0"
# The longest address an email can be sent to (RFC 5321's path limit), and what the user table holds.
MAX_EMAIL_LENGTH = 254
# The key social-auth's Auth0 backend stores the subject under, so a person who
# signs in through the browser and through the API is one user.
AUTH0_ID_KEY = "user_id"


def email_from_claims(claims: dict[str, Any]) -> str:
    """The email in the token, from the claim named by AUTH0_EMAIL_CLAIM; empty when absent or malformed.

    Auth0 access tokens carry an email only when a tenant Action adds it, usually
    under a namespaced claim such as ``https://rekindle.example/email``.
    """
    value = claims.get(settings.AUTH0_EMAIL_CLAIM)
    if not isinstance(value, str):
        return ""
    value = value.strip()
    if len(value) > MAX_EMAIL_LENGTH:
        return ""
    try:
        validate_email(value)
    except ValidationError:
        return ""
    return value


def _free_username(subject: str) -> str:
    max_length = User._meta.get_field("username").max_length or 150
    candidate = subject[:max_length]
    if not User.objects.filter(username=candidate).exists():
        return candidate
    suffix = "-" + hashlib.sha256(subject.encode()).hexdigest()[:12]
    return subject[: max_length - len(suffix)] + suffix


def auth0_user_get_or_create(*, subject: str, email: str = "") -> User:
    """The user for an Auth0 subject, created with ``email`` on first sight.

    A user whose email is still empty gets it from a later token. Two first
    requests racing for one subject end with one user: the loser of the unique
    (provider, uid) constraint reads the winner's row.
    """
    social = UserSocialAuth.objects.select_related("user").filter(provider=AUTH0_PROVIDER, uid=subject).first()
    if social is None:
        try:
            with transaction.atomic():
                # No password: this person signs in through Auth0 only.
                user = User.objects.create_user(username=_free_username(subject), email=email, password=None)
                UserSocialAuth.objects.create(user=user, provider=AUTH0_PROVIDER, uid=subject, id_key=AUTH0_ID_KEY)
        except IntegrityError:
            social = UserSocialAuth.objects.select_related("user").get(provider=AUTH0_PROVIDER, uid=subject)
        else:
            return user
    user = social.user
    if email and not getattr(user, "email", ""):
        user.email = email
        user.save(update_fields=["email"])
    return user
