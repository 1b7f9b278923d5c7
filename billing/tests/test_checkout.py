"""POST /api/v1/jobs/{id}/animations/{aid}/checkout against the Stripe stub: one open session, the right errors."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from animation.models import AnimationAttempt
from billing.models import Purchase, PurchaseStatus
from jobs.access import job_link_access_matches
from jobs.models import AttemptStatus
from rekindle.testing.factories import AnimationAttemptFactory, PurchaseFactory, token_of
from rekindle.testing.openapi import assert_documented, served_document
from rekindle.testing.pipeline import free_port
from rekindle.testing.stripe_stub import StripeStub

pytestmark = pytest.mark.django_db

PATH = "/api/v1/jobs/{job_id}/animations/{animation_id}/checkout"


def checkout(animation: AnimationAttempt, *, token: str | None = None) -> Any:
    job = animation.job
    return APIClient().post(
        PATH.format(job_id=job.id, animation_id=animation.id), headers={"X-Job-Token": token or token_of(job)}
    )


def test_it_makes_a_checkout_session_for_the_hd_result_of_a_succeeded_animation(stripe_stub: StripeStub) -> None:
    animation = AnimationAttemptFactory.create(succeeded=True)
    job = animation.job

    response = checkout(animation)

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"checkout_url", "session_id", "expires_at"}
    assert body["checkout_url"].startswith("https://checkout.stripe.com/")
    [sent] = stripe_stub.params_of("POST", "/v1/checkout/sessions")
    assert sent["mode"] == "payment"
    assert sent["line_items"] == [
        {
            "price_data": {
                "currency": "usd",
                "unit_amount": "900",
                "product_data": {"name": "HD video", "description": "The HD version of your animated photo."},
            },
            "quantity": "1",
        }
    ]
    assert sent["customer_email"] == job.email
    assert sent["client_reference_id"] == str(animation.id)
    ids = {"rekindle_job_id": str(job.id), "rekindle_animation_id": str(animation.id)}
    assert sent["metadata"] == ids
    assert sent["payment_intent_data"] == {"metadata": ids}
    # Back to the job's page (JOB_LINK_URL) with a signed access that works in the token's place.
    for name, outcome in (("success_url", "success"), ("cancel_url", "canceled")):
        url = sent[name]
        query = parse_qs(urlsplit(url).query)
        assert url.startswith(f"http://127.0.0.1:8000/j/{job.id}?access=")
        assert job_link_access_matches(job, query["access"][0])
        assert query["checkout"] == [outcome]
    assert sent["success_url"].endswith("&session_id={CHECKOUT_SESSION_ID}")

    purchase = Purchase.objects.get()
    assert purchase.stripe_session_id == body["session_id"]
    assert (purchase.status, purchase.amount, purchase.currency) == (PurchaseStatus.PENDING, 900, "usd")
    assert (purchase.job, purchase.animation, purchase.email) == (job, animation, job.email)
    assert purchase.expires_at is not None
    assert body["expires_at"] == purchase.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    animation.refresh_from_db()
    assert not animation.hd_paid


def test_it_charges_the_price_made_in_stripe_when_one_is_set(stripe_stub: StripeStub, settings: Any) -> None:
    settings.STRIPE_HD_PRICE_ID = "price_hd_test"
    animation = AnimationAttemptFactory.create(succeeded=True)

    assert checkout(animation).status_code == 201

    [sent] = stripe_stub.params_of("POST", "/v1/checkout/sessions")
    assert sent["line_items"] == [{"price": "price_hd_test", "quantity": "1"}]
    purchase = Purchase.objects.get()
    assert (purchase.amount, purchase.currency) == (1500, "eur")


def test_it_gives_the_same_session_to_a_second_click(stripe_stub: StripeStub) -> None:
    animation = AnimationAttemptFactory.create(succeeded=True)

    first = checkout(animation)
    second = checkout(animation)

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert len(stripe_stub.params_of("POST", "/v1/checkout/sessions")) == 1
    assert Purchase.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_makes_one_session_for_two_clicks_at_once(stripe_stub: StripeStub) -> None:
    animation = AnimationAttemptFactory.create(succeeded=True)
    stripe_stub.create_delay = 0.3
    answers: list[Any] = []

    def click() -> None:
        try:
            answers.append(checkout(animation))
        finally:
            connection.close()

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].json()["session_id"] == answers[1].json()["session_id"]
    assert len(stripe_stub.params_of("POST", "/v1/checkout/sessions")) == 1
    assert Purchase.objects.count() == 1


def test_it_makes_a_new_session_once_the_last_one_expired(stripe_stub: StripeStub) -> None:
    animation = AnimationAttemptFactory.create(succeeded=True)
    old = PurchaseFactory.create(animation=animation, expires_at=timezone.now() - timedelta(minutes=1))

    response = checkout(animation)

    assert response.status_code == 201
    assert response.json()["session_id"] != old.stripe_session_id
    old.refresh_from_db()
    assert old.status == PurchaseStatus.EXPIRED
    assert Purchase.objects.filter(status=PurchaseStatus.PENDING).count() == 1


def test_it_expires_a_session_close_to_its_end_before_making_another(stripe_stub: StripeStub) -> None:
    animation = AnimationAttemptFactory.create(succeeded=True)
    first = checkout(animation).json()
    Purchase.objects.filter(stripe_session_id=first["session_id"]).update(
        expires_at=timezone.now() + timedelta(minutes=2)
    )

    second = checkout(animation).json()

    assert second["session_id"] != first["session_id"]
    assert stripe_stub.calls("POST", "/v1/checkout/sessions/") == [
        f"/v1/checkout/sessions/{first['session_id']}/expire"
    ]
    assert stripe_stub.get(first["session_id"])["status"] == "expired"
    assert Purchase.objects.get(stripe_session_id=first["session_id"]).status == PurchaseStatus.EXPIRED


def test_it_finds_a_session_close_to_its_end_paid_and_makes_no_other(
    stripe_stub: StripeStub, django_capture_on_commit_callbacks: Any
) -> None:
    animation = AnimationAttemptFactory.create(succeeded=True)
    first = checkout(animation).json()
    Purchase.objects.filter(stripe_session_id=first["session_id"]).update(
        expires_at=timezone.now() + timedelta(minutes=2)
    )
    stripe_stub.pay(first["session_id"])  # paid just now; its webhook is still on its way

    with django_capture_on_commit_callbacks(execute=True):
        response = checkout(animation)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_paid"
    assert stripe_stub.params_of("POST", "/v1/checkout/sessions") != []
    assert len(stripe_stub.params_of("POST", "/v1/checkout/sessions")) == 1  # no second session
    assert Purchase.objects.get().status == PurchaseStatus.PAID
    animation.refresh_from_db()
    assert animation.hd_paid


def test_it_refuses_an_hd_result_paid_for_already(stripe_stub: StripeStub) -> None:
    purchase = PurchaseFactory.create(paid=True)
    assert purchase.animation is not None

    response = checkout(purchase.animation)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_paid"
    assert stripe_stub.requests == []


def test_it_waits_for_a_payment_on_its_way(stripe_stub: StripeStub) -> None:
    purchase = PurchaseFactory.create(session_complete=True)  # completed by a bank debit that has not cleared
    assert purchase.animation is not None

    response = checkout(purchase.animation)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "payment_processing"
    assert stripe_stub.requests == []


def test_it_refuses_an_animation_that_has_not_succeeded(stripe_stub: StripeStub) -> None:
    for status in (AttemptStatus.QUEUED, AttemptStatus.RUNNING, AttemptStatus.FAILED):
        animation = AnimationAttemptFactory.create(status=status)
        response = checkout(animation)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "animation_not_ready"
    assert stripe_stub.requests == []
    assert not Purchase.objects.exists()


def test_it_answers_404_for_an_animation_that_is_not_of_this_job(stripe_stub: StripeStub) -> None:
    mine = AnimationAttemptFactory.create(succeeded=True)
    theirs = AnimationAttemptFactory.create(succeeded=True)
    client = APIClient()
    headers = {"X-Job-Token": token_of(mine.job)}

    for animation_id in (theirs.id, "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        response = client.post(PATH.format(job_id=mine.job.id, animation_id=animation_id), headers=headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    # Another job's animation through that job's own id, with this job's token: not yours.
    response = client.post(PATH.format(job_id=theirs.job.id, animation_id=theirs.id), headers=headers)
    assert response.status_code == 404
    assert stripe_stub.requests == []
    assert not Purchase.objects.exists()


def test_it_answers_503_billing_disabled_without_keys(settings: Any) -> None:
    settings.STRIPE_SECRET_KEY = ""
    animation = AnimationAttemptFactory.create(succeeded=True)

    response = checkout(animation)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "billing_disabled"
    assert not Purchase.objects.exists()


@pytest.mark.parametrize("outage", ["503", "refused"])
def test_it_answers_503_with_retry_after_when_stripe_is_down_and_writes_nothing(
    stripe_stub: StripeStub, settings: Any, outage: str
) -> None:
    if outage == "503":
        stripe_stub.down = True
    else:
        settings.STRIPE_API_BASE = f"http://127.0.0.1:{free_port()}"
    animation = AnimationAttemptFactory.create(succeeded=True)

    response = checkout(animation)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "payment_provider_unavailable"
    assert int(response["Retry-After"]) >= 1
    assert not Purchase.objects.exists()
    animation.refresh_from_db()
    assert not animation.hd_paid


def test_it_documents_every_answer_and_says_payments_may_be_off(stripe_stub: StripeStub, settings: Any) -> None:
    client = APIClient()
    document = served_document(client)
    template = "/api/v1/jobs/{job_id}/animations/{animation_id}/checkout"
    operation = document["paths"][template]["post"]
    assert "`billing_disabled`" in operation["responses"]["503"]["description"]

    animation = AnimationAttemptFactory.create(succeeded=True)
    assert_documented(checkout(animation), document, template, "post")  # 201
    assert_documented(checkout(animation, token="wrong"), document, template, "post")  # 404
    AnimationAttempt.objects.filter(pk=animation.pk).update(hd_paid=True)
    assert_documented(checkout(animation), document, template, "post")  # 409
    settings.STRIPE_SECRET_KEY = ""
    assert_documented(checkout(animation), document, template, "post")  # 503
