"""The log fields of a Dramatiq message: the request that sent it, carried into the worker that runs it.

:class:`RequestIdMessages` is a Dramatiq middleware. When a message is enqueued while a request
is being served (the API's restore, animate or upload, after commit), the request's id goes into
the message's options; a message sent outside a request (a cron command, the admin in a shell)
carries none. When a worker thread takes the message, the thread's log fields are set to the
request id, the message id and the actor, and cleared when the message is done, so the next
message on that thread starts clean. A message redelivered after a retry keeps its options, so
every try logs the same request id.

``jobs.runner`` adds the attempt's fields once it has claimed the attempt (and the engine's node
and prompt id when it submits); they are cleared with the rest.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import structlog

OPTION = "request_id"


def current_request_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get(OPTION)
    return str(value) if value else None


class RequestIdMessages(dramatiq.Middleware):
    """Copies the current request id into each message sent, and binds it (and the message) while it runs."""

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        if OPTION not in message.options:
            request_id = current_request_id()
            if request_id:
                message.options[OPTION] = request_id

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        structlog.contextvars.clear_contextvars()
        fields: dict[str, Any] = {"message_id": message.message_id, "actor": message.actor_name}
        if message.options.get(OPTION):
            fields[OPTION] = message.options[OPTION]
        structlog.contextvars.bind_contextvars(**fields)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        structlog.contextvars.clear_contextvars()
