"""The whole money path on PostgreSQL: pay through Checkout, get the HD video, refund it away, replays change nothing.

Only Stripe's HTTP API is a stand-in (the stub on loopback); the API, dj-stripe's webhook
endpoint, the HD actor (stub broker, local CPU engine), dj-stripe's sync, storage and
email are the real code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from django.core import mail
from django.test import Client
from djstripe.models import Session
from rest_framework.test import APIClient

from animation.models import HDAttempt
from animation.tasks import generate_hd_result
from billing.models import Purchase, PurchaseStatus
from jobs.models import AttemptStatus, Job
from rekindle import storage
from rekindle.testing.factories import (
    AnimationAttemptFactory,
    JobFactory,
    RestoreAttemptFactory,
    UserFactory,
    jpeg_bytes,
    token_of,
)
from rekindle.testing.stripe_stub import StripeStub, WebhookSender

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker(stub_worker_factory: Callable[..., dramatiq.Worker]) -> dramatiq.Worker:
    return stub_worker_factory(worker_timeout=50, worker_threads=1)


def drain(worker: dramatiq.Worker) -> None:
    broker: Any = worker.broker
    for queue in (generate_hd_result.queue_name, "billing"):
        broker.join(queue, fail_fast=True)
    worker.join()


def _job_with_a_preview() -> tuple[Job, Any]:
    job = JobFactory.create()
    restore = RestoreAttemptFactory.create(job=job, succeeded=True)
    storage.put(restore.result_key, jpeg_bytes(320, 240), content_type="image/jpeg")
    animation = AnimationAttemptFactory.create(job=job, restore=restore, succeeded=True, parameters={"seed": 5})
    return job, animation


def test_a_person_pays_gets_the_hd_video_and_a_refund_takes_it_away(
    stripe_stub: StripeStub, stripe_webhooks: WebhookSender, worker: dramatiq.Worker
) -> None:
    job, animation = _job_with_a_preview()
    api = APIClient()
    headers = {"X-Job-Token": token_of(job)}

    def hd_url() -> str | None:
        url: str | None = api.get(f"/api/v1/jobs/{job.id}", headers=headers).json()["animation_attempts"][0][
            "hd_result_url"
        ]
        return url

    checkout = api.post(f"/api/v1/jobs/{job.id}/animations/{animation.id}/checkout", headers=headers)
    assert checkout.status_code == 201
    session_id = checkout.json()["session_id"]

    events = [stripe_webhooks.deliver("checkout.session.completed", stripe_stub.pay(session_id))]
    drain(worker)

    hd = HDAttempt.objects.get(animation=animation)
    assert hd.status == AttemptStatus.SUCCEEDED, hd.error_message
    assert storage.read_bytes(hd.result_key)[4:8] == b"ftyp"
    assert hd_url() is not None
    [ready] = [m for m in mail.outbox if m.subject == "Your HD video is ready"]
    assert "You paid 9.00 USD for it." in ready.body
    purchase = Purchase.objects.get(stripe_session_id=session_id)
    assert purchase.status == PurchaseStatus.PAID
    assert purchase.djstripe_session == Session.objects.get(id=session_id)  # dj-stripe's sync ran in the worker

    staff = Client()
    staff.force_login(UserFactory.create(is_staff=True, is_superuser=True))
    staff.post("/admin/billing/purchase/", {"action": "refund_purchases", "_selected_action": [purchase.pk]})
    events.append(stripe_webhooks.deliver("charge.refunded", stripe_stub.charge_of(session_id)))
    drain(worker)

    assert hd_url() is None
    assert Purchase.objects.get(pk=purchase.pk).status == PurchaseStatus.REFUNDED
    assert [m.subject for m in mail.outbox if "refunded" in m.subject] == ["Your payment for the HD video was refunded"]

    emails, state = len(mail.outbox), Purchase.objects.values().get(pk=purchase.pk)
    for event in events:
        assert stripe_webhooks.send(event).status_code == 200
    drain(worker)
    assert (len(mail.outbox), Purchase.objects.values().get(pk=purchase.pk)) == (emails, state)
    assert HDAttempt.objects.get(pk=hd.pk).tries == 1
    assert hd_url() is None
    assert stripe_stub.unknown_requests == []
