"""The dashboard in a real headless browser: Debian's chromium, driven by playwright, fully offline.

One uvicorn server (the real app, live ticks shortened) per session and one browser per module; a new
browser context per test. ``Dash`` watches its page: a console error, an uncaught exception, a CSP
violation or a request to any host but the test server fails the test at teardown. Screenshots go
to ``tests/artifacts/`` for people to look at; nothing compares pixels.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import Account, LiveServer, live_settings

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
AXE = next((Path(__file__).parent / "vendor").glob("axe-core-*.min.js"))
TICK_S = 0.5


@pytest.fixture(scope="session")
def dashboard_server(settings: Any, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    """The real app with live pages ticking every TICK_S, so tests wait half a second, not five."""
    changes = {"dashboard_tick_s": TICK_S, "metrics_series_interval_s": TICK_S}
    with LiveServer(live_settings(settings, grpc_enabled=False, **changes)) as server:
        yield server


class Dash:
    """A fresh browser context on the dashboard server, watched for errors and foreign requests."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.base_url = base_url
        self.context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 800})
        self.foreign: list[str] = []
        self.problems: list[str] = []
        self.context.route("**/*", self._only_local)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"pageerror: {error}"))
        self.page.on("dialog", lambda dialog: dialog.accept())
        self.expected_console: list[str] = []  # substrings a test expects (a refused request, say)

    def _only_local(self, route: Any) -> None:
        if urlsplit(route.request.url).netloc == urlsplit(self.base_url).netloc:
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort()

    def _console(self, message: Any) -> None:
        if message.type == "error" and not any(text in message.text for text in self.expected_console):
            self.problems.append(f"console: {message.text}")

    def sign_in(self, account: Account, next_path: str | None = None) -> None:
        self.page.goto("/dashboard/login" + (f"?next={next_path}" if next_path else ""))
        self.page.fill("#username", account.username)
        self.page.fill("#password", account.password)
        with self.page.expect_navigation():
            self.page.click("form:has(#password) button[type=submit]")

    def sign_out(self) -> None:
        with self.page.expect_navigation():
            self.page.click(".signout button[type=submit]")

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"dashboard-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def axe_serious(self) -> list[dict[str, Any]]:
        """axe-core's serious and critical WCAG 2.1 A/AA violations on the current page."""
        # Evaluated through the driver: a <script> tag added to the page would be inline, which the
        # dashboard's CSP (rightly) blocks.
        if not self.page.evaluate("typeof axe !== 'undefined'"):
            self.page.evaluate(AXE.read_text())
        found: list[dict[str, Any]] = self.page.evaluate(
            """async () => {
                const result = await axe.run(document, {runOnly: {type: "tag",
                    values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}});
                return result.violations.filter(v => ["serious", "critical"].includes(v.impact))
                    .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(" "))}));
            }"""
        )
        return found

    def no_horizontal_overflow(self) -> bool:
        return bool(self.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))

    def chart_points(self, selector: str) -> int:
        """How many points a drawn chart holds (dashboard.js sets data-points when it draws)."""
        self.page.wait_for_selector(f"{selector}[data-points]")
        return int(self.page.get_attribute(selector, "data-points") or 0)

    def canvas_ink(self, selector: str) -> int:
        """Non-transparent pixels of a chart's canvas: a drawn chart has some."""
        ink: int = self.page.evaluate(
            """(selector) => {
                const canvas = document.querySelector(selector + " canvas");
                if (!canvas) return 0;
                const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
                let n = 0;
                for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
                return n;
            }""",
            selector,
        )
        return ink

    def close(self) -> None:
        self.context.close()

    def check(self) -> None:
        assert not self.foreign, f"requests left the test server: {self.foreign}"
        assert not self.problems, json.dumps(self.problems, indent=1)


@pytest.fixture
def dash(browser: Any, dashboard_server: LiveServer) -> Iterator[Dash]:
    watched = Dash(browser, dashboard_server.url)
    yield watched
    watched.close()
    watched.check()
