"""User data streams over real loopback sockets: listenKey REST (v1 API-key-only and v3
EIP-712), the ``/ws/<listenKey>`` WebSocket and the events pushed on it, keepalive, close
and expiry, and isolation between accounts. Every wait is bounded; nothing is timed."""

from __future__ import annotations

import asyncio
import json
import string
from decimal import Decimal
from urllib.parse import urlencode

import aiohttp
import ccxt.pro as ccxtpro
import pytest
from aiohttp import WSMsgType

WAIT = 10  # seconds: the bound on every wait
EXECUTION_FIELDS = {"e", "E", "s", "c", "S", "o", "f", "q", "p", "ap", "P", "x", "X", "i", "l",
                    "z", "L", "n", "N", "T", "t", "m", "ot", "O", "Z", "Y", "Q"}


class Trader:
    """A funded account (the ``make_trader`` client): signed v1/v3 calls plus the
    API-key-only v1 USER_STREAM calls."""

    def __init__(self, sim, client) -> None:
        self.sim, self.client, self.creds = sim, client, client.creds
        self.v1, self.v3, self._send = client.v1, client.v3, client._send

    async def key_only(self, method: str, path: str, **params) -> tuple[int, object]:
        return await self._send(method, path, urlencode(params),
                                {"X-MBX-APIKEY": self.creds.apiKey})

    async def listen_key(self, root: str = "/api") -> str:
        status, body = await self.key_only("POST", f"{root}/v1/listenKey")
        assert status == 200, body
        return body["listenKey"]

    async def balances(self) -> dict[str, tuple[str, str]]:
        status, body = await self.v1("GET", "/api/v1/account")
        assert status == 200, body
        return {b["asset"]: (b["free"], b["locked"]) for b in body["balances"]}

    async def order(self, **params) -> dict:
        status, body = await self.v1("POST", "/api/v1/order", symbol="BTCUSDT", **params)
        assert status == 200, body
        return body

    async def resting_buy(self) -> dict:
        """A LIMIT BUY 10% under the best bid: it rests (PERCENT_PRICE allows it)."""
        state = self.sim.exchange.state("spot", "BTCUSDT")
        m = state.market
        price = m.price_units(state.engine.best_bid() / 10**m.price_dp * 0.9)
        return await self.order(side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01",
                                price=m.format_price(price))


@pytest.fixture
def new_trader(sim, make_trader):
    return lambda: Trader(sim, make_trader("USDT=100000,BTC=2"))


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def ws_url(sim, key: str, base: str = "/sstream") -> str:
    return f"ws://{sim.host}:{sim.port}{base}/ws/{key}"


async def next_event(ws) -> dict:
    async with asyncio.timeout(WAIT):
        msg = await ws.receive()
    assert msg.type == WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def events_until(ws, done) -> list[dict]:
    """Events in arrival order up to and including the first for which ``done`` is true."""
    out: list[dict] = []
    while not out or not done(out[-1]):
        out.append(await next_event(ws))
    return out


async def closed(ws) -> aiohttp.WSMessage:
    async with asyncio.timeout(WAIT):
        msg = await ws.receive()
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED), msg
    return msg


async def until(condition) -> None:
    """Poll ``condition`` until it holds (callers bound the wait)."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.01)


def report_of(events: list[dict], exec_type: str) -> list[dict]:
    return [e for e in events if e["e"] == "executionReport" and e["x"] == exec_type]


def is_final_report(event: dict) -> bool:
    return event["e"] == "executionReport" and event["X"] in ("FILLED", "EXPIRED", "CANCELED")


# -- listenKey REST --------------------------------------------------------------------------


async def test_listen_key_rest_v1_key_only_and_v3_signed(new_trader):
    trader = new_trader()
    key = await trader.listen_key()
    assert len(key) == 64 and set(key) <= set(string.ascii_letters + string.digits)
    # One key per account and side: POST again (v1 or v3) returns the same key.
    assert await trader.listen_key() == key
    status, body = await trader.v3("POST", "/api/v3/listenKey")
    assert (status, body) == (200, {"listenKey": key})
    # Keepalive: with the key (spot docs), or without (futures docs; what ccxt sends).
    assert await trader.key_only("PUT", "/api/v1/listenKey", listenKey=key) == (200, {})
    assert await trader.v3("PUT", "/api/v3/listenKey") == (200, {})
    assert await trader.v3("PUT", "/api/v3/listenKey", listenKey=key) == (200, {})
    # Unknown key, or another account's key: -1125.
    unknown = {"code": -1125, "msg": "This listenKey does not exist."}
    assert await trader.key_only("PUT", "/api/v1/listenKey", listenKey="x" * 64) == (400, unknown)
    other = new_trader()
    other_key = await other.listen_key()
    assert other_key != key
    assert await trader.key_only("PUT", "/api/v1/listenKey", listenKey=other_key) == (400, unknown)
    assert await trader.key_only("DELETE", "/api/v1/listenKey",
                                 listenKey=other_key) == (400, unknown)
    # USER_STREAM v1 needs a valid API key; v3 needs a valid signature.
    status, body = await trader._send("POST", "/api/v1/listenKey", "", {})
    assert status == 401 and body["code"] == -2014
    status, body = await trader._send("POST", "/api/v3/listenKey", "", {})
    assert status == 400 and body["code"] == -1102
    # Close; then the key is gone, and a new POST makes a new one.
    assert await trader.key_only("DELETE", "/api/v1/listenKey", listenKey=key) == (200, {})
    assert await trader.key_only("PUT", "/api/v1/listenKey", listenKey=key) == (400, unknown)
    assert await trader.v3("DELETE", "/api/v3/listenKey") == (400, unknown)
    assert await trader.listen_key() not in (key, other_key)


async def test_unknown_listen_key_is_not_a_stream(sim, http):
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        async with asyncio.timeout(WAIT):
            await http.ws_connect(ws_url(sim, "A" * 64))
    assert err.value.status == 400
    # Market data on the same route is unchanged.
    async with asyncio.timeout(WAIT), http.ws_connect(ws_url(sim, "btcusdt@aggTrade")) as ws:
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 1})
        assert await next_event(ws) == {"result": ["btcusdt@aggTrade"], "id": 1}


# -- spot events -----------------------------------------------------------------------------


async def test_spot_order_lifecycle_events(sim, http, new_trader):
    trader = new_trader()
    key = await trader.listen_key()
    async with http.ws_connect(ws_url(sim, key)) as ws, http.ws_connect(ws_url(sim, key)) as ws2:
        # A LIMIT that rests: executionReport NEW, then the balances it locked.
        order = await trader.resting_buy()
        events = await events_until(ws, lambda e: e["e"] == "outboundAccountPosition")
        assert [e["e"] for e in events] == ["executionReport", "outboundAccountPosition"]
        new, position = events
        assert set(new) == EXECUTION_FIELDS
        assert (new["x"], new["X"], new["i"], new["c"]) == (
            "NEW", "NEW", order["orderId"], order["clientOrderId"])
        assert (new["s"], new["S"], new["o"], new["ot"], new["f"]) == (
            "BTCUSDT", "BUY", "LIMIT", "LIMIT", "GTC")
        assert (new["q"], new["p"], new["z"], new["l"], new["t"]) == (
            order["origQty"], order["price"], "0.00000", "0", -1)
        assert new["O"] == order["time"]
        balances = await trader.balances()
        assert position["m"] == "ORDER"
        assert {b["a"]: (b["f"], b["l"]) for b in position["B"]} == {
            a: balances[a] for a in ("BTC", "USDT")}
        assert Decimal(balances["USDT"][1]) == Decimal(order["price"]) * Decimal("0.01")
        # The second connection on the same key got the same two events.
        assert await events_until(ws2, lambda e: e["e"] == "outboundAccountPosition") == events

        # A MARKET that fills: TRADE reports whose fills are exactly GET userTrades.
        market = await trader.order(side="BUY", type="MARKET", quantity="0.02")
        events = await events_until(ws, is_final_report)
        assert events[-1]["X"] == "FILLED" and events[-1]["i"] == market["orderId"]
        events.append(await next_event(ws))  # every report is followed by the balances
        assert events[-1]["e"] == "outboundAccountPosition"
        status, trades = await trader.v1("GET", "/api/v1/userTrades", symbol="BTCUSDT",
                                         orderId=market["orderId"])
        assert status == 200 and trades
        fills = report_of(events, "TRADE")
        assert [(e["t"], e["l"], e["L"], e["n"], e["N"], e["m"]) for e in fills] == [
            (t["id"], t["qty"], t["price"], t["commission"], t["commissionAsset"], t["maker"])
            for t in trades]
        assert fills[-1]["z"] == market["executedQty"] == "0.02000"
        assert {e["x"] for e in events if e["e"] == "executionReport"} == {"NEW", "TRADE"}
        balances = await trader.balances()
        assert {b["a"]: (b["f"], b["l"]) for b in events[-1]["B"]} == {
            a: balances[a] for a in ("BTC", "USDT")}

        # Cancel the resting order: CANCELED, and its quote is free again.
        status, _ = await trader.v1("DELETE", "/api/v1/order", symbol="BTCUSDT",
                                    orderId=order["orderId"])
        assert status == 200
        canceled, position = await events_until(
            ws, lambda e: e["e"] == "outboundAccountPosition")
        assert (canceled["x"], canceled["X"], canceled["i"]) == (
            "CANCELED", "CANCELED", order["orderId"])
        assert dict((b["a"], b["l"]) for b in position["B"])["USDT"] == "0.00000000"


async def test_v3_listen_key_stream_and_account_isolation(sim, http, new_trader):
    alice, bob = new_trader(), new_trader()
    status, body = await alice.v3("POST", "/api/v3/listenKey")
    assert status == 200
    bob_key = await bob.listen_key()
    async with (http.ws_connect(ws_url(sim, body["listenKey"])) as alice_ws,
                http.ws_connect(ws_url(sim, bob_key)) as bob_ws):
        first = await alice.resting_buy()
        events = await events_until(alice_ws, lambda e: e["e"] == "outboundAccountPosition")
        assert events[0]["i"] == first["orderId"]
        await alice.v1("DELETE", "/api/v1/order", symbol="BTCUSDT", orderId=first["orderId"])
        await events_until(alice_ws, lambda e: e["e"] == "outboundAccountPosition")
        # Bob's socket: the first event on it is his own order, none of Alice's came before.
        mine = await bob.resting_buy()
        event = await next_event(bob_ws)
        assert (event["e"], event["i"], event["c"]) == (
            "executionReport", mine["orderId"], mine["clientOrderId"])
        # Alice's socket never sees Bob's order: her next event is her own.
        again = await alice.resting_buy()
        event = await next_event(alice_ws)
        assert (event["e"], event["i"]) == ("executionReport", again["orderId"])


async def test_delete_closes_the_stream(sim, http, new_trader):
    trader = new_trader()
    key = await trader.listen_key()
    async with http.ws_connect(ws_url(sim, key)) as ws:
        assert await trader.key_only("DELETE", "/api/v1/listenKey", listenKey=key) == (200, {})
        msg = await closed(ws)
        assert (msg.data, msg.extra) == (1000, "listenKey closed")
    with pytest.raises(aiohttp.WSServerHandshakeError):
        async with asyncio.timeout(WAIT):
            await http.ws_connect(ws_url(sim, key))


async def test_expiry_pushes_listen_key_expired_then_closes(sim, http, new_trader):
    trader = new_trader()
    streams = sim.exchange.sides["spot"].streams
    key = await trader.listen_key()
    async with http.ws_connect(ws_url(sim, key)) as ws:
        streams.validity_ms = 1  # the keepalive below gives the key 1 ms more to live
        assert await trader.key_only("PUT", "/api/v1/listenKey", listenKey=key) == (200, {})
        event = await next_event(ws)
        assert event["e"] == "listenKeyExpired" and event["listenKey"] == key
        assert isinstance(event["E"], int)
        await closed(ws)
    unknown = {"code": -1125, "msg": "This listenKey does not exist."}
    assert await trader.key_only("PUT", "/api/v1/listenKey", listenKey=key) == (400, unknown)
    streams.validity_ms = 60 * 60 * 1000
    assert await trader.listen_key() != key


async def test_slow_consumer_is_dropped_not_waited_for(sim, new_trader, stalled_ws):
    """A user-stream client that stops reading is closed (1013) once its bounded queue
    overflows; emitting never waits for it."""
    trader = new_trader()
    key = await trader.listen_key()
    streams = sim.exchange.sides["spot"].streams
    account = sim.exchange.registry.by_api_key(trader.creds.apiKey).id
    writer = await stalled_ws(sim.port, f"/sstream/ws/{key}")
    try:
        entry = streams._keys[key]
        async with asyncio.timeout(WAIT):
            await until(lambda: entry.conns)
            conn = next(iter(entry.conns))
            event = {"e": "executionReport", "pad": "x" * 1000}
            while conn.close_reason is None:
                streams.emit(account, event)  # synchronous: returns at once, whatever happens
                await asyncio.sleep(0)
            assert conn.close_reason == (1013, "slow consumer: send queue overflow")
            await until(lambda: not entry.conns)  # aborted: it never reads the close frame
    finally:
        writer.close()
    assert streams.is_key(key)  # the key itself is unaffected


async def test_ccxt_pro_listen_key_flow_and_event_parsing(sim, http, new_trader):
    """ccxt.pro ``aster`` as shipped: ``authenticate`` (POST v3 listenKey), the keepalive
    (PUT v3 listenKey, no parameters) and its private URL ``<ws>/ws/<listenKey>`` all work
    here, and its parsers read our events. (Its ``watch_orders``/``watch_balance`` cannot be
    used: this ccxt version raises "requires a market type" before connecting.)"""
    trader = new_trader()
    ws_base = f"ws://{sim.host}:{sim.port}"
    ex = ccxtpro.aster({"privateKey": trader.creds.signerPrivateKey,
                        "options": {"builderFee": False, "signerAddress": trader.creds.signer}})
    api = ex.urls["api"]
    api["fapiPublic"] = api["fapiPrivate"] = sim.base_url + "/fapi"
    api["sapiPublic"] = api["sapiPrivate"] = sim.base_url + "/api"
    api["ws"]["private"] = {"spot": ws_base + "/sstream/ws", "swap": ws_base + "/fstream/ws"}
    try:
        async with asyncio.timeout(WAIT):
            await ex.load_markets()
            await ex.authenticate("spot")
            key = ex.options["listenKey"]["spot"]
            assert key == await trader.listen_key()  # the account's one spot key
            await ex.keep_alive_listen_key({"type": "spot"})
            assert ex.options["listenKey"]["spot"] == key  # a failed keepalive clears it
        async with http.ws_connect(ex.get_private_url("spot")) as ws:
            placed = await trader.order(side="BUY", type="MARKET", quantity="0.01")
            events = await events_until(ws, is_final_report)
        order = ex.parse_ws_order(events[-1], ex.market("BTC/USDT"))
        assert (order["id"], order["symbol"], order["side"], order["status"]) == (
            str(placed["orderId"]), "BTC/USDT", "buy", "closed")
        assert order["filled"] == 0.01
        trade = ex.parse_ws_trade(report_of(events, "TRADE")[0], ex.market("BTC/USDT"))
        assert trade["order"] == str(placed["orderId"]) and trade["fee"]["currency"] == "BTC"
    finally:
        await ex.close()


# -- futures ---------------------------------------------------------------------------------


async def test_futures_fill_pushes_order_trade_update_and_account_update(sim, http, new_trader):
    if sim.exchange.sides["perp"].trading is None:
        pytest.skip("perpetual trading (astra.sim.perp) is not wired yet: no /fapi listenKey")
    trader = new_trader()
    key = await trader.listen_key("/fapi")
    assert await trader.key_only("PUT", "/fapi/v1/listenKey") == (200, {})
    async with http.ws_connect(ws_url(sim, key, "/fstream")) as ws:
        status, order = await trader.v1("POST", "/fapi/v1/order", symbol="BTCUSDT", side="BUY",
                                        type="MARKET", quantity="0.01")
        assert status == 200, order
        events = await events_until(
            ws, lambda e: e["e"] == "ACCOUNT_UPDATE" or (
                e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["X"] == "FILLED"))
        while not any(e["e"] == "ACCOUNT_UPDATE" for e in events) or not any(
                e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["X"] == "FILLED" for e in events):
            events.append(await next_event(ws))
        updates = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE"]
        assert all(o["i"] == order["orderId"] and o["s"] == "BTCUSDT" for o in updates)
        assert any(o["x"] == "TRADE" for o in updates)
        account = next(e for e in events if e["e"] == "ACCOUNT_UPDATE")
        assert account["a"]["m"] == "ORDER"
        assert any(b["a"] == "USDT" for b in account["a"]["B"])
        assert any(p["s"] == "BTCUSDT" for p in account["a"]["P"])
