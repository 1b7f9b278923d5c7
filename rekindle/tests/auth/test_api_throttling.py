"""The API's expensive endpoints are wired to their throttle scopes: upload, restore and animate."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image
from rest_framework.test import APIClient

from rekindle.testing.auth0 import Auth0Tenant, bearer
from rekindle.testing.factories import JobFactory, RestoreAttemptFactory, token_of


def _one_per_hour(settings: Any, scope: str, kind: str) -> None:
    settings.THROTTLE_RATES = {
        **dict.fromkeys(settings.THROTTLE_RATES),
        f"{scope}_{kind}": "1/hour",
    }


def _photo() -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(buffer, "JPEG")
    buffer.seek(0)
    buffer.name = "photo.jpg"
    return buffer


@pytest.mark.django_db(transaction=True)
def test_it_throttles_uploads_per_address(settings: Any) -> None:
    _one_per_hour(settings, "upload", "ip")
    client = APIClient()

    first = client.post("/api/v1/jobs/upload", {"email": "a@example.com", "image": _photo()}, format="multipart")
    second = client.post("/api/v1/jobs/upload", {"email": "a@example.com", "image": _photo()}, format="multipart")

    assert first.status_code == 201, first.content
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "throttled"
    assert int(second.headers["Retry-After"]) > 0


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "scope"), [("restore", "restore"), ("animate", "animate")])
def test_it_throttles_restore_and_animate_per_user(
    settings: Any, auth0_tenant: Auth0Tenant, route: str, scope: str
) -> None:
    _one_per_hour(settings, scope, "user")
    job = JobFactory.create()
    restore = RestoreAttemptFactory.create(job=job, succeeded=True)
    client = APIClient()
    # The job's token grants access; the signed-in user is who is counted.
    headers = {**bearer(auth0_tenant.token(sub="auth0|busy")), "X-Job-Token": token_of(job)}
    body = {"parameters": {}, "restore_id": str(restore.id)} if route == "animate" else {"parameters": {}}

    first = client.post(f"/api/v1/jobs/{job.id}/{route}", body, format="json", headers=headers)
    second = client.post(f"/api/v1/jobs/{job.id}/{route}", body, format="json", headers=headers)
    anonymous = client.post(
        f"/api/v1/jobs/{job.id}/{route}", body, format="json", headers={"X-Job-Token": token_of(job)}
    )

    assert first.status_code == 202, first.content
    assert second.status_code == 429
    assert anonymous.status_code != 429
