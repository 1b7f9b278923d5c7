"""The RunPod engine over real HTTP against the local stand-in: success shapes, failure, timeout + cancel, errors."""

from __future__ import annotations

import base64
import io
import itertools
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from PIL import Image

from rekindle.engines import get_engine
from rekindle.engines.base import (
    EngineCanceled,
    EngineResult,
    InputImage,
    PermanentEngineError,
    RunRequest,
    TransientEngineError,
)
from rekindle.engines.runpod import RunPodEngine, poll_delays
from rekindle.testing.runpod_standin import FAILURE_TEXT, RunPodStandin


def photo_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


PHOTO = photo_png()


@pytest.fixture
def standin() -> Iterator[RunPodStandin]:
    with RunPodStandin(endpoint_id="ep-test", api_key="key-123") as server:
        yield server


def engine_for(standin: RunPodStandin, **overrides: Any) -> RunPodEngine:
    options: dict[str, Any] = {
        "base_url": standin.url,
        "endpoint_id": standin.endpoint_id,
        "api_key": standin.api_key,
        "poll_interval": 0.01,
        "poll_max_interval": 0.05,
        "request_timeout": 5.0,
    }
    return RunPodEngine(**(options | overrides))


def request(workflow: str = "restore", params: dict[str, Any] | None = None, timeout: float = 20.0) -> RunRequest:
    return RunRequest(
        workflow=workflow,
        run_id="attempt-7:try-2",
        images=(InputImage(param="image", filename="original.png", data=PHOTO),),
        params=params or {"seed": 11, "megapixels": 2.0},
        timeout=timeout,
    )


def run(engine: RunPodEngine, req: RunRequest, **kwargs: Any) -> EngineResult:
    return engine.run(req, **kwargs)


def test_it_sends_the_built_workflow_and_returns_base64_outputs(standin: RunPodStandin) -> None:
    progress: list[int] = []
    submitted: list[tuple[str, str]] = []

    result = run(
        engine_for(standin),
        request(),
        on_progress=progress.append,
        on_submitted=lambda node, job: submitted.append((node, job)),
    )

    [job] = standin.jobs.values()
    graph = job.input["workflow"]
    [image] = job.input["images"]
    # The image goes up under the name the graph's LoadImage reads, with our parameters in place.
    assert image["name"] == "attempt-7_try-2_image.png"
    assert graph["190"]["inputs"]["image"] == image["name"]
    assert base64.b64decode(image["image"]) == PHOTO
    assert graph["31"]["inputs"]["seed"] == 11
    assert graph["200"]["inputs"]["megapixels"] == 2.0
    assert graph["136"]["inputs"]["filename_prefix"] == "rekindle/attempt-7_try-2"
    assert all(r.headers["authorization"] == "Bearer key-123" for r in standin.requests)

    output = result.first("image")
    assert output.data == PHOTO
    assert output.filename == "attempt-7_try-2_00001_.png"
    assert output.content_type == "image/png"
    assert (result.engine, result.node, result.prompt_id) == ("runpod", "runpod:ep-test", job.id)
    assert result.execution_seconds == pytest.approx(1.234)
    assert submitted == [("runpod:ep-test", job.id)]
    assert progress[0] == 0
    assert progress[-1] == 100
    assert 2 in progress
    assert 10 in progress
    assert standin.paths("POST") == ["/v2/ep-test/run"]
    assert standin.canceled == []


def test_it_downloads_bucket_url_outputs_without_sending_the_api_key(standin: RunPodStandin) -> None:
    standin.outcome = "url"
    standin.output_files = [("rekindle_00001_.mp4", b"\x00\x00\x00\x18ftypmp42 video bytes")]

    result = run(engine_for(standin), request("animate_preview_cpu", {"seconds": 2, "fps": 8}))

    output = result.first("video")
    assert output.data == b"\x00\x00\x00\x18ftypmp42 video bytes"
    assert output.content_type == "video/mp4"
    [download] = [r for r in standin.requests if r.path.startswith("/bucket/")]
    assert "authorization" not in download.headers
    [job] = standin.jobs.values()
    assert job.input["workflow"]["3"]["inputs"]["amount"] == 17  # 2 s at 8 fps, as 4k+1 frames


def test_it_reads_the_older_workers_message_output(standin: RunPodStandin) -> None:
    standin.outcome = "legacy"

    result = run(engine_for(standin), request())

    assert result.first("image").data == PHOTO
    assert result.first("image").filename == "output.png"


def test_it_turns_a_failed_job_into_a_permanent_error_with_the_workers_text(standin: RunPodStandin) -> None:
    standin.outcome = "fail"

    with pytest.raises(PermanentEngineError) as caught:
        run(engine_for(standin), request())

    assert caught.value.code == "runpod_failed"
    assert FAILURE_TEXT in caught.value.message
    assert standin.canceled == []


def test_it_cancels_the_job_on_runpod_when_the_timeout_passes(standin: RunPodStandin) -> None:
    standin.outcome = "never"

    with pytest.raises(TransientEngineError) as caught:
        run(engine_for(standin), request(timeout=0.5))

    assert caught.value.code == "timeout"
    [job] = standin.jobs.values()
    assert standin.canceled == [job.id]
    assert f"/v2/ep-test/cancel/{job.id}" in standin.paths("POST")


def test_it_cancels_the_job_on_runpod_when_asked_to_stop(standin: RunPodStandin) -> None:
    standin.outcome = "never"
    progress: list[int] = []

    with pytest.raises(EngineCanceled):
        run(engine_for(standin), request(), on_progress=progress.append, should_cancel=lambda: 10 in progress)

    [job] = standin.jobs.values()
    assert standin.canceled == [job.id]


def test_it_treats_runpods_own_timeout_as_transient(standin: RunPodStandin) -> None:
    standin.outcome = "timed_out"

    with pytest.raises(TransientEngineError) as caught:
        run(engine_for(standin), request())

    assert caught.value.code == "runpod_timed_out"


def test_it_treats_a_5xx_as_transient(standin: RunPodStandin) -> None:
    standin.outcome = "unavailable"

    with pytest.raises(TransientEngineError) as caught:
        run(engine_for(standin), request())

    assert caught.value.code == "runpod_unavailable"


def test_it_treats_an_unreachable_api_as_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = RunPodEngine(base_url=f"http://127.0.0.1:{port}", endpoint_id="ep", api_key="k", request_timeout=2.0)

    with pytest.raises(TransientEngineError) as caught:
        engine.run(request())

    assert caught.value.code == "runpod_unreachable"
    assert engine.health()[0].healthy is False


def test_it_fails_for_good_on_a_wrong_api_key(standin: RunPodStandin) -> None:
    with pytest.raises(PermanentEngineError) as caught:
        run(engine_for(standin, api_key="wrong"), request())

    assert caught.value.code == "runpod_auth"


def test_it_refuses_bad_parameters_before_sending_anything(standin: RunPodStandin) -> None:
    with pytest.raises(PermanentEngineError) as caught:
        run(engine_for(standin), request(params={"steps": 500}))

    assert caught.value.code == "invalid_parameters"
    assert "steps" in caught.value.details["fields"]
    assert standin.requests == []


def test_it_reports_the_endpoints_health(standin: RunPodStandin) -> None:
    [health] = engine_for(standin).health()

    assert health.healthy
    assert health.node == "runpod:ep-test"
    assert health.queue_length == 0
    assert "idle 1" in health.detail
    assert standin.paths("GET") == ["/v2/ep-test/health"]


def test_it_cancels_a_job_by_id(standin: RunPodStandin) -> None:
    standin.outcome = "never"
    engine = engine_for(standin)
    submitted: list[str] = []
    with pytest.raises(EngineCanceled):
        engine.run(
            request(), on_submitted=lambda _node, job: submitted.append(job), should_cancel=lambda: bool(submitted)
        )
    standin.canceled.clear()

    engine.cancel("runpod:ep-test", submitted[0])

    assert standin.canceled == submitted


def test_it_backs_off_between_status_polls() -> None:
    delays = list(itertools.islice(poll_delays(1.0, 10.0), 9))
    assert delays[0] == 1.0
    assert delays == sorted(delays)
    assert delays[-1] == 10.0
    assert delays[3] == pytest.approx(3.375)


def test_it_is_built_from_settings_by_get_engine(standin: RunPodStandin) -> None:
    with override_settings(
        RUNPOD_BASE_URL=standin.url,
        RUNPOD_ENDPOINT_ID="ep-test",
        RUNPOD_API_KEY="key-123",
        RUNPOD_POLL_INTERVAL=0.01,
        RUNPOD_POLL_MAX_INTERVAL=0.02,
    ):
        engine = get_engine("runpod")
        assert isinstance(engine, RunPodEngine)
        assert engine.run(request()).first("image").data == PHOTO
