"""Fixtures for the screen's browser tests: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright

from tests.screen.fake_api import FakeApi, Scenario

CHROMIUM = os.environ.get("CITYVITALS_CHROMIUM", "/usr/bin/chromium")
# No network, no background services, no GPU: the browser only talks to our server.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots for a person to look at: never into the working tree.
ARTIFACTS = Path(os.environ.get("CITYVITALS_TEST_ARTIFACTS") or tempfile.gettempdir()) / "screen"
WALL: ViewportSize = {"width": 1920, "height": 1080}


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the screen tests.

    Package scope, not session: Playwright's sync API runs an event loop in this
    thread while it is open, which would stop every later test from using asyncio.run.
    """
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail(f"{CHROMIUM} missing: `make test` installs Debian's chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh 1920x1080 page (no stored language) that fails the test on JS errors."""
    ctx = browser.new_context(viewport=WALL, locale="zh-CN", timezone_id="Asia/Shanghai")
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def scenario() -> Scenario:
    """The canned data, editable by the test."""
    return Scenario()


@pytest.fixture
def fake_api(scenario: Scenario) -> Iterator[FakeApi]:
    """The canned API serving the screen."""
    api = FakeApi(scenario)
    api.start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go (gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
