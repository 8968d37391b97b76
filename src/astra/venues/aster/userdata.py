"""Aster (and SIM) user data streams: ``listenKey`` over REST, events over ``/ws/<listenKey>``,
normalized to Astra orders, fills and balances.

One stream per venue side (spot and perpetual), each on its own listenKey and connection.
Integrity rule: a user stream has no sequence numbers, so every (re)connection, an expired
listenKey (``listenKeyExpired``) or a silent socket is a possible gap: the sink's
``on_resync`` is called, then a fresh key is created and the stream resumes; a client that
must not miss a fill re-reads ``GET /orders`` / ``GET /fills`` on resync. The key is kept
alive with a PUT every ``keepalive`` seconds (the docs: valid 60 minutes, ping every 30).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from astra.core import normalize_token
from astra.core._trading import (
    Balance,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from astra.venues.base import UserDataSink
from astra.venues.retry import backoff

__all__ = [
    "AccountUpdate",
    "ExecutionReport",
    "OrderTradeUpdate",
    "OutboundAccountPosition",
    "UserDataSink",
    "run_user_stream",
]

log = logging.getLogger(__name__)

_TYPES = {"LIMIT": OrderType.LIMIT, "MARKET": OrderType.MARKET, "STOP": OrderType.STOP_LIMIT,
          "TAKE_PROFIT": OrderType.TAKE_PROFIT_LIMIT, "STOP_MARKET": OrderType.STOP_MARKET,
          "TAKE_PROFIT_MARKET": OrderType.TAKE_PROFIT_MARKET,
          "TRAILING_STOP_MARKET": OrderType.STOP_MARKET, "LIQUIDATION": OrderType.MARKET}
_TIF = {"GTC": TimeInForce.GTC, "IOC": TimeInForce.IOC, "FOK": TimeInForce.FOK,
        "GTX": TimeInForce.GTC}
_STATUS = {s.value: s for s in OrderStatus}


def _order(market: str, *, oid: int, cid: str, side: str, otype: str, tif: str, qty: str,
           price: str, stop: str, filled: str, avg: str, status: str, created: int | None,
           updated: int) -> Order:
    kind = _TYPES.get(otype, OrderType.LIMIT)
    limit = kind in (OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT)
    return Order(
        order_id=str(oid),
        client_order_id=cid,
        market=market,
        side=side,  # type: ignore[arg-type]
        type=kind,
        quantity=float(qty),
        filled_quantity=float(filled),
        status=_STATUS.get(status, OrderStatus.UNKNOWN),
        price=float(price) if limit else None,
        stop_price=float(stop) if float(stop or 0) else None,
        average_price=float(avg) if float(avg or 0) else None,
        time_in_force=_TIF.get(tif) if limit else None,
        created_at=created,
        updated_at=updated,
    )


class ExecutionReport(msgspec.Struct, kw_only=True):
    """Spot ``executionReport``: one order update (``x`` = NEW, TRADE, CANCELED, EXPIRED…)."""

    E: int
    s: str
    c: str
    S: str
    o: str
    f: str
    q: str
    p: str
    ap: str = "0"
    P: str = "0"
    x: str
    X: str
    i: int
    l: str  # noqa: E741 - the documented name
    z: str
    L: str
    n: str | None = "0"
    N: str | None = None
    T: int
    t: int = -1
    m: bool = False
    O: int | None = None  # noqa: E741

    def to_models(self, market: str, exchange: str) -> tuple[Order, Fill | None]:
        order = _order(market, oid=self.i, cid=self.c, side=self.S, otype=self.o, tif=self.f,
                       qty=self.q, price=self.p, stop=self.P, filled=self.z, avg=self.ap,
                       status=self.X, created=self.O, updated=self.T)
        fill = None
        if self.x == "TRADE":
            fill = Fill(fill_id=str(self.t), order_id=str(self.i), client_order_id=self.c,
                        market=market, side=self.S, price=float(self.L),  # type: ignore[arg-type]
                        quantity=float(self.l), time=self.T, fee=float(self.n or 0),
                        fee_asset=normalize_token(self.N, exchange) if self.N else None,
                        liquidity=Liquidity.MAKER if self.m else Liquidity.TAKER)
        return order, fill


class _FuturesOrder(msgspec.Struct, kw_only=True):
    s: str
    c: str
    S: str
    o: str
    f: str
    q: str
    p: str
    ap: str = "0"
    sp: str = "0"
    x: str
    X: str
    i: int
    l: str  # noqa: E741
    z: str
    L: str
    N: str | None = None
    n: str | None = "0"
    T: int
    t: int = 0
    m: bool = False
    R: bool = False


class OrderTradeUpdate(msgspec.Struct, kw_only=True):
    """Futures ``ORDER_TRADE_UPDATE``."""

    E: int
    T: int
    o: _FuturesOrder

    def to_models(self, market: str, exchange: str) -> tuple[Order, Fill | None]:
        o = self.o
        order = _order(market, oid=o.i, cid=o.c, side=o.S, otype=o.o, tif=o.f, qty=o.q,
                       price=o.p, stop=o.sp, filled=o.z, avg=o.ap, status=o.X, created=None,
                       updated=o.T)
        order.reduce_only = o.R
        fill = None
        if o.x in ("TRADE", "CALCULATED"):
            fill = Fill(fill_id=str(o.t), order_id=str(o.i), client_order_id=o.c,
                        market=market, side=o.S, price=float(o.L),  # type: ignore[arg-type]
                        quantity=float(o.l), time=o.T, fee=float(o.n or 0),
                        fee_asset=normalize_token(o.N, exchange) if o.N else None,
                        liquidity=Liquidity.MAKER if o.m else Liquidity.TAKER)
        return order, fill


class _SpotBalance(msgspec.Struct):
    a: str
    f: str
    l: str  # noqa: E741


class OutboundAccountPosition(msgspec.Struct, kw_only=True):
    """Spot ``outboundAccountPosition``: the balances an event may have changed."""

    E: int
    B: list[_SpotBalance]

    def to_balances(self, exchange: str, account: str | None = None) -> list[Balance]:
        return [Balance(asset=normalize_token(b.a, exchange), free=float(b.f), locked=float(b.l),
                        total=float(b.f) + float(b.l),
                        exchange_asset=b.a if normalize_token(b.a, exchange) != b.a else None,
                        account=account)
                for b in self.B]


class _FuturesBalance(msgspec.Struct):
    a: str
    wb: str
    cw: str = "0"


class _AccountData(msgspec.Struct):
    B: list[_FuturesBalance] = []


class AccountUpdate(msgspec.Struct, kw_only=True):
    """Futures ``ACCOUNT_UPDATE``: wallet balances (positions are read over REST)."""

    E: int
    a: _AccountData

    def to_balances(self, exchange: str, account: str | None = None) -> list[Balance]:
        # The futures stream carries wallet balances only: free/locked are not split.
        return [Balance(asset=normalize_token(b.a, exchange), free=float(b.cw or b.wb),
                        locked=max(float(b.wb) - float(b.cw or b.wb), 0.0), total=float(b.wb),
                        account=account)
                for b in self.a.B]


class _Envelope(msgspec.Struct):
    e: str


_envelope = msgspec.json.Decoder(_Envelope).decode
_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "executionReport": msgspec.json.Decoder(ExecutionReport).decode,
    "ORDER_TRADE_UPDATE": msgspec.json.Decoder(OrderTradeUpdate).decode,
    "outboundAccountPosition": msgspec.json.Decoder(OutboundAccountPosition).decode,
    "ACCOUNT_UPDATE": msgspec.json.Decoder(AccountUpdate).decode,
}


def handle_event(raw: bytes, markets: dict[str, str], exchange: str,
                 sink: UserDataSink, account: str | None = None) -> str | None:
    """Decode one user-stream frame into ``sink``; returns the event type. ``account`` is
    the ``GET /balances?account=`` value of the stream's account (``Balance.account``): the
    events do not say, the caller knows which product's stream it reads."""
    kind = _envelope(raw).e
    decode = _DECODERS.get(kind)
    if decode is None:
        return kind
    event = decode(raw)
    if isinstance(event, ExecutionReport | OrderTradeUpdate):
        symbol = event.s if isinstance(event, ExecutionReport) else event.o.s
        market = markets.get(symbol)
        if market is not None:
            order, fill = event.to_models(market, exchange)
            sink.on_orders([order], [fill] if fill else [])
    else:
        sink.on_balances(event.to_balances(exchange, account))
    return kind


async def run_user_stream(
    http: aiohttp.ClientSession,
    ws_base: str,
    create_key: Callable[[], Any],
    keepalive_key: Callable[[], Any],
    markets: dict[str, str],
    exchange: str,
    sink: UserDataSink,
    *,
    keepalive: float = 1800.0,
    silence: float = 300.0,
    account: str | None = None,
) -> None:
    """Keep ``sink`` supplied with one side's user events until cancelled. ``create_key`` /
    ``keepalive_key`` are the venue's signed listenKey POST / PUT (ccxt calls); ``account``
    labels the balances (``handle_event``)."""
    attempt = 0
    while True:
        try:
            response = await create_key()
            key = response["listenKey"]
            async with http.ws_connect(f"{ws_base}/ws/{key}", heartbeat=30.0) as ws:
                attempt = 0
                sink.on_resync("user stream (re)connected")
                refresher = asyncio.create_task(_keep_alive(keepalive_key, keepalive))
                try:
                    while True:
                        msg = await ws.receive(timeout=silence)
                        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                        aiohttp.WSMsgType.ERROR):
                            break
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            continue
                        data = msg.data.encode() if isinstance(msg.data, str) else msg.data
                        try:
                            kind = handle_event(data, markets, exchange, sink, account)
                        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                            log.warning("%s user stream: undecodable event skipped", exchange)
                            continue
                        if kind == "listenKeyExpired":
                            break
                finally:
                    refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await refresher
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a venue or socket failure: back off, never spin
            log.info("%s user stream: %s", exchange, getattr(exc, "message", type(exc).__name__))
        attempt += 1
        sink.on_resync("user stream lost")
        await asyncio.sleep(backoff(attempt))


async def _keep_alive(keepalive_key: Callable[[], Any], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):  # a failed PUT shows up as listenKeyExpired later
            await keepalive_key()
