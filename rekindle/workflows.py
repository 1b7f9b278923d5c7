"""ComfyUI workflows and their parameter maps: load, validate parameters, build the graph to send.

Each ``workflows/<name>.json`` holds one workflow in ComfyUI's API format together with
the map of the parameters a caller may set (type, default, range, which node inputs it
writes). ``workflows/README.md`` documents the file layout. Parameters are checked here,
before anything is queued or sent to a GPU, so a bad value is a 400 for the API caller.
"""

from __future__ import annotations

import copy
import json
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from rekindle.errors import InvalidRequest

WorkflowKind = Literal["restore", "animate_preview", "animate_hd"]
OutputKind = Literal["image", "video"]
ParamType = Literal["int", "float", "string", "choice"]

KINDS: tuple[WorkflowKind, ...] = ("restore", "animate_preview", "animate_hd")
PARAM_TYPES: tuple[ParamType, ...] = ("int", "float", "string", "choice")
# The string a map puts in "default" to have a fresh value drawn for every run (seeds).
RANDOM_DEFAULT = "random"
DEFAULT_MAX_LENGTH = 1000

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
# Output names end up in a node's output folder: no absolute paths, no "..", nothing odd.
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*(/[A-Za-z0-9][A-Za-z0-9_\-]*)*$")

Target = tuple[str, str]
_PARAM_KEYS = {
    *("type", "default", "min", "max", "multiple_of"),
    *("min_length", "max_length", "choices", "targets", "ignored"),
}


class WorkflowParameterError(InvalidRequest):
    """Parameters that do not fit the workflow's map; ``details.fields`` says what is wrong with each."""

    code = "invalid_parameters"
    message = "Some parameters are not valid for this workflow."

    def __init__(self, fields: Mapping[str, str], message: str | None = None) -> None:
        self.fields = dict(fields)
        super().__init__(message, details={"fields": self.fields})


class WorkflowDefinitionError(ImproperlyConfigured):
    """A workflow file that cannot be used as written (a deployment error, not a client's)."""


def wan_frames(seconds: float, fps: int) -> int:
    """Frames for ``seconds`` at ``fps``: seconds x fps + 1, rounded to the 4k+1 that Wan's VAE needs."""
    k = max(1, round(seconds * fps / 4))
    return 4 * k + 1


@dataclass(frozen=True)
class DerivedFunction:
    needs: tuple[str, ...]
    compute: Callable[[Mapping[str, Any]], Any]


# Values computed from parameters at build time, named by a map's "derived" entries.
DERIVED_FUNCTIONS: dict[str, DerivedFunction] = {
    "wan_frames": DerivedFunction(("seconds", "fps"), lambda p: wan_frames(p["seconds"], p["fps"])),
}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a workflow's map."""

    name: str
    type: ParamType
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int | None = None
    min_length: int = 0
    max_length: int = DEFAULT_MAX_LENGTH
    choices: tuple[Any, ...] = ()
    targets: tuple[Target, ...] = ()
    # Why a workflow accepts this parameter without using it ("" when it is used).
    ignored: str = ""

    @property
    def random_default(self) -> bool:
        return self.default == RANDOM_DEFAULT and self.type == "int"

    def default_value(self) -> Any:
        if self.random_default:
            low = int(self.minimum or 0)
            high = int(self.maximum if self.maximum is not None else 2**32 - 1)
            return low + secrets.randbelow(high - low + 1)
        return self.default

    def schema(self) -> dict[str, Any]:
        """This parameter as an OpenAPI schema: what :meth:`check` accepts, as far as a schema can say it."""
        schema: dict[str, Any]
        if self.type == "int":
            schema = {"type": "integer"}
        elif self.type == "float":
            schema = {"type": "number"}
        elif self.type == "string":
            # At least ``min_length`` characters besides white space, and no NUL anywhere.
            pattern = r"^[^\x00]*\S[^\x00]*$" if self.min_length else r"^[^\x00]*$"
            schema = {"type": "string", "maxLength": self.max_length, "pattern": pattern}
            if self.min_length:
                schema["minLength"] = self.min_length
        else:
            schema = {"enum": list(self.choices)}
        if self.type in ("int", "float"):
            if self.minimum is not None:
                schema["minimum"] = self.minimum
            if self.maximum is not None:
                schema["maximum"] = self.maximum
            if self.multiple_of:
                schema["multipleOf"] = self.multiple_of
        if self.random_default:
            schema["description"] = "Random when left out (drawn once, kept for retries)."
        elif self.default is not None:
            schema["default"] = self.default
        return schema

    def check(self, value: Any) -> tuple[Any, str | None]:
        """The value as the graph wants it, or an error message for people."""
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return None, "Must be a whole number."
        elif self.type == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None, "Must be a number."
            if not math.isfinite(value):
                return None, "Must be a finite number."
            value = float(value)
        elif self.type == "string":
            if not isinstance(value, str):
                return None, "Must be a string."
            if len(value) > self.max_length:
                return None, f"Must be at most {self.max_length} characters."
            if len(value.strip()) < self.min_length:
                if self.min_length == 1:
                    return None, "Must not be empty."
                return None, f"Must be at least {self.min_length} characters."
            if "\x00" in value:
                return None, "Must not contain NUL characters."
            return value, None
        else:
            if isinstance(value, bool) or value not in self.choices:
                return None, "Must be one of: " + ", ".join(str(choice) for choice in self.choices) + "."
            return value, None
        if self.minimum is not None and value < self.minimum:
            return None, f"Must be at least {_number(self.minimum)}."
        if self.maximum is not None and value > self.maximum:
            return None, f"Must be at most {_number(self.maximum)}."
        if self.multiple_of and value % self.multiple_of:
            return None, f"Must be a multiple of {self.multiple_of}."
        return value, None


@dataclass(frozen=True)
class Workflow:
    """A workflow in ComfyUI API format with its parameter map, as loaded from ``workflows/<name>.json``."""

    name: str
    kind: WorkflowKind
    graph: Mapping[str, Any] = field(hash=False)
    params: Mapping[str, ParamSpec] = field(hash=False)
    timeout_seconds: float
    output_kind: OutputKind
    images: Mapping[str, tuple[Target, ...]] = field(hash=False)
    filename_prefix_targets: tuple[Target, ...] = ()
    derived: Mapping[str, tuple[str, tuple[Target, ...]]] = field(default_factory=dict, hash=False)
    description: str = ""
    # The production workflow this one stands in for on a machine without a GPU ("" for production ones).
    twin_of: str = ""

    def parameters_schema(self) -> dict[str, Any]:
        """The parameters a client may set, as an OpenAPI object schema (unknown keys are refused)."""
        return {
            "type": "object",
            "properties": {name: spec.schema() for name, spec in self.params.items()},
            "additionalProperties": False,
        }

    @property
    def image_params(self) -> tuple[str, ...]:
        return tuple(self.images)

    def validate(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every parameter with defaults filled in and values checked; raises ``WorkflowParameterError``."""
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise WorkflowParameterError({"parameters": "Must be an object."})
        errors: dict[str, str] = {}
        for name in params:
            if name not in self.params:
                errors[str(name)] = "Unknown parameter."
        validated: dict[str, Any] = {}
        for name, spec in self.params.items():
            if name not in params or params[name] is None:
                validated[name] = spec.default_value()
                continue
            value, error = spec.check(params[name])
            if error is not None:
                errors[name] = error
            else:
                validated[name] = value
        if errors:
            raise WorkflowParameterError(errors)
        return validated

    def derived_values(self, validated: Mapping[str, Any]) -> dict[str, Any]:
        """Values computed from the parameters (e.g. ``frames``), keyed by the map's names for them."""
        return {name: DERIVED_FUNCTIONS[function].compute(validated) for name, (function, _) in self.derived.items()}

    def build(self, params: Mapping[str, Any], images: Mapping[str, str], *, filename_prefix: str) -> dict[str, Any]:
        """The graph to send: parameters, uploaded image names and the output prefix written into a copy.

        ``images`` maps each image parameter (usually ``"image"``) to the name the node
        knows the uploaded file by. A wrong ``images`` or ``filename_prefix`` is a bug
        in the caller, so it raises ``ValueError`` rather than a client-facing error.
        """
        validated = self.validate(params)
        if set(images) != set(self.images):
            raise ValueError(f"Workflow {self.name} takes images {sorted(self.images)}, got {sorted(images)}")
        if not _PREFIX_RE.match(filename_prefix) or len(filename_prefix) > 200:
            raise ValueError(f"Unsafe filename prefix {filename_prefix!r}")
        graph = copy.deepcopy(dict(self.graph))

        def put(target: Target, value: Any) -> None:
            node_id, input_name = target
            graph[node_id]["inputs"][input_name] = value

        for name, spec in self.params.items():
            for target in spec.targets:
                put(target, validated[name])
        values = self.derived_values(validated)
        for name, (_, targets) in self.derived.items():
            for target in targets:
                put(target, values[name])
        for param, uploaded_name in images.items():
            if not isinstance(uploaded_name, str) or not uploaded_name or "/" in uploaded_name:
                raise ValueError(f"Bad uploaded image name {uploaded_name!r}")
            for target in self.images[param]:
                put(target, uploaded_name)
        for target in self.filename_prefix_targets:
            put(target, filename_prefix)
        return graph


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def workflows_dir() -> Path:
    return Path(settings.REKINDLE_WORKFLOWS_DIR)


def get_workflow(name: str) -> Workflow:
    """The workflow ``workflows/<name>.json`` (cached). An unknown name raises ``KeyError``."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise KeyError(name)
    return _load(str(workflows_dir()), name)


@lru_cache(maxsize=64)
def _load(directory: str, name: str) -> Workflow:
    path = Path(directory) / f"{name}.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyError(name) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowDefinitionError(f"{path}: not valid JSON: {exc}") from exc
    return parse_workflow(name, data, source=str(path))


def all_workflows() -> list[Workflow]:
    """Every workflow in the workflows folder, by name."""
    return [get_workflow(path.stem) for path in sorted(workflows_dir().glob("*.json")) if _NAME_RE.match(path.stem)]


def workflow_name_for_kind(kind: str) -> str:
    names = {
        "restore": settings.REKINDLE_WORKFLOW_RESTORE,
        "animate_preview": settings.REKINDLE_WORKFLOW_ANIMATE_PREVIEW,
        "animate_hd": settings.REKINDLE_WORKFLOW_ANIMATE_HD,
    }
    if kind not in names:
        raise KeyError(kind)
    return names[kind]


def workflow_for_kind(kind: str) -> Workflow:
    """The workflow the settings choose for ``kind`` ("restore", "animate_preview", "animate_hd")."""
    name = workflow_name_for_kind(kind)
    try:
        workflow = get_workflow(name)
    except KeyError:
        raise WorkflowDefinitionError(f"The workflow {name!r} configured for {kind} does not exist") from None
    if workflow.kind != kind:
        raise WorkflowDefinitionError(f"The workflow {name!r} configured for {kind} is a {workflow.kind} workflow")
    return workflow


# --- Parsing and checking a workflow file -------------------------------------


def parse_workflow(name: str, data: Any, *, source: str = "") -> Workflow:
    """A ``Workflow`` from a file's decoded JSON; raises ``WorkflowDefinitionError`` naming the problem."""
    where = source or name

    def fail(message: str) -> WorkflowDefinitionError:
        return WorkflowDefinitionError(f"{where}: {message}")

    if not isinstance(data, dict):
        raise fail("the file must hold a JSON object")
    kind = data.get("kind")
    if kind not in KINDS:
        raise fail(f"kind must be one of {', '.join(KINDS)}")
    output = data.get("output")
    if output not in ("image", "video"):
        raise fail('output must be "image" or "video"')
    timeout = data.get("timeout_seconds")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise fail("timeout_seconds must be a positive number")
    graph = data.get("graph")
    if not isinstance(graph, dict) or not graph:
        raise fail("graph must be a non-empty object of nodes")
    _check_graph(graph, fail)

    def targets_of(raw: Any, what: str) -> tuple[Target, ...]:
        if not isinstance(raw, list):
            raise fail(f"{what}: targets must be a list of [node_id, input]")
        parsed: list[Target] = []
        for item in raw:
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(part, str) for part in item)):
                raise fail(f"{what}: each target must be [node_id, input], got {item!r}")
            node_id, input_name = item
            if node_id not in graph:
                raise fail(f"{what}: target node {node_id} is not in the graph")
            if input_name not in graph[node_id]["inputs"]:
                raise fail(f"{what}: node {node_id} ({graph[node_id]['class_type']}) has no input {input_name!r}")
            parsed.append((node_id, input_name))
        return tuple(parsed)

    raw_params = data.get("parameters", {})
    if not isinstance(raw_params, dict):
        raise fail("parameters must be an object")
    params: dict[str, ParamSpec] = {}
    for param_name, raw in raw_params.items():
        params[param_name] = _parse_param(param_name, raw, targets_of, fail)

    raw_images = data.get("images", {})
    if not isinstance(raw_images, dict) or not raw_images:
        raise fail("images must name at least one image parameter and its LoadImage inputs")
    images: dict[str, tuple[Target, ...]] = {}
    for image_param, raw in raw_images.items():
        if image_param in params:
            raise fail(f"{image_param} is both an image and a parameter")
        images[image_param] = targets_of(raw, f"images.{image_param}")
        if not images[image_param]:
            raise fail(f"images.{image_param} has no targets")

    prefix_targets = targets_of(data.get("filename_prefix", []), "filename_prefix")
    if not prefix_targets:
        raise fail("filename_prefix must name the save node's filename_prefix input")

    derived: dict[str, tuple[str, tuple[Target, ...]]] = {}
    raw_derived = data.get("derived", {})
    if not isinstance(raw_derived, dict):
        raise fail("derived must be an object")
    for derived_name, raw in raw_derived.items():
        if not isinstance(raw, dict) or raw.get("function") not in DERIVED_FUNCTIONS:
            raise fail(f"derived.{derived_name}: function must be one of {', '.join(DERIVED_FUNCTIONS)}")
        function = cast(str, raw["function"])
        missing = [need for need in DERIVED_FUNCTIONS[function].needs if need not in params]
        if missing:
            raise fail(f"derived.{derived_name}: {function} needs parameters {', '.join(missing)}")
        derived[derived_name] = (function, targets_of(raw.get("targets", []), f"derived.{derived_name}"))

    used_by_derived = {need for function, _ in derived.values() for need in DERIVED_FUNCTIONS[function].needs}
    for spec in params.values():
        if not spec.targets and not spec.ignored and spec.name not in used_by_derived:
            raise fail(f"parameters.{spec.name} sets nothing: give it targets or say why it is ignored")
        if spec.targets and spec.ignored:
            raise fail(f"parameters.{spec.name} has targets but is marked ignored")

    workflow = Workflow(
        name=name,
        kind=kind,
        graph=graph,
        params=params,
        timeout_seconds=float(timeout),
        output_kind=output,
        images=images,
        filename_prefix_targets=prefix_targets,
        derived=derived,
        description=str(data.get("description", "")),
        twin_of=str(data.get("twin_of", "")),
    )
    try:
        workflow.validate({})
    except WorkflowParameterError as exc:
        raise fail(f"the defaults do not validate: {exc.fields}") from exc
    return workflow


def _check_graph(graph: dict[str, Any], fail: Callable[[str], WorkflowDefinitionError]) -> None:
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise fail(f"node {node_id} must have a class_type")
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            raise fail(f"node {node_id} must have an inputs object")
        for input_name, value in inputs.items():
            if isinstance(value, list):
                if not (len(value) == 2 and isinstance(value[0], str) and type(value[1]) is int):
                    raise fail(f"node {node_id} input {input_name}: a link is [node_id, output_index]")
                if value[0] not in graph:
                    raise fail(f"node {node_id} input {input_name} links to missing node {value[0]}")


def _parse_param(
    name: str,
    raw: Any,
    targets_of: Callable[[Any, str], tuple[Target, ...]],
    fail: Callable[[str], WorkflowDefinitionError],
) -> ParamSpec:
    what = f"parameters.{name}"
    if not isinstance(raw, dict):
        raise fail(f"{what} must be an object")
    if not _NAME_RE.match(name):
        raise fail(f"{what}: names are lower-case letters, digits and underscores")
    param_type = raw.get("type")
    if param_type not in PARAM_TYPES:
        raise fail(f"{what}: type must be one of {', '.join(PARAM_TYPES)}")
    unknown = set(raw) - _PARAM_KEYS
    if unknown:
        raise fail(f"{what}: unknown keys {sorted(unknown)}")
    if "default" not in raw:
        raise fail(f"{what} needs a default")
    ignored = raw.get("ignored", "")
    if ignored is True or not isinstance(ignored, str):
        raise fail(f"{what}: ignored must say why, as a string")
    choices = raw.get("choices", [])
    if param_type == "choice" and (not isinstance(choices, list) or not choices):
        raise fail(f"{what}: a choice needs a non-empty choices list")
    spec = ParamSpec(
        name=name,
        type=param_type,
        default=raw["default"],
        minimum=raw.get("min"),
        maximum=raw.get("max"),
        multiple_of=raw.get("multiple_of"),
        min_length=int(raw.get("min_length", 0)),
        max_length=int(raw.get("max_length", DEFAULT_MAX_LENGTH)),
        choices=tuple(choices),
        targets=targets_of(raw.get("targets", []), what),
        ignored=ignored,
    )
    if spec.default == RANDOM_DEFAULT and spec.type != "int":
        raise fail(f'{what}: only int parameters may default to "random"')
    if not spec.random_default:
        _, error = spec.check(spec.default)
        if error is not None:
            raise fail(f"{what}: the default {spec.default!r} is not valid: {error}")
    return spec
