"""How the ComfyUI engine reads each wrong answer of a node, over real HTTP against stand-in nodes.

Down (no answer, server errors), busy (429, 503 with Retry-After), our request wrong (4xx),
an output missing (404 from /view): each ends the run or moves it as the client's module
docstring says, and whenever a run moves, the stand-ins' own records show its prompt was
never queued or running on two nodes at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from rekindle.engines.base import EngineResult, PermanentEngineError, TransientEngineError
from rekindle.engines.comfyui.client import (
    ComfyNodeClient,
    NodeBusy,
    NodeDown,
    OutputMissing,
    PromptRejected,
    RequestRejected,
    parse_retry_after,
)
from rekindle.engines.comfyui.pool import ComfyNodePool
from rekindle.engines.comfyui.protocol import OutputFile
from rekindle.testing.comfyui_fixtures import (
    StandinNode,
    fixture_graph,
    graph_builder,
    overlapping_prompts,
    prompt_spans,
    sample_input,
)

pytestmark = pytest.mark.timeout(90)

PoolMaker = Callable[..., tuple[ComfyNodePool, list[StandinNode]]]


def run(pool: ComfyNodePool, graph: str = "restore_flux", *, timeout: float = 30.0, **kwargs: Any) -> EngineResult:
    return pool.run_graph(
        graph_builder(graph),
        workflow_name=graph,
        run_id=f"run-{time.monotonic_ns()}",
        images=[sample_input()],
        timeout=timeout,
        **kwargs,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- the client's reading of each answer -----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "kind"),
    [
        (500, None, NodeDown),
        (502, None, NodeDown),
        (504, None, NodeDown),
        (503, None, NodeDown),
        (503, "2", NodeBusy),
        (429, None, NodeBusy),
        (429, "7", NodeBusy),
        (400, None, RequestRejected),
        (404, None, RequestRejected),
        (413, None, RequestRejected),
    ],
)
def test_it_sorts_each_status_of_a_route_into_one_kind_of_node_error(
    comfy_standin: StandinNode, status: int, retry_after: str | None, kind: type[Exception]
) -> None:
    comfy_standin.set_http_fault("GET /queue", status=status, retry_after=retry_after, body=f"said {status}")
    client = ComfyNodeClient(comfy_standin.url)

    with pytest.raises(kind) as caught:
        client.queue()

    error = caught.value
    assert isinstance(error, NodeDown | NodeBusy | RequestRejected)
    assert (error.node, error.route, error.status) == (comfy_standin.url, "GET /queue", status)
    assert f"said {status}" in error.reason
    assert error.details["body"] == f"said {status}"
    if isinstance(error, NodeBusy):
        assert error.retry_after == (float(retry_after) if retry_after else None)
    if isinstance(error, NodeDown):
        assert error.answered
    assert len(client.queue()) == 0  # one answer only: the route is itself again


def test_it_reads_no_answer_as_down_and_unanswered(comfy_standin: StandinNode) -> None:
    comfy_standin.set_http_fault("GET /queue", status=200, delay=2.0)
    slow = ComfyNodeClient(comfy_standin.url, http_timeout=0.5)

    with pytest.raises(NodeDown) as timed_out:
        slow.queue()
    comfy_standin.kill()
    with pytest.raises(NodeDown) as refused:
        ComfyNodeClient(comfy_standin.url).queue()

    assert not timed_out.value.answered
    assert "ReadTimeout" in timed_out.value.reason
    assert not refused.value.answered
    assert "ConnectionError" in refused.value.reason


def test_it_reads_a_404_from_view_as_output_missing_and_a_400_from_prompt_as_rejected(
    comfy_standin: StandinNode,
) -> None:
    client = ComfyNodeClient(comfy_standin.url)
    graph = fixture_graph("restore_twin")
    for node in graph.values():
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = "never_uploaded.png"

    with pytest.raises(OutputMissing) as missing:
        client.view(OutputFile("9", "gone.png", "", "output", False))
    with pytest.raises(PromptRejected) as rejected:
        client.submit(graph, prompt_id="p-1", client_id="c-1")

    assert missing.value.status == 404
    assert "gone.png" in missing.value.reason
    assert rejected.value.payload["error"]["type"] == "prompt_outputs_failed_validation"
    assert "never_uploaded.png" in rejected.value.body


def test_it_reads_retry_after_as_seconds_or_an_http_date() -> None:
    soon = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))

    assert parse_retry_after("12") == 12.0
    assert 25 < (parse_retry_after(soon) or 0) <= 31
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# --- our request wrong: permanent, the node stays up ----------------------------------------


@pytest.mark.parametrize(("status", "body"), [(413, "Request Entity Too Large"), (400, "")])
def test_it_fails_permanently_and_keeps_the_node_up_when_the_upload_is_refused(
    comfy_pool: PoolMaker, status: int, body: str
) -> None:
    pool, (first, second) = comfy_pool(2)
    first.set_http_fault("POST /upload/image", status=status, body=body)

    with pytest.raises(PermanentEngineError) as caught:
        run(pool)

    error = caught.value
    assert error.code == "upload_rejected"
    assert first.url in error.message
    assert f"POST /upload/image answered {status}" in error.message
    assert body in error.message
    assert (error.details["node"], error.details["status"]) == (first.url, status)
    view = pool.scheduler.view(first.url)
    assert view.up
    assert view.failures == 0
    assert second.counters().get("uploads", 0) == 0
    assert prompt_spans(first) == prompt_spans(second) == []


def test_it_fails_permanently_and_stops_the_prompt_when_a_route_refuses_us_mid_run(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    node.set_faults(silent_socket=1, sampler_seconds=5)
    node.set_http_fault("GET /history/*", status=403, times=-1, body="Forbidden by the proxy")

    with pytest.raises(PermanentEngineError) as caught:
        run(pool)

    assert caught.value.code == "request_rejected"
    assert "403" in caught.value.message
    assert "Forbidden by the proxy" in caught.value.message
    assert [span.how for span in prompt_spans(node)] == ["interrupted"]
    assert pool.scheduler.view(node.url).up


# --- output missing ------------------------------------------------------------------------------


def test_it_fails_permanently_when_view_cannot_find_an_output_the_history_named(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    first.set_http_fault("GET /view", status=404, times=-1)

    with pytest.raises(PermanentEngineError) as caught:
        run(pool)

    error = caught.value
    assert error.code == "output_missing"
    assert first.url in error.message
    assert error.details["route"] == "GET /view"
    assert error.details["status"] == 404
    assert ".png" in error.message
    # Not a node failure, and not sent again anywhere.
    view = pool.scheduler.view(first.url)
    assert (view.up, view.failures) == (True, 0)
    assert [span.how for span in prompt_spans(first)] == ["success"]
    assert prompt_spans(second) == []


# --- node down: the prompt is stopped there before the run moves ------------------------------


def test_it_stops_the_prompt_before_moving_when_history_fails_while_it_runs(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    first.set_faults(silent_socket=1, sampler_seconds=5)
    first.set_http_fault("GET /history/*", status=500, times=-1, body="500 Internal Server Error")

    result = run(pool)

    assert result.node == second.url
    (on_first,) = prompt_spans(first)
    (on_second,) = prompt_spans(second)
    assert on_first.how == "interrupted"
    assert on_first.end <= on_second.start
    assert overlapping_prompts([first, second]) == []
    view = pool.scheduler.view(first.url)
    assert not view.up
    assert "500 Internal Server Error" in view.last_error


def test_it_tolerates_a_history_error_that_passes(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2, poll_failures=3)
    first.set_faults(silent_socket=1, sampler_seconds=1.5)
    first.set_http_fault("GET /history/*", status=500, times=2)

    result = run(pool)

    assert result.node == first.url
    assert [span.how for span in prompt_spans(first)] == ["success"]
    assert prompt_spans(second) == []
    assert pool.scheduler.view(first.url).up


def test_it_stops_a_prompt_the_node_queued_before_answering_500(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    first.set_faults(sampler_seconds=3)
    first.set_http_fault("POST /prompt", status=500, after=True)

    result = run(pool)

    assert result.node == second.url
    (on_first,) = prompt_spans(first)
    (on_second,) = prompt_spans(second)
    assert on_first.how in ("deleted", "interrupted")
    assert on_first.end <= on_second.start
    assert on_first.run == on_second.run
    assert overlapping_prompts([first, second]) == []
    assert not pool.scheduler.view(first.url).up


def test_it_stops_a_prompt_whose_submit_timed_out_before_moving(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2, http_timeout=1.0)
    first.set_faults(sampler_seconds=3)
    first.set_http_fault("POST /prompt", status=200, after=True, delay=2.0)

    result = run(pool)

    assert result.node == second.url
    (on_first,) = prompt_spans(first)
    assert on_first.how in ("deleted", "interrupted")
    assert overlapping_prompts([first, second]) == []


def test_it_sends_the_run_nowhere_else_when_the_node_will_not_confirm_the_stop(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2, stop_confirm_seconds=1.0, node_backoff_seconds=0.3)
    first.set_faults(silent_socket=1, sampler_seconds=8)
    for route in ("GET /history/*", "POST /queue", "POST /interrupt"):
        first.set_http_fault(route, status=500, times=-1)

    with pytest.raises(TransientEngineError) as caught:
        run(pool)

    error = caught.value
    assert error.code == "stop_unconfirmed"
    assert first.url in error.message
    assert prompt_spans(second) == []
    (on_first,) = prompt_spans(first)
    assert on_first.how == "open"
    view = pool.scheduler.view(first.url)
    assert not view.up
    assert view.abandoned == (on_first.prompt_id,)

    # Once it answers again, the prompt we left there is stopped before the node gets work.
    first.set_faults(http={})
    time.sleep(0.4)
    pool.scheduler.release(pool.scheduler.acquire("restore_flux"))
    assert wait_for(lambda: prompt_spans(first)[0].how == "interrupted")
    assert pool.scheduler.view(first.url).abandoned == ()


def test_it_moves_off_a_node_that_stops_answering_and_stops_the_prompt_when_it_answers_again(
    comfy_pool: PoolMaker,
) -> None:
    pool, (first, second) = comfy_pool(2, http_timeout=0.5, probe_timeout=0.5, node_backoff_seconds=0.3)
    first.set_faults(silent_socket=1, sampler_seconds=30)

    def cut_off(node: str, _prompt_id: str) -> None:
        # Once the prompt is there, every call about it hangs past our timeout, as across a broken network.
        if node == first.url:
            for route in ("GET /history/*", "GET /queue", "POST /queue", "POST /interrupt"):
                first.set_http_fault(route, status=200, times=-1, delay=3.0)

    result = run(pool, on_submitted=cut_off)

    # Out of our reach, the first node may still be running it: that is the one case a run
    # can be on two nodes, and the scheduler holds the prompt to stop it there.
    assert result.node == second.url
    (on_first,) = prompt_spans(first)
    view = pool.scheduler.view(first.url)
    assert view.abandoned == (on_first.prompt_id,)
    first.set_faults(http={})
    assert wait_for(lambda: pool.scheduler.view(first.url).down_for == 0)
    pool.scheduler.release(pool.scheduler.acquire("restore_flux"))
    assert wait_for(lambda: prompt_spans(first)[0].how == "interrupted")
    assert pool.scheduler.view(first.url).abandoned == ()
    assert pool.scheduler.view(first.url).up


def test_it_treats_a_503_without_retry_after_as_a_node_down(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    first.set_http_fault("POST /prompt", status=503, body="no healthy upstream")

    result = run(pool)

    assert result.node == second.url
    view = pool.scheduler.view(first.url)
    assert not view.up
    assert "no healthy upstream" in view.last_error
    assert overlapping_prompts([first, second]) == []


# --- busy: not down, come back later -------------------------------------------------------------


@pytest.mark.parametrize(("status", "retry_after"), [(503, "1"), (429, None)])
def test_it_waits_for_a_busy_node_and_runs_there_without_marking_it_down(
    comfy_pool: PoolMaker, status: int, retry_after: str | None
) -> None:
    pool, (node,) = comfy_pool(1, node_backoff_seconds=0.5)
    node.set_http_fault("POST /prompt", status=status, retry_after=retry_after)

    result = run(pool)

    assert result.node == node.url
    view = pool.scheduler.view(node.url)
    assert (view.up, view.failures) == (True, 0)
    assert node.counters()["http_fault POST /prompt"] == 1
    assert [span.how for span in prompt_spans(node)] == ["success"]


def test_it_sends_the_run_to_another_node_while_one_is_busy(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2, node_backoff_max_seconds=60)
    first.set_http_fault("POST /prompt", status=503, retry_after=30)

    result = run(pool)

    assert result.node == second.url
    view = pool.scheduler.view(first.url)
    assert view.up
    assert view.busy_for > 20
    assert prompt_spans(first) == []


def test_it_keeps_following_its_prompt_on_a_node_that_says_busy_mid_run(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    first.set_faults(silent_socket=1, sampler_seconds=2)
    first.set_http_fault("GET /history/*", status=429, retry_after=1, times=3)

    result = run(pool)

    assert result.node == first.url
    assert [span.how for span in prompt_spans(first)] == ["success"]
    assert prompt_spans(second) == []


def test_it_gives_up_transiently_when_every_node_stays_busy(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1, slot_wait_seconds=1.0)
    node.set_http_fault("POST /upload/image", status=503, retry_after=60, body="warming up")

    with pytest.raises(TransientEngineError) as caught:
        run(pool)

    assert caught.value.code == "nodes_busy"
    assert "warming up" in caught.value.message
    assert caught.value.details["nodes"][node.url]
    assert pool.scheduler.view(node.url).up
