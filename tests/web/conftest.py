"""The terminal's end-to-end tests: real headless Chromium (Debian's ``chromium``) driven by
Playwright's sync API, against a real ``astra serve`` (the ``served`` fixture).

- ``browser``: one Chromium per test module, started with the executable path (Playwright
  downloads nothing) and the flags this closed network needs; skips, saying why, when Chromium
  or Playwright is absent (``.ci/run`` installs both).
- ``page``: a fresh context per test (empty session storage: signed out); any uncaught script
  error or failed load of a terminal file fails the test at teardown.
Helpers (``sign_in``, ``shot``) are in ``tests/web/browser.py``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from tests.web.browser import CHROMIUM, FLAGS, SCREENSHOTS, TIMEOUT_MS, shot


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS,
                                      timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item: the ``page`` fixture reads whether the test
    failed, to leave a screenshot and the page's console behind."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    console: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    tab.on("requestfailed", lambda req: errors.append(f"failed: {req.url}")
           if "/terminal/" in req.url else None)
    tab.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    try:
        yield tab
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:  # what the page showed, for whoever reads CI
            name = "failed-" + "".join(c if c.isalnum() else "-" for c in request.node.name)
            with contextlib.suppress(Exception):
                shot(tab, name[:120])
                (SCREENSHOTS / f"{name[:120]}.txt").write_text(
                    tab.url + "\n" + "\n".join(console) + "\n" + tab.inner_text("body"))
        context.close()
    assert not errors, errors


