"""Recorded ComfyUI 0.3.64 message sequences and history entries replayed through the client's parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rekindle.engines.comfyui.protocol import (
    PromptTracker,
    describe_execution_error,
    describe_rejection,
    is_out_of_memory,
    outcome_from_history,
    output_files,
)
from rekindle.testing.comfyui_standin.server import OOM_EXCEPTION_TYPE, OOM_MESSAGE

FIXTURES = Path(__file__).resolve().parents[2] / "testing" / "fixtures" / "comfyui"


def recording(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def replay(graph: dict[str, Any], prompt_id: str, messages: list[dict[str, Any]]) -> tuple[PromptTracker, list[int]]:
    tracker = PromptTracker(graph, prompt_id)
    seen: list[int] = []
    for message in messages:
        if message["kind"] != "text":
            continue
        tracker.feed({"type": message["type"], "data": message["data"]})
        seen.append(tracker.percent)
    return tracker, seen


def history_entry(exchanges: list[dict[str, Any]], prompt_id: str) -> dict[str, Any]:
    for exchange in exchanges:
        if exchange.get("request", {}).get("path") == f"/history/{prompt_id}":
            entry: dict[str, Any] = exchange["response_body"][prompt_id]
            return entry
    raise AssertionError(f"no history for {prompt_id}")


def test_it_follows_the_recorded_simple_run_to_success_with_rising_progress() -> None:
    data = recording("03_simple_workflow.json")
    run = data["runs"][0]
    tracker, seen = replay(data["prompt"], run["prompt_id"], run["ws_messages"])

    assert tracker.success
    assert tracker.terminal
    assert seen == sorted(seen)
    assert seen[-1] == 100
    # Four nodes, each a quarter: the bar passes through the shares on the way.
    assert {25, 50, 75} <= set(seen)
    outcome = tracker.outcome_from_messages()
    assert outcome is not None
    assert [file.filename for file in outcome.outputs] == ["peers_simple_00003_.png"]


def test_it_counts_cached_nodes_as_done_in_the_recorded_cached_run() -> None:
    data = recording("03_simple_workflow.json")
    run = data["runs"][1]
    tracker = PromptTracker(data["prompt"], run["prompt_id"])
    messages = [m for m in run["ws_messages"] if m["kind"] == "text"]
    cached_at = next(i for i, m in enumerate(messages) if m["type"] == "execution_cached")
    for message in messages[: cached_at + 1]:
        tracker.feed({"type": message["type"], "data": message["data"]})

    assert tracker.percent == 99  # every node cached, success not yet seen
    for message in messages[cached_at + 1 :]:
        tracker.feed({"type": message["type"], "data": message["data"]})
    assert tracker.success
    assert tracker.ended
    assert tracker.percent == 100


def test_it_sees_success_before_the_end_message_as_recorded() -> None:
    """execution_success comes before executing{node: null}: outputs are read from history only after the end."""
    data = recording("03_simple_workflow.json")
    run = data["runs"][1]
    order = [m["type"] for m in run["ws_messages"] if m["kind"] == "text"]
    success_at = order.index("execution_success")
    end_at = max(i for i, m in enumerate(run["ws_messages"]) if m["type"] == "executing" and m["data"]["node"] is None)

    assert success_at < end_at
    tracker, _ = replay(data["prompt"], run["prompt_id"], run["ws_messages"][: success_at + 1])
    assert tracker.success
    assert not tracker.ended


def test_it_moves_the_bar_within_a_node_on_progress_messages() -> None:
    graph: dict[str, Any] = {"1": {}, "2": {}}
    tracker = PromptTracker(graph, "p")
    tracker.feed({"type": "execution_cached", "data": {"nodes": ["1"], "prompt_id": "p"}})
    tracker.feed({"type": "executing", "data": {"node": "2", "prompt_id": "p"}})
    assert tracker.percent == 50
    tracker.feed({"type": "progress", "data": {"value": 5, "max": 10, "node": "2", "prompt_id": "p"}})
    assert tracker.percent == 75
    tracker.feed({"type": "progress", "data": {"value": 5, "max": 10, "node": "2", "prompt_id": "other"}})
    assert tracker.percent == 75


def test_it_reads_the_recorded_execution_error_from_the_socket_and_from_history() -> None:
    data = recording("04_errors.json")
    case = next(c for c in data["cases"] if c["case"] == "execution_time_error_corrupt_image")
    prompt = case["exchanges"][1]["request"]["json"]["prompt"]
    tracker, _ = replay(prompt, case["prompt_id"], case["ws_messages"])

    from_socket = tracker.outcome_from_messages()
    from_history = outcome_from_history(history_entry(case["exchanges"], case["prompt_id"]))
    assert from_socket is not None
    assert from_socket.status == "error"
    assert from_history is not None
    assert from_history.status == "error"
    assert from_history.error["exception_type"] == "PIL.UnidentifiedImageError"
    assert not is_out_of_memory(from_history.error)
    assert describe_execution_error(from_history.error).startswith(
        "Node 1 (LoadImage) failed: PIL.UnidentifiedImageError"
    )


def test_it_keeps_the_outputs_of_finished_nodes_after_a_recorded_partial_failure() -> None:
    data = recording("04_errors.json")
    case = next(c for c in data["cases"] if c["case"] == "execution_time_error_after_partial_success")
    outcome = outcome_from_history(history_entry(case["exchanges"], case["prompt_id"]))

    assert outcome is not None
    assert outcome.status == "error"
    assert [file.filename for file in outcome.outputs] == ["peers_err_ok_00003_.png"]


def test_it_reads_the_recorded_interruption_as_interrupted() -> None:
    data = recording("06_queue_interrupt.json")
    prompt_a = data["prompt_ids"]["A"]
    tracker, _ = replay(data["long_prompt_example"], prompt_a, data["ws_messages"])
    history = next(s for s in data["steps"] if s["step"] == "GET /history/A")["exchange"]["response_body"][prompt_a]

    assert tracker.interrupted is not None
    from_socket = tracker.outcome_from_messages()
    assert from_socket is not None
    assert from_socket.status == "interrupted"
    outcome = outcome_from_history(history)
    assert outcome is not None
    assert outcome.status == "interrupted"


def test_it_takes_video_and_animated_outputs_under_images_with_the_animated_flag() -> None:
    data = recording("05_video_animated.json")
    entry = history_entry(data["exchanges"], data["run"]["prompt_id"])
    files = {file.filename: file for file in output_files(entry["outputs"])}

    assert files["peers_mp4_00003_.mp4"].subfolder == "video"
    assert all(file.is_video for file in files.values())


def test_it_takes_videohelpersuite_gifs_and_skips_temp_previews() -> None:
    data = recording("08_preview_binary_misc.json")
    preview = next(m for m in data["preview_run_ws_messages"] if m["type"] == "executed")["data"]["output"]
    vhs = {
        "9": {
            "gifs": [
                {"filename": "AnimateDiff_00001.mp4", "subfolder": "", "type": "output", "format": "video/h264-mp4"}
            ]
        }
    }

    assert output_files({"3": preview}) == []
    assert len(output_files({"3": preview}, include_temp=True)) == 1
    assert [file.is_video for file in output_files(vhs)] == [True]


@pytest.mark.parametrize(
    "case",
    [
        "unknown_node_class",
        "missing_required_input",
        "nonexistent_image_file",
        "value_out_of_range",
        "bad_combo_value_v1_node",
        "no_output_node",
    ],
)
def test_it_makes_recorded_400_bodies_readable(case: str) -> None:
    data = recording("04_errors.json")
    exchange = next(c for c in data["cases"] if c["case"] == case)["exchanges"][0]
    message, details = describe_rejection(exchange["response_body"])

    body = exchange["response_body"]
    assert body["error"]["message"] in message
    for node_id, node_error in body["node_errors"].items():
        assert f"node {node_id} ({node_error['class_type']})" in message
        for error in node_error["errors"]:
            assert error["message"] in message
    assert details["type"] == body["error"]["type"]


def test_it_recognises_the_out_of_memory_error_comfyui_sends() -> None:
    error = {
        "node_id": "31",
        "node_type": "KSampler",
        "exception_type": OOM_EXCEPTION_TYPE,
        "exception_message": OOM_MESSAGE,
    }

    assert is_out_of_memory(error)
    assert describe_execution_error(error) == (
        "Node 31 (KSampler) failed: torch.OutOfMemoryError: "
        "Allocation on device This error means you ran out of memory on your GPU."
    )
