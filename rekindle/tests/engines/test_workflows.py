"""Workflow files and their parameter maps: every file checked against the recorded ComfyUI, validation, building."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.exceptions import APIException

from rekindle.api_errors import exception_handler
from rekindle.workflows import (
    WorkflowDefinitionError,
    WorkflowParameterError,
    all_workflows,
    get_workflow,
    parse_workflow,
    wan_frames,
    workflow_for_kind,
)

# The object_info recorded from ComfyUI 0.3.64, shared with the stand-in server.
FIXTURES = Path(__file__).resolve().parents[2] / "testing" / "fixtures" / "comfyui"
WORKFLOWS_DIR = Path(__file__).resolve().parents[3] / "workflows"
WORKFLOW_NAMES = sorted(path.stem for path in WORKFLOWS_DIR.glob("*.json"))
CPU_TWINS = [name for name in WORKFLOW_NAMES if name.endswith("_cpu")]
# object_info as recorded from a real ComfyUI 0.3.64 with core nodes only and no model files.
OBJECT_INFO: dict[str, Any] = json.loads(gzip.decompress((FIXTURES / "object_info_full.json.gz").read_bytes()))


def _raw(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())
    return data


def _input_spec(class_type: str, input_name: str) -> tuple[Any, dict[str, Any]] | None:
    info = OBJECT_INFO[class_type]["input"]
    for section in ("required", "optional"):
        if input_name in info.get(section, {}):
            spec = info[section][input_name]
            return spec[0], (spec[1] if len(spec) > 1 else {})
    return None


# Inputs whose choices are the model files on a node: the recorded server had none.
MODEL_FILE_INPUTS = {"unet_name", "vae_name", "clip_name", "clip_name1", "clip_name2", "ckpt_name", "lora_name"}


def _literal_problem(type_spec: Any, options: dict[str, Any], value: Any) -> str | None:
    """Why ComfyUI's validation would reject this literal input value (None when it accepts it)."""
    if isinstance(type_spec, list) or type_spec == "COMBO":
        choices = type_spec if isinstance(type_spec, list) else options.get("options", [])
        return None if value in choices else f"{value!r} not in {choices}"
    if type_spec == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{value!r} is not an INT"
    elif type_spec == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{value!r} is not a FLOAT"
    elif type_spec == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a STRING"
    elif type_spec == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a BOOLEAN"
    else:
        return f"a literal given for a {type_spec} input"
    if "min" in options and value < options["min"]:
        return f"{value} is below the node's min {options['min']}"
    if "max" in options and value > options["max"]:
        return f"{value} is above the node's max {options['max']}"
    return None


def _graph_problems(graph: dict[str, Any], *, models_present: bool) -> list[str]:
    problems = []
    for node_id, node in graph.items():
        class_type = node["class_type"]
        if class_type not in OBJECT_INFO:
            problems.append(f"{node_id}: unknown class_type {class_type}")
            continue
        required = OBJECT_INFO[class_type]["input"].get("required", {})
        missing = [name for name in required if name not in node["inputs"]]
        problems += [f"{node_id} {class_type}: required input {name} missing" for name in missing]
        for input_name, value in node["inputs"].items():
            spec = _input_spec(class_type, input_name)
            if spec is None:
                problems.append(f"{node_id} {class_type}: no input named {input_name}")
                continue
            type_spec, options = spec
            if isinstance(value, list):
                source_id, index = value
                if source_id not in graph:
                    problems.append(f"{node_id}.{input_name}: links to missing node {source_id}")
                    continue
                outputs = OBJECT_INFO[graph[source_id]["class_type"]]["output"]
                if index >= len(outputs) or outputs[index] != type_spec:
                    problems.append(
                        f"{node_id}.{input_name} wants {type_spec}, link gives {outputs[index : index + 1]}"
                    )
            elif (class_type, input_name) == ("LoadImage", "image"):
                continue  # its choices are the files uploaded to that node, so any uploaded name is valid
            elif input_name in MODEL_FILE_INPUTS and not models_present:
                if not isinstance(value, str) or not value.endswith((".safetensors", ".gguf", ".pth", ".ckpt")):
                    problems.append(f"{node_id} {class_type}.{input_name}: {value!r} is not a model file name")
            else:
                problem = _literal_problem(type_spec, options, value)
                if problem:
                    problems.append(f"{node_id} {class_type}.{input_name}: {problem}")
    return problems


def test_it_has_each_production_workflow_and_its_cpu_twin() -> None:
    assert set(WORKFLOW_NAMES) == {
        "restore",
        "restore_cpu",
        "animate_preview",
        "animate_preview_cpu",
        "animate_hd",
        "animate_hd_cpu",
    }
    assert [w.name for w in all_workflows()] == WORKFLOW_NAMES
    for twin in CPU_TWINS:
        workflow = get_workflow(twin)
        assert workflow.twin_of == twin.removesuffix("_cpu")
        assert workflow.kind == get_workflow(workflow.twin_of).kind


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_it_links_only_to_nodes_and_targets_only_inputs_that_exist(name: str) -> None:
    raw = _raw(name)
    graph = raw["graph"]
    for node_id, node in graph.items():
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert value[0] in graph, f"{node_id} links to {value[0]}"
    targets = [t for spec in raw["parameters"].values() for t in spec.get("targets", [])]
    targets += [t for items in raw["images"].values() for t in items]
    targets += raw["filename_prefix"]
    targets += [t for derived in raw.get("derived", {}).values() for t in derived["targets"]]
    assert targets
    for node_id, input_name in targets:
        assert input_name in graph[node_id]["inputs"], f"{node_id}.{input_name}"
    for node_id, _ in raw["images"]["image"]:
        assert graph[node_id]["class_type"] == "LoadImage"


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_it_uses_only_node_classes_and_inputs_the_recorded_comfyui_accepts(name: str) -> None:
    workflow = get_workflow(name)
    assert _graph_problems(dict(workflow.graph), models_present=False) == []
    # The graph as it will be sent, with the defaults and the extremes of every range written in.
    for choose in ("min", "max"):
        params = {
            spec.name: getattr(spec, "minimum" if choose == "min" else "maximum")
            for spec in workflow.params.values()
            if spec.minimum is not None
        }
        built = workflow.build(params, {"image": "photo.png"}, filename_prefix="restored/x")
        assert _graph_problems(built, models_present=False) == [], choose


@pytest.mark.parametrize("name", CPU_TWINS)
def test_it_builds_cpu_twins_from_core_nodes_with_every_choice_valid(name: str) -> None:
    graph = get_workflow(name).build({}, {"image": "photo.png"}, filename_prefix="x")
    assert _graph_problems(graph, models_present=True) == []
    model_loaders = {"UNETLoader", "VAELoader", "CLIPLoader", "DualCLIPLoader", "CheckpointLoaderSimple"}
    assert not {node["class_type"] for node in graph.values()} & model_loaders


@pytest.mark.parametrize("name", CPU_TWINS)
def test_it_gives_twins_the_same_parameters_as_their_production_workflow(name: str) -> None:
    twin = get_workflow(name)
    production = get_workflow(twin.twin_of)
    assert twin.params.keys() == production.params.keys()
    for param, spec in twin.params.items():
        assert spec.describe() | {"ignored": ""} == production.params[param].describe() | {"ignored": ""}, param
    # What a twin does not use, it says so explicitly.
    assert {p for p, s in twin.params.items() if not s.targets and p not in ("seconds",)} == {
        p for p, s in twin.params.items() if s.ignored
    }


def test_it_fills_defaults_and_draws_a_fresh_seed() -> None:
    restore = get_workflow("restore")
    first = restore.validate(None)
    second = restore.validate({})
    assert first["steps"] == 20
    assert first["guidance"] == 2.5
    assert first["megapixels"] == 1.0
    assert first["prompt"].startswith("Restore this damaged photo")
    assert isinstance(first["seed"], int)
    assert 0 <= first["seed"] <= 4294967295
    assert first["seed"] != second["seed"] or first["seed"] != restore.validate({})["seed"]
    # A validated set validates to itself, so engines may validate again without changing a seed.
    assert restore.validate(first) == first
    assert restore.validate({"seed": 7, "guidance": 3})["guidance"] == 3.0


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"steps": True}, "steps", "whole number"),
        ({"steps": 20.0}, "steps", "whole number"),
        ({"steps": "20"}, "steps", "whole number"),
        ({"steps": 0}, "steps", "at least 1"),
        ({"steps": 51}, "steps", "at most 50"),
        ({"guidance": False}, "guidance", "number"),
        ({"guidance": float("nan")}, "guidance", "finite"),
        ({"megapixels": 16}, "megapixels", "at most 4"),
        ({"prompt": "x" * 2001}, "prompt", "2000 characters"),
        ({"prompt": "   "}, "prompt", "empty"),
        ({"prompt": 12}, "prompt", "string"),
        ({"colour": "sepia"}, "colour", "Unknown parameter"),
    ],
)
def test_it_rejects_bad_restore_parameters(params: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(WorkflowParameterError) as caught:
        get_workflow("restore").validate(params)
    assert message in caught.value.fields[field]
    assert list(caught.value.fields) == [field]


def test_it_rejects_sizes_that_are_not_multiples_of_16_and_reports_every_field() -> None:
    with pytest.raises(WorkflowParameterError) as caught:
        get_workflow("animate_preview").validate({"width": 500, "height": 1024, "fps": 16.0, "seconds": 9})
    assert caught.value.fields == {
        "width": "Must be a multiple of 16.",
        "height": "Must be at most 512.",
        "fps": "Must be a whole number.",
        "seconds": "Must be at most 3.",
    }


def test_it_rejects_parameters_that_are_not_an_object() -> None:
    with pytest.raises(WorkflowParameterError) as caught:
        get_workflow("restore").validate(["steps", 3])  # type: ignore[arg-type]
    assert "parameters" in caught.value.fields


def test_it_answers_bad_parameters_with_a_400_in_the_api_error_shape() -> None:
    with pytest.raises(WorkflowParameterError) as caught:
        get_workflow("animate_hd").validate({"width": 17})
    # A service error, not an HTTP one: the API's handler gives it its status.
    assert not isinstance(caught.value, APIException)
    response = exception_handler(caught.value, {})
    assert response is not None
    assert response.status_code == 400
    assert response.data == {
        "error": {
            "code": "invalid_parameters",
            "message": "Some parameters are not valid for this workflow.",
            "details": {"fields": {"width": "Must be at least 256."}},
        }
    }


def test_it_builds_the_restore_graph_with_every_parameter_in_place() -> None:
    restore = get_workflow("restore")
    untouched = copy.deepcopy(dict(restore.graph))
    graph = restore.build(
        {"prompt": "Fix the tear", "seed": 42, "steps": 12, "guidance": 3.5, "denoise": 0.8, "megapixels": 2},
        {"image": "attempt-1_photo.png"},
        filename_prefix="restored/attempt-1",
    )
    assert graph["6"]["inputs"]["text"] == "Fix the tear"
    assert graph["31"]["inputs"]["seed"] == 42
    assert graph["31"]["inputs"]["steps"] == 12
    assert graph["31"]["inputs"]["denoise"] == 0.8
    assert graph["35"]["inputs"]["guidance"] == 3.5
    assert graph["200"]["inputs"]["megapixels"] == 2.0
    assert graph["190"]["inputs"]["image"] == "attempt-1_photo.png"
    assert graph["136"]["inputs"]["filename_prefix"] == "restored/attempt-1"
    # The scale node sits between the decoder and the save node.
    assert graph["136"]["inputs"]["images"] == ["200", 0]
    assert graph["200"]["inputs"]["image"] == ["8", 0]
    assert dict(get_workflow("restore").graph) == untouched


def test_it_computes_the_wan_frame_count_from_seconds_and_fps() -> None:
    assert wan_frames(5, 16) == 81
    assert wan_frames(2, 16) == 33
    assert wan_frames(3, 12) == 37
    assert wan_frames(2.5, 15) == 37
    assert wan_frames(0.01, 8) == 5
    assert all((wan_frames(s / 2, fps) - 1) % 4 == 0 for s in range(1, 21) for fps in range(8, 25))
    hd = get_workflow("animate_hd").build(
        {"seconds": 5, "fps": 16, "width": 832, "height": 480, "seed": 3},
        {"image": "r.png"},
        filename_prefix="video/hd",
    )
    assert hd["98"]["inputs"]["length"] == 81
    assert (hd["98"]["inputs"]["width"], hd["98"]["inputs"]["height"]) == (832, 480)
    assert hd["94"]["inputs"]["fps"] == 16
    assert hd["86"]["inputs"]["noise_seed"] == 3
    assert hd["97"]["inputs"]["image"] == "r.png"
    twin = get_workflow("animate_preview_cpu").build({"fps": 12}, {"image": "r.png"}, filename_prefix="video/p")
    assert twin["3"]["inputs"]["amount"] == wan_frames(2, 12) == 25
    assert twin["4"]["inputs"]["fps"] == 12
    assert twin["5"]["inputs"]["filename_prefix"] == "video/p"


@pytest.mark.parametrize("prefix", ["../etc/passwd", "/abs", "a/../b", "a b", ""])
def test_it_refuses_unsafe_filename_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        get_workflow("restore_cpu").build({}, {"image": "x.png"}, filename_prefix=prefix)


def test_it_requires_exactly_the_workflows_images() -> None:
    with pytest.raises(ValueError, match="takes images"):
        get_workflow("restore").build({}, {}, filename_prefix="x")
    with pytest.raises(ValueError, match="takes images"):
        get_workflow("restore").build({}, {"image": "a.png", "mask": "b.png"}, filename_prefix="x")


def test_it_raises_key_error_for_unknown_or_unsafe_names() -> None:
    for name in ("nope", "../restore", "restore.json", "Restore", ""):
        with pytest.raises(KeyError):
            get_workflow(name)


def test_it_picks_the_workflow_for_each_kind_from_settings() -> None:
    assert workflow_for_kind("restore").name == "restore"
    assert workflow_for_kind("animate_preview").name == "animate_preview"
    assert workflow_for_kind("animate_hd").name == "animate_hd"
    with override_settings(REKINDLE_WORKFLOW_RESTORE="restore_cpu", REKINDLE_WORKFLOW_ANIMATE_HD="animate_hd_cpu"):
        assert workflow_for_kind("restore").name == "restore_cpu"
        assert workflow_for_kind("animate_hd").name == "animate_hd_cpu"
    with override_settings(REKINDLE_WORKFLOW_ANIMATE_PREVIEW="restore"), pytest.raises(WorkflowDefinitionError):
        workflow_for_kind("animate_preview")
    with override_settings(REKINDLE_WORKFLOW_RESTORE="missing"), pytest.raises(WorkflowDefinitionError):
        workflow_for_kind("restore")
    with pytest.raises(KeyError):
        workflow_for_kind("upscale")


def test_it_loads_workflows_from_the_configured_folder(tmp_path: Path) -> None:
    data = _raw("restore_cpu")
    data["parameters"]["megapixels"]["default"] = 2.0
    (tmp_path / "restore_cpu.json").write_text(json.dumps(data))
    with override_settings(REKINDLE_WORKFLOWS_DIR=tmp_path):
        assert get_workflow("restore_cpu").validate({})["megapixels"] == 2.0
        assert [w.name for w in all_workflows()] == ["restore_cpu"]
    assert get_workflow("restore_cpu").validate({})["megapixels"] == 1.0


def _broken(change: str) -> dict[str, Any]:
    data = _raw("restore_cpu")
    if change == "dangling link":
        data["graph"]["4"]["inputs"]["image"] = ["99", 0]
    elif change == "missing input":
        data["parameters"]["megapixels"]["targets"] = [["3", "megapixel"]]
    elif change == "bad default":
        data["parameters"]["megapixels"]["default"] = 9.0
    elif change == "unused parameter":
        del data["parameters"]["steps"]["ignored"]
    elif change == "unknown function":
        data["derived"] = {"frames": {"function": "eval", "targets": []}}
    elif change == "no save node":
        data["filename_prefix"] = []
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("dangling link", "missing node 99"),
        ("missing input", "no input 'megapixel'"),
        ("bad default", "default 9.0 is not valid"),
        ("unused parameter", "steps sets nothing"),
        ("unknown function", "function must be one of"),
        ("no save node", "filename_prefix"),
    ],
)
def test_it_refuses_broken_workflow_files_with_a_message_naming_the_problem(change: str, message: str) -> None:
    with pytest.raises(WorkflowDefinitionError, match=message):
        parse_workflow("broken", _broken(change))
