"""The processing-engine contract: run a named workflow on input images, report progress, return outputs.

Three engines implement it (``comfyui``, ``runpod``, ``local``); ``rekindle.engines.get_engine()``
returns the one the ``REKINDLE_ENGINE`` setting names. Callers (the Dramatiq actors, the
admin, management commands) only ever see this module's types and errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

OutputKind = Literal["image", "video"]

# Called with an integer 0-100 as the run advances. May be called often; callers throttle writes.
ProgressCallback = Callable[[int], None]
# Polled by the engine while it waits; returning True asks it to stop (interrupt on the node).
CancelCheck = Callable[[], bool]
# Called once the work is handed to a node: (node label, prompt or job id), so it can be recorded.
SubmittedCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class RunHooks:
    """What else a run tells its caller, each optional.

    ``waiting(what)``: the run waits for ``"node"`` (no slot free, or no node up), or for
    nothing any more (``""``). ``routed(engine, reason)``: which engine takes the run and
    why (the own pool, or overflow to RunPod). ``usage(node, seconds)``: a try ended on
    ``node`` after executing ``seconds`` there (every try, so GPU time is counted whole).
    """

    waiting: Callable[[str], None] | None = None
    routed: Callable[[str, str], None] | None = None
    usage: Callable[[str, float], None] | None = None

    def wait(self, what: str) -> None:
        if self.waiting is not None:
            self.waiting(what)

    def route(self, engine: str, reason: str) -> None:
        if self.routed is not None:
            self.routed(engine, reason)

    def used(self, node: str, seconds: float) -> None:
        if self.usage is not None and seconds > 0:
            self.usage(node, seconds)


NO_HOOKS = RunHooks()


@dataclass(frozen=True)
class InputImage:
    """An input image for the workflow, bound to one of its image parameters (usually ``"image"``)."""

    param: str
    filename: str
    data: bytes


@dataclass(frozen=True)
class RunRequest:
    """One run of a workflow.

    ``run_id`` is unique per run (the attempt id plus its try), so names uploaded to a
    node and the prompt id never clash with another run's. ``params`` are already
    validated against the workflow's parameter map. ``timeout`` is in seconds.
    ``priority`` (``paid``, ``interactive``, ``bulk``; empty: from the workflow's kind) orders
    runs waiting for a node slot.
    """

    workflow: str
    run_id: str
    images: tuple[InputImage, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 600.0
    priority: str = ""
    # Where an earlier claim of the same attempt sent its prompt (node URL, prompt id), when that claim's
    # worker died: an engine that can asks there first and fetches a result already made instead of
    # running it again (the ComfyUI pool does); empty otherwise.
    earlier_node: str = ""
    earlier_prompt_id: str = ""


@dataclass(frozen=True)
class EngineOutput:
    filename: str
    data: bytes
    kind: OutputKind
    content_type: str


@dataclass(frozen=True)
class EngineResult:
    outputs: tuple[EngineOutput, ...]
    engine: str
    node: str
    prompt_id: str
    # Seconds the node spent executing, where the engine can tell (for GPU-seconds accounting).
    execution_seconds: float | None = None
    # Frees what the engine still keeps of this run (the ComfyUI pool: its outputs on the node), for
    # the caller to call once nothing will ask for them again; until then a later try of the same
    # attempt fetches them instead of computing the run again. None when the engine keeps nothing.
    release: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def first(self, kind: OutputKind) -> EngineOutput:
        for output in self.outputs:
            if output.kind == kind:
                return output
        raise PermanentEngineError("no_output", f"The workflow produced no {kind} output.")


@dataclass(frozen=True)
class NodeHealth:
    """What an engine knows about one of its nodes (a ComfyUI server, a RunPod endpoint, this machine)."""

    node: str
    healthy: bool
    queue_length: int = 0
    last_workflow: str = ""
    detail: str = ""
    # ``up``, ``down``, ``draining`` or ``drained`` (empty: the engine does not say).
    state: str = ""
    # The node's disk as its files extension reports it ("" when it cannot say).
    disk: str = ""
    # Workflow name -> list of problems found by the preflight check (empty list: it can run there).
    preflight: dict[str, list[str]] = field(default_factory=dict)


class EngineError(Exception):
    """A run that did not produce a result. ``code`` is stable and short; ``message`` is for people.

    Whether a retry can help is the subclass: ``TransientEngineError``, ``PermanentEngineError``
    or ``EngineCanceled``.
    """

    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class TransientEngineError(EngineError):
    """Worth retrying later: a node down, a timeout, out of GPU memory, a lost prompt."""


class PermanentEngineError(EngineError):
    """Retrying cannot help: the node rejected the workflow, a model is missing, the input is bad."""


class EngineCanceled(EngineError):
    """The run stopped because ``should_cancel`` asked it to (or the node reported an interrupt)."""


class Engine(Protocol):
    name: str

    def run(
        self,
        request: RunRequest,
        *,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_submitted: SubmittedCallback | None = None,
        hooks: RunHooks = NO_HOOKS,
    ) -> EngineResult:
        """Run to the end and return the outputs, or raise an ``EngineError`` subclass."""
        ...

    def health(self) -> list[NodeHealth]:
        """Health of every node this engine would use, with the preflight result of each workflow."""
        ...

    def cancel(self, node: str, prompt_id: str) -> None:
        """Best effort: stop a run another process started (the admin's cancel action), where the work
        happens outside the worker. The worker's own ``should_cancel`` stops the run either way."""
        ...
