"""The terminal attacked as a hostile user would, in real Chromium against a real ``astra
serve``: markup in data (a key's label, a market in the URL) renders as text; a key revoked
while a live page is open signs the tab out with a message and stops its WebSockets (no
reconnect storm); keys with partial scopes visit every page without a script error, and a page
they cannot use names the missing scope; malformed routes; the key never leaves the tab's
session storage (no URL, no DOM, no localStorage) and no page breaks the CSP; a stream the key
may not open says why and is not retried."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tests.web.browser import shot, sign_in

SPOT = "SIM-SPOT-BTC-USDT"
PAGES = ["markets", "market", "trade", "orders", "otc", "venues", "keys"]
XSS = '<img src=x onerror="window.__xss=1">"><script>window.__xss=2</script>'


def _rest(served, method: str, path: str, body=None, token: str | None = None):
    data = None if body is None else json.dumps(body).encode()
    headers = {**served.headers(token), "content-type": "application/json"}
    request = urllib.request.Request(served.base + path, data=data, method=method,
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=15) as resp:
        return json.loads(resp.read())


def _new_key(served, scopes: list[str], label: str = "hostile") -> dict:
    return _rest(served, "POST", "/api-keys", {"label": label, "scopes": scopes})


def _route(page, route: str) -> None:
    page.evaluate("route => { location.hash = route; }", route)


def _no_markup_ran(page) -> None:
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img[src=x], main script").count() == 0


def test_markup_in_a_key_label_and_in_the_route_is_text(page, served):
    created = _new_key(served, ["read"], label=XSS)
    sign_in(page, served)
    _route(page, "#/keys")
    row = page.locator(f"[data-testid=keys-row][data-key-id='{created['keyId']}']")
    row.wait_for()
    assert row.locator("td").nth(1).text_content() == XSS
    _no_markup_ran(page)
    # A market that is markup, in the URL: the page says it is unknown, as text.
    _route(page, "#/market?market=" + urllib.parse.quote("SIM-SPOT-<b>X</b>-" + XSS))
    error = page.locator("main .error[role=alert]")
    error.wait_for()
    assert "<b>X</b>" in error.text_content()
    assert page.locator("main b", has_text="X").count() == 0
    _route(page, "#/trade?market=" + urllib.parse.quote(XSS))
    page.get_by_test_id("trade-ticket").wait_for()
    assert page.get_by_test_id("trade-market").input_value() == XSS
    page.locator("[data-testid=trade-market-info] .error").wait_for()
    _no_markup_ran(page)


@pytest.mark.parametrize("route", ["#/market?market=", "#/nope", "#/trade?market=%00",
                                   "#/market?market=%E0%A4%A", "#/orders?exchange=%00",
                                   "#/otc?account=..%2F..%2Fapi-keys", "#/market?market=SIM"])
def test_malformed_routes_show_a_page_or_an_error_never_a_script_error(page, served, route):
    sign_in(page, served)
    _route(page, route)
    page.wait_for_function("() => document.querySelector('main .page-root')"
                           "?.childElementCount > 0")
    text = page.locator("main").text_content()
    assert "undefined" not in text and "[object Object]" not in text, text


def test_the_key_stays_in_session_storage_only(page, served):
    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url))
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    csp: list[str] = []
    page.on("console", lambda msg: csp.append(msg.text)
            if "Content Security Policy" in msg.text else None)
    sign_in(page, served)
    for name in PAGES:
        _route(page, f"#/{name}")
        page.locator(f"main .page-root[data-page={name}]").wait_for()
    page.get_by_test_id("market-state").count()  # the last pages' streams had time to open
    assert served.token not in page.content()
    assert page.evaluate("JSON.stringify(localStorage)") == "{}"
    assert page.evaluate("document.cookie") == ""
    origin = served.base
    assert all(url.startswith((origin, "data:")) for url in seen), seen
    assert all(served.token not in url for url in seen + sockets)
    assert sockets and all(url.startswith(served.ws_base) for url in sockets)
    assert csp == []  # no page breaks its own Content-Security-Policy


def _count_handshakes(page) -> list[str]:
    handshakes: list[str] = []
    page.on("websocket", lambda ws: handshakes.append(ws.url))
    return handshakes


@pytest.mark.parametrize(("route", "ready", "text"), [
    (f"#/market?market={SPOT}", "market-state", "synced"),  # the book and the trades
    (f"#/trade?market={SPOT}", "trade-bbo-state", "live"),  # the ticket's quotes
])
def test_revoking_the_signed_in_key_signs_the_open_page_out(page, served, route, ready, text):
    """A page with only live streams open: the key revoked -> the tab signs out with the
    reason, forgets the key, and no stream reconnects with the dead key."""
    created = _new_key(served, ["read", "trade"])
    handshakes = _count_handshakes(page)
    sign_in(page, served, created["token"])
    _route(page, route)
    page.wait_for_function("([id, text]) => document.querySelector(`[data-testid=${id}]`)"
                           "?.textContent === text", arg=[ready, text])
    opened = len(handshakes)
    assert opened >= 1
    _rest(served, "DELETE", f"/api-keys/{created['keyId']}")
    page.locator("#sign-in").wait_for(state="visible")
    assert "refused" in page.get_by_test_id("sign-in-error").text_content()
    assert page.evaluate("sessionStorage.getItem('astra.apiKey')") is None
    if ready == "market-state":
        shot(page, "hostile-revoked")
    page.wait_for_timeout(5000)  # let any stray reconnect timer fire
    assert len(handshakes) == opened, handshakes[opened:]


SCOPED = {"read": ["read"], "trade": ["trade"], "otc": ["otc"]}
# The pages a key with only these scopes cannot use, and the scope each one names.
NEEDS = {"read": {"orders": "trade", "otc": "otc", "keys": "admin"},
         "trade": {"markets": "read", "market": "read", "trade": "read", "orders": "read",
                   "venues": "read", "otc": "otc", "keys": "admin"},
         "otc": {"markets": "read", "market": "read", "trade": "read", "orders": "read",
                 "venues": "read", "keys": "admin"}}


@pytest.mark.parametrize("who", sorted(SCOPED))
def test_a_partial_key_visits_every_page_without_a_script_error(page, served, who):
    created = _new_key(served, SCOPED[who], label=f"only {who}")
    sign_in(page, served, created["token"])
    for name in PAGES:
        _route(page, f"#/{name}")
        page.locator(f"main .page-root[data-page={name}]").wait_for()
        page.wait_for_function("name => document.querySelector("
                               "`main .page-root[data-page=${name}]`)?.childElementCount > 0",
                               arg=name)
        needed = NEEDS[who].get(name)
        if needed:
            page.wait_for_function(
                "scope => document.querySelector('main').textContent.includes(`'${scope}'`)"
                " || document.querySelector('main').textContent.includes(scope + ' scope')",
                arg=needed)
        shot(page, f"hostile-{who}-{name}")
        # Still signed in: a 403 is not a revoked key.
        assert page.locator("#nav").is_visible()


def test_a_stream_the_key_may_not_open_says_why_and_is_not_retried(page, served):
    created = _new_key(served, ["read"], label="read only, private streams")
    handshakes = _count_handshakes(page)
    sign_in(page, served, created["token"])
    _route(page, "#/orders?exchange=SIM")
    badge = page.get_by_test_id("orders-stream-ORDERS")
    badge.wait_for()
    page.wait_for_function("() => document.querySelector("
                           "'[data-testid=orders-stream-ORDERS]')?.textContent.endsWith('closed')")
    assert "'trade' scope" in badge.get_attribute("title")
    private = [url for url in handshakes if "dataType=ORDERS" in url]
    page.wait_for_timeout(3000)  # past the first retry's delay (0.5 s)
    assert [url for url in handshakes if "dataType=ORDERS" in url] == private
    assert len(private) == 1
    assert page.locator("#nav").is_visible()  # a missing scope is not a sign-out


def _simulator_pid(server) -> int:
    """The pid of ``astra serve``'s simulator child (its only child process)."""
    pid = server.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert children, f"no simulator child under {pid}"
    return int(children[0])


def test_a_venue_dying_under_the_ticket_blanks_its_quotes(page, tmp_path):
    """Its own ``astra serve`` (the simulator is killed): the ticket's best bid/ask is not
    left showing the dead venue's last prices as live."""
    from tests.serve_process import ServedAstra

    server = ServedAstra(tmp_path / "data").start()
    try:
        sign_in(page, server)
        _route(page, f"#/trade?market={SPOT}")
        state = page.get_by_test_id("trade-bbo-state")
        page.wait_for_function("""() => {
            const q = (id) => document.querySelector(`[data-testid=${id}]`)?.textContent || "";
            return q("trade-bbo-state") === "live" && q("trade-best-bid").includes("SIM");
        }""")
        os.kill(_simulator_pid(server), signal.SIGKILL)
        page.wait_for_function("() => document.querySelector("
                               "'[data-testid=trade-bbo-state]')?.textContent !== 'live'")
        assert state.text_content() in ("disconnected", "resyncing"), state.text_content()
        assert state.get_attribute("title")  # the reason the gateway gave
        bid = page.get_by_test_id("trade-best-bid").text_content()
        ask = page.get_by_test_id("trade-best-ask").text_content()
        assert bid == "Bid—" and ask == "Ask—", (bid, ask)
        shot(page, "hostile-ticket-venue-down")
    finally:
        server.stop()


def test_the_market_page_recovers_after_the_gateway_restarts(page, tmp_path):
    """``astra serve`` stopped and started again on the same data dir and port while the market
    page is open: the page keeps retrying (never a storm: the backoff grows to 8 s) and is
    synced again once the gateway is back, without a reload or a new sign-in."""
    from tests.serve_process import ServedAstra

    with socket.socket() as probe:  # a free port, kept across the restart
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ServedAstra(tmp_path / "data", "--port", str(port)).start()
    try:
        handshakes = _count_handshakes(page)
        sign_in(page, server)
        _route(page, f"#/market?market={SPOT}")
        synced = ("() => document.querySelector('[data-testid=market-state]')?.textContent"
                  " === 'synced'")
        page.wait_for_function(synced)
        server.stop()
        before = len(handshakes)
        # Six failed handshakes of the book: one past the fifth (after 0.5 + 1 + 2 + 4 + 8 s),
        # where the stream used to give up for good.
        deadline = time.monotonic() + 60
        while sum("ORDERBOOK" in url for url in handshakes[before:]) < 6:
            assert time.monotonic() < deadline, handshakes[before:]
            page.wait_for_timeout(500)
        failed = len(handshakes) - before
        server.start()
        page.wait_for_function(synced, timeout=60_000)
        assert page.locator("#nav").is_visible()
        assert len(handshakes) - before <= failed + 6  # the book and the trades, once more
    finally:
        server.stop()


@pytest.mark.parametrize("pasted", ["ключ-не-тот", "astra key with spaces", "🔑"])
def test_pasting_something_that_is_no_key_says_so(page, served, pasted):
    page.goto(served.base + "/")
    page.get_by_test_id("api-key-input").fill(pasted)
    page.get_by_test_id("sign-in").click()
    page.wait_for_function("() => document.getElementById('sign-in-error').textContent")
    error = page.get_by_test_id("sign-in-error").text_content()
    assert "not an API key" in error or "not valid" in error, error
    assert "did not answer" not in error
    assert page.locator("#nav").is_hidden()
