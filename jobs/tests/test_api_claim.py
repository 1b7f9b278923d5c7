"""POST /api/v1/jobs/{id}/claim: a signed-in person presents an anonymous job's token once and owns the job."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import Job
from rekindle.auth.services import auth0_user_get_or_create
from rekindle.testing.auth0 import Auth0Tenant, bearer
from rekindle.testing.factories import JobFactory, UserFactory, token_of

pytestmark = pytest.mark.django_db


def _claim(client: APIClient, job_id: object, token: str | None, person: str | None, tenant: Auth0Tenant) -> Any:
    headers = bearer(tenant.token(sub=person)) if person else {}
    return client.post(
        f"/api/v1/jobs/{job_id}/claim", {"token": token} if token else {}, format="json", headers=headers
    )


def test_it_gives_an_anonymous_job_to_the_person_with_its_token(auth0_tenant: Auth0Tenant) -> None:
    client = APIClient()
    job = JobFactory.create(owner=None)

    response = _claim(client, job.id, token_of(job), "auth0|alice", auth0_tenant)

    assert response.status_code == 200, response.content
    assert response.json()["id"] == str(job.id)
    job.refresh_from_db()
    alice = auth0_user_get_or_create(subject="auth0|alice")
    assert job.owner == alice
    # From now on the job is in Alice's list and opens without the token.
    headers = bearer(auth0_tenant.token(sub="auth0|alice"))
    assert [item["id"] for item in client.get("/api/v1/jobs", headers=headers).json()["results"]] == [str(job.id)]
    assert client.get(f"/api/v1/jobs/{job.id}", headers=headers).status_code == 200


def test_it_takes_the_token_from_the_header_too(auth0_tenant: Auth0Tenant) -> None:
    job = JobFactory.create(owner=None)
    client = APIClient()

    response = client.post(
        f"/api/v1/jobs/{job.id}/claim", headers={**bearer(auth0_tenant.token()), "X-Job-Token": token_of(job)}
    )

    assert response.status_code == 200
    assert Job.objects.get(pk=job.pk).owner is not None


def test_it_asks_anonymous_callers_to_sign_in(auth0_tenant: Auth0Tenant) -> None:
    job = JobFactory.create(owner=None)

    response = _claim(APIClient(), job.id, token_of(job), None, auth0_tenant)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert Job.objects.get(pk=job.pk).owner is None


@pytest.mark.parametrize("token", [None, "wrong-token", "other"])
def test_it_answers_404_without_the_jobs_token(auth0_tenant: Auth0Tenant, token: str | None) -> None:
    job = JobFactory.create(owner=None)
    if token == "other":
        token = token_of(JobFactory.create(owner=None))

    response = _claim(APIClient(), job.id, token, "auth0|mallory", auth0_tenant)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert Job.objects.get(pk=job.pk).owner is None


def test_it_answers_404_for_unknown_and_malformed_ids(auth0_tenant: Auth0Tenant) -> None:
    client = APIClient()
    assert _claim(client, uuid.uuid4(), "token", "auth0|alice", auth0_tenant).status_code == 404
    assert _claim(client, "not-a-uuid", "token", "auth0|alice", auth0_tenant).status_code == 404


def test_it_refuses_a_job_that_belongs_to_someone_else(auth0_tenant: Auth0Tenant) -> None:
    bob = UserFactory.create()
    job = JobFactory.create(owner=bob)

    response = _claim(APIClient(), job.id, token_of(job), "auth0|alice", auth0_tenant)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_claimed"
    assert Job.objects.get(pk=job.pk).owner == bob


def test_it_lets_the_owner_claim_again(auth0_tenant: Auth0Tenant) -> None:
    job = JobFactory.create(owner=None)
    client = APIClient()
    assert _claim(client, job.id, token_of(job), "auth0|alice", auth0_tenant).status_code == 200

    assert _claim(client, job.id, None, "auth0|alice", auth0_tenant).status_code == 200
    assert _claim(client, job.id, token_of(job), "auth0|alice", auth0_tenant).status_code == 200


def test_it_keeps_the_token_working_after_the_claim(auth0_tenant: Auth0Tenant) -> None:
    job = JobFactory.create(owner=None)
    client = APIClient()
    assert _claim(client, job.id, token_of(job), "auth0|alice", auth0_tenant).status_code == 200

    # The links in the job's emails carry the token.
    assert client.get(f"/api/v1/jobs/{job.id}", headers={"X-Job-Token": token_of(job)}).status_code == 200
