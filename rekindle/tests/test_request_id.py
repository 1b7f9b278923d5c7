"""The request id: echoed when sane, made when absent, replaced when hostile; bound for sync and async views."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
import structlog
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from rest_framework.test import APIClient

from rekindle.log_context import RequestIdMessages
from rekindle.request_id import MAX_LENGTH, request_id_middleware

MADE = re.compile(r"^[0-9a-f]{32}$")
MISSING_JOB = "/api/v1/jobs/00000000-0000-0000-0000-000000000000"


@pytest.mark.django_db
def test_it_echoes_a_sane_request_id(api_client: APIClient) -> None:
    response = api_client.get(MISSING_JOB, HTTP_X_REQUEST_ID="Root=1-67891233-abcdef012345678912345678")
    assert response.status_code == 404
    assert response["X-Request-ID"] == "Root=1-67891233-abcdef012345678912345678"


@pytest.mark.django_db
def test_it_makes_one_when_there_is_none_and_a_new_one_per_request(api_client: APIClient) -> None:
    first = api_client.get(MISSING_JOB)["X-Request-ID"]
    second = api_client.get(MISSING_JOB)["X-Request-ID"]
    assert MADE.match(first)
    assert MADE.match(second)
    assert first != second


@pytest.mark.django_db
@pytest.mark.parametrize(
    "hostile",
    [
        "x" * (MAX_LENGTH + 1),
        "abc def",
        'abc"}{"level":"critical"',
        "abc\\u000a",
        "<script>",
        "id;rm -rf",
        "",
    ],
)
def test_it_replaces_a_hostile_one(api_client: APIClient, hostile: str) -> None:
    answered = api_client.get(MISSING_JOB, HTTP_X_REQUEST_ID=hostile)["X-Request-ID"]
    assert MADE.match(answered)


def test_it_binds_the_id_for_an_async_view_and_its_answer() -> None:
    seen: dict[str, Any] = {}

    async def view(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(0)
        seen.update(structlog.contextvars.get_contextvars())
        return HttpResponse("ok")

    middleware = request_id_middleware(view)
    request = RequestFactory().get("/api/v1/jobs/1/events", HTTP_X_REQUEST_ID="sse-1")
    response = asyncio.run(middleware(request))
    assert response["X-Request-ID"] == "sse-1"
    assert seen["request_id"] == "sse-1"


def test_a_request_starts_with_no_fields_of_the_one_before() -> None:
    seen: dict[str, Any] = {}

    def view(request: HttpRequest) -> HttpResponse:
        seen.clear()
        seen.update(structlog.contextvars.get_contextvars())
        structlog.contextvars.bind_contextvars(job_id="from-this-request")
        return HttpResponse("ok")

    middleware = request_id_middleware(view)
    middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="one"))
    middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="two"))
    assert seen == {"request_id": "two"}
    structlog.contextvars.clear_contextvars()


def test_messages_sent_during_a_request_carry_its_id_and_bind_it_in_the_worker(stub_broker: Any) -> None:
    import dramatiq

    assert any(isinstance(m, RequestIdMessages) for m in stub_broker.middleware)
    message: dramatiq.Message[Any] = dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    with structlog.contextvars.bound_contextvars(request_id="req-42"):
        RequestIdMessages().before_enqueue(stub_broker, message, None)
    assert message.options["request_id"] == "req-42"
    outside: dramatiq.Message[Any] = dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    RequestIdMessages().before_enqueue(stub_broker, outside, None)
    assert "request_id" not in outside.options

    middleware = RequestIdMessages()
    proxy = dramatiq.MessageProxy(message)
    middleware.before_process_message(stub_broker, proxy)
    assert structlog.contextvars.get_contextvars() == {
        "request_id": "req-42",
        "message_id": message.message_id,
        "actor": "a",
    }
    middleware.after_process_message(stub_broker, proxy)
    assert structlog.contextvars.get_contextvars() == {}
