"""Where chromium cannot be launched, the browser view's tests fail with one line that
says so: they are never skipped, so a CI machine without a browser cannot pass them."""

from __future__ import annotations

import pytest

from .support import chromium as chromium_support


def test_a_browser_that_cannot_start_fails_with_one_line(monkeypatch, subprocess_env):
    monkeypatch.setattr(chromium_support, "CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(pytest.fail.Exception) as failed, chromium_support.chromium():
        pass
    message = str(failed.value)
    assert message.startswith("cannot launch /nonexistent/chromium (apt package chromium")
    assert "\n" not in message
