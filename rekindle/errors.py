"""The errors services raise for what a caller asked: each has a stable ``code``, a message for people, ``details``.

Services (``job_create``, ``restore_attempt_create``, ``job_claim``...) are called by the API,
the admin, the workers and management commands alike, so they raise these plain
exceptions rather than HTTP ones. Each edge says what they mean there, in one place:
``rekindle.api_errors`` maps each class to an HTTP status and the JSON error shape, the
admin reports the message, a management command turns it into a ``CommandError``, and the
worker records it on the attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ServiceError(Exception):
    """Something the caller asked cannot be done as asked."""

    code = "error"
    message = "The request cannot be done."

    def __init__(
        self, message: str | None = None, *, code: str | None = None, details: Mapping[str, Any] | None = None
    ) -> None:
        self.message = message or type(self).message
        self.code = code or type(self).code
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(self.message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled whole (code, details and a subclass's own fields), e.g. to come back from a child process.
        return (_restore, (type(self), dict(self.__dict__)))


def _restore(cls: type[ServiceError], state: dict[str, Any]) -> ServiceError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class InvalidRequest(ServiceError):
    """Input that is wrong in itself (a bad parameter, a damaged image): asking again the same way cannot work."""

    code = "invalid"
    message = "The request is not valid."


class NotFound(ServiceError):
    """No such thing, or not the caller's (the same answer either way)."""

    code = "not_found"
    message = "Not found."


class Conflict(ServiceError):
    """Right input, wrong moment: the thing is not in a state that allows it."""

    code = "conflict"
    message = "This is not possible in the current state."


class TooLarge(ServiceError):
    """The input is bigger than the service accepts."""

    code = "too_large"
    message = "The input is too large."


class UnsupportedMedia(ServiceError):
    """The input is not a kind of file the service takes."""

    code = "unsupported_media_type"
    message = "This kind of file is not supported."


class Unavailable(ServiceError):
    """A service this needs is down or full for now; ``retry_after`` (seconds) says when to try again, if known."""

    code = "service_unavailable"
    message = "A service this needs is unavailable; try again shortly."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.retry_after = retry_after


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached right now (restarting, failing over): nothing the caller sent was wrong."""

    code = "database_unavailable"
    # The customer's words (listed with the others in jobs.customer_errors).
    message = "We cannot reach our records right now. Please try again in a few seconds."


class StorageUnavailable(Unavailable):
    """The photo storage (S3) failed or is slow for now (a 5xx, throttling, a connection error or timeout)."""

    code = "storage_unavailable"
    # The customer's words (listed with the others in jobs.customer_errors).
    message = "We cannot reach our photo storage right now. Please try again in a few seconds."
