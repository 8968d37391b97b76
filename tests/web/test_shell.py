"""The terminal's shell in real Chromium: served at / with no key and no network, a refused key
stays signed out with the reason, a valid key shows the pages, sign-out forgets the key."""

from __future__ import annotations

from tests.web.browser import shot, sign_in


def test_a_bad_key_is_refused_and_a_good_one_signs_in(page, served):
    page.goto(served.base + "/")
    assert page.title() == "Astra Terminal"
    page.get_by_test_id("api-key-input").fill("astra_not_a_real_key")
    page.get_by_test_id("sign-in").click()
    error = page.get_by_test_id("sign-in-error")
    error.wait_for(state="visible")
    page.wait_for_function("document.getElementById('sign-in-error').textContent.length > 0")
    assert "not valid" in error.text_content() or "UNAUTHORIZED" in error.text_content()
    assert page.locator("#nav").is_hidden()
    shot(page, "sign-in")
    sign_in(page, served)
    assert page.evaluate("sessionStorage.getItem('astra.apiKey')") == served.token
    assert page.locator("#nav a").all_text_contents() == [
        "Markets", "Trade", "Orders", "OTC", "Venues", "API keys"]
    page.get_by_test_id("sign-out").click()
    page.locator("#sign-in").wait_for(state="visible")
    assert page.evaluate("sessionStorage.getItem('astra.apiKey')") is None


def test_the_key_pasted_with_its_header_signs_in(page, served):
    """`astra serve` prints `x-astra-api-key: Bearer <key>`: pasting that whole line works,
    and only the key itself is kept."""
    page.goto(served.base + "/")
    page.get_by_test_id("api-key-input").fill(f"x-astra-api-key: Bearer {served.token}")
    page.get_by_test_id("sign-in").click()
    page.locator("#nav").wait_for(state="visible")
    assert page.evaluate("sessionStorage.getItem('astra.apiKey')") == served.token
