"""send_ready_email against a real SMTP server on loopback: a hung one costs a try, not a worker; sent once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
from pytest_django.fixtures import Settings

from jobs.notifications import job_ready_email_queue
from jobs.tasks import send_ready_email
from rekindle.testing.factories import RestoreAttemptFactory
from rekindle.testing.smtp import SmtpServer, SmtpSink
from restoration.models import RestoreAttempt

pytestmark = pytest.mark.django_db(transaction=True)

# Generous: a wait for something to happen, never a measure of how fast it happens.
WAIT_SECONDS = 60


@pytest.fixture
def smtp(settings: Settings) -> Iterator[SmtpSink]:
    with SmtpServer() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = sink.host
        settings.EMAIL_PORT = sink.port
        settings.EMAIL_USE_TLS = False
        settings.EMAIL_TIMEOUT = 1
        yield sink


@pytest.fixture
def worker(stub_worker_factory: Callable[..., dramatiq.Worker]) -> dramatiq.Worker:
    # One thread: a send that hung it would stop every later message.
    return stub_worker_factory(worker_timeout=50, worker_threads=1)


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting")
        time.sleep(0.05)


def run_all(broker: Any, worker: dramatiq.Worker) -> None:
    broker.join("default", fail_fast=False)
    worker.join()


def test_it_gives_up_on_a_hung_server_after_the_timeout_and_retries(
    smtp: SmtpSink, worker: dramatiq.Worker, stub_broker: Any
) -> None:
    smtp.hang = True
    attempt = RestoreAttemptFactory.create(succeeded=True)

    send_ready_email.send_with_options(args=("restore", str(attempt.pk), None), min_backoff=50, max_backoff=100)

    # The single worker thread came back from the silent server and tried again: it was not held.
    wait_until(lambda: smtp.seen()[0] >= 2)
    smtp.hang = False
    wait_until(lambda: smtp.seen()[1] >= 1)
    run_all(stub_broker, worker)

    assert smtp.seen()[1] == 1
    assert b"Your restored photo is ready" in smtp.messages[0]
    assert RestoreAttempt.objects.get(pk=attempt.pk).notified_at is not None


def test_it_sends_once_when_the_message_is_delivered_again(
    smtp: SmtpSink, worker: dramatiq.Worker, stub_broker: Any
) -> None:
    attempt = RestoreAttemptFactory.create(succeeded=True)

    job_ready_email_queue(attempt=attempt)
    run_all(stub_broker, worker)
    # A redelivery of the same message (a retry after the send went through, a worker lost after SMTP took it).
    send_ready_email.send("restore", str(attempt.pk), None)
    run_all(stub_broker, worker)

    assert smtp.seen()[1] == 1


def test_it_resends_for_staff_once_per_request(smtp: SmtpSink, worker: dramatiq.Worker, stub_broker: Any) -> None:
    attempt = RestoreAttemptFactory.create(succeeded=True)
    job_ready_email_queue(attempt=attempt)
    run_all(stub_broker, worker)

    job_ready_email_queue(attempt=attempt, force=True)
    [message] = [dramatiq.Message.decode(data) for data in list(stub_broker.queues["default"].queue)]
    run_all(stub_broker, worker)
    stub_broker.enqueue(message.copy())  # the resend's message delivered a second time
    run_all(stub_broker, worker)

    assert smtp.seen()[1] == 2
