"""Real responses of the jobs endpoints match what /api/schema/ documents for them (status and body)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from rekindle.testing.factories import AnimationAttemptFactory, JobFactory, RestoreAttemptFactory, UserFactory
from rekindle.testing.openapi import assert_documented, served_document

pytestmark = [pytest.mark.django_db]

DETAIL = "/api/v1/jobs/{job_id}"


def test_it_documents_the_empty_hd_status_of_an_animation_never_paid_for(api_client: APIClient) -> None:
    document = served_document(api_client)
    job = JobFactory.create(token="t")
    AnimationAttemptFactory.create(job=job, succeeded=True)
    AnimationAttemptFactory.create(job=job, succeeded=True, hd_ready=True)
    RestoreAttemptFactory.create(job=job, failed=True)

    response = api_client.get(f"/api/v1/jobs/{job.id}", headers={"X-Job-Token": "t"})

    assert [a["hd_status"] for a in response.json()["animation_attempts"]] == ["", "succeeded"]
    assert_documented(response, document, DETAIL, "get")


def test_it_documents_the_errors_of_reading_a_job(api_client: APIClient) -> None:
    document = served_document(api_client)
    job = JobFactory.create(token="t")

    assert_documented(api_client.get(f"/api/v1/jobs/{job.id}"), document, DETAIL, "get")
    assert_documented(api_client.get("/api/v1/jobs/not-a-uuid"), document, DETAIL, "get")


def test_it_documents_the_answers_of_the_job_list(api_client: APIClient) -> None:
    document = served_document(api_client)
    me = UserFactory.create()
    JobFactory.create(owner=me)

    assert_documented(api_client.get("/api/v1/jobs"), document, "/api/v1/jobs", "get")
    api_client.force_authenticate(me)
    for query in ({}, {"page_size": "0"}, {"page": "x"}, {"page": "9"}):
        assert_documented(api_client.get("/api/v1/jobs", query), document, "/api/v1/jobs", "get")


def test_it_documents_the_page_parameters_as_whole_numbers_from_one(api_client: APIClient) -> None:
    parameters = served_document(api_client)["paths"]["/api/v1/jobs"]["get"]["parameters"]
    schemas = {parameter["name"]: parameter["schema"] for parameter in parameters}
    assert schemas == {
        "page": {"type": "integer", "minimum": 1},
        "page_size": {"type": "integer", "minimum": 1},
    }
