"""Debian's chromium driven by Playwright, for the browser view's tests.

Playwright's own browser download is not used: the tests launch the system's
`/usr/bin/chromium` (apt package `chromium`; `scripts/setup.sh` installs it when it runs
as root). Where it cannot be launched, the tests fail with one line that says so: they
are never skipped, so CI cannot pass them without a browser.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS_ENV = "TTSCALE_UI_SCREENSHOTS"
"""A directory: the tests save their screenshots there (docs/images refreshes the
docs' pictures). Unset, they save none, so a test run leaves the checkout clean."""


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium browser for as long as the block runs."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"cannot drive a browser: playwright is not installed ({exc})", pytrace=False)
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            pytest.fail(
                f"cannot launch {CHROMIUM} (apt package chromium; scripts/setup.sh installs "
                f"it as root): {first}",
                pytrace=False,
            )
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> None:
    """Save the page as `name`.png in $TTSCALE_UI_SCREENSHOTS, when it is set."""
    directory = os.environ.get(SCREENSHOTS_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)
