"""Pytest fixtures that start stand-in ComfyUI servers (``rekindle.testing.comfyui_standin``) as real processes.

Each server is its own process on a free loopback port, so a test can really crash or
restart it. Processes are started once per test session and handed out by
``comfy_standins(n)``, which resets each one (faults, counters, queue, history, files)
and restarts any that a previous test killed.

    def test_it_runs(comfy_standins):
        node_a, node_b = comfy_standins(2)
        node_a.set_faults(crash=1)          # the next prompt kills the process mid-run
        ...
        assert node_b.counters()["prompts"] == 1

``comfy_settings`` points the Django settings at stand-in nodes (``REKINDLE_ENGINE=comfyui``)
with short timeouts, for end-to-end tests through ``get_engine()``.

Each stand-in appends every prompt's life (queued, started, ended) to its record file, which
outlives a crash of the process; ``overlapping_prompts(nodes)`` reads the records of several
nodes and names any run whose prompts were queued or running on two of them at once.

    node_a.set_http_fault("GET /history/*", status=500, times=-1)   # while the prompt runs
    ...
    assert overlapping_prompts([node_a, node_b]) == []
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from rekindle.engines.base import InputImage
from rekindle.engines.comfyui.pool import ComfyNodePool, PoolConfig

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "comfyui"
START_TIMEOUT_SECONDS = 30.0


def fixture_graph(name: str) -> dict[str, Any]:
    """An API-format graph from ``fixtures/comfyui/graphs/`` (``restore_twin``, ``video_twin``,
    ``restore_flux``, ``animate_wan``)."""
    graph: dict[str, Any] = json.loads((FIXTURES / "graphs" / f"{name}.json").read_text())
    return graph


def graph_builder(name: str, **input_overrides: Any) -> Callable[[Mapping[str, str]], dict[str, Any]]:
    """A ``build_graph`` for ``ComfyNodePool.run_graph``: the uploaded ``image`` goes into every LoadImage.

    ``input_overrides`` set other inputs by name wherever a node has them (``megapixels=99``).
    """
    template = fixture_graph(name)

    def build(images: Mapping[str, str]) -> dict[str, Any]:
        graph: dict[str, Any] = json.loads(json.dumps(template))
        for node in graph.values():
            if node["class_type"] == "LoadImage":
                node["inputs"]["image"] = images["image"]
            for key, value in input_overrides.items():
                if key in node["inputs"]:
                    node["inputs"][key] = value
        return graph

    return build


def sample_input(param: str = "image") -> InputImage:
    """The recorded run's input photo (640x480 JPEG) as an engine input."""
    return InputImage(param=param, filename="photo.jpg", data=(FIXTURES / "simple_input.jpg").read_bytes())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class StandinNode:
    """One stand-in ComfyUI process: its URL, its controls, and start/kill/restart."""

    def __init__(self, *, port: int | None = None, exec_seconds: float = 0.2, switch_seconds: float = 0.0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.exec_seconds = exec_seconds
        self.switch_seconds = switch_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"comfyui-standin-{self.port}.log"
        self.record_path = Path(tempfile.gettempdir()) / f"comfyui-standin-{self.port}.prompts.jsonl"

    def __repr__(self) -> str:
        return f"StandinNode({self.url})"

    # --- process -------------------------------------------------------------------
    def start(self) -> StandinNode:
        command = [
            sys.executable,
            "-m",
            "rekindle.testing.comfyui_standin",
            "--port",
            str(self.port),
            "--exec-seconds",
            str(self.exec_seconds),
            "--switch-seconds",
            str(self.switch_seconds),
            "--record",
            str(self.record_path),
            "--parent-pid",
            str(os.getpid()),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"stand-in on port {self.port} exited at start; see {self.log_path}")
            try:
                if requests.get(self.url + "/system_stats", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"stand-in on port {self.port} did not answer within {START_TIMEOUT_SECONDS}s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """Kill the process at once (what a node crash looks like from outside)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            # Whatever it held ended with it; written here, since it cannot write any more.
            with self.record_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"t": time.time(), "event": "killed"}) + "\n")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> StandinNode:
        """A real restart: a new process on the same port, with empty queue and history."""
        self.kill()
        return self.start()

    def wait_dead(self, timeout: float = 10.0) -> bool:
        """Wait for the process to exit on its own (a crash fault); True if it did."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    # --- controls ------------------------------------------------------------------
    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Switch faults on: counted ones (``crash``, ``restart``, ``drop_socket``, ``silent_socket``,
        ``execution_error``, ``oom``, ``reject``: how many prompts, -1 for all), settings
        (``sampler_seconds``, ``switch_seconds``, ``node_delay``, ``missing_classes``, ``missing_models``),
        and ``http={"METHOD /path": {"status", "times", "retry_after", "after", "delay", "body"}}``
        (see ``set_http_fault``). Setting ``http`` replaces every http fault set before."""
        response = requests.post(self.url + "/_standin/faults", data=json.dumps(faults), timeout=5)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def set_http_fault(
        self,
        route: str,
        *,
        status: int,
        times: int = 1,
        retry_after: str | int | None = None,
        after: bool = False,
        delay: float = 0.0,
        body: str = "",
    ) -> None:
        """Make ``route`` (``"POST /prompt"``, ``"GET /history/*"``) answer ``status`` for ``times``
        requests (-1: all); ``after``: the route does its work and only the answer is replaced;
        ``delay``: seconds before answering (with ``status`` 0, the route's own answer, only later).
        Faults on other routes stay as they were."""
        current = self.state()["faults"].get("http") or {}
        current[route] = {
            "status": status,
            "times": times,
            "retry_after": None if retry_after is None else str(retry_after),
            "after": after,
            "delay": delay,
            "body": body,
        }
        self.set_faults(http=current)

    def prompt_record(self) -> list[dict[str, Any]]:
        """Every event of the record file: ``{"t", "event", "prompt_id", "run", "how", ...}``, oldest first."""
        if not self.record_path.exists():
            return []
        lines = self.record_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def clear_record(self) -> None:
        self.record_path.write_text("", encoding="utf-8")

    def state(self) -> dict[str, Any]:
        response = requests.get(self.url + "/_standin/state", timeout=5)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def counters(self) -> dict[str, int]:
        counters: dict[str, int] = self.state()["counters"]
        return counters

    def forget(self) -> None:
        """Restart in place: the server keeps running but forgets queue, history, models and sockets."""
        requests.post(self.url + "/_standin/restart", timeout=5).raise_for_status()

    def reset(self) -> None:
        requests.post(self.url + "/_standin/reset", timeout=5).raise_for_status()


@dataclass(frozen=True)
class PromptSpan:
    """One prompt's time on one node: from queued to ended (or to now, or to the node's death)."""

    node: str
    prompt_id: str
    run: str
    start: float
    end: float
    how: str

    def overlaps(self, other: PromptSpan) -> bool:
        return self.start < other.end and other.start < self.end


def prompt_spans(node: StandinNode) -> list[PromptSpan]:
    """The prompts a stand-in held, from its record file."""
    opened: dict[str, dict[str, Any]] = {}
    spans: list[PromptSpan] = []

    def close(prompt_id: str, end: float, how: str) -> None:
        entry = opened.pop(prompt_id)
        spans.append(PromptSpan(node.url, prompt_id, entry["run"], entry["t"], end, how))

    for event in node.prompt_record():
        kind = event["event"]
        if kind == "queued":
            opened[event["prompt_id"]] = event
        elif kind == "ended" and event["prompt_id"] in opened:
            close(event["prompt_id"], event["t"], event["how"])
        elif kind == "killed":
            for prompt_id in list(opened):
                close(prompt_id, event["t"], "killed")
    now = time.time()
    for prompt_id in list(opened):
        close(prompt_id, now, "open")
    return spans


def overlapping_prompts(nodes: Iterable[StandinNode], run: str | None = None) -> list[tuple[PromptSpan, PromptSpan]]:
    """Pairs of prompts of one run (``extra_data.rekindle_run``; only ``run`` if given) that were queued or
    running on two different nodes at the same time. Empty: no run was ever on two nodes at once."""
    spans = [span for node in nodes for span in prompt_spans(node) if run is None or span.run == run]
    return [
        (a, b)
        for index, a in enumerate(spans)
        for b in spans[index + 1 :]
        if a.run == b.run and a.node != b.node and a.overlaps(b)
    ]


class StandinFarm:
    """Stand-in processes kept for a whole test session and lent out to tests."""

    def __init__(self) -> None:
        self.nodes: list[StandinNode] = []

    def take(self, count: int) -> list[StandinNode]:
        while len(self.nodes) < count:
            self.nodes.append(StandinNode().start())
        taken = self.nodes[:count]
        for node in taken:
            if not node.alive():
                node.clear_record()
                node.start()
            else:
                try:
                    node.reset()
                except requests.RequestException:
                    node.restart()
        return taken

    def close(self) -> None:
        for node in self.nodes:
            node.stop()


def who_takes_a_node_another_run_waits_for(early: Any, late: Any, affinity_wait: float) -> tuple[str, str, str, str]:
    """Two nodes, one with ``restore`` loaded and one with ``animate``, both held; an ``animate`` run waits on
    ``early`` (a scheduler), then a ``restore`` run on ``late`` (the same scheduler, or another process's view
    of the same fleet). The restore node is given back once the animate run has waited past ``affinity_wait``,
    the animate node a moment later. Returns (restore node, animate node, the animate run's node, the restore
    run's node)."""
    loaded = early.acquire("restore")
    early.release(loaded)
    other = early.acquire("animate")
    early.release(other)
    assert other.url != loaded.url
    restore_slot, animate_slot = early.acquire("restore"), early.acquire("animate")
    assert (restore_slot.url, animate_slot.url) == (loaded.url, other.url)
    took: dict[str, Any] = {}

    def wait(name: str, scheduler: Any, workflow: str) -> None:
        took[name] = (scheduler, scheduler.acquire(workflow, deadline=time.monotonic() + 20 * affinity_wait))

    animate_run = threading.Thread(target=wait, args=("animate", early, "animate"))
    restore_run = threading.Thread(target=wait, args=("restore", late, "restore"))
    animate_run.start()
    time.sleep(0.1)
    restore_run.start()
    time.sleep(1.3 * affinity_wait)  # the animate run has waited past its affinity wait, not past three
    early.release(restore_slot)
    restore_run.join(5 * affinity_wait)
    time.sleep(0.3)
    early.release(animate_slot)
    animate_run.join(5 * affinity_wait)
    for scheduler, slot in took.values():
        scheduler.release(slot)
    urls = {name: slot.url for name, (_, slot) in took.items()}
    return loaded.url, other.url, urls.get("animate", ""), urls.get("restore", "")


@pytest.fixture(scope="session")
def comfy_standin_farm() -> Iterator[StandinFarm]:
    farm = StandinFarm()
    yield farm
    farm.close()


@pytest.fixture
def comfy_standins(comfy_standin_farm: StandinFarm) -> Callable[[int], list[StandinNode]]:
    """``comfy_standins(n)``: n running stand-in nodes, reset to a clean state for this test."""
    return comfy_standin_farm.take


@pytest.fixture
def comfy_standin(comfy_standins: Callable[[int], list[StandinNode]]) -> StandinNode:
    """One running stand-in node, reset for this test."""
    return comfy_standins(1)[0]


def test_pool_config(nodes: list[StandinNode], **overrides: Any) -> PoolConfig:
    """Pool settings for tests: short quiet time, fast polling and probing."""
    values: dict[str, Any] = {
        "urls": tuple(node.url for node in nodes),
        "socket_quiet_seconds": 1.0,
        "poll_seconds": 0.1,
        "node_backoff_seconds": 0.5,
        "node_backoff_max_seconds": 2.0,
        "http_timeout": 10.0,
        "slot_wait_seconds": 10.0,
        "affinity_wait_seconds": 0.0,
        "client_name": "rekindle-tests",
        "probe_timeout": 3.0,
        "liveness_seconds": 1.0,
        "outage_wait_seconds": 2.0,
    }
    values.update(overrides)
    return PoolConfig(**values)


# Not a test, although its name starts like one.
test_pool_config.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture
def comfy_pool(
    comfy_standins: Callable[[int], list[StandinNode]],
) -> Callable[..., tuple[ComfyNodePool, list[StandinNode]]]:
    """``comfy_pool(n, **config)``: a ComfyNodePool over n fresh stand-in nodes, and the nodes."""

    def make(count: int = 1, **overrides: Any) -> tuple[ComfyNodePool, list[StandinNode]]:
        nodes = comfy_standins(count)
        return ComfyNodePool(test_pool_config(nodes, **overrides)), nodes

    return make


@pytest.fixture
def comfy_settings(settings: Any, comfy_standins: Callable[[int], list[StandinNode]]) -> list[StandinNode]:
    """Two stand-in nodes behind ``get_engine()``: REKINDLE_ENGINE=comfyui with test timings."""
    nodes = comfy_standins(2)
    settings.REKINDLE_ENGINE = "comfyui"
    settings.COMFYUI_URLS = [node.url for node in nodes]
    settings.COMFYUI_SOCKET_QUIET_SECONDS = 1.0
    settings.COMFYUI_POLL_SECONDS = 0.1
    settings.COMFYUI_NODE_BACKOFF_SECONDS = 0.5
    settings.COMFYUI_NODE_BACKOFF_MAX_SECONDS = 2.0
    settings.COMFYUI_SLOT_WAIT_SECONDS = 10.0
    settings.COMFYUI_AFFINITY_WAIT_SECONDS = 0.0
    settings.COMFYUI_PROBE_TIMEOUT_SECONDS = 3.0
    settings.COMFYUI_LIVENESS_SECONDS = 1.0
    settings.FLEET_OUTAGE_WAIT_SECONDS = 2.0
    return nodes
