"""The pages, in a real browser, against the embedded site: what a person does, from upload to delete.

Each flow runs at a phone's 360x740 and a laptop's 1280x800; every state is photographed
(``var/artifacts/browser/``), scanned with axe-core (no serious or critical violation), and the page
must report no Content Security Policy violation and send no Referer anywhere.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from django.core import signing
from PIL import Image, ImageDraw

from jobs.access import job_link_access
from rekindle.testing.site import EmbeddedSite

VIEWPORTS = {"phone": (360, 740), "laptop": (1280, 800)}
TIMEOUT_MS = 120_000


def old_photo(width: int = 1600, height: int = 1200) -> bytes:
    """A faded, scratched, dusty photo: enough work for the local engine that its progress shows."""
    rng = np.random.default_rng(7)
    base = np.zeros((height, width, 3), np.float32)
    base[..., 0], base[..., 1], base[..., 2] = 150, 125, 95
    yy, xx = np.mgrid[0:height, 0:width]
    face = ((xx - width / 2) / (width / 6)) ** 2 + ((yy - height / 2.2) / (height / 4)) ** 2 < 1
    base[face] = (95, 75, 55)
    base += rng.normal(0, 18, base.shape)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _i in range(25):
        x = int(rng.integers(0, width))
        draw.line((x, 0, x + int(rng.integers(-200, 200)), height), fill=(235, 228, 210), width=2)
    for _ in range(300):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        draw.ellipse((x, y, x + 4, y + 4), fill=(240, 240, 235))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "grandparents.jpg"
    path.write_bytes(old_photo())
    return path


def page_weight(page: Any) -> int:
    """Bytes of the document, its CSS and scripts and the API's answers, before any image or video."""
    return int(
        page.evaluate(
            """() => [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]
                .filter((e) => !["img", "video", "image"].includes(e.initiatorType) && !e.name.includes("/events")
                               && !e.name.includes("/media/"))
                .reduce((sum, e) => sum + e.encodedBodySize, 0)"""
        )
    )


def assert_page_headers(response: Any) -> None:
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"].startswith("private")


def versions(page: Any) -> Any:
    return page.locator("#versions > li")


def wait_text(page: Any, selector: str, pattern: str) -> None:
    page.wait_for_function(
        """([selector, pattern]) => {
            const e = document.querySelector(selector);
            return e && new RegExp(pattern).test(e.textContent);
        }""",
        arg=[selector, pattern],
        timeout=TIMEOUT_MS,
    )


def check_clean(watched: Any) -> None:
    assert watched.csp == [], "the page reported Content Security Policy violations"
    assert watched.page_referers() == [], "a request carried the page's address in its Referer"
    # HTTP errors the page answers (a refused upload, a 404 after deleting) are logged by Chromium as
    # "Failed to load resource"; anything else, such as a script error, is a failure.
    assert [e for e in watched.console_errors if not e.startswith("Failed to load resource")] == []


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_it_takes_a_photo_from_upload_to_restored_animated_and_deleted(
    open_page: Any, site: EmbeddedSite, photo: Path, viewport: str
) -> None:
    width, height = VIEWPORTS[viewport]
    watched = open_page(f"flow-{viewport}", width, height)
    page = watched.page
    problems: list[str] = []

    response = page.goto(site.url + "/")
    assert_page_headers(response)
    assert page_weight(page) < 100_000
    watched.shot("upload")
    problems += watched.axe()

    # The wrong kind of file, then one too large: refused before anything is sent.
    page.set_input_files("#image", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    wait_text(page, "#image-error", "not a photo")
    watched.shot("wrong-type")
    big = b"\xff\xd8\xff" + b"\0" * 3_100_000
    page.set_input_files("#image", files=[{"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": big}])
    wait_text(page, "#image-error", "up to 3 MB")
    # A file that looks like a JPEG to the browser but is not one: the server says so, on the page.
    page.set_input_files("#image", files=[{"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": big[:5000]}])
    page.fill("#email", "family@example.com")
    page.check("#consent")
    page.click("#submit")
    wait_text(page, "#image-error", "[a-z]")
    assert "/j/" not in page.url
    watched.shot("server-refused")

    page.set_input_files("#image", str(photo))
    page.wait_for_selector("#preview-img:not([hidden])")
    assert page.eval_on_selector("#preview-img", "img => img.naturalWidth") == 1600
    watched.shot("preview")
    problems += watched.axe()
    page.click("#submit")

    # Straight to the job page, the token in this browser's storage and not in the address.
    page.wait_for_url(re.compile(r"/j/[0-9a-f-]{36}$"), timeout=TIMEOUT_MS)
    job_id = page.url.rsplit("/", 1)[1]
    stored = page.evaluate(f"() => JSON.parse(localStorage.getItem('rekindle:job:{job_id}'))")
    assert stored["token"]
    assert stored["token"] not in page.url
    page.wait_for_selector("#versions .attempt-bar:not([hidden])", timeout=TIMEOUT_MS)
    watched.shot("progress")
    assert page_weight(page) < 100_000

    # Restored: the before/after slider, moved with the keyboard.
    page.wait_for_selector("#compare:not([hidden])", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => document.querySelector('#after').complete && document.querySelector('#after').naturalWidth > 0"
    )
    assert "Local CPU engine (development)" in page.inner_text("#versions")
    assert page.is_visible("#dev-banner")
    watched.shot("restored")
    problems += watched.axe()
    clip_before = page.eval_on_selector(".compare-after", "e => getComputedStyle(e).clipPath")
    page.focus("#compare-range")
    for _ in range(20):
        page.keyboard.press("ArrowLeft")
    assert page.eval_on_selector("#compare-range", "e => e.value") == "30"
    assert (
        page.eval_on_selector("#compare-range", "e => e.getAttribute('aria-valuetext')") == "30% restored, 70% original"
    )
    clip_after = page.eval_on_selector(".compare-after", "e => getComputedStyle(e).clipPath")
    assert clip_after != clip_before
    assert "70%" in clip_after
    watched.shot("slider-moved")

    # Another version, with a strength and a variation number of the person's choosing.
    page.click("#another summary")
    page.focus("#strength")
    for _ in range(10):
        page.keyboard.press("ArrowLeft")
    page.fill("#seed", "42")
    page.click("#restore-submit")
    page.wait_for_function("() => document.querySelectorAll('#versions > li').length === 2", timeout=TIMEOUT_MS)
    second = versions(page).nth(1)
    second.locator(".act-keep").wait_for(state="visible", timeout=TIMEOUT_MS)
    attempts = site.job(job_id, stored["token"])["restore_attempts"]
    assert attempts[1]["parameters"]["denoise"] == 0.5
    assert attempts[1]["parameters"]["seed"] == 42
    watched.shot("second-version")

    # Keep the second one, then animate it.
    second.locator(".act-keep").click()
    second.locator(".kept").wait_for(state="visible", timeout=TIMEOUT_MS)
    assert versions(page).nth(0).locator(".kept").is_hidden()
    page.click("#animate-button")
    page.locator("#animations > li").first.wait_for(timeout=TIMEOUT_MS)
    wait_text(page, "#animations .attempt-name", "of version 2")
    video = page.locator("#animations .preview-video").first
    video.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert page.eval_on_selector("#animations .preview-video", "v => v.poster").startswith(
        site.url + "/media/thumbnails/"
    )
    page.eval_on_selector("#animations .preview-video", "v => v.play()")
    page.wait_for_function("() => document.querySelector('#animations .preview-video').currentTime > 0.2")
    first_time = page.eval_on_selector("#animations .preview-video", "v => v.currentTime")
    page.wait_for_timeout(400)
    assert page.eval_on_selector("#animations .preview-video", "v => v.currentTime") != first_time
    watched.shot("video-playing")
    problems += watched.axe()

    # Buy HD: this server has no payments, and the button says so.
    page.click("#animations .act-buy")
    wait_text(page, "#animations .hd-message", "Payments are switched off")
    watched.shot("payments-off")

    # Delete, after saying yes; the page then says the photos are gone, and keeps saying it.
    page.click("#delete-button")
    page.wait_for_selector("#delete-dialog[open]")
    watched.shot("delete-confirm")
    page.click("#delete-confirm")
    wait_text(page, "#state-title", "Your photos are deleted")
    watched.shot("deleted")
    problems += watched.axe()
    assert (
        requests.get(
            f"{site.url}/api/v1/jobs/{job_id}", headers={"X-Job-Token": stored["token"]}, timeout=10
        ).status_code
        == 404
    )
    page.reload()
    wait_text(page, "#state-title", "Your photos are deleted")

    assert problems == [], "axe-core found serious or critical violations"
    check_clean(watched)


def test_it_follows_progress_by_polling_when_the_stream_fails(open_page: Any, site: EmbeddedSite, photo: Path) -> None:
    watched = open_page("polling")
    page = watched.page
    page.route("**/events", lambda route: route.abort())
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if re.search(r"/api/v1/jobs/[0-9a-f-]+$", r.url) else None)
    page.goto(site.url + "/")
    page.set_input_files("#image", str(photo))
    page.fill("#email", "family@example.com")
    page.check("#consent")
    page.click("#submit")
    page.wait_for_selector("#compare:not([hidden])", timeout=TIMEOUT_MS)
    assert len(polls) >= 2, "the page read the job again after the stream failed"
    watched.shot("restored-by-polling")
    check_clean(watched)


def test_it_opens_the_email_link_and_keeps_its_access_value_out_of_urls_logs_and_referers(
    open_page: Any, site: EmbeddedSite
) -> None:
    job = site.upload(old_photo(400, 300))
    access = job_link_access(job["id"])
    watched = open_page("email-link", 360, 740)
    page = watched.page
    response = page.goto(f"{site.url}/j/{job['id']}?access={access}")
    assert_page_headers(response)
    page.wait_for_selector("#compare:not([hidden])", timeout=TIMEOUT_MS)
    assert "access" not in page.url
    assert page.url.endswith(f"/j/{job['id']}")
    assert page.evaluate(f"() => JSON.parse(localStorage.getItem('rekindle:job:{job['id']}')).access") == access
    watched.shot("from-email")
    # Reopened later in this browser, without the link: still there.
    page.goto(f"{site.url}/j/{job['id']}")
    page.wait_for_selector("#compare:not([hidden])", timeout=TIMEOUT_MS)
    api_calls = [r for r in watched.requests if "/api/v1/" in r.url]
    assert api_calls
    assert all(access not in r.url for r in api_calls)
    assert all(r.headers.get("x-job-access") == access for r in api_calls)
    log = site.log()
    assert f"/j/{job['id']}?access=[redacted]" in log
    assert access not in log
    check_clean(watched)


def _expired_access(job_id: str) -> str:
    class LongAgo(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - 400 * 86400)

    return LongAgo(salt="rekindle.jobs.link-access").sign(job_id).split(":", 1)[1]


def test_it_offers_a_fresh_link_when_the_email_link_expired(open_page: Any, site: EmbeddedSite) -> None:
    job = site.upload(old_photo(400, 300), email="expired@example.com", restore=False)
    watched = open_page("expired-link", 360, 740)
    page = watched.page
    page.goto(f"{site.url}/j/{job['id']}?access={_expired_access(job['id'])}")
    wait_text(page, "#state-title", "This link has expired")
    assert "access" not in page.url
    watched.shot("expired")
    assert watched.axe() == []
    page.click("#resend-form button")
    wait_text(page, "#state-text", "a new link is on its way")
    watched.shot("link-sent")
    sent = [mail for mail in site.emails() if "expired@example.com" in mail]
    assert len(sent) == 1
    assert f"{site.url}/j/{job['id']}?access=" in sent[0]
    check_clean(watched)


def test_it_shows_a_failed_attempt_with_try_again(open_page: Any, site: EmbeddedSite) -> None:
    job = site.upload(old_photo(400, 300), restore=False)
    # The stored original is gone (storage lost it): a restore cannot read its photo.
    for path in (site.media_root() / "processed").glob(f"{job['id']}.*"):
        path.unlink()
    headers = {"X-Job-Token": job["token"]}
    requests.post(
        f"{site.url}/api/v1/jobs/{job['id']}/restore", json={}, headers=headers, timeout=10
    ).raise_for_status()
    watched = open_page("failed-attempt", 360, 740)
    page = watched.page
    page.goto(f"{site.url}/j/{job['id']}?access={job_link_access(job['id'])}")
    first = versions(page).first
    first.locator(".act-retry").wait_for(state="visible", timeout=TIMEOUT_MS)
    assert "could not read the photo" in first.locator(".attempt-error").inner_text()
    watched.shot("failed")
    assert watched.axe() == []
    first.locator(".act-retry").click()
    page.wait_for_function("() => document.querySelectorAll('#versions > li').length === 2", timeout=TIMEOUT_MS)
    check_clean(watched)


def test_it_tells_the_person_when_the_service_is_busy(open_page: Any, site: EmbeddedSite) -> None:
    job = site.upload(old_photo(400, 300))
    watched = open_page("busy", 360, 740)
    page = watched.page
    # The operations side answers 503 queue_full with Retry-After when the queue is full; stand it in here.
    page.route(
        "**/restore",
        lambda route: route.fulfill(
            status=503,
            headers={"Retry-After": "120", "Content-Type": "application/json"},
            body='{"error": {"code": "queue_full", "message": "Busy.", "details": {}}}',
        ),
    )
    page.goto(f"{site.url}/j/{job['id']}?access={job_link_access(job['id'])}")
    page.wait_for_selector("#compare:not([hidden])", timeout=TIMEOUT_MS)
    page.click("#another summary")
    page.click("#restore-submit")
    wait_text(page, "#notice", "We are busy right now. Please try again in 2 minutes.")
    watched.shot("busy")
    check_clean(watched)
