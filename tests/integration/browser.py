"""Chromium for the viewer's browser tests: Debian's package, driven by Playwright's Python package.

Playwright's own browser download cannot work on our machines (no route to its CDN), so the browser is
the distribution's (`apt-get install chromium`), launched by path with headless flags. Without it the
browser tests skip, saying why; CI sets TRACEHOP_REQUIRE_BROWSER=1 so that a missing one fails instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.required_tools import skip_or_fail

CHROMIUM_VARIABLE = "TRACEHOP_CHROMIUM"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_path() -> str | None:
    wanted = os.environ.get(CHROMIUM_VARIABLE)
    if wanted:
        return shutil.which(wanted)
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Module scope, not session: while Playwright's sync API is active it keeps an asyncio loop running on
# this thread, and a later test calling asyncio.run() would fail ("cannot be called from a running loop").
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        skip_or_fail(
            "browser", f"no chromium on PATH (or at ${CHROMIUM_VARIABLE}): `apt-get install chromium`"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Viewer:
    """One browser tab on the viewer, recording every request it makes and every dialog a script opens."""

    page: Page
    base_url: str
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)

    def open(self, path: str) -> Page:
        self.page.goto(self.base_url + path)
        return self.page

    def foreign_requests(self) -> list[str]:
        origin = urlsplit(self.base_url)
        return [url for url in self.requests if urlsplit(url)[:2] != origin[:2]]


@contextmanager
def open_viewer(browser: Browser, base_url: str) -> Iterator[Viewer]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    viewer = Viewer(page, base_url.rstrip("/"))
    page.on("request", lambda request: viewer.requests.append(request.url))

    def on_dialog(dialog) -> None:
        viewer.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: viewer.script_errors.append(str(error)))
    try:
        yield viewer
    finally:
        context.close()
