"""GET /api/v1/jobs: the signed-in caller's own jobs, newest first, a page at a time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from rekindle.testing.factories import JobFactory, UserFactory

URL = "/api/v1/jobs"

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def test_it_answers_401_to_an_anonymous_caller(api_client: APIClient) -> None:
    JobFactory.create()
    response = api_client.get(URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_it_lists_only_the_callers_jobs_newest_first_in_pages(api_client: APIClient, settings: Settings) -> None:
    settings.JOBS_PAGE_SIZE = 2
    me, someone = UserFactory.create(), UserFactory.create()
    now = timezone.now()
    mine = [JobFactory.create(owner=me, created_at=now - timedelta(minutes=minutes)) for minutes in (30, 10, 20)]
    JobFactory.create(owner=someone)
    JobFactory.create(owner=None)
    api_client.force_authenticate(me)

    first = api_client.get(URL).json()
    second = api_client.get(first["next"]).json()

    newest_first = [str(job.id) for job in sorted(mine, key=lambda job: job.created_at, reverse=True)]
    assert first["count"] == 3
    assert [item["id"] for item in first["results"]] + [item["id"] for item in second["results"]] == newest_first
    assert second["next"] is None
    assert "restore_attempts" not in first["results"][0]
    assert first["results"][0]["original_url"].startswith("http://testserver/media/processed/")
    assert api_client.get(URL, {"page_size": 3}).json()["next"] is None


def test_it_answers_404_past_the_last_page(api_client: APIClient) -> None:
    api_client.force_authenticate(UserFactory.create())
    response = api_client.get(URL, {"page": 5})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("page", "abc"),
        ("page", "0"),
        ("page", "-1"),
        ("page", "1e3"),
        ("page", "last"),
        ("page", "\u0661"),  # ARABIC-INDIC DIGIT ONE: int() reads it, but it is not a page number a URL carries
        ("page_size", "null"),
        ("page_size", "0"),
        ("page_size", "-5"),
        ("page_size", "2.5"),
    ],
)
def test_it_answers_400_naming_a_malformed_page_parameter(api_client: APIClient, name: str, value: str) -> None:
    api_client.force_authenticate(UserFactory.create())
    response = api_client.get(URL, {name: value})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["details"]["fields"]) == [name]


def test_it_caps_a_large_page_size_at_the_maximum(api_client: APIClient, settings: Settings) -> None:
    settings.JOBS_PAGE_SIZE = 1
    me = UserFactory.create()
    JobFactory.create_batch(3, owner=me)
    api_client.force_authenticate(me)

    response = api_client.get(URL, {"page_size": "100000000000000000000", "page": "1"})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 3
