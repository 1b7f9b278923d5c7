"""One prompt on one ComfyUI node: upload the inputs, submit, follow it to the end, stop it, download the outputs.

``PromptRun.run`` either returns the result, raises an ``EngineError`` that ends the run
(rejected, failed, canceled, timed out, an output missing), or raises ``MoveOn``: the node
cannot finish this run (down, busy, or it forgot the prompt) and the pool may send it to
another node. Whenever a prompt had been sent, it is taken off the node before
``MoveOn`` or any error leaves this module (``PromptRun.stop``), so one run is never
queued or running on two nodes at once as far as a node that answers can tell.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from rekindle.engines.base import (
    NO_HOOKS,
    CancelCheck,
    EngineCanceled,
    EngineError,
    EngineOutput,
    EngineResult,
    InputImage,
    OutputKind,
    PermanentEngineError,
    ProgressCallback,
    RunHooks,
    SubmittedCallback,
    TransientEngineError,
)
from rekindle.engines.comfyui import metrics
from rekindle.engines.comfyui.client import (
    NodeBusy,
    NodeDown,
    NodeError,
    OutputMissing,
    PromptRejected,
    RequestRejected,
    decode_message,
)
from rekindle.engines.comfyui.config import PoolConfig
from rekindle.engines.comfyui.protocol import (
    Outcome,
    OutputFile,
    PromptTracker,
    describe_execution_error,
    describe_rejection,
    is_out_of_memory,
    outcome_from_history,
)
from rekindle.engines.comfyui.scheduler import NodeScheduler, Slot

logger = logging.getLogger(__name__)

# Builds the API-format graph once the inputs are uploaded: image parameter -> name on the node.
GraphBuilder = Callable[[Mapping[str, str]], Mapping[str, Any]]

# How often a waiting run looks at should_cancel() and the clock.
_TICK_SECONDS = 0.25
# While confirming a stop: how often /queue is read, and how often delete and interrupt are sent again.
_STOP_POLL_SECONDS = 0.1
_STOP_RESEND_SECONDS = 1.0

# How a stop ended: nothing had been sent; the node confirms the prompt is gone; the node
# cannot be reached; or it still lists the prompt after ``stop_confirm_seconds``.
StopResult = Literal["not_sent", "stopped", "unreachable", "unconfirmed"]
MoveReason = Literal["down", "busy", "lost"]


class MoveOn(Exception):
    """This node cannot finish the run; the prompt, if sent, has been stopped there (see ``stopped``)."""

    def __init__(self, why: MoveReason, reason: str, *, error: NodeError | None, stopped: StopResult) -> None:
        super().__init__(reason)
        self.why: MoveReason = why
        self.reason = reason
        self.error = error
        self.stopped: StopResult = stopped

    @property
    def retry_after(self) -> float | None:
        return self.error.retry_after if isinstance(self.error, NodeBusy) else None


class Progress:
    """Forwards progress to the caller as integers that never go back (a resubmit starts again quietly)."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.last = -1

    def __call__(self, percent: int) -> None:
        if self.callback is not None and percent > self.last:
            self.last = percent
            self.callback(percent)


@dataclass(frozen=True)
class RunContext:
    """What stays the same for every node a run is tried on."""

    run_id: str
    deadline: float
    progress: Progress
    should_cancel: CancelCheck | None
    on_submitted: SubmittedCallback | None
    client_name: str
    # The run's own limit (seconds), and what else the caller is told.
    timeout: float = 0.0
    hooks: RunHooks = NO_HOOKS


class _PromptLost(Exception):
    """The node no longer knows the prompt (it restarted): neither queued nor in history."""


def safe_name(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)[:80] or "run"


def default_client_name() -> str:
    return f"rekindle-{safe_name(socket.gethostname())}-{os.getpid()}"


def _permanent(code: str, what: str, exc: NodeError) -> PermanentEngineError:
    return PermanentEngineError(code, f"ComfyUI node {exc.node} {what}: {exc.reason}", exc.details)


class PromptRun:
    """One try of a run on the node of ``slot``."""

    def __init__(
        self,
        slot: Slot,
        scheduler: NodeScheduler,
        config: PoolConfig,
        context: RunContext,
        *,
        on_node_free: Callable[[], None] | None = None,
    ) -> None:
        self.slot = slot
        # Called once the node has ended our prompt, before its outputs are fetched: the node can
        # take the next prompt while this try downloads, stores and cleans up.
        self._on_node_free = on_node_free
        self.url = slot.url
        self.client = slot.client
        self.scheduler = scheduler
        self.config = config
        self.context = context
        self.prompt_id: str | None = None
        self._poll_failures = 0
        self._poll_delay = config.poll_seconds
        # When the node started executing our prompt (monotonic), as the socket or a poll first showed it.
        self.executing_since: float | None = None
        self._uploaded: list[str] = []
        self._silent_checks = 0

    # --- the whole try ---------------------------------------------------------------
    def run(self, build_graph: GraphBuilder, images: Sequence[InputImage]) -> EngineResult:
        """The run's result; its outputs stay on the node until ``release`` (a failed try removes them at once)."""
        outputs: list[OutputFile] = []
        result: EngineResult | None = None
        try:
            result = self._run(build_graph, images, outputs)
        finally:
            self._account(result.execution_seconds if result is not None else None)
            self._clean([] if result is not None else outputs)
        assert result is not None
        return replace(result, release=lambda: self._clean(outputs, inputs=False))

    def _account(self, execution_seconds: float | None) -> None:
        """Report the GPU time of this try, whatever its end (the caller counts every try)."""
        if execution_seconds is None and self.executing_since is not None:
            execution_seconds = time.monotonic() - self.executing_since
        if execution_seconds:
            metrics.NODE_GPU_SECONDS.labels(node=self.url).inc(execution_seconds)
            self.context.hooks.used(self.url, execution_seconds)

    def _clean(self, outputs: Sequence[OutputFile], *, inputs: bool = True) -> None:
        """Remove our inputs (unless told not to) and the given outputs from the node, so its disk does not
        fill over weeks."""
        uploaded = self._uploaded if inputs else []
        if not self.config.clean_node_files or not (uploaded or outputs):
            return
        files = [{"type": "input", "subfolder": "", "filename": name} for name in uploaded]
        files += [{"type": f.type, "subfolder": f.subfolder, "filename": f.filename} for f in outputs]
        self.client.delete_files(files, timeout=self.config.probe_timeout)

    def _run(self, build_graph: GraphBuilder, images: Sequence[InputImage], fetched: list[OutputFile]) -> EngineResult:
        names = self._upload_inputs(images)
        graph = build_graph(names)
        # One client id per try: a second socket with the same id silences the first, and a
        # worker process runs several runs at once.
        client_id = f"{self.context.client_name}-{uuid.uuid4().hex[:12]}"
        try:
            ws = self.client.open_socket(client_id)
        except NodeDown as exc:
            raise MoveOn("down", exc.reason, error=exc, stopped="not_sent") from None
        # Listening before submitting, so no message of the prompt is missed.
        with ws:
            self._submit(graph, client_id)
            if self.context.on_submitted is not None:
                self.context.on_submitted(self.url, self._sent_id)
            self.context.progress(0)
            try:
                outcome = self._follow(ws, PromptTracker(graph, self._sent_id))
            except RequestRejected as exc:
                self.stop()
                raise _permanent("request_rejected", "refused a request while the prompt ran", exc) from None
        if self._on_node_free is not None:
            self._on_node_free()
        return self._finish(outcome, fetched)

    @property
    def _sent_id(self) -> str:
        assert self.prompt_id is not None
        return self.prompt_id

    def _upload_inputs(self, images: Sequence[InputImage]) -> dict[str, str]:
        names: dict[str, str] = {}
        for image in images:
            suffix = os.path.splitext(image.filename)[1].lower() or ".png"
            content_type = mimetypes.guess_type(f"x{suffix}")[0] or "application/octet-stream"
            name = f"{safe_name(self.context.run_id)}_{safe_name(image.param)}{suffix}"
            try:
                names[image.param] = self.client.upload_image(name, image.data, content_type)
                self._uploaded.append(names[image.param])
            except NodeBusy as exc:
                raise MoveOn("busy", exc.reason, error=exc, stopped="not_sent") from None
            except NodeDown as exc:
                raise MoveOn("down", exc.reason, error=exc, stopped="not_sent") from None
            except RequestRejected as exc:
                raise _permanent("upload_rejected", f"refused the input {image.param!r}", exc) from None
        return names

    def _submit(self, graph: Mapping[str, Any], client_id: str) -> None:
        prompt_id = str(uuid.uuid4())
        try:
            self.client.submit(
                graph,
                prompt_id=prompt_id,
                client_id=client_id,
                # Kept by ComfyUI with the queue item and history: which run a prompt belongs to.
                extra_data={"rekindle_run": self.context.run_id},
            )
        except PromptRejected as exc:
            message, details = describe_rejection(exc.payload)
            details["node"] = self.url
            raise PermanentEngineError(
                "prompt_rejected", f"ComfyUI node {self.url} rejected the workflow: {message}", details
            ) from None
        except NodeBusy as exc:
            # A 429 or 503 means the request was not processed, so nothing is queued; one
            # delete and interrupt cost little if a proxy got that wrong.
            self.prompt_id = prompt_id
            self._send_stop()
            raise MoveOn("busy", exc.reason, error=exc, stopped="stopped") from None
        except NodeDown as exc:
            # The node may have queued it before failing (a 500 after queueing, a read timeout).
            self.prompt_id = prompt_id
            raise MoveOn("down", exc.reason, error=exc, stopped=self.stop()) from None
        except RequestRejected as exc:
            raise _permanent("request_rejected", "refused the prompt", exc) from None
        self.prompt_id = prompt_id

    # --- following -----------------------------------------------------------------------
    def _follow(self, ws: ClientConnection, tracker: PromptTracker) -> Outcome:
        deadline = self.context.deadline
        should_cancel = self.context.should_cancel
        listening = True
        last_message = time.monotonic()
        next_poll = 0.0
        next_liveness = 0.0
        while True:
            now = time.monotonic()
            if should_cancel is not None and should_cancel():
                stopped = self.stop()
                raise EngineCanceled("canceled", "The run was canceled.", self._details(stopped=stopped))
            if now >= deadline:
                raise self._timed_out()
            if listening and now - last_message >= self.config.liveness_seconds and now >= next_liveness:
                # A hung node (stopped, swapping, wedged) keeps its socket open and says nothing:
                # one short /queue tells it from a long node that is merely quiet.
                self._check_alive()
                next_liveness = time.monotonic() + self.config.liveness_seconds
            if listening:
                quiet_left = last_message + self.config.socket_quiet_seconds - now
                if quiet_left <= 0:
                    logger.info("Socket to %s went quiet: polling history for %s", self.url, tracker.prompt_id)
                    listening = False
                    continue
                try:
                    raw = ws.recv(timeout=max(0.01, min(_TICK_SECONDS, deadline - now, quiet_left)))
                except TimeoutError:
                    continue
                except (ConnectionClosed, OSError):
                    logger.info("Socket to %s closed during prompt %s: polling history", self.url, tracker.prompt_id)
                    listening = False
                    continue
                last_message = time.monotonic()
                message = decode_message(raw)
                if message is None:
                    continue
                tracker.feed(message)
                if tracker.started and self.executing_since is None:
                    self.executing_since = time.monotonic()
                if message.get("type") == "status" and tracker.queue_remaining is not None:
                    self.scheduler.note_queue(self.url, tracker.queue_remaining)
                self.context.progress(tracker.percent)
                if tracker.error is not None or tracker.interrupted is not None:
                    outcome = tracker.outcome_from_messages()
                    assert outcome is not None
                    return outcome
                if tracker.ended:
                    # executing{node: null} comes after the history entry is written.
                    outcome = self._poll_guarded(history_only=True)
                    if outcome is not None:
                        return outcome
                    listening = False
                continue
            if now >= next_poll:
                outcome = self._poll_guarded()
                if outcome is not None:
                    return outcome
                next_poll = time.monotonic() + self._poll_delay
            time.sleep(max(0.0, min(_TICK_SECONDS, next_poll - time.monotonic(), deadline - time.monotonic())))

    def _poll(self, *, history_only: bool = False) -> Outcome | None:
        """The outcome if history has it; None while queued or running; ``_PromptLost`` if the node forgot it."""
        prompt_id = self._sent_id
        timeout = self.config.probe_timeout
        entry = self.client.history(prompt_id, timeout=timeout)
        if entry is not None:
            return outcome_from_history(entry)
        if history_only:
            return None
        queue = self.client.queue(timeout=timeout)
        if prompt_id in queue.running and self.executing_since is None:
            self.executing_since = time.monotonic()
        if prompt_id in queue:
            return None
        # It may have finished between the two reads.
        entry = self.client.history(prompt_id, timeout=timeout)
        if entry is not None:
            return outcome_from_history(entry)
        raise _PromptLost(prompt_id)

    def _poll_guarded(self, *, history_only: bool = False) -> Outcome | None:
        """``_poll``, with what the node said turned into a decision: wait (busy, a passing server
        error), or move on (no answer, server errors ``poll_failures`` times in a row, prompt lost)."""
        self._poll_delay = self.config.poll_seconds
        try:
            outcome = self._poll(history_only=history_only)
        except NodeBusy as exc:
            # Still running our prompt, only refusing more work: keep following it, more slowly.
            self.scheduler.mark_busy(self.url, exc.retry_after, exc.reason)
            self._poll_delay = max(
                self.config.poll_seconds, min(exc.retry_after or 0.0, self.config.node_backoff_max_seconds)
            )
            return None
        except NodeDown as exc:
            self._poll_failures += 1
            # A server error, or a timeout (hung, or only slow): a few in a row before the run leaves;
            # a refused or reset connection (the process is gone) at once.
            if (exc.answered or exc.timed_out) and self._poll_failures < self.config.poll_failures:
                logger.warning(
                    "Polling %s for %s failed (%d in a row): %s",
                    self.url,
                    self.prompt_id,
                    self._poll_failures,
                    exc.reason,
                )
                return None
            raise MoveOn("down", exc.reason, error=exc, stopped=self.stop()) from None
        except _PromptLost:
            logger.warning("Prompt %s was lost on %s (node restarted)", self.prompt_id, self.url)
            raise MoveOn("lost", f"{self.url} lost the prompt", error=None, stopped=self.stop()) from None
        self._poll_failures = 0
        return outcome

    # --- stopping ---------------------------------------------------------------------
    def _send_stop(self) -> None:
        for exc in self.client.stop_prompt(self._sent_id, timeout=self.config.probe_timeout):
            logger.warning("Could not stop prompt %s on %s: %s", self.prompt_id, self.url, exc.reason)

    def stop(self) -> StopResult:
        """Take our prompt off the node and wait until its ``/queue`` no longer lists it.

        What is guaranteed: when this returns ``stopped``, the node has answered a ``/queue``
        in which the prompt is neither running nor pending, after our delete and interrupt,
        so it will not run there again (ComfyUI never requeues a prompt by itself). When the
        node cannot be reached at all (``unreachable``: refused, reset, timed out), we cannot
        stop it: either the process is gone, and a ComfyUI that restarts has forgotten its
        queue, or it is cut off from us and may run the prompt to its end, whose outputs
        nobody fetches. That prompt id is handed to the scheduler (``abandon``), which
        deletes and interrupts it as soon as the node answers again, before giving it new
        work. ``unconfirmed`` (it still lists the prompt, or keeps failing to say) is
        handed over the same way, and the pool does not send the run elsewhere.
        """
        if self.prompt_id is None:
            return "not_sent"
        prompt_id = self.prompt_id
        until = time.monotonic() + self.config.stop_confirm_seconds
        last_sent = float("-inf")
        result: StopResult = "unconfirmed"
        while True:
            now = time.monotonic()
            if now - last_sent >= _STOP_RESEND_SECONDS:
                self._send_stop()
                last_sent = now
            try:
                queue = self.client.queue(timeout=min(self.config.http_timeout, self.config.probe_timeout))
            except NodeDown as exc:
                if not exc.answered:
                    result = "unreachable"
                    break
            except NodeError:
                pass
            else:
                if prompt_id not in queue:
                    return "stopped"
            if time.monotonic() >= until:
                break
            time.sleep(_STOP_POLL_SECONDS)
        logger.warning("Prompt %s on %s not confirmed stopped (%s)", prompt_id, self.url, result)
        self.scheduler.abandon(self.url, prompt_id)
        return result

    # --- the end --------------------------------------------------------------------------
    def _details(self, **extra: Any) -> dict[str, Any]:
        return {"node": self.url, "prompt_id": self.prompt_id, **extra}

    def _check_alive(self) -> None:
        """Move on when the node does not answer a short /queue ``poll_failures`` times in a row (it hung), at
        once when it refuses the connection (it is gone); a slow answer is fine. A node busy with a heavy
        node may keep its HTTP loop waiting a few seconds: one timeout is no verdict."""
        try:
            queue = self.client.queue(timeout=self.config.probe_timeout)
        except NodeDown as exc:
            if exc.answered:
                return  # a failing answer is the polls' business
            self._silent_checks += 1
            if exc.timed_out and self._silent_checks < self.config.poll_failures:
                return
            logger.warning("ComfyUI node %s does not answer while it runs %s: %s", self.url, self.prompt_id, exc.reason)
            raise MoveOn("down", exc.reason, error=exc, stopped=self.stop()) from None
        except NodeError:
            return
        self._silent_checks = 0
        self.scheduler.note_queue(self.url, len(queue))
        if self.prompt_id in queue.running and self.executing_since is None:
            self.executing_since = time.monotonic()

    def _timed_out(self) -> EngineError:
        """The run's deadline passed: stop the prompt; say whether another try could do better.

        When the node spent most of the run's time executing our prompt, the workflow
        itself takes longer than its limit, and another try (on this node or another of
        the same kind) would only spend the GPU time again: that is permanent. When the
        time went to waiting (the node's queue, a slow upload), a later try may fit.
        """
        stopped = self.stop()
        details = self._details(stopped=stopped)
        executed = time.monotonic() - self.executing_since if self.executing_since is not None else 0.0
        details["executed_seconds"] = round(executed, 1)
        if self.context.timeout and executed >= 0.5 * self.context.timeout:
            return PermanentEngineError(
                "timeout",
                f"The workflow ran {executed:.0f}s on ComfyUI node {self.url} and did not finish within the run's "
                f"{self.context.timeout:.0f}s limit; another try would hit the same limit.",
                {**details, "deterministic": True},
            )
        return TransientEngineError("timeout", f"The run did not finish in time on ComfyUI node {self.url}.", details)

    def _finish(self, outcome: Outcome, fetched: list[OutputFile]) -> EngineResult:
        details = self._details()
        if outcome.status == "interrupted":
            raise EngineCanceled("interrupted", f"The run was interrupted on ComfyUI node {self.url}.", details)
        if outcome.status == "error":
            error = dict(outcome.error)
            details.update(
                {key: error.get(key) for key in ("node_id", "node_type", "exception_type", "exception_message")}
            )
            message = describe_execution_error(error)
            if is_out_of_memory(error):
                try:
                    self.client.free()
                except NodeError as exc:
                    logger.warning("Could not free memory on %s: %s", self.url, exc.reason)
                raise TransientEngineError("out_of_memory", f"{self.url} ran out of GPU memory: {message}", details)
            raise PermanentEngineError("execution_failed", f"ComfyUI node {self.url}: {message}", details)
        outputs: list[EngineOutput] = []
        for file in outcome.outputs:
            data, content_type = self._download(file)
            fetched.append(file)
            kind: OutputKind = "video" if file.is_video or content_type.startswith("video/") else "image"
            outputs.append(EngineOutput(filename=file.filename, data=data, kind=kind, content_type=content_type))
        self.context.progress(100)
        return EngineResult(
            outputs=tuple(outputs),
            engine="comfyui",
            node=self.url,
            prompt_id=self._sent_id,
            execution_seconds=outcome.execution_seconds,
        )

    def _download(self, file: OutputFile) -> tuple[bytes, str]:
        """``/view`` of one output; a busy node is asked again until the deadline (the file is only there).

        A 404 is ``output_missing``, permanent, and the node stays up: ComfyUI saves a file
        before it reports the node executed, so a file the history names and ``/view``
        cannot find was removed after the run (an output folder cleaned up), or the URL
        reaches another server than the one that ran the prompt (a balancer in front of
        several nodes). Running the prompt again on that URL would meet the same cause and
        spend the GPU time again; staff see the node and the file in the error and requeue.
        """
        while True:
            try:
                return self.client.view(file)
            except OutputMissing as exc:
                raise PermanentEngineError(
                    "output_missing",
                    f"ComfyUI node {self.url} has no output file: {exc.reason}",
                    self._details(**exc.details),
                ) from None
            except NodeBusy as exc:
                wait = min(exc.retry_after or self.config.poll_seconds, self.context.deadline - time.monotonic())
                if wait <= 0:
                    raise TransientEngineError(
                        "timeout",
                        f"ComfyUI node {self.url} stayed busy while the outputs were fetched.",
                        self._details(),
                    ) from None
                time.sleep(wait)
            except NodeDown as exc:
                raise MoveOn("down", exc.reason, error=exc, stopped=self.stop()) from None
            except RequestRejected as exc:
                raise _permanent("request_rejected", "refused to serve an output", exc) from None


def resume_earlier_prompt(
    slot: Slot, scheduler: NodeScheduler, config: PoolConfig, context: RunContext, prompt_id: str
) -> EngineResult | None:
    """The result of a prompt an earlier try left on ``slot``'s node (its worker died), or None to run anew.

    Asks the node's ``/history/<prompt_id>``: finished there, its outputs are downloaded
    (the GPU work is not done twice); still queued or running there, it is followed by
    polling until it ends (or the run's deadline, or a cancel), as patiently as a run
    follows its own prompt: a slow node is asked again ``poll_failures`` times. Anything
    else (the node forgot it, failed or interrupted it, cannot be reached, or its outputs
    are gone) means run it again from the start, as if there had been no earlier try, once
    the earlier prompt is stopped there: a node that does not confirm it stopped may still
    finish it, so the run then goes back to the queue (``stop_unconfirmed``) and asks again
    later instead of computing the same result a second time elsewhere.
    """
    run = PromptRun(slot, scheduler, config, context)
    run.prompt_id = prompt_id
    fetched: list[OutputFile] = []
    result: EngineResult | None = None
    try:
        while True:
            try:
                outcome = run._poll_guarded()
            except MoveOn as move:
                if move.stopped == "unconfirmed":
                    raise TransientEngineError(
                        "stop_unconfirmed",
                        f"ComfyUI node {slot.url} did not answer about the earlier prompt {prompt_id} of this run "
                        "and did not confirm it stopped, so the run was sent nowhere else.",
                        run._details(),
                    ) from None
                raise
            if outcome is not None:
                break
            if context.should_cancel is not None and context.should_cancel():
                run.stop()
                raise EngineCanceled("canceled", "The run was canceled while its earlier prompt ran.", run._details())
            if time.monotonic() >= context.deadline:
                run.stop()
                return None
            time.sleep(run._poll_delay)
        if outcome.status != "success":
            return None
        result = run._finish(outcome, fetched)
        logger.info(
            "prompt.resumed node=%s prompt=%s run=%s",
            slot.url,
            prompt_id,
            context.run_id,
            extra={"event": "prompt.resumed", "node": slot.url, "prompt": prompt_id, "run": context.run_id},
        )
        return replace(result, release=lambda: run._clean(fetched))
    except TransientEngineError as exc:
        if exc.code == "stop_unconfirmed":
            raise
        logger.info("prompt.not_resumed node=%s prompt=%s: %s", slot.url, prompt_id, exc)
        return None
    except (_PromptLost, NodeError, MoveOn, PermanentEngineError) as exc:
        logger.info("prompt.not_resumed node=%s prompt=%s: %s", slot.url, prompt_id, exc)
        return None
    finally:
        run._account(result.execution_seconds if result is not None else None)
        if result is None:
            run._clean(fetched)
