"""The OpenAPI document lists the errors any operation can give: bad bearer tokens, CSRF, bad bodies."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from rekindle.testing.factories import JobFactory, UserFactory
from rekindle.testing.openapi import assert_documented, served_document

pytestmark = [pytest.mark.django_db]

JOB = "0f8fad5b-d9cb-469f-a165-70867728950e"


def test_it_documents_the_401_of_a_bad_bearer_token_on_every_operation(api_client: APIClient) -> None:
    document = served_document(api_client)
    bearer = {"Authorization": "Bearer not.a.token"}
    calls = [
        ("get", "/api/v1/jobs", "/api/v1/jobs"),
        ("get", "/api/v1/jobs/{job_id}", f"/api/v1/jobs/{JOB}"),
        ("delete", "/api/v1/jobs/{job_id}", f"/api/v1/jobs/{JOB}"),
        ("post", "/api/v1/jobs/upload", "/api/v1/jobs/upload"),
        ("post", "/api/v1/jobs/{job_id}/restore", f"/api/v1/jobs/{JOB}/restore"),
        ("post", "/api/v1/jobs/{job_id}/select-restore", f"/api/v1/jobs/{JOB}/select-restore"),
        ("post", "/api/v1/jobs/{job_id}/animate", f"/api/v1/jobs/{JOB}/animate"),
        ("post", "/api/v1/jobs/{job_id}/claim", f"/api/v1/jobs/{JOB}/claim"),
        ("get", "/api/v1/jobs/{job_id}/events", f"/api/v1/jobs/{JOB}/events"),
        ("post", "/api/v1/jobs/{job_id}/send-link", f"/api/v1/jobs/{JOB}/send-link"),
        (
            "post",
            "/api/v1/jobs/{job_id}/animations/{animation_id}/checkout",
            f"/api/v1/jobs/{JOB}/animations/{JOB}/checkout",
        ),
    ]
    assert {(method, path) for method, path, _ in calls} == {
        (method, path) for path, item in document["paths"].items() for method in item
    }
    for method, template, url in calls:
        response = getattr(api_client, method)(url, headers=bearer)
        assert response.status_code == 401, (method, url)
        assert_documented(response, document, template, method)


def test_it_documents_the_403_of_a_session_without_its_csrf_token(api_client: APIClient) -> None:
    document = served_document(api_client)
    user = UserFactory.create()
    job = JobFactory.create(owner=user)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)

    for method, template, url in [
        ("post", "/api/v1/jobs/{job_id}/restore", f"/api/v1/jobs/{job.id}/restore"),
        ("delete", "/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job.id}"),
    ]:
        response = getattr(client, method)(url, {}, format="json")
        assert response.status_code == 403
        assert_documented(response, document, template, method)


def test_it_documents_the_answers_to_a_bad_body(api_client: APIClient) -> None:
    document = served_document(api_client)
    user = UserFactory.create()
    job = JobFactory.create(owner=user)
    api_client.force_authenticate(user)
    claim = f"/api/v1/jobs/{job.id}/claim"
    restore = f"/api/v1/jobs/{job.id}/restore"

    cases = [
        ("/api/v1/jobs/{job_id}/claim", api_client.post(claim, {"token": []}, format="json"), 400),
        ("/api/v1/jobs/{job_id}/claim", api_client.post(claim, b"{", content_type="application/json"), 400),
        ("/api/v1/jobs/{job_id}/claim", api_client.post(claim, b"token=x", content_type="text/plain"), 415),
        ("/api/v1/jobs/{job_id}/restore", api_client.post(restore, b"x", content_type="text/plain"), 415),
        (
            "/api/v1/jobs/{job_id}/restore",
            api_client.post(restore, b'{"a": "' + b"a" * (3 * 1024 * 1024) + b'"}', content_type="application/json"),
            413,
        ),
    ]
    for template, response, status in cases:
        assert response.status_code == status, response.content[:300]
        assert_documented(response, document, template, "post")
