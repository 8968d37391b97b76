"""What the terminal's end-to-end tests share: Chromium's path and flags, signing in, and
screenshots (to ``$ASTRA_SCREENSHOTS`` or ``build/screenshots/`` at the repository's root)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["CHROMIUM", "FLAGS", "SCREENSHOTS", "TIMEOUT_MS", "shot", "sign_in"]

CHROMIUM = os.environ.get("ASTRA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("ASTRA_SCREENSHOTS")
                   or Path(__file__).resolve().parents[2] / "build" / "screenshots")
TIMEOUT_MS = 30_000  # every wait on the page: books and orders on a busy 2-core machine
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def sign_in(page, served, token: str | None = None) -> None:
    """Open the terminal and sign in; returns once the navigation shows."""
    page.goto(served.base + "/")
    page.get_by_test_id("api-key-input").fill(token or served.token)
    page.get_by_test_id("sign-in").click()
    page.locator("#nav").wait_for(state="visible")


def shot(page, name: str) -> Path:
    """A full-page screenshot ``<name>.png`` in the screenshots folder; its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
