"""Every REST method of ``AsyncAstra`` against a real ``astra serve`` (simulated venues,
paper accounts, SMART, the OTC desk), compared with the raw HTTP answers; scope refusals,
revocation, errors naming their parameter; and a method for every route of the gateway."""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
import pytest

from astra.client import ApiKey, AsyncAstra, CreatedApiKey
from astra.core import (
    ConsolidatedBook,
    Forbidden,
    InvalidParameter,
    MarketNotFound,
    OrderBook,
    Unauthorized,
    UnknownExchange,
    Unprocessable,
)
from astra.core._trading import Order, SmartOrder, SmartPlan
from astra.server import scopes
from astra.server.scopes import ROUTE_SCOPES

from .helpers import BOUND, raw_get

SPOT = "SIM-SPOT-BTC-USDT"
SMART = "SMART-SPOT-BTC-USDT"

# Each route of the gateway and the SDK method that calls it.
ROUTE_METHODS = {
    ("GET", "/markets"): "markets",
    ("GET", "/orderbook"): "orderbook",
    ("GET", "/bbo"): "bbo",
    ("GET", "/trades"): "trades",
    ("GET", "/exchanges"): "exchanges",
    ("GET", "/ws"): "watch_orderbook",
    ("GET", "/history/markets"): "history_markets",
    ("GET", "/history/trades"): "history_trades",
    ("GET", "/history/orderbook"): "history_orderbook",
    ("GET", "/history/candles"): "history_candles",
    ("GET", "/openapi.json"): "openapi",
    ("POST", "/orders"): "place_order",
    ("DELETE", "/orders"): "cancel_order",
    ("GET", "/orders"): "orders",
    ("GET", "/orders/{order_id}"): "order",
    ("GET", "/fills"): "fills",
    ("GET", "/balances"): "balances",
    ("GET", "/positions"): "positions",
    ("POST", "/request-quote"): "request_quote",
    ("GET", "/request-quote"): "request_quote",
    ("POST", "/accept-quote"): "accept_quote",
    ("POST", "/otc/accept-quote/{accountId}"): "accept_quote",
    ("GET", "/converts/{accountId}"): "converts",
    ("GET", "/otc/accounts"): "otc_accounts",
    ("GET", "/otc/accounts/{accountId}"): "otc_account",
    ("GET", "/ws/stream-otc-quotes/{accountId}"): "watch_quotes",
    ("GET", "/api-keys"): "api_keys",
    ("POST", "/api-keys"): "create_api_key",
    ("DELETE", "/api-keys/{keyId}"): "revoke_api_key",
    ("GET", "/feeds"): "feeds",
}


def _cid() -> str:
    return f"sdk-{uuid.uuid4().hex[:16]}"


def test_every_route_of_the_gateway_has_a_method():
    public = getattr(scopes, "PUBLIC", None)  # the terminal's static files: no API
    missing = {r for r, scope in ROUTE_SCOPES.items() if scope != public} - set(ROUTE_METHODS)
    assert not missing, f"routes without an SDK method: {sorted(missing)}"
    for method in ROUTE_METHODS.values():
        assert callable(getattr(AsyncAstra, method))


async def test_markets_exchanges_and_openapi_equal_the_raw_answers(served):
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND):
        markets = await client.markets("SIM")
        assert msgspec.to_builtins(markets) == (await raw_get(
            served.base, served.token, "/markets", exchange="SIM"))[1]
        assert SPOT in {m.symbol for m in markets}
        smart = await client.markets("SMART")
        assert {m.symbol: m.members for m in smart}[SMART] == (
            "SIM-SPOT-BTC-USDT", "SIM2-SPOT-BTC-USDT", "SIM3-SPOT-BTC-USDT")
        exchanges = await client.exchanges()
        assert msgspec.to_builtins(exchanges) == (await raw_get(
            served.base, served.token, "/exchanges"))[1]
        assert [e.exchange for e in exchanges] == ["SIM", "SIM2", "SIM3"]
        openapi = await client.openapi()
        assert openapi == (await raw_get(served.base, served.token, "/openapi.json"))[1]
        assert "/orders" in openapi["paths"]


async def test_books_bbo_and_trades(served):
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND):
        book = await client.orderbook(SPOT, 3)
        assert type(book) is OrderBook and book.market == SPOT
        # At most the depth asked for (a side the flow just swept may hold fewer levels).
        assert 1 <= len(book.bids) <= 3 and 1 <= len(book.asks) <= 3
        assert [lv.price for lv in book.bids] == sorted((lv.price for lv in book.bids),
                                                        reverse=True)
        assert book.bids[0].price < book.asks[0].price
        smart = await client.orderbook(SMART, 5)
        assert type(smart) is ConsolidatedBook and len(smart.bids) == 5
        assert {m.venue for m in smart.members} == {"SIM", "SIM2", "SIM3"}
        for lv in smart.bids + smart.asks:
            assert lv.quantity == pytest.approx(sum(lv.venues.values()))
        only_sim = await client.orderbook(SMART, 5, venues=["SIM"], fee_adjusted=True)
        assert only_sim.fee_adjusted is True and [m.venue for m in only_sim.members] == ["SIM"]
        assert all(set(lv.venues) == {"SIM"} for lv in only_sim.bids + only_sim.asks)
        bbo = await client.bbo(SPOT)
        assert bbo.market == SPOT and bbo.bid.venue == "SIM" and bbo.bid.price < bbo.ask.price
        smart_bbo = await client.bbo(SMART, venues=["SIM2"])
        assert smart_bbo.bid.venue == "SIM2" and set(smart_bbo.bid.venues) == {"SIM2"}
        trades = await client.trades(SPOT, 5)
        assert len(trades) == 5 and all(t.quantity > 0 and t.side in ("BUY", "SELL")
                                        for t in trades)
        assert [t.time for t in trades] == sorted(t.time for t in trades)


async def test_orders_fills_balances_and_positions(served):
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND * 2):
        far = round((await client.orderbook(SPOT, 1)).bids[0].price * 0.8)
        cid = _cid()
        order = await client.place_order(SPOT, "BUY", "LIMIT", 0.001, far, client_order_id=cid)
        assert type(order) is Order
        assert (order.client_order_id, order.status, order.price, order.quantity) == (
            cid, "NEW", far, 0.001)
        again = await client.place_order(SPOT, "BUY", "LIMIT", 0.001, far, client_order_id=cid)
        assert again.order_id == order.order_id  # the server's idempotency on the id
        assert order.order_id in {o.order_id for o in await client.orders(SPOT)}
        read = await client.order(order.order_id, SPOT)
        raw = (await raw_get(served.base, served.token, f"/orders/{order.order_id}",
                             market=SPOT))[1]
        assert msgspec.to_builtins(read) == raw and read.client_order_id == cid
        canceled = await client.cancel_order(SPOT, client_order_id=cid)
        assert (canceled.order_id, canceled.status) == (order.order_id, "CANCELED")
        for _ in range(2):
            await client.place_order(SPOT, "SELL", "LIMIT", 0.001, far * 2)
        assert await client.cancel_all_orders(SPOT) == 2
        assert await client.orders(SPOT) == []
        with pytest.raises(ValueError):
            await client.cancel_order(SPOT)

        taker = await client.place_order(SPOT, "BUY", "MARKET", 0.002)
        assert taker.filled_quantity > 0  # (a market order may expire in part on a thin book)
        fills = [f for f in await client.fills(SPOT) if f.order_id == taker.order_id]
        assert sum(f.quantity for f in fills) == pytest.approx(taker.filled_quantity)
        balances = await client.balances("SIM", account="spot")
        raw = (await raw_get(served.base, served.token, "/balances", exchange="SIM",
                             account="spot"))[1]
        assert {b.asset for b in balances} == {b["asset"] for b in raw}
        btc = next(b for b in balances if b.asset == "BTC")
        assert btc.total == pytest.approx(btc.free + btc.locked) and btc.account == "spot"

        perp = await client.place_order("SIM-PERP-BTC-USDT", "BUY", "MARKET", 0.003)
        assert perp.filled_quantity > 0
        positions = await client.positions("SIM")
        raw = (await raw_get(served.base, served.token, "/positions", exchange="SIM"))[1]
        assert [p.market for p in positions] == [p["market"] for p in raw]
        position = next(p for p in positions if p.market == "SIM-PERP-BTC-USDT")
        assert (position.side, position.quantity) == ("LONG",
                                                      pytest.approx(perp.filled_quantity))


async def test_routed_orders_dry_run_then_live(served):
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND * 2):
        plan = await client.place_smart_order(SMART, "BUY", "MARKET", 0.02,
                                              max_slippage_bps=100)
        assert type(plan) is SmartPlan and plan.dry_run is True
        assert sum(leg.quantity for leg in plan.legs) == pytest.approx(plan.quantity)
        assert {leg.venue for leg in plan.legs} <= {"SIM", "SIM2", "SIM3"}
        only = await client.place_smart_order(SMART, "BUY", "MARKET", 0.02, venues=["SIM2"],
                                              max_slippage_bps=100)
        assert {leg.venue for leg in only.legs} == {"SIM2"}
        cid = _cid()
        order = await client.place_smart_order(SMART, "BUY", "MARKET", 0.02,
                                               max_slippage_bps=100, dry_run=False,
                                               client_order_id=cid)
        assert type(order) is SmartOrder and order.order_id.startswith("sor-")
        assert order.status in ("FILLED", "EXPIRED") and order.filled_quantity > 0
        assert sum(f.quantity for f in order.report.fills) == pytest.approx(
            order.filled_quantity)
        read = await client.order(order.order_id, SMART)
        assert type(read) is SmartOrder and read.client_order_id == cid
        assert [c.client_order_id for c in read.children] == [
            c.client_order_id for c in order.children]
        assert all(type(o) is SmartOrder for o in await client.orders(SMART))
        rest = await client.place_order(SMART, "BUY", "LIMIT", 0.001,
                                        round((await client.orderbook(SMART, 1)).bids[0].price
                                              * 0.8), time_in_force="GTC")
        assert type(rest) is SmartOrder
        assert rest.order_id in {o.order_id for o in await client.orders(SMART)}
        canceled = await client.cancel_order(SMART, rest.order_id)
        assert canceled.status == "CANCELED"


async def test_otc_quote_accept_converts_and_accounts(served):
    account = served.otc_account
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND):
        answer = await client.request_quote(account, "BTC", "USDT", from_amount="0.01")
        quote = answer.quote
        assert (quote.account_id, quote.from_asset, str(quote.from_asset_quantity)) == (
            account, "BTC", "0.01")
        assert quote.expiry_time > time.time() * 1e6 and len(quote.signature) == 64
        by_get = await client.request_quote(account, "ETH", "USDT", to_amount=50,
                                            method="GET")
        assert str(by_get.quote.to_asset_quantity) == "50"
        trade = (await client.accept_quote(answer)).trade
        assert (trade.quote_id, trade.from_asset_quantity) == (answer.quote_id,
                                                               quote.from_asset_quantity)
        assert (await client.accept_quote(answer)).trade.trade_id == trade.trade_id
        other = await client.request_quote(account, "USDT", "BTC", to_amount=0.001)
        trade2 = (await client.accept_quote(other.quote, account_id=account)).trade
        assert trade2.quote_id == other.quote_id
        converts = await client.converts(account, limit=5)
        assert [c.trade_id for c in converts[:2]] == [trade2.trade_id, trade.trade_id]
        assert await client.converts(account, limit=5, before=converts[0].time) == [
            c for c in converts[1:] if c.time < converts[0].time][:5]
        accounts = await client.otc_accounts()
        assert account in {a.account_id for a in accounts}
        one = await client.otc_account(account)
        raw = (await raw_get(served.base, served.token, f"/otc/accounts/{account}"))[1]
        assert (one.account_id, float(one.spread_bps)) == (raw["accountId"], raw["spreadBps"])
        assert {k: float(v) for k, v in one.balances.items()} == raw["balances"]


async def test_history(served):
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND * 2):
        while True:  # the recorder writes every 2 s
            markets = {m.market: m for m in await client.history_markets()}
            if SPOT in markets and markets[SPOT].end > markets[SPOT].start:
                break
            await asyncio.sleep(0.5)
        assert msgspec.to_builtins(list(markets.values()))[0]["market"] in markets
        spot = markets[SPOT]
        assert "ORDERBOOK" in spot.data_types and spot.files >= 1
        page = await client.history_trades(SPOT, start=spot.start, limit=3)
        assert page.market == SPOT and len(page.trades) == 3 and page.next_cursor
        following = await client.history_trades(SPOT, start=spot.start, limit=3,
                                                cursor=page.next_cursor)
        assert following.trades[0].time >= page.trades[-1].time
        assert following.trades[0] != page.trades[0]
        at = (spot.start + spot.end) // 2
        book = await client.history_orderbook(SPOT, at, depth=2)
        assert book.market == SPOT and len(book.bids) == 2 and book.update_id is not None
        raw = (await raw_get(served.base, served.token, "/history/orderbook", market=SPOT,
                             time=at, depth=2))[1]
        assert msgspec.to_builtins(book) == raw
        candles = await client.history_candles(SPOT, "1s", start=spot.start)
        assert candles and all(c.low <= c.open <= c.high and c.trades > 0 for c in candles)


async def test_api_keys_scopes_and_revocation(served):
    async with AsyncAstra(served.base, served.token) as admin, asyncio.timeout(BOUND):
        created = await admin.create_api_key(["read"], "sdk-read")
        assert type(created) is CreatedApiKey and created.scopes == ["read"]
        assert created.token.startswith(created.key_id + ".")
        listed = {k.key_id: k for k in await admin.api_keys()}
        assert type(listed[created.key_id]) is ApiKey
        assert not hasattr(listed[created.key_id], "token")
        raw = (await raw_get(served.base, served.token, "/api-keys"))[1]["keys"]
        assert msgspec.to_builtins(list(listed.values())) == raw
        async with AsyncAstra(served.base, created.token) as reader:
            assert (await reader.orderbook(SPOT, 1)).market == SPOT
            with pytest.raises(Forbidden) as refused:
                await reader.place_order(SPOT, "BUY", "LIMIT", 0.001, 1000.0)
            assert (refused.value.status, refused.value.code) == (403, "FORBIDDEN")
            assert "'trade'" in refused.value.message
            with pytest.raises(Forbidden, match="'otc'"):
                await reader.otc_accounts()
            with pytest.raises(Forbidden, match="'admin'"):
                await reader.api_keys()
            revoked = await admin.revoke_api_key(created.key_id)
            assert revoked.key_id == created.key_id and revoked.revoked_at is not None
            with pytest.raises(Unauthorized) as gone:
                await reader.orderbook(SPOT, 1)
            assert gone.value.status == 401
        expiring = await admin.create_api_key(["read", "trade"], expires_at="2099-01-01",
                                              allow_ips=["127.0.0.0/8"])
        assert expiring.expires_at > time.time() * 1000 and expiring.allow_ips == [
            "127.0.0.0/8"]
        with pytest.raises(InvalidParameter) as bad:
            await admin.create_api_key(["root"])
        assert bad.value.parameter == "scopes"


async def test_errors_carry_status_code_and_parameter(served):
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND):
        with pytest.raises(MarketNotFound) as caught:
            await client.orderbook("SIM-SPOT-NOPE-USDT")
        assert (caught.value.status, caught.value.code, caught.value.parameter) == (
            404, "MARKET_NOT_FOUND", "market")
        with pytest.raises(InvalidParameter) as caught:
            await client.orderbook(SPOT, depth=0)
        assert (caught.value.status, caught.value.parameter) == (400, "depth")
        with pytest.raises(UnknownExchange) as caught:
            await client.markets("NOPE")
        assert caught.value.parameter == "exchange"
        with pytest.raises(Unprocessable) as caught:  # checked before any venue call
            await client.place_order(SPOT, "BUY", "LIMIT", 0.001, 1000.123456789)
        assert (caught.value.status, caught.value.parameter) == (422, "price")


async def test_feeds(served):
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND):
        await client.orderbook(SPOT, 1)  # its feed runs
        feeds = await client.feeds()
        raw = (await raw_get(served.base, served.token, "/feeds"))[1]
        assert [(f.venue, f.market, f.data_type) for f in feeds] == [
            (f["venue"], f["market"], f["dataType"]) for f in raw]
        spot = await client.feeds("SIM", SPOT)
        book = next(f for f in spot if f.data_type == "ORDERBOOK")
        assert (book.venue, book.market, book.state) == ("SIM", SPOT, "synced")
        assert book.updates > 0 and book.resyncs >= len(book.recent_resyncs)
        assert {f.venue for f in await client.feeds("SMART")} <= {"SMART"}
        with pytest.raises(InvalidParameter) as caught:
            await client.feeds("NOPE")
        assert caught.value.parameter == "venue"
