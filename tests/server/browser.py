"""Debian's chromium driven by Playwright, for the console's browser tests.

Playwright's own browser download cannot work here (and CI installs ``chromium`` with apt),
so the tests launch ``/usr/bin/chromium``; without it they skip, saying why. Screenshots for
docs/console.md are written only when ``JCSTATE_SCREENSHOTS`` names a directory:

    JCSTATE_SCREENSHOTS=docs/images .venv/bin/pytest -q tests/server/test_console_browser.py
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from console_session import PASSWORD, add_admin, code_for

CHROMIUM = "/usr/bin/chromium"


@contextmanager
def launched() -> Iterator[Any]:
    """Chromium, started once for many pages; skips the test when it cannot be."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (CI does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def page_maker(browser: Any) -> Iterator[Any]:
    """A function making a page in a fresh browser context (its own cookies)."""
    contexts: list[Any] = []

    def make(width: int = 1280, height: int = 800) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        return page

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


def screenshot(page: Any, name: str) -> None:
    """Save ``docs/images/console-NAME.png`` when screenshots were asked for."""
    out = os.environ.get("JCSTATE_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out, f"console-{name}.png")))


def sign_in(page: Any, url: str, name: str, password: str = PASSWORD) -> None:
    page.goto(url + "/signin")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def sign_in_as(server: Any, page: Any, name: str, role: str) -> None:
    """Add ``name`` with ``role`` and sign in (an administrator enrols TOTP on the way)."""
    add_admin(server, name, role)
    sign_in(page, server.url, name)
    if role == "administrator":
        seed = page.locator("code.seed").inner_text()
        page.get_by_label("Code").fill(code_for(seed))
        page.get_by_role("button", name="Verify").click()
    page.get_by_role("heading", name="Devices").wait_for()


def csrf(page: Any) -> str:
    value = page.locator("input[name=csrf]").first.get_attribute("value")
    assert value and re.fullmatch(r"[\w-]+", value)
    return str(value)
