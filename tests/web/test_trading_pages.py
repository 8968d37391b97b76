"""The terminal's trading pages in real Chromium against a real ``astra serve``: the order
ticket (single venue and SMART with its dry-run preview), live open orders / fills / balances
and cancel, the OTC desk (quote, countdown, accept, converts) and API keys (create, secret once,
revoke, a key without ``admin``). Every outcome is also checked over REST with urllib."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from tests.web.browser import TIMEOUT_MS, shot

MARKET = "SIM-SPOT-BTC-USDT"
SMART = "SMART-SPOT-BTC-USDT"
BTC_SPOT = ('[data-testid="orders-balance-row"][data-asset="BTC"][data-account="spot"] '
            '[data-testid="orders-balance-total"]')


def _call(served, method: str, path: str, body=None, token: str | None = None):
    """(status, JSON) of a REST call on the served gateway."""
    data = json.dumps(body).encode() if body is not None else None
    headers = served.headers(token)
    if data is not None:
        headers["content-type"] = "application/json"
    request = urllib.request.Request(served.base + path, data=data, method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _number(text: str) -> float:
    return float(re.search(r"-?[\d,]+(?:\.\d+)?", text)[0].replace(",", ""))


def sign_in(page, served, route: str = "markets", token: str | None = None) -> None:
    """Sign in on ``#/<route>``: the first page mounted is the one under test."""
    page.goto(f"{served.base}/#/{route}")
    page.get_by_test_id("api-key-input").fill(token or served.token)
    page.get_by_test_id("sign-in").click()
    page.locator("#nav").wait_for(state="visible")


def _open_tab(page, served, route: str):
    """A second signed-in tab of the same browser context, showing ``route``."""
    tab = page.context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    sign_in(tab, served, route)
    return tab


def _ticket(page, served, market: str):
    if f"market={market}" not in page.url:
        page.goto(f"{served.base}/#/trade?market={market}")
    page.wait_for_function("() => /\\d/.test(document.querySelector("
                           "'[data-testid=trade-best-bid] .tt-quote-price')?.textContent)")
    return _number(page.get_by_test_id("trade-best-bid").locator(".tt-quote-price")
                   .text_content())


def test_limit_order_shows_live_in_open_orders_and_cancels(page, served):
    sign_in(page, served, "orders?exchange=SIM")
    page.get_by_test_id("orders-stream-ORDERS").filter(has_text="live").wait_for()
    page.get_by_test_id("orders-open-count").wait_for()

    ticket = _open_tab(page, served, f"trade?market={MARKET}")
    bid = _ticket(ticket, served, MARKET)
    ticket.get_by_test_id("trade-type").select_option("LIMIT")
    ticket.get_by_test_id("trade-quantity").fill("0.001")
    price = round(bid * 0.5)  # far below the market: it rests
    ticket.get_by_test_id("trade-price").fill(str(price))
    cid = ticket.get_by_test_id("trade-client-order-id").text_content()
    assert cid.startswith("web-")
    ticket.get_by_test_id("trade-submit").click()
    status = ticket.get_by_test_id("trade-result-status")
    status.wait_for()
    assert status.text_content() == "NEW"
    order_id = ticket.get_by_test_id("trade-result-order-id").text_content()
    assert ticket.get_by_test_id("trade-result-client-id").text_content() == cid
    # The ticket is spent: the next order gets another id.
    assert ticket.get_by_test_id("trade-client-order-id").text_content() != cid

    # The first tab was not reloaded: the order arrived over the ORDERS stream.
    row = page.locator(f'[data-testid="orders-open-row"][data-order-id="{order_id}"]')
    row.wait_for()
    assert MARKET in row.text_content() and "BUY" in row.text_content()
    assert _number(row.locator("td").nth(3).text_content()) == price
    shot(page, "orders")
    row.get_by_test_id("orders-cancel").click()
    row.wait_for(state="detached")
    ended = page.locator(f'[data-testid="orders-recent-row"][data-order-id="{order_id}"]')
    ended.wait_for()
    assert "CANCELED" in ended.text_content()
    code, order = _call(served, "GET", f"/orders/{order_id}?market={MARKET}")
    assert code == 200 and order["status"] == "CANCELED"
    assert order["clientOrderId"] == cid
    ticket.close()


def test_market_order_fills_and_the_balance_changes_live(page, served):
    sign_in(page, served, "orders?exchange=SIM")
    page.get_by_test_id("orders-stream-BALANCES").filter(has_text="live").wait_for()
    page.get_by_test_id("orders-stream-FILLS").filter(has_text="live").wait_for()
    btc = page.locator(BTC_SPOT)
    btc.wait_for()
    before = _number(btc.text_content())

    ticket = _open_tab(page, served, f"trade?market={MARKET}")
    _ticket(ticket, served, MARKET)
    ticket.get_by_test_id("trade-type").select_option("MARKET")
    assert ticket.get_by_test_id("trade-price").is_disabled()
    ticket.get_by_test_id("trade-quantity").fill("0.002")
    ticket.get_by_test_id("trade-submit").click()
    ticket.get_by_test_id("trade-result-status").filter(has_text="FILLED").wait_for()
    order_id = ticket.get_by_test_id("trade-result-order-id").text_content()
    ticket.close()

    # One row per fill: a market order may fill against several makers at once.
    fills = page.locator(f'[data-testid="orders-fill-row"][data-order-id="{order_id}"]')
    fills.first.wait_for()
    assert all("BUY" in text for text in fills.all_text_contents())
    page.wait_for_function(  # the table is redrawn on every event: look it up each time
        "([selector, before]) => parseFloat((document.querySelector(selector)?.textContent"
        " || '0').replace(/,/g, '')) > before", arg=[BTC_SPOT, before])
    after = _number(btc.text_content())
    assert after > before  # bought BTC (net of a BTC fee)
    code, fills = _call(served, "GET", f"/fills?market={MARKET}")
    assert code == 200 and any(f["orderId"] == order_id for f in fills)


def test_smart_preview_gates_the_routed_order(page, served):
    sign_in(page, served, f"trade?market={SMART}")
    _ticket(page, served, SMART)
    send = page.get_by_test_id("trade-send-routed")
    page.get_by_test_id("trade-type").select_option("MARKET")
    page.get_by_test_id("trade-quantity").fill("0.01")
    assert send.is_visible() and send.is_disabled()
    assert page.get_by_test_id("trade-submit").is_hidden()

    page.get_by_test_id("trade-preview").click()
    page.get_by_test_id("trade-plan-leg").first.wait_for()
    assert send.is_enabled()
    legs = page.get_by_test_id("trade-plan-leg").all_text_contents()
    assert all(re.search(r"SIM\d?-SPOT-BTC-USDT", leg) for leg in legs)
    assert _number(page.get_by_test_id("trade-plan-quantity").text_content()) == 0.01

    page.get_by_test_id("trade-quantity").fill("0.02")  # a changed ticket voids the plan
    assert send.is_disabled()
    assert "preview again" in page.get_by_test_id("trade-preview-note").text_content()
    page.get_by_test_id("trade-preview").click()
    page.wait_for_function("() => document.querySelector('[data-testid=trade-send-routed]')"
                           "?.disabled === false")
    assert _number(page.get_by_test_id("trade-plan-quantity").text_content()) == 0.02
    shot(page, "trade")

    send.click()
    status = page.get_by_test_id("trade-result-status")
    status.wait_for()
    assert status.text_content() in ("FILLED", "PARTIALLY_FILLED", "EXPIRED")
    order_id = page.get_by_test_id("trade-result-order-id").text_content()
    assert order_id.startswith("sor-")
    children = page.get_by_test_id("trade-result-child")
    assert children.count() >= 1
    assert send.is_disabled()  # the next routed order needs its own preview
    code, order = _call(served, "GET", f"/orders/{order_id}?market={SMART}")
    assert code == 200 and order["status"] == status.text_content()
    assert len(order["children"]) == children.count()
    assert order["filledQuantity"] == _number(
        page.get_by_test_id("trade-result-filled").text_content().split("/")[0])
    shot(page, "trade-routed")


def test_the_ticket_quotes_live_and_an_error_names_the_field(page, served):
    sign_in(page, served, f"trade?market={MARKET}")
    _ticket(page, served, MARKET)
    first = page.get_by_test_id("trade-bbo").get_attribute("data-update-id")
    page.wait_for_function(  # the BBO stream moves it without a reload
        "first => document.querySelector('[data-testid=trade-bbo]')?.dataset.updateId "
        "!== first", arg=first)
    ask = _number(page.get_by_test_id("trade-best-ask").locator(".tt-quote-price")
                  .text_content())
    page.get_by_test_id("trade-best-ask").click()  # a quote click fills the price
    assert float(page.get_by_test_id("trade-price").input_value()) > 0
    assert abs(float(page.get_by_test_id("trade-price").input_value()) - ask) / ask < 0.01
    page.get_by_test_id("trade-type").select_option("LIMIT")
    page.get_by_test_id("trade-quantity").fill("0.001")
    page.get_by_test_id("trade-price").fill("50000.001")  # off the 0.01 tick
    page.get_by_test_id("trade-submit").click()
    message = page.get_by_test_id("trade-error-price")
    message.wait_for()
    assert "tick" in message.text_content()
    assert "invalid" in page.locator('.tt-field[data-field="price"]').get_attribute("class")
    assert page.get_by_test_id("trade-result").is_hidden()


def test_otc_quote_counts_down_and_is_accepted(page, served):
    sign_in(page, served, "otc")
    page.get_by_test_id("otc-account-row").first.wait_for()
    assert page.get_by_test_id("otc-account").input_value() == served.otc_account
    page.get_by_test_id("otc-from-asset").select_option("BTC")
    page.get_by_test_id("otc-to-asset").select_option("USDT")
    page.get_by_test_id("otc-amount").fill("0.01")
    page.get_by_test_id("otc-request").click()
    countdown = page.get_by_test_id("otc-countdown")
    countdown.filter(has_text="expires in").wait_for()
    first = countdown.text_content()
    page.wait_for_function("first => document.querySelector('[data-testid=otc-countdown]')"
                           "?.textContent !== first", arg=first)  # it runs
    assert page.get_by_test_id("otc-quote-from").text_content() == "0.01 BTC"
    shot(page, "otc")
    page.get_by_test_id("otc-accept").click()
    trade_id = page.get_by_test_id("otc-trade-id")
    trade_id.wait_for()
    convert = page.locator(f'[data-testid="otc-convert-row"]'
                           f'[data-trade-id="{trade_id.text_content()}"]')
    convert.wait_for()
    assert "0.01 BTC" in convert.text_content()
    shot(page, "otc-accepted")
    code, body = _call(served, "GET", f"/converts/{served.otc_account}")
    assert code == 200
    assert body["converts"][0]["tradeId"] == trade_id.text_content()

    # A quote left alone expires: Accept is disabled and says so.
    page.get_by_test_id("otc-request").click()
    page.get_by_test_id("otc-countdown").filter(has_text="expires in").wait_for()
    page.get_by_test_id("otc-countdown").filter(has_text="expired").wait_for()
    assert page.get_by_test_id("otc-accept").is_disabled()


def test_keys_create_shows_the_secret_once_and_revoke_ends_it(page, served):
    sign_in(page, served, "keys")
    page.get_by_test_id("keys-row").first.wait_for()
    page.get_by_test_id("keys-label").fill("web reader")
    assert page.get_by_test_id("keys-scope-read").is_checked()
    page.get_by_test_id("keys-create").click()
    token_box = page.get_by_test_id("keys-secret-token")
    token_box.wait_for()
    token = token_box.input_value()
    key_id, secret = token.split(".", 1)
    row = page.locator(f'[data-testid="keys-row"][data-key-id="{key_id}"]')
    row.wait_for()
    assert "read" in row.text_content() and "admin" not in row.text_content()
    page.get_by_test_id("keys-copy").click()  # plain http: no clipboard, the text is selected
    page.get_by_test_id("keys-copy-note").filter(has_text=re.compile("Copied|Selected")).wait_for()
    shot(page, "keys")

    code, book = _call(served, "GET", f"/orderbook?market={MARKET}&depth=1", token=token)
    assert code == 200 and book["bids"]
    code, _ = _call(served, "GET", f"/orders?market={MARKET}", token=token)
    assert code == 403  # read only

    page.goto(f"{served.base}/#/markets")
    page.goto(f"{served.base}/#/keys")
    row.wait_for()
    assert page.get_by_test_id("keys-secret").is_hidden()
    assert secret not in page.content()  # shown once: never in the list
    code, listed = _call(served, "GET", "/api-keys")
    assert code == 200 and secret not in json.dumps(listed)

    row.get_by_test_id("keys-revoke").click()
    row.get_by_test_id("keys-revoke-confirm").click()
    row.wait_for(state="detached")  # revoked keys are hidden unless asked for
    page.get_by_test_id("keys-show-revoked").check()
    assert row.get_by_test_id("keys-status").text_content() == "revoked"
    code, error = _call(served, "GET", f"/orderbook?market={MARKET}&depth=1", token=token)
    assert code == 401, error


def test_keys_page_without_admin_says_so(page, served):
    code, created = _call(served, "POST", "/api-keys",
                          {"label": "viewer", "scopes": ["read", "trade"]})
    assert code == 201
    sign_in(page, served, "keys", created["token"])
    forbidden = page.get_by_test_id("keys-forbidden")
    forbidden.wait_for()
    assert "admin" in forbidden.text_content()
    assert "FORBIDDEN" in forbidden.text_content()
    assert page.get_by_test_id("keys-form").count() == 0
    shot(page, "keys-forbidden")


def test_a_resting_routed_order_is_listed_and_canceled(page, served):
    sign_in(page, served, f"trade?market={SMART}")
    bid = _ticket(page, served, SMART)
    page.get_by_test_id("trade-type").select_option("LIMIT")
    page.get_by_test_id("trade-tif").select_option("GTC")
    page.get_by_test_id("trade-quantity").fill("0.001")
    page.get_by_test_id("trade-price").fill(str(round(bid * 0.5)))  # rests: no leg now
    page.get_by_test_id("trade-preview").click()
    page.get_by_test_id("trade-plan-unfilled").filter(has_text="price").wait_for()
    page.get_by_test_id("trade-send-routed").click()
    page.get_by_test_id("trade-result-status").filter(has_text="NEW").wait_for()
    order_id = page.get_by_test_id("trade-result-order-id").text_content()
    assert order_id.startswith("sor-")

    page.get_by_test_id("trade-open-orders").click()  # to the SMART tab of the orders page
    row = page.locator(f'[data-testid="orders-open-row"][data-order-id="{order_id}"]')
    row.wait_for()
    assert "GTC" in row.text_content() and "SIM" in row.text_content()
    row.get_by_test_id("orders-cancel").click()
    row.wait_for(state="detached")
    code, order = _call(served, "GET", f"/orders/{order_id}?market={SMART}")
    assert code == 200 and order["status"] == "CANCELED"


def test_otc_streamed_quotes_refresh_and_one_is_accepted(page, served):
    sign_in(page, served, "otc")
    page.get_by_test_id("otc-account-row").first.wait_for()
    page.get_by_test_id("otc-from-asset").select_option("ETH")
    page.get_by_test_id("otc-to-asset").select_option("USDT")
    page.get_by_test_id("otc-amount").fill("0.5")
    page.get_by_test_id("otc-live").check()
    page.get_by_test_id("otc-request").click()
    quote_id = page.get_by_test_id("otc-quote-id")
    quote_id.wait_for()
    first = quote_id.text_content()
    page.wait_for_function("first => document.querySelector('[data-testid=otc-quote-id]')"
                           "?.textContent !== first", arg=first)  # a fresh quote arrived
    page.get_by_test_id("otc-accept").click()
    trade_id = page.get_by_test_id("otc-trade-id")
    trade_id.wait_for()
    assert page.get_by_test_id("otc-live").is_checked() is False  # accepting ends the stream
    code, body = _call(served, "GET", f"/converts/{served.otc_account}?limit=1")
    assert code == 200
    convert = body["converts"][0]
    assert convert["tradeId"] == trade_id.text_content()
    assert convert["fromAsset"] == "ETH" and convert["fromAssetQuantity"] == 0.5


def test_a_perpetual_fill_shows_a_position(page, served):
    perp = "SIM-PERP-BTC-USDT"
    sign_in(page, served, "orders?exchange=SIM")
    page.get_by_test_id("orders-stream-ORDERS").filter(has_text="live").wait_for()
    ticket = _open_tab(page, served, f"trade?market={perp}")
    _ticket(ticket, served, perp)
    assert ticket.get_by_test_id("trade-reduce-only").is_enabled()  # a derivative
    ticket.get_by_test_id("trade-type").select_option("MARKET")
    ticket.get_by_test_id("trade-quantity").fill("0.003")
    ticket.get_by_test_id("trade-submit").click()
    ticket.get_by_test_id("trade-result-status").filter(has_text="FILLED").wait_for()
    ticket.close()

    position = page.get_by_test_id("orders-position-row").filter(has_text=perp)
    position.wait_for()
    assert "LONG" in position.text_content()
    assert _number(position.locator("td").nth(2).text_content()) == 0.003
    page.get_by_test_id("orders-fill-row").filter(has_text=perp).first.wait_for()
    code, positions = _call(served, "GET", "/positions?exchange=SIM")
    assert code == 200
    assert [(p["market"], p["side"], p["quantity"]) for p in positions] == [
        (perp, "LONG", 0.003)]
    shot(page, "orders-live")


def test_cancel_all_asks_for_a_confirmation_first(page, served):
    """One click on "Cancel all" only arms it; the second cancels the market's every order."""
    bid = _call(served, "GET", f"/orderbook?market={MARKET}&depth=1")[1]["bids"][0]["price"]
    ids = []
    for i in range(2):
        code, order = _call(served, "POST", "/orders", {
            "market": MARKET, "side": "BUY", "type": "LIMIT", "quantity": 0.001,
            "price": round(bid * 0.5) + i, "clientOrderId": f"cancel-all-{i}-{id(page)}"})
        assert code == 200 and order["status"] == "NEW", order
        ids.append(order["orderId"])
    sign_in(page, served, "orders?exchange=SIM")
    rows = [page.locator(f'[data-testid="orders-open-row"][data-order-id="{oid}"]')
            for oid in ids]
    for row in rows:
        row.wait_for()
    button = page.locator(f'[data-testid="orders-cancel-all"][data-market="{MARKET}"]')
    button.click()
    assert "Confirm" in button.text_content()
    for oid in ids:  # nothing was sent yet
        assert _call(served, "GET", f"/orders/{oid}?market={MARKET}")[1]["status"] == "NEW"
    button.click()
    for row in rows:
        row.wait_for(state="detached")
    for oid in ids:
        assert _call(served, "GET", f"/orders/{oid}?market={MARKET}")[1]["status"] == "CANCELED"
