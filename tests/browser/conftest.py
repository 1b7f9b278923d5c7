"""Browser tests: Debian's Chromium driven by Playwright for Python, against the real embedded site.

Chromium is the system's (``/usr/bin/chromium``, Debian's ``chromium`` package, which ``make test``
installs when it can): no browser is ever downloaded. Without it these tests are skipped with a
message, or fail when ``CI`` is set. The site is ``manage.py serve`` in a subprocess
(``rekindle.testing.site``): uvicorn, SQLite, local files, the in-process worker, the local engine,
exactly what ``make run`` gives a newcomer.

Each test's screenshots go to ``var/artifacts/browser/`` (or ``REKINDLE_ARTIFACTS``), one per state.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rekindle.testing.ci import skip_unless_ci
from rekindle.testing.site import ROOT, EmbeddedSite

CHROMIUM = os.environ.get("REKINDLE_CHROMIUM", "/usr/bin/chromium")
# The machine's network is closed: nothing in Chromium may try to reach out.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("REKINDLE_ARTIFACTS", ROOT / "var" / "artifacts")) / "browser"
AXE = ROOT / "static" / "vendor" / "axe-core" / "axe.min.js"

# Reported by the page itself: every CSP violation, and every console error.
WATCH_SCRIPT = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__rekindleReport("csp", `${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


# Per module, not per session: while Playwright's sync API is open its event loop counts as running in
# this thread, and Django refuses database calls from later tests of the same process.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; make test does it as root)"
        skip_unless_ci(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSite]:
    # Small limits, so the too-large photo is small too.
    running = EmbeddedSite(tmp_path_factory.mktemp("site"), UPLOAD_MAX_BYTES="3000000").start()
    yield running
    running.stop()


@dataclass
class Watched:
    """A page, and what it reported while the test used it."""

    page: Any
    name: str
    csp: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    shots: int = 0

    def shot(self, state: str) -> Path:
        self.shots += 1
        folder = ARTIFACTS / self.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.shots:02d}-{state}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def axe(self) -> list[str]:
        """Serious and critical accessibility violations axe-core finds on the page as it is now."""
        # Evaluated through the DevTools protocol, so the page's CSP (which forbids inline script) allows it.
        if not self.page.evaluate("() => Boolean(window.axe)"):
            self.page.evaluate(AXE.read_text())
        results = self.page.evaluate("async () => (await axe.run(document)).violations")
        return [
            f"{violation['id']} ({violation['impact']}): {[node['target'] for node in violation['nodes']]}"
            for violation in results
            if violation["impact"] in ("serious", "critical")
        ]

    def page_referers(self) -> list[str]:
        """Requests that told the server which page they came from (a static script importing another may)."""
        return [
            f"{r.url} <- {r.headers['referer']}"
            for r in self.requests
            if r.headers.get("referer") and "/static/" not in r.headers["referer"]
        ]


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    contexts: list[Any] = []

    def opener(name: str, width: int = 1280, height: int = 800, **options: Any) -> Watched:
        context = browser.new_context(viewport={"width": width, "height": height}, **options)
        contexts.append(context)
        page = context.new_page()
        watched = Watched(page=page, name=re.sub(r"[^a-z0-9-]+", "-", name.lower()))
        context.expose_binding("__rekindleReport", lambda source, kind, text: watched.csp.append(text))
        context.add_init_script(WATCH_SCRIPT)

        def on_console(message: Any) -> None:
            if message.type == "error":
                watched.console_errors.append(message.text)
                if "Content Security Policy" in message.text:
                    watched.csp.append(message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda error: watched.console_errors.append(str(error)))
        page.on("request", lambda request: watched.requests.append(request))
        return watched

    yield opener
    for context in contexts:
        context.close()
