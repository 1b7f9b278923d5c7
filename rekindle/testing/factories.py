"""factory_boy factories for the test suite: users, jobs and their attempts.

``JobFactory(token="...")`` sets the job's access token (only its hash is stored) and
leaves it readable as ``job.token`` (typed: ``token_of(job)``); by default each job
gets its own token. ``JobFactory.create()`` is typed as returning a ``Job``.
``JobFactory(stored_original=True)`` also writes a small real JPEG at the job's
``original_key`` in the current default storage (local or the S3 bucket fixture) and
records its size and hash, for tests that process the original.

Attempt factories have traits for the states a pipeline leaves behind, e.g.
``RestoreAttemptFactory(succeeded=True)`` (result key set, timings filled) and
``AnimationAttemptFactory(succeeded=True, hd_ready=True)`` (paid, with a succeeded
``HDAttempt``); ``HDAttemptFactory(animation=..., failed=True)`` makes an HD run in
any other state. ``PurchaseFactory(animation=...)`` is a pending Stripe purchase of its HD
result (``paid=True``: paid, and the animation's ``hd_paid`` set to match).
"""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import User
from django.utils import timezone
from factory.declarations import (
    LazyAttribute,
    LazyFunction,
    PostGeneration,
    RelatedFactory,
    SelfAttribute,
    Sequence,
    SubFactory,
    Trait,
)
from factory.django import DjangoModelFactory, Password
from PIL import Image

from animation.models import AnimationAttempt, HDAttempt
from billing.models import Purchase, PurchaseKind, PurchaseStatus
from jobs.access import hash_token
from jobs.models import AttemptStatus, Job
from rekindle import storage
from restoration.models import RestoreAttempt


def jpeg_bytes(width: int = 64, height: int = 48, color: tuple[int, int, int] = (180, 120, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def timestamp_id() -> str:
    """A fresh ``{timestamp_id}`` of the storage key layout, for outputs a test makes up."""
    moment = timezone.now()
    return f"{moment:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:4]}"


def token_of(job: Job) -> str:
    """The access token a ``JobFactory`` job was made with."""
    token: str = getattr(job, "token")  # noqa: B009  (set by JobFactory, unknown to the model's type)
    return token


def _store_original(job: Job, create: bool, extracted: Any) -> None:
    if not extracted:
        return
    data = jpeg_bytes(job.original_width, job.original_height)
    storage.put(job.original_key, data, content_type="image/jpeg")
    job.original_bytes = len(data)
    job.original_sha256 = hashlib.sha256(data).hexdigest()
    if create:
        Job.objects.filter(pk=job.pk).update(original_bytes=job.original_bytes, original_sha256=job.original_sha256)


class UserFactory(DjangoModelFactory[User]):
    if TYPE_CHECKING:
        # Calling a factory builds and saves a User; this tells the type checker so.
        def __new__(cls, *args: Any, **kwargs: Any) -> User: ...  # type: ignore[misc]

    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = Sequence(lambda n: f"user{n}")
    email = LazyAttribute(lambda o: f"{o.username}@example.com")
    password = Password("correct horse battery staple")


class JobFactory(DjangoModelFactory[Job]):
    if TYPE_CHECKING:
        # Calling a factory builds and saves a Job; this tells the type checker so.
        def __new__(cls, *args: Any, **kwargs: Any) -> Job: ...  # type: ignore[misc]

    class Meta:
        model = Job
        # stored_original updates the row itself.
        skip_postgeneration_save = True

    id = LazyFunction(uuid.uuid4)
    email = Sequence(lambda n: f"person{n}@example.com")
    owner = None
    token = Sequence(lambda n: f"job-token-{n}-{uuid.uuid4().hex}")
    token_hash = LazyAttribute(lambda o: hash_token(o.token))
    original_key = LazyAttribute(lambda o: storage.processed_key(o.id, "jpg"))
    original_format = "jpeg"
    original_width = 64
    original_height = 48
    original_bytes = 1024
    original_sha256 = "0" * 64

    @classmethod
    def _build(cls, model_class: type[Job], *args: Any, token: str, **kwargs: Any) -> Job:
        job: Job = super()._build(model_class, *args, **kwargs)
        job.token = token  # type: ignore[attr-defined]
        return job

    @classmethod
    def _create(cls, model_class: type[Job], *args: Any, token: str, **kwargs: Any) -> Job:
        job: Job = super()._create(model_class, *args, **kwargs)
        job.token = token  # type: ignore[attr-defined]
        return job

    stored_original = PostGeneration(lambda job, create, extracted, **kwargs: _store_original(job, create, extracted))


class RestoreAttemptFactory(DjangoModelFactory[RestoreAttempt]):
    if TYPE_CHECKING:
        # Calling a factory builds and saves a RestoreAttempt; this tells the type checker so.
        def __new__(cls, *args: Any, **kwargs: Any) -> RestoreAttempt: ...  # type: ignore[misc]

    class Meta:
        model = RestoreAttempt

    job = SubFactory(JobFactory)
    workflow = "restore"
    parameters = LazyFunction(dict)
    status = AttemptStatus.QUEUED

    class Params:
        succeeded = Trait(
            status=AttemptStatus.SUCCEEDED,
            progress=100,
            engine="local",
            node="local",
            started_at=LazyFunction(lambda: timezone.now() - timedelta(seconds=30)),
            finished_at=LazyFunction(timezone.now),
            result_key=LazyAttribute(lambda o: storage.restored_key(o.job.id, timestamp_id())),
        )
        failed = Trait(
            status=AttemptStatus.FAILED,
            engine="local",
            started_at=LazyFunction(lambda: timezone.now() - timedelta(seconds=5)),
            finished_at=LazyFunction(timezone.now),
            error_type="engine_error",
            error_message="The engine could not process the image.",
        )


class AnimationAttemptFactory(DjangoModelFactory[AnimationAttempt]):
    if TYPE_CHECKING:
        # Calling a factory builds and saves a AnimationAttempt; this tells the type checker so.
        def __new__(cls, *args: Any, **kwargs: Any) -> AnimationAttempt: ...  # type: ignore[misc]

    class Meta:
        model = AnimationAttempt
        # hd_ready's HD attempt points at the animation; the animation itself has nothing to save again.
        skip_postgeneration_save = True

    job = SubFactory(JobFactory)
    restore = SubFactory(RestoreAttemptFactory, job=SelfAttribute("..job"), succeeded=True)
    workflow = "animate_preview"
    parameters = LazyFunction(dict)
    status = AttemptStatus.QUEUED

    class Params:
        ts = LazyFunction(timestamp_id)
        succeeded = Trait(
            status=AttemptStatus.SUCCEEDED,
            progress=100,
            engine="local",
            node="local",
            started_at=LazyFunction(lambda: timezone.now() - timedelta(seconds=60)),
            finished_at=LazyFunction(timezone.now),
            preview_key=LazyAttribute(lambda o: storage.animation_preview_key(o.job.id, o.ts)),
            thumbnail_key=LazyAttribute(lambda o: storage.thumbnail_key(o.job.id, o.ts)),
        )
        hd_ready = Trait(
            hd_paid=True,
            hd=RelatedFactory(
                "rekindle.testing.factories.HDAttemptFactory",
                factory_related_name="animation",
                succeeded=True,
            ),
        )


class HDAttemptFactory(DjangoModelFactory[HDAttempt]):
    """An animation's HD run; give it ``animation=`` (by default a new succeeded, paid preview)."""

    if TYPE_CHECKING:
        # Calling a factory builds and saves an HDAttempt; this tells the type checker so.
        def __new__(cls, *args: Any, **kwargs: Any) -> HDAttempt: ...  # type: ignore[misc]

    class Meta:
        model = HDAttempt

    animation = SubFactory(AnimationAttemptFactory, succeeded=True, hd_paid=True)
    job = SelfAttribute("animation.job")
    workflow = "animate_hd"
    parameters = LazyFunction(dict)
    status = AttemptStatus.QUEUED

    class Params:
        succeeded = Trait(
            status=AttemptStatus.SUCCEEDED,
            progress=100,
            engine="local",
            node="local",
            started_at=LazyFunction(lambda: timezone.now() - timedelta(seconds=120)),
            finished_at=LazyFunction(timezone.now),
            result_key=LazyAttribute(lambda o: storage.animation_result_key(o.animation.job_id, timestamp_id())),
        )
        failed = Trait(
            status=AttemptStatus.FAILED,
            engine="local",
            started_at=LazyFunction(lambda: timezone.now() - timedelta(seconds=5)),
            finished_at=LazyFunction(timezone.now),
            error_type="engine_error",
            error_message="The engine could not process the HD video.",
        )


def _mark_hd_paid(purchase: Purchase, create: bool, extracted: Any) -> None:
    if create and purchase.grants_hd and purchase.animation_id is not None:
        AnimationAttempt.objects.filter(pk=purchase.animation_id).update(hd_paid=True)


class PurchaseFactory(DjangoModelFactory[Purchase]):
    """A Stripe purchase of an animation's HD result (by default of a new succeeded preview), pending."""

    if TYPE_CHECKING:
        # Calling a factory builds and saves a Purchase; this tells the type checker so.
        def __new__(cls, *args: Any, **kwargs: Any) -> Purchase: ...  # type: ignore[misc]

    class Meta:
        model = Purchase
        skip_postgeneration_save = True

    animation = SubFactory(AnimationAttemptFactory, succeeded=True)
    job = SelfAttribute("animation.job")
    kind = PurchaseKind.STRIPE
    status = PurchaseStatus.PENDING
    amount = 900
    currency = "usd"
    email = SelfAttribute("job.email")
    stripe_session_id = LazyFunction(lambda: f"cs_test_{uuid.uuid4().hex[:24]}")
    expires_at = LazyFunction(lambda: timezone.now() + timedelta(hours=1))
    hd_paid = PostGeneration(_mark_hd_paid)

    class Params:
        paid = Trait(
            status=PurchaseStatus.PAID,
            session_complete=True,
            paid_at=LazyFunction(timezone.now),
            stripe_payment_intent_id=LazyFunction(lambda: f"pi_test_{uuid.uuid4().hex[:24]}"),
        )
