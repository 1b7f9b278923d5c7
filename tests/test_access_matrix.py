"""The access matrix: every route of the API, called by each kind of caller, answers with the status it should.

Callers: the job's owner (signed in with an Auth0 bearer token), another signed-in
person, an anonymous caller with the job's token, one with another job's token, one
with no token, and a staff member signed in to the admin (who gets what a stranger
gets: staff read jobs in the admin, not through the API).

The routes are read from the URL resolver, so a route (or a method on a route)
added under /api/v1/ without a row here fails ``test_it_has_a_row_for_every_route``.
Adding a row is one line in ``MATRIX``; ``prepare`` creates what a route needs
(an attempt to select, say), ``data`` builds the request body and ``check`` looks
past the status where it matters.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.urls import URLPattern, URLResolver, get_resolver
from PIL import Image
from rest_framework.test import APIClient

from billing.models import Purchase
from jobs.access import TOKEN_HEADER
from jobs.models import Job
from rekindle.auth.services import auth0_user_get_or_create
from rekindle.testing.auth0 import Auth0Tenant
from rekindle.testing.factories import AnimationAttemptFactory, JobFactory, RestoreAttemptFactory, token_of
from rekindle.testing.stripe_stub import StripeStub

API_PREFIX = "api/v1/"
ACTORS = ("owner", "other_user", "job_token", "other_token", "anonymous", "staff")


@dataclass
class World:
    """The people and jobs one cell of the matrix runs against."""

    owner: User
    other_user: User
    staff: User
    job: Job
    other_job: Job
    tokens: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)

    def client_for(self, actor: str) -> APIClient:
        client = APIClient()
        if actor in ("owner", "other_user"):
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.tokens[actor]}")
        elif actor == "job_token":
            client.credentials(**{_header(TOKEN_HEADER): token_of(self.job)})
        elif actor == "other_token":
            client.credentials(**{_header(TOKEN_HEADER): token_of(self.other_job)})
        elif actor == "staff":
            client.force_login(self.staff)
        return client


def _header(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


def _photo(world: World) -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 150, 100)).save(buffer, "JPEG", quality=90)
    buffer.seek(0)
    buffer.name = "photo.jpg"
    return {"email": "someone@example.com", "image": buffer}


def _check_list(world: World, actor: str, body: Any) -> None:
    ids = [item["id"] for item in body["results"]]
    assert (str(world.job.id) in ids) is (actor == "owner")
    assert str(world.other_job.id) not in ids


def _check_upload(world: World, actor: str, body: Any) -> None:
    job = Job.objects.get(pk=body["id"])
    # Whoever is signed in owns what they upload; anonymous uploads have no owner.
    expected = {"owner": world.owner, "other_user": world.other_user, "staff": world.staff}.get(actor)
    assert job.owner == expected


def _check_still_there(world: World, actor: str, body: Any) -> None:
    """After a refused DELETE or claim nothing changed."""
    world.job.refresh_from_db()
    assert world.job.owner == world.owner


def _check_deleted(world: World, actor: str, body: Any) -> None:
    assert not Job.objects.filter(pk=world.job.pk).exists()


def _check_events(world: World, actor: str, body: Any) -> None:
    # Nothing is in flight: the state once, then the end.
    assert body["job"] == [{"id": str(world.job.id), "selected_restore": None, "latest_animation": None}]
    assert body["end"] == [{"reason": "settled"}]


def _check_link_sent(world: World, actor: str, body: Any) -> None:
    # Whoever asks, the link goes only to the job's own address.
    assert [message.to for message in mail.outbox] == [[world.job.email]]


def _stream_body(response: Any) -> dict[str, list[Any]]:
    """The events of a finished Server-Sent Events answer, by name."""
    events: dict[str, list[Any]] = {}
    with warnings.catch_warnings():
        # The test client is synchronous: it reads the stream to its end, which Django warns about.
        warnings.simplefilter("ignore")
        text = b"".join(response).decode()
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            events.setdefault(fields["event"], []).append(json.loads(fields["data"]))
    return events


def _succeeded_restore(world: World) -> None:
    world.extra["restore"] = RestoreAttemptFactory.create(job=world.job, succeeded=True)


def _succeeded_animation(world: World) -> None:
    world.extra["animation"] = AnimationAttemptFactory.create(job=world.job, succeeded=True)


def _check_checkout(world: World, actor: str, body: Any) -> None:
    assert Purchase.objects.get(stripe_session_id=body["session_id"]).animation == world.extra["animation"]


def _check_no_purchase(world: World, actor: str, body: Any) -> None:
    assert not Purchase.objects.exists()


@dataclass(frozen=True)
class Row:
    expect: dict[str, int]
    data: Callable[[World], dict[str, Any]] | None = None
    format: str = "json"
    prepare: Callable[[World], None] | None = None
    kwargs: Callable[[World], dict[str, Any]] = lambda world: {"job_id": world.job.id}
    check: dict[int, Callable[[World, str, Any], None]] = field(default_factory=dict)
    transaction: bool = False  # the view opens a durable transaction of its own


def row(
    owner: int, other_user: int, job_token: int, other_token: int, anonymous: int, staff: int, **options: Any
) -> Row:
    statuses = (owner, other_user, job_token, other_token, anonymous, staff)
    return Row(expect=dict(zip(ACTORS, statuses, strict=True)), **options)


#                                          owner other job_tok other_tok anon staff
MATRIX: dict[tuple[str, str], Row] = {
    ("GET", "jobs"): row(200, 200, 401, 401, 401, 200, check={200: _check_list}),
    ("POST", "jobs/upload"): row(
        201, 201, 201, 201, 201, 201, data=_photo, format="multipart", check={201: _check_upload}, transaction=True
    ),
    ("GET", "jobs/<str:job_id>"): row(200, 404, 200, 404, 404, 404),
    ("DELETE", "jobs/<str:job_id>"): row(
        204, 404, 204, 404, 404, 404, check={204: _check_deleted, 404: _check_still_there}
    ),
    ("POST", "jobs/<str:job_id>/claim"): row(200, 404, 401, 401, 401, 404, check={404: _check_still_there}),
    # The stream's database reads run in other threads: they see committed rows only.
    ("GET", "jobs/<str:job_id>/events"): row(
        200, 404, 200, 404, 404, 404, check={200: _check_events}, transaction=True
    ),
    ("POST", "jobs/<str:job_id>/send-link"): row(202, 202, 202, 202, 202, 202, check={202: _check_link_sent}),
    ("POST", "jobs/<str:job_id>/restore"): row(202, 404, 202, 404, 404, 404, data=lambda w: {"parameters": {}}),
    ("POST", "jobs/<str:job_id>/select-restore"): row(
        200, 404, 200, 404, 404, 404, prepare=_succeeded_restore, data=lambda w: {"restore_id": w.extra["restore"].id}
    ),
    ("POST", "jobs/<str:job_id>/animate"): row(
        202, 404, 202, 404, 404, 404, prepare=_succeeded_restore, data=lambda w: {"restore_id": w.extra["restore"].id}
    ),
    # Against the Stripe stub (the world fixture sets billing up with it).
    ("POST", "jobs/<str:job_id>/animations/<str:animation_id>/checkout"): row(
        201,
        404,
        201,
        404,
        404,
        404,
        prepare=_succeeded_animation,
        kwargs=lambda w: {"job_id": w.job.id, "animation_id": w.extra["animation"].id},
        check={201: _check_checkout, 404: _check_no_purchase},
    ),
}


def _methods(callback: Any) -> list[str]:
    view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    assert view_class is not None, f"{callback!r} is not a class-based view; list its methods here"
    return [
        method.upper()
        for method in view_class.http_method_names
        if method not in ("head", "options") and hasattr(view_class, method)
    ]


def api_routes() -> set[tuple[str, str]]:
    """(method, route) for every route under /api/v1/, routes as written in the URLconf."""
    found: set[tuple[str, str]] = set()

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif route.startswith(API_PREFIX):
                found.update((method, route.removeprefix(API_PREFIX)) for method in _methods(pattern.callback))

    walk(get_resolver().url_patterns, "")
    return found


def _path(route: str, kwargs: dict[str, Any]) -> str:
    return "/" + API_PREFIX + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(kwargs[m.group(1)]), route)


def test_it_has_a_row_for_every_route() -> None:
    routes = api_routes()

    assert sorted(routes - set(MATRIX)) == [], "routes without a row in MATRIX"
    assert sorted(set(MATRIX) - routes) == [], "rows for routes that no longer exist"


@pytest.fixture
def world(auth0_tenant: Auth0Tenant, stripe_stub: StripeStub) -> World:
    owner = auth0_user_get_or_create(subject="auth0|owner", email="owner@example.com")
    other_user = auth0_user_get_or_create(subject="auth0|stranger", email="stranger@example.com")
    staff = User.objects.create_user(username="staff", email="staff@example.com", is_staff=True, is_superuser=True)
    return World(
        owner=owner,
        other_user=other_user,
        staff=staff,
        job=JobFactory.create(owner=owner, email=owner.email),
        other_job=JobFactory.create(owner=None),
        tokens={
            "owner": auth0_tenant.token(sub="auth0|owner"),
            "other_user": auth0_tenant.token(sub="auth0|stranger"),
        },
    )


def _cells() -> Iterator[Any]:
    for (method, route), spec in MATRIX.items():
        for actor in ACTORS:
            yield pytest.param(
                method,
                route,
                actor,
                id=f"{method} {route} as {actor}",
                marks=[pytest.mark.django_db(transaction=spec.transaction)],
            )


@pytest.mark.parametrize(("method", "route", "actor"), list(_cells()))
def test_it_answers_each_caller_as_the_matrix_says(world: World, method: str, route: str, actor: str) -> None:
    spec = MATRIX[(method, route)]
    if spec.prepare is not None:
        spec.prepare(world)
    client = world.client_for(actor)
    data = spec.data(world) if spec.data is not None else None

    path = _path(route, spec.kwargs(world))
    if data is None:
        response = client.generic(method, path)
    else:
        response = getattr(client, method.lower())(path, data, format=spec.format)

    expected = spec.expect[actor]
    assert response.status_code == expected, response.content[:500]
    if response.streaming:
        body: Any = _stream_body(response)
    else:
        body = response.json() if response.content else None
    if expected >= 400:
        assert set(body["error"]) >= {"code", "message"}
    if expected == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if expected in spec.check:
        spec.check[expected](world, actor, body)
    if 200 <= expected < 300:
        assert _staff_fields(body) == [], "which node ran an attempt, and its prompt, are for staff"


STAFF_FIELDS = {"node", "prompt_id", "error_details", "error_type", "error_message", "token_hash"}


def _staff_fields(body: Any, path: str = "") -> list[str]:
    """The paths of fields only staff may see, anywhere in an answer."""
    if isinstance(body, dict):
        found = [f"{path}.{key}" for key in body if key in STAFF_FIELDS]
        return found + [hit for key, value in body.items() for hit in _staff_fields(value, f"{path}.{key}")]
    if isinstance(body, list):
        return [hit for index, item in enumerate(body) for hit in _staff_fields(item, f"{path}[{index}]")]
    return []
