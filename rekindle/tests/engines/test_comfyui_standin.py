"""The stand-in answers like the recorded ComfyUI 0.3.64: statuses, body shapes, error types and message order."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.sync.client import ClientConnection, connect

from rekindle.testing.comfyui_fixtures import FIXTURES, StandinNode

pytestmark = pytest.mark.timeout(60)


def recording(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def upload(node: StandinNode, name: str, data: bytes, **form: str) -> requests.Response:
    return requests.post(f"{node.url}/upload/image", files={"image": (name, data, "image/jpeg")}, data=form, timeout=5)


def socket(node: StandinNode, client_id: str) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{node.port}/ws?clientId={client_id}", open_timeout=5)


def messages_until_end(ws: ClientConnection, prompt_id: str) -> list[dict[str, Any]]:
    """Text messages up to and including ``executing{node: null}`` for the prompt."""
    received = []
    while True:
        raw = ws.recv(timeout=20)
        if isinstance(raw, bytes):
            continue
        message = json.loads(raw)
        received.append(message)
        data = message["data"]
        if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
            return received


def types(messages: list[dict[str, Any]]) -> list[str]:
    return [message["type"] for message in messages]


@pytest.mark.parametrize(
    "path",
    [
        "/system_stats",
        "/object_info/LoadImage",
        "/object_info/ImageScaleToTotalPixels",
        "/object_info/SaveVideo",
        "/object_info/NoSuchNode",
        "/prompt",
        "/queue",
        "/history",
        "/features",
        "/api/system_stats",
    ],
)
def test_it_answers_the_recorded_read_routes_with_the_recorded_shape(comfy_standin: StandinNode, path: str) -> None:
    recorded = next(e for e in recording("01_server_basics.json")["exchanges"] if e["request"]["path"] == path)

    response = requests.get(comfy_standin.url + path, timeout=5)

    assert response.status_code == recorded["status"]
    assert response.headers["Content-Type"] == recorded["response_headers"]["Content-Type"]
    body = response.json()
    expected = recorded["response_body"]
    assert type(body) is type(expected)
    assert sorted(body) == sorted(expected)
    if path.startswith("/object_info/") and expected:
        (name,) = expected
        assert sorted(body[name]) == sorted(expected[name])
        assert body[name]["input_order"] == expected[name]["input_order"]


def test_it_serves_the_recorded_object_info_with_installed_models(comfy_standin: StandinNode) -> None:
    info = requests.get(comfy_standin.url + "/object_info", timeout=5).json()

    assert len(info) == 496
    assert "flux1-dev-kontext_fp8_scaled.safetensors" in info["UNETLoader"]["input"]["required"]["unet_name"][0]
    assert info["VAELoader"]["input"]["required"]["vae_name"][0][-1] == "pixel_space"


def test_it_stores_uploads_like_the_recording(comfy_standin: StandinNode) -> None:
    original = (FIXTURES / "simple_input.jpg").read_bytes()
    other = original[:-10] + b"0123456789"

    first = upload(comfy_standin, "upload_test.jpg", original, overwrite="true")
    same = upload(comfy_standin, "upload_test.jpg", original, overwrite="false")
    clash = upload(comfy_standin, "upload_test.jpg", other, overwrite="false")
    sub = upload(comfy_standin, "sub_test.jpg", original, overwrite="true", subfolder="peers_sub", type="input")
    missing = requests.post(
        f"{comfy_standin.url}/upload/image",
        files={"notimage": ("x.jpg", original)},
        data={"overwrite": "true"},
        timeout=5,
    )

    assert first.json() == {"name": "upload_test.jpg", "subfolder": "", "type": "input"}
    assert same.json()["name"] == "upload_test.jpg"
    assert clash.json()["name"] == "upload_test (1).jpg"
    assert sub.json() == {"name": "sub_test.jpg", "subfolder": "peers_sub", "type": "input"}
    assert (missing.status_code, missing.content) == (400, b"")
    view = requests.get(
        f"{comfy_standin.url}/view", params={"filename": "upload_test.jpg", "type": "input", "subfolder": ""}, timeout=5
    )
    assert view.content == original
    assert view.headers["Content-Type"] == "image/jpeg"


VALIDATION_CASES = [
    "unknown_node_class",
    "missing_required_input",
    "missing_required_input_on_output_node",
    "nonexistent_image_file",
    "value_out_of_range",
    "bad_combo_value_v1_node",
    "wrong_type_string_for_float",
    "link_to_missing_node",
    "link_type_mismatch_mask_into_image",
    "no_output_node",
    "body_without_prompt_key",
]


@pytest.mark.parametrize("case", VALIDATION_CASES)
def test_it_rejects_invalid_prompts_with_the_recorded_400_bodies(comfy_standin: StandinNode, case: str) -> None:
    exchange = next(c for c in recording("04_errors.json")["cases"] if c["case"] == case)["exchanges"][0]
    upload(comfy_standin, "err_ok.jpg", (FIXTURES / "simple_input.jpg").read_bytes(), overwrite="true")

    response = requests.post(f"{comfy_standin.url}/prompt", json=exchange["request"]["json"], timeout=5)

    expected = exchange["response_body"]
    body = response.json()
    assert response.status_code == exchange["status"] == 400
    assert sorted(body) == sorted(expected)
    assert body["error"]["type"] == expected["error"]["type"]
    assert body["error"]["message"] == expected["error"]["message"]
    assert sorted(body["node_errors"]) == sorted(expected["node_errors"])
    for node_id, node_error in expected["node_errors"].items():
        assert sorted(body["node_errors"][node_id]) == sorted(node_error)
        assert body["node_errors"][node_id]["class_type"] == node_error["class_type"]
        assert sorted(error["type"] for error in body["node_errors"][node_id]["errors"]) == sorted(
            error["type"] for error in node_error["errors"]
        )


def test_it_answers_malformed_json_with_the_recorded_plain_500(comfy_standin: StandinNode) -> None:
    response = requests.post(f"{comfy_standin.url}/prompt", data='{"prompt": {', timeout=5)

    assert response.status_code == 500
    assert response.text == "500 Internal Server Error\n\nServer got itself in trouble"


def test_it_accepts_a_bad_newer_style_combo_and_fails_at_execution_as_recorded(comfy_standin: StandinNode) -> None:
    """ComfyUI 0.3.64 does not check COMBO-typed inputs at /prompt; the node fails when it runs."""
    case = next(c for c in recording("04_errors.json")["cases"] if c["case"] == "bad_combo_value")
    upload(comfy_standin, "err_ok.jpg", (FIXTURES / "simple_input.jpg").read_bytes(), overwrite="true")
    request = dict(case["exchanges"][0]["request"]["json"])
    client_id = uuid.uuid4().hex
    request["client_id"] = client_id

    with socket(comfy_standin, client_id) as ws:
        response = requests.post(f"{comfy_standin.url}/prompt", json=request, timeout=5)
        messages = messages_until_end(ws, response.json()["prompt_id"])

    recorded_types = [m["type"] for m in case["ws_messages_after"] if m["type"] != "progress_state"]
    assert response.status_code == 200
    assert [t for t in types(messages)[1:] if t != "progress_state"] == recorded_types


def test_it_sends_the_recorded_message_sequence_and_history_for_a_run_and_a_cached_rerun(
    comfy_standin: StandinNode,
) -> None:
    data = recording("03_simple_workflow.json")
    upload(comfy_standin, "simple_input.jpg", (FIXTURES / "simple_input.jpg").read_bytes(), overwrite="true")
    client_id = uuid.uuid4().hex

    with socket(comfy_standin, client_id) as ws:
        greeting = json.loads(ws.recv(timeout=5))
        runs = []
        for _ in range(2):
            response = requests.post(
                f"{comfy_standin.url}/prompt", json={"prompt": data["prompt"], "client_id": client_id}, timeout=5
            )
            runs.append((response.json(), messages_until_end(ws, response.json()["prompt_id"])))

    assert greeting == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}}
    (first, first_messages), (_, second_messages) = runs
    assert sorted(first) == ["node_errors", "number", "prompt_id"]
    # The first recording stops at execution_success; the rest is what every run ends with.
    assert types(first_messages)[: len(data["runs"][0]["ws_messages"])] == types(data["runs"][0]["ws_messages"])
    assert types(first_messages)[-2:] == ["status", "executing"]
    assert types(second_messages) == types(data["runs"][1]["ws_messages"])
    cached = next(m for m in second_messages if m["type"] == "execution_cached")
    assert cached["data"]["nodes"] == ["1", "2", "3", "4"]

    recorded_entry = next(e for e in data["exchanges"] if e["request"]["path"].startswith("/history/"))["response_body"]
    recorded_entry = next(iter(recorded_entry.values()))
    entry = requests.get(f"{comfy_standin.url}/history/{first['prompt_id']}", timeout=5).json()[first["prompt_id"]]
    assert sorted(entry) == sorted(recorded_entry)
    assert sorted(entry["status"]) == sorted(recorded_entry["status"])
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in recorded_entry["status"]["messages"]]
    assert entry["prompt"][3] == {"client_id": client_id}
    assert entry["prompt"][4] == ["4"]
    image = entry["outputs"]["4"]["images"][0]
    view = requests.get(f"{comfy_standin.url}/view", params=image, timeout=5)
    assert view.headers["Content-Type"] == "image/png"
    assert view.headers["Content-Disposition"] == f'filename="{image["filename"]}"'
    assert len(view.content) > 10_000


@pytest.mark.parametrize("index", range(4))
def test_it_answers_view_errors_like_the_recording(comfy_standin: StandinNode, index: int) -> None:
    errors = [e for e in recording("08_preview_binary_misc.json")["exchanges"] if e["status"] != 200]
    exchange = errors[index]

    response = requests.get(f"{comfy_standin.url}/view", params=exchange["request"].get("params"), timeout=5)

    assert response.status_code == exchange["status"]
    assert response.content == b""


def test_it_gives_a_second_socket_with_the_same_client_id_the_messages(comfy_standin: StandinNode) -> None:
    upload(comfy_standin, "simple_input.jpg", (FIXTURES / "simple_input.jpg").read_bytes(), overwrite="true")
    prompt = recording("03_simple_workflow.json")["prompt"]
    client_id = uuid.uuid4().hex

    with socket(comfy_standin, client_id) as old, socket(comfy_standin, client_id) as new:
        old.recv(timeout=5)
        response = requests.post(
            f"{comfy_standin.url}/prompt", json={"prompt": prompt, "client_id": client_id}, timeout=5
        )
        received = messages_until_end(new, response.json()["prompt_id"])
        with pytest.raises(TimeoutError):
            old.recv(timeout=0.3)

    assert "execution_success" in types(received)


def test_it_broadcasts_only_status_and_progress_state_for_a_prompt_without_client(comfy_standin: StandinNode) -> None:
    upload(comfy_standin, "simple_input.jpg", (FIXTURES / "simple_input.jpg").read_bytes(), overwrite="true")
    prompt = recording("03_simple_workflow.json")["prompt"]
    recorded = recording("08_preview_binary_misc.json")["no_client_id_run_ws_messages"]

    with socket(comfy_standin, uuid.uuid4().hex) as listener:
        listener.recv(timeout=5)
        prompt_id = requests.post(f"{comfy_standin.url}/prompt", json={"prompt": prompt}, timeout=5).json()["prompt_id"]
        seen = set()
        while True:
            try:
                seen.add(json.loads(listener.recv(timeout=1.0))["type"])
            except TimeoutError:
                break

    assert seen == {m["type"] for m in recorded} == {"status", "progress_state"}
    assert prompt_id in comfy_standin.state()["history"]


def test_it_deletes_interrupts_and_records_the_interruption_like_the_recording(comfy_standin: StandinNode) -> None:
    comfy_standin.set_faults(sampler_seconds=10)
    graph = json.loads((Path(FIXTURES) / "graphs" / "restore_flux.json").read_text())
    upload(comfy_standin, "input.jpg", (FIXTURES / "simple_input.jpg").read_bytes(), overwrite="true")
    graph["190"]["inputs"]["image"] = "input.jpg"
    ids = [
        requests.post(f"{comfy_standin.url}/prompt", json={"prompt": graph}, timeout=5).json()["prompt_id"]
        for _ in range(2)
    ]
    queue = requests.get(f"{comfy_standin.url}/queue", timeout=5).json()

    deleted = requests.post(f"{comfy_standin.url}/queue", json={"delete": [ids[1]]}, timeout=5)
    interrupted = requests.post(f"{comfy_standin.url}/interrupt", json={"prompt_id": ids[0]}, timeout=5)

    assert [item[1] for item in queue["queue_running"]] == [ids[0]]
    assert [item[1] for item in queue["queue_pending"]] == [ids[1]]
    assert len(queue["queue_running"][0]) == 5
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert (interrupted.status_code, interrupted.content) == (200, b"")
    deadline = time.monotonic() + 5
    while not (entry := requests.get(f"{comfy_standin.url}/history/{ids[0]}", timeout=5).json()):
        assert time.monotonic() < deadline, "the interrupted prompt never reached history"
        time.sleep(0.05)
    status = entry[ids[0]]["status"]
    assert status["status_str"] == "error"
    assert status["messages"][-1][0] == "execution_interrupted"
    assert requests.get(f"{comfy_standin.url}/history/{ids[1]}", timeout=5).json() == {}


def test_it_records_when_each_prompt_was_queued_started_and_ended(comfy_standin: StandinNode) -> None:
    comfy_standin.set_faults(sampler_seconds=5)
    graph = json.loads((Path(FIXTURES) / "graphs" / "restore_flux.json").read_text())
    upload(comfy_standin, "input.jpg", (FIXTURES / "simple_input.jpg").read_bytes(), overwrite="true")
    graph["190"]["inputs"]["image"] = "input.jpg"
    ids = [
        requests.post(
            f"{comfy_standin.url}/prompt", json={"prompt": graph, "extra_data": {"rekindle_run": f"run-{n}"}}, timeout=5
        ).json()["prompt_id"]
        for n in range(2)
    ]
    requests.post(f"{comfy_standin.url}/queue", json={"delete": [ids[1]]}, timeout=5)
    requests.post(f"{comfy_standin.url}/interrupt", json={"prompt_id": ids[0]}, timeout=5)
    deadline = time.monotonic() + 5
    while len(comfy_standin.prompt_record()) < 5:
        assert time.monotonic() < deadline, comfy_standin.prompt_record()
        time.sleep(0.05)

    record = comfy_standin.prompt_record()
    steps = [(event["event"], event["prompt_id"], event["how"]) for event in record]
    assert sorted(steps) == sorted(
        [
            ("queued", ids[0], ""),
            ("queued", ids[1], ""),
            ("started", ids[0], ""),
            ("ended", ids[1], "deleted"),
            ("ended", ids[0], "interrupted"),
        ]
    )
    assert [event["run"] for event in record if event["event"] == "queued"] == ["run-0", "run-1"]
    assert [event["t"] for event in record] == sorted(event["t"] for event in record)
    assert requests.get(f"{comfy_standin.url}/_standin/prompts", timeout=5).json() == record


def test_it_answers_a_route_with_the_http_fault_switched_on_and_then_as_itself(comfy_standin: StandinNode) -> None:
    comfy_standin.set_http_fault("POST /upload/image", status=413, times=1, body="Request Entity Too Large")
    comfy_standin.set_http_fault("GET /history/*", status=503, times=2, retry_after=3)
    data = (FIXTURES / "simple_input.jpg").read_bytes()

    refused = upload(comfy_standin, "a.jpg", data, overwrite="true")
    stored = upload(comfy_standin, "a.jpg", data, overwrite="true")
    busy = [requests.get(f"{comfy_standin.url}{prefix}/history/x", timeout=5) for prefix in ("", "/api")]
    answered = requests.get(f"{comfy_standin.url}/history/x", timeout=5)
    bad = requests.post(f"{comfy_standin.url}/_standin/faults", json={"http": {"GET /queue": {}}}, timeout=5)

    assert (refused.status_code, refused.text) == (413, "Request Entity Too Large")
    assert stored.status_code == 200
    assert [(r.status_code, r.headers.get("Retry-After")) for r in busy] == [(503, "3"), (503, "3")]
    assert (answered.status_code, answered.json()) == (200, {})
    assert bad.status_code == 400
    assert comfy_standin.counters()["uploads"] == 1
