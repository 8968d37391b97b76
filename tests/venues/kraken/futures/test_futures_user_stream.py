"""Kraken Futures user data (``KrakenVenue.run_user_stream`` with futures enabled) against a fake
Kraken on 127.0.0.1 serving both user streams: spot (``GetWebSocketsToken`` and the v2
private WebSocket, subscriptions acknowledged, nothing pushed) and the futures WebSocket v1
(``/ws/v1``), which speaks Kraken Futures' private protocol: ``challenge`` answered with a
UUID, then every ``subscribe`` (``open_orders``, ``fills``, ``balances``) checked to carry the
API key, that connection's challenge and its signature (base64 HMAC-SHA512 of SHA-256 of the
challenge, keyed with the base64-decoded secret, recomputed here), acknowledged with
``subscribed`` and followed by the feed's snapshot; pushes are shaped as in Kraken's feed docs.

Checked: the normalized Order/Fill/Balance values of the futures markets (``PF_XBTUSD`` ->
``KRAKEN-PERP-XBT-USD``), order deltas replacing the order, removals by ``order_id`` merged
into the order seen before, past fills of the snapshot left out, the multi-collateral wallet's
balances; a dropped futures connection -> ``on_resync``, a new challenge and fresh
subscriptions while the spot connection stays up; a refused subscription retried on a new
connection; cancellation closing both streams; no futures connection with futures disabled;
the secret never on the wire."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import hmac
import json
import secrets
import uuid

import pytest
from aiohttp import WSMsgType, web
from tests.venues.loopback import UserSink, serve, until

from astra.core._trading import Balance, Fill, Liquidity, Order, OrderStatus, OrderType, Side
from astra.core.credentials import ExchangeCredentials
from astra.venues.kraken import KrakenUrls, KrakenVenue

PERP = "KRAKEN-PERP-XBT-USD"
ETH_PERP = "KRAKEN-PERP-ETH-USD"
FEEDS = {"open_orders", "fills", "balances"}
RESTING = "723ba95f-13b7-418b-8fcf-ab7ba6620555"
NEW = "59302619-41d2-4f0b-941f-7e7914760ad3"
CID = "d5d3b5b2-7ee0-4f62-8d0f-6d8a2a0c1f7e"
T0, T1, T2, T3 = 1612275024153, 1640995200000, 1640995260000, 1640995320000

# -- doc-shaped messages (Kraken Futures WebSocket v1: open_orders, fills, balances) -----------
ORDERS_SNAPSHOT = {"feed": "open_orders_snapshot", "account": "e258dba9", "orders": [{
    "instrument": "PF_ETHUSD", "time": T0, "last_update_time": T0, "qty": 2.0, "filled": 0.0,
    "limit_price": 2500.5, "stop_price": 0.0, "type": "limit", "order_id": RESTING,
    "direction": 0, "reduce_only": False,
}]}
PAST_FILL = {
    "instrument": "PF_ETHUSD", "time": 1600256945531, "price": 364.65, "seq": 39, "buy": True,
    "qty": 1.0, "remaining_order_qty": 0.0, "order_id": "7e60b6e8-e4c2-4ce8-bbd0-ef81e18b65bb",
    "fill_id": "b1aa44b2-4f2a-4031-999c-ae1175c91580", "fill_type": "taker",
    "fee_paid": 0.18, "fee_currency": "USD", "taker_order_type": "market", "order_type": "lmt",
}
FILLS_SNAPSHOT = {"feed": "fills_snapshot", "account": "DemoUser", "fills": [PAST_FILL]}
BALANCES_SNAPSHOT = {
    "feed": "balances_snapshot", "account": "4a012c31", "holding": {"USD": 250.0},
    "futures": {"F-XBT:USD": {
        "name": "F-XBT:USD", "pair": "XBT/USD", "unit": "XBT", "portfolio_value": 0.12,
        "balance": 0.12, "maintenance_margin": 0.0, "initial_margin": 0.0,
        "available": 0.12, "unrealized_funding": 0.0, "pnl": 0.0}},
    "flex_futures": {
        "currencies": {
            "USD": {"quantity": 5000.0, "value": 5000.0, "collateral_value": 5000.0,
                    "available": 4000.0, "haircut": 0.0, "conversion_spread": 0.0},
            "XBT": {"quantity": 0.1, "value": 6400.0, "collateral_value": 6272.0,
                    "available": 0.1, "haircut": 0.02, "conversion_spread": 0.0},
        },
        "balance_value": 11400.0, "portfolio_value": 11400.0, "collateral_value": 11272.0,
        "initial_margin": 1000.0, "initial_margin_without_orders": 0.0,
        "maintenance_margin": 500.0, "pnl": 0.0, "unrealized_funding": 0.0,
        "total_unrealized": 0.0, "total_unrealized_as_margin": 0.0, "margin_equity": 11272.0,
        "available_margin": 10272.0,
    },
    "timestamp": T1, "seq": 0,
}
SNAPSHOTS = {"open_orders": ORDERS_SNAPSHOT, "fills": FILLS_SNAPSHOT,
             "balances": BALANCES_SNAPSHOT}
PLACED = {"feed": "open_orders", "order": {
    "instrument": "PF_XBTUSD", "time": T1, "last_update_time": T1, "qty": 0.5, "filled": 0.0,
    "limit_price": 64000.0, "stop_price": 0.0, "type": "limit", "order_id": NEW,
    "cli_ord_id": CID, "direction": 1, "reduce_only": False,
}, "is_cancel": False, "reason": "new_placed_order_by_user"}
PARTIAL = {**PLACED, "order": {**PLACED["order"], "filled": 0.2, "last_update_time": T2},
           "reason": "partial_fill"}
FILL = {"feed": "fills", "username": "DemoUser", "fills": [{
    "instrument": "PF_XBTUSD", "time": T2, "price": 64000.0, "seq": 40, "buy": False,
    "qty": 0.2, "remaining_order_qty": 0.3, "order_id": NEW, "cli_ord_id": CID,
    "fill_id": "3d57ed09-fbd6-44f1-8e8b-b10e551c5e73", "fill_type": "maker",
    "fee_paid": 2.56, "fee_currency": "USD", "taker_order_type": "lmt", "order_type": "lmt",
}]}
CANCELED = {"feed": "open_orders", "order_id": NEW, "is_cancel": True,
            "reason": "cancelled_by_user"}
FILLED = {"feed": "open_orders", "order_id": RESTING, "is_cancel": True, "reason": "full_fill"}
BALANCES_UPDATE = {"feed": "balances", "account": "4a012c31", "flex_futures": {
    **BALANCES_SNAPSHOT["flex_futures"], "currencies": {
        "USD": {"quantity": 5010.0, "value": 5010.0, "collateral_value": 5010.0,
                "available": 5010.0, "haircut": 0.0, "conversion_spread": 0.0}}},
    "timestamp": T3, "seq": 1}


def signed(challenge: str, secret: str) -> str:
    digest = hashlib.sha256(challenge.encode()).digest()
    return base64.b64encode(
        hmac.new(base64.b64decode(secret), digest, hashlib.sha512).digest()).decode()


class FakeKrakenPrivate:
    """Both Kraken user streams on one server (see the module docstring). Futures
    connections numbered in ``refuse`` (1-based) answer ``subscribed_failed``."""

    def __init__(self, creds: ExchangeCredentials) -> None:
        self.creds = creds
        self.wire: list[str] = []
        self.challenges: list[str] = []
        self.subs: list[set[str]] = []  # per futures connection: the feeds acknowledged
        self.sockets: list[web.WebSocketResponse] = []  # futures connections
        self.spot_sockets: list[web.WebSocketResponse] = []
        self.spot_subscribed = 0
        self.refuse: set[int] = set()
        self.changed = asyncio.Event()
        self.url = ""

    def subscribed(self, connection: int = -1) -> bool:
        return len(self.subs) >= abs(connection) and self.subs[connection] >= FEEDS

    async def futures_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        number = len(self.sockets) + 1
        self.sockets.append(ws)
        subs: set[str] = set()
        self.subs.append(subs)
        challenge = None
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                self.wire.append(msg.data)
                req = json.loads(msg.data)
                if req.get("event") == "challenge":
                    assert req["api_key"] == self.creds.api_key
                    challenge = str(uuid.uuid4())
                    self.challenges.append(challenge)
                    await ws.send_json({"event": "challenge", "message": challenge})
                elif req.get("event") == "subscribe":
                    assert (req["api_key"], req["original_challenge"]) == (
                        self.creds.api_key, challenge)
                    assert req["signed_challenge"] == signed(challenge, self.creds.secret)
                    feed = req["feed"]
                    if number in self.refuse:
                        await ws.send_json({"event": "subscribed_failed", "feed": feed,
                                            "message": "Failed to subscribe to feed"})
                        continue
                    await ws.send_json({k: v for k, v in req.items() if k != "event"}
                                       | {"event": "subscribed"})
                    subs.add(feed)
                    await ws.send_json(SNAPSHOTS[feed])
                self.changed.set()
        finally:
            self.changed.set()
        return ws

    async def token(self, request: web.Request) -> web.Response:
        self.wire.append(await request.text() + " " + " ".join(request.headers.values()))
        return web.json_response({"error": [], "result": {"token": "spot-token",
                                                          "expires": 900}})

    async def spot_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.spot_sockets.append(ws)
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            self.wire.append(msg.data)
            req = json.loads(msg.data)
            assert req["params"]["token"] == "spot-token"
            await ws.send_json({"method": "subscribe", "req_id": req.get("req_id"),
                                "success": True, "result": {"channel": req["params"]["channel"]},
                                "time_in": "2023-09-22T10:33:05.709950Z",
                                "time_out": "2023-09-22T10:33:05.709950Z"})
            self.spot_subscribed += 1
            self.changed.set()
        self.changed.set()
        return ws

    async def push(self, message: dict) -> None:
        await self.sockets[-1].send_json(message)

    @contextlib.asynccontextmanager
    async def running(self):
        app = web.Application()
        app.router.add_get("/ws/v1", self.futures_ws)
        app.router.add_get("/v2", self.spot_ws)
        app.router.add_post("/0/private/GetWebSocketsToken", self.token)
        async with serve(app) as self.url:
            try:
                yield self
            finally:
                for ws in [*self.sockets, *self.spot_sockets]:
                    await ws.close()


@contextlib.asynccontextmanager
async def streaming(doc_asset_pairs, futures_instruments, *, futures: bool = True,
                    refuse: tuple[int, ...] = ()):
    creds = ExchangeCredentials(  # test credentials made here
        exchange="KRAKEN", api_key="kk" + secrets.token_urlsafe(40),
        secret=base64.b64encode(secrets.token_bytes(64)).decode())
    fake = FakeKrakenPrivate(creds)
    fake.refuse.update(refuse)
    sink = UserSink()
    async with fake.running():
        ws = "ws" + fake.url[len("http"):]
        urls = KrakenUrls(rest=fake.url, ws="ws://127.0.0.1:9/v2", auth_ws=f"{ws}/v2",
                          futures_rest="http://127.0.0.1:9", futures_ws=f"{ws}/ws/v1")
        venue = KrakenVenue(
            "KRAKEN", urls, futures=futures,
            markets_source=lambda: copy.deepcopy(doc_asset_pairs),
            futures_markets_source=lambda: copy.deepcopy(futures_instruments))
        task = asyncio.create_task(venue.run_user_stream(creds.ccxt_config(), sink))
        try:
            yield fake, sink, task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                async with asyncio.timeout(5):
                    await task
            await venue.close()
    for text in fake.wire:  # REST and both WebSockets: the secret never travels
        assert creds.secret not in text and creds.secret[:24] not in text


async def test_futures_orders_fills_and_balances_are_normalized(doc_asset_pairs,
                                                                futures_instruments):
    async with streaming(doc_asset_pairs, futures_instruments) as (fake, sink, task):
        await until(lambda: fake.subscribed() and fake.spot_subscribed == 2
                    and sink.orders and sink.balances, fake.changed, sink.changed)
        assert len(fake.sockets) == 1 and len(fake.challenges) == 1
        assert sorted(sink.resyncs) == ["user stream (re)connected",  # spot
                                        "user stream (re)connecting"]  # futures

        resting = Order(
            order_id=RESTING, client_order_id="", market=ETH_PERP, side=Side.BUY,
            type=OrderType.LIMIT, quantity=2.0, filled_quantity=0.0, status=OrderStatus.NEW,
            price=2500.5, reduce_only=False, created_at=T0, updated_at=T0)
        assert sink.orders == [resting]  # the open-orders snapshot
        # The multi-collateral wallet: quantity is the total, available the free part.
        assert sink.balances == [[
            Balance(asset="BTC", free=0.1, locked=0.0, total=0.1,
                    account="future"),  # ccxt names XBT BTC
            Balance(asset="USD", free=4000.0, locked=1000.0, total=5000.0, account="future"),
        ]]

        await fake.push(PLACED)
        await until(lambda: len(sink.orders) == 2, sink.changed)
        placed = Order(
            order_id=NEW, client_order_id=CID, market=PERP, side=Side.SELL,
            type=OrderType.LIMIT, quantity=0.5, filled_quantity=0.0, status=OrderStatus.NEW,
            price=64000.0, reduce_only=False, created_at=T1, updated_at=T1)
        assert sink.orders[-1] == placed

        await fake.push(PARTIAL)
        await until(lambda: len(sink.orders) == 3, sink.changed)
        partial = Order(**{**_fields(placed), "filled_quantity": 0.2, "updated_at": T2,
                           "status": OrderStatus.PARTIALLY_FILLED})
        assert sink.orders[-1] == partial

        await fake.push(FILL)
        await until(lambda: sink.fills, sink.changed)
        assert sink.fills == [Fill(  # the snapshot's past fill is not among them
            fill_id="3d57ed09-fbd6-44f1-8e8b-b10e551c5e73", order_id=NEW, market=PERP,
            side=Side.SELL, price=64000.0, quantity=0.2, time=T2, fee=2.56, fee_asset="USD",
            liquidity=Liquidity.MAKER)]

        await fake.push(CANCELED)  # only the order id: merged into the order seen
        await until(lambda: len(sink.orders) == 4, sink.changed)
        assert sink.orders[-1] == Order(**{**_fields(partial), "status": OrderStatus.CANCELED})

        await fake.push(FILLED)
        await until(lambda: len(sink.orders) == 5, sink.changed)
        assert sink.orders[-1] == Order(**{**_fields(resting), "filled_quantity": 2.0,
                                           "status": OrderStatus.FILLED})

        await fake.push(BALANCES_UPDATE)
        await until(lambda: len(sink.balances) == 2, sink.changed)
        assert sink.balances[-1] == [Balance(asset="USD", free=5010.0, locked=0.0,
                                             total=5010.0, account="future")]
        assert not task.done()


def _fields(order: Order) -> dict:
    return {f: getattr(order, f) for f in order.__struct_fields__}


async def test_dropped_futures_connection_resyncs_with_a_new_challenge(doc_asset_pairs,
                                                                       futures_instruments):
    async with streaming(doc_asset_pairs, futures_instruments) as (fake, sink, _task):
        await until(lambda: fake.subscribed() and fake.spot_subscribed == 2 and sink.orders,
                    fake.changed, sink.changed)
        before = len(sink.resyncs)
        await fake.sockets[-1].close()
        await until(lambda: len(fake.sockets) == 2 and fake.subscribed(), fake.changed)
        assert sink.resyncs[before:] == ["user stream lost", "user stream (re)connecting"]
        first, second = fake.challenges
        assert first != second  # each subscribe of connection 2 was checked against it
        assert len(fake.spot_sockets) == 1 and not fake.spot_sockets[0].closed  # untouched
        await until(lambda: len(sink.orders) == 2, sink.changed)  # the snapshot again
        await fake.push(PLACED)
        await until(lambda: sink.orders[-1].order_id == NEW, sink.changed)
        assert sink.orders[-1].market == PERP


async def test_a_refused_subscription_is_retried_on_a_new_connection(doc_asset_pairs,
                                                                     futures_instruments):
    async with streaming(doc_asset_pairs, futures_instruments, refuse=(1,)) as (
            fake, sink, _task):
        await until(lambda: len(fake.sockets) == 2 and fake.subscribed(), fake.changed)
        assert fake.subs[0] == set() and len(fake.challenges) == 2
        assert "user stream lost" in sink.resyncs
        await until(lambda: sink.orders, sink.changed)
        assert sink.orders[-1].order_id == RESTING


async def test_cancel_stops_both_streams(doc_asset_pairs, futures_instruments):
    async with streaming(doc_asset_pairs, futures_instruments) as (fake, sink, task):
        await until(lambda: fake.subscribed() and fake.spot_subscribed == 2, fake.changed)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await task
        await until(lambda: fake.sockets[0].closed and fake.spot_sockets[0].closed,
                    fake.changed)
        assert "user stream lost" not in sink.resyncs


async def test_futures_disabled_streams_spot_only(doc_asset_pairs, futures_instruments):
    async with streaming(doc_asset_pairs, futures_instruments, futures=False) as (
            fake, sink, _task):
        await until(lambda: fake.spot_subscribed == 2, fake.changed)
        await asyncio.sleep(0.2)  # the two streams start together: a futures one would be here
        assert fake.sockets == [] and sink.resyncs == ["user stream (re)connected"]
