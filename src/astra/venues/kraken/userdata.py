"""Kraken spot user data: WebSocket v2 ``executions`` and ``balances`` on the authenticated
endpoint (``wss://ws-auth.kraken.com/v2``), normalized to Astra orders, fills and balances.

Flow per connection: a token from REST ``POST /0/private/GetWebSocketsToken`` (signed by the
private ccxt client; the token must be used within 15 minutes and stays valid while the
subscription lives), then ``subscribe`` to ``executions`` (``snap_orders``: the open orders
first, ``snap_trades`` off: past fills are read over REST) and ``balances`` (snapshot), both
carrying the token.

Integrity rule: the private channels have no gap detection a client could use, so every
(re)connection, a refused subscription, a closed or silent socket (Kraken sends a heartbeat
every second once subscribed) is a possible gap: the sink's ``on_resync`` is called, the
stream backs off (``astra.venues.retry.backoff``), takes a fresh token and resubscribes.

Messages, as Kraken documents them:

- ``executions``: ``data`` is a list of execution reports, ``exec_type`` one of
  ``pending_new``, ``new``, ``trade``, ``filled``, ``canceled``, ``expired``, ``amended``,
  ``restated``, ``status``... Updates carry only what changed (a cancel has no symbol, side
  or quantity), so the orders seen on this connection (snapshot and ``new`` reports) are
  kept and each report is merged into its order; a report about an order never seen whose
  market cannot be told is dropped (the resync told the client to re-read REST). A ``trade``
  report is also a fill (``exec_id``, ``last_qty`` at ``last_price``, ``fees``,
  ``liquidity_ind`` ``t``/``m``). Orders in a final state are forgotten once reported.
- ``balances``: the snapshot lists each asset with its total and per-wallet balances; an
  update is one ledger entry with the asset's new balance in ``wallet_type``. The spot
  wallet is reported (other wallets' updates are skipped). Kraken sends totals only: an
  asset's ``free`` is its total and ``locked`` 0 (``GET /balances`` has the held amounts).

Symbols: the v2 symbol (``BTC/USD``) maps back to the Astra market through the venue's loaded
spot markets (``KrakenMarket.ws_symbol``); assets become AbstractTokens
(``normalize_token(asset, "KRAKEN")``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
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
    "BalanceEntry",
    "BalancesMessage",
    "Execution",
    "ExecutionsMessage",
    "SpotUserState",
    "UserDataSink",
    "run_spot_user_stream",
    "subscribe_requests",
]

log = logging.getLogger(__name__)

_TYPES = {
    "limit": OrderType.LIMIT,
    "market": OrderType.MARKET,
    "iceberg": OrderType.LIMIT,
    "stop-loss": OrderType.STOP_MARKET,
    "stop-loss-limit": OrderType.STOP_LIMIT,
    "take-profit": OrderType.TAKE_PROFIT_MARKET,
    "take-profit-limit": OrderType.TAKE_PROFIT_LIMIT,
    "trailing-stop": OrderType.STOP_MARKET,
    "trailing-stop-limit": OrderType.STOP_LIMIT,
    "settle-position": OrderType.MARKET,
}
_LIMIT_TYPES = (OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT)
_TIF = {"GTC": TimeInForce.GTC, "GTD": TimeInForce.GTC, "IOC": TimeInForce.IOC,
        "FOK": TimeInForce.FOK}
_STATUS = {
    "pending_new": OrderStatus.NEW,
    "new": OrderStatus.NEW,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
}
_FINAL = frozenset({"filled", "canceled", "expired"})


def _ms(ts: str | None) -> int | None:
    if not ts:
        return None
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


class ExecFee(msgspec.Struct, kw_only=True):
    asset: str
    qty: float


class Triggers(msgspec.Struct, kw_only=True):
    price: float | None = None
    reference: str | None = None
    price_type: str | None = None


class Execution(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One ``executions`` report. Every field but the order id may be absent from an update."""

    order_id: str
    exec_type: str | None = None
    order_status: str | None = None
    timestamp: str | None = None
    symbol: str | None = None
    side: str | None = None
    order_type: str | None = None
    order_qty: float | None = None
    cum_qty: float | None = None
    avg_price: float | None = None
    limit_price: float | None = None
    stop_price: float | None = None
    triggers: Triggers | None = None
    time_in_force: str | None = None
    post_only: bool | None = None
    reduce_only: bool | None = None
    cl_ord_id: str | None = None
    exec_id: str | None = None
    trade_id: int | None = None
    last_qty: float | None = None
    last_price: float | None = None
    liquidity_ind: str | None = None
    fees: list[ExecFee] | None = None


class ExecutionsMessage(msgspec.Struct, kw_only=True):
    channel: str
    type: str  # snapshot | update
    data: list[Execution] = []
    sequence: int | None = None


class Wallet(msgspec.Struct, kw_only=True):
    type: str
    id: str | None = None
    balance: float


class BalanceEntry(msgspec.Struct, kw_only=True):
    """A snapshot row (``balance`` + ``wallets``) or an update's ledger entry (``balance`` of
    the asset in ``wallet_type``/``wallet_id`` after it)."""

    asset: str
    balance: float
    asset_class: str | None = None
    wallets: list[Wallet] | None = None
    wallet_type: str | None = None
    wallet_id: str | None = None


class BalancesMessage(msgspec.Struct, kw_only=True):
    channel: str
    type: str
    data: list[BalanceEntry] = []
    sequence: int | None = None


class _Envelope(msgspec.Struct, kw_only=True):
    channel: str | None = None
    method: str | None = None
    success: bool | None = None
    error: str | None = None
    type: str | None = None


_envelope = msgspec.json.Decoder(_Envelope).decode
_executions = msgspec.json.Decoder(ExecutionsMessage).decode
_balances = msgspec.json.Decoder(BalancesMessage).decode


class SubscriptionRefused(Exception):
    """Kraken answered a private ``subscribe`` with ``success: false``."""


def subscribe_requests(token: str, req_ids: Any = None) -> list[dict]:
    """The two ``subscribe`` requests of a connection, in order."""
    ids = req_ids or itertools.count(1)
    return [
        {"method": "subscribe", "req_id": next(ids),
         "params": {"channel": "executions", "token": token, "snap_orders": True,
                    "snap_trades": False}},
        {"method": "subscribe", "req_id": next(ids),
         "params": {"channel": "balances", "token": token, "snapshot": True}},
    ]


class SpotUserState:
    """One connection's view: the orders it has seen, merged report by report."""

    def __init__(self, markets: Mapping[str, str], exchange: str) -> None:
        self.markets, self.exchange = markets, exchange
        self.orders: dict[str, dict[str, Any]] = {}
        self.created: dict[str, int] = {}

    def handle(self, raw: bytes, sink: UserDataSink) -> str | None:
        """Decode one frame into ``sink``; returns its channel (or method)."""
        env = _envelope(raw)
        if env.method is not None:
            if env.method == "subscribe" and env.success is False:
                raise SubscriptionRefused(env.error or "subscribe refused")
            return env.method
        if env.channel == "executions":
            orders, fills = self.on_executions(_executions(raw))
            if orders or fills:
                sink.on_orders(orders, fills)
        elif env.channel == "balances":
            balances = self.on_balances(_balances(raw))
            if balances:
                sink.on_balances(balances)
        return env.channel

    def on_executions(self, message: ExecutionsMessage) -> tuple[list[Order], list[Fill]]:
        orders: list[Order] = []
        fills: list[Fill] = []
        for report in message.data:
            fields = {k: v for k, v in msgspec.structs.asdict(report).items() if v is not None}
            state = self.orders.setdefault(report.order_id, {})
            state.update(fields)
            ts = _ms(report.timestamp)
            if ts is not None and report.order_id not in self.created and (
                report.exec_type in ("pending_new", "new")
            ):
                self.created[report.order_id] = ts
            market = self.markets.get(state.get("symbol") or "")
            status = state.get("order_status") or report.exec_type or ""
            if status in _FINAL:
                self.orders.pop(report.order_id, None)
                created = self.created.pop(report.order_id, None)
            else:
                created = self.created.get(report.order_id)
            if market is None or state.get("side") is None:
                continue  # an order this connection cannot place: REST has it
            orders.append(self._order(state, market, created, ts))
            if report.exec_type == "trade" and report.exec_id and report.last_qty:
                fills.append(self._fill(report, state, market, ts))
        return orders, fills

    def _order(self, state: dict, market: str, created: int | None,
               updated: int | None) -> Order:
        kind = _TYPES.get(str(state.get("order_type") or "limit"), OrderType.LIMIT)
        filled = float(state.get("cum_qty") or 0.0)
        quantity = float(state.get("order_qty") or filled)
        raw_status = state.get("order_status") or ""
        status = _STATUS.get(raw_status, OrderStatus.UNKNOWN)
        triggers = state.get("triggers") or {}
        stop = triggers.get("price") if isinstance(triggers, dict) else None
        stop = stop if stop is not None else state.get("stop_price")
        avg = state.get("avg_price")
        limit = kind in _LIMIT_TYPES
        return Order(
            order_id=state["order_id"],
            client_order_id=str(state.get("cl_ord_id") or ""),
            market=market,
            side=str(state["side"]).upper(),  # type: ignore[arg-type]
            type=kind,
            quantity=quantity,
            filled_quantity=min(filled, quantity) if quantity else filled,
            status=status,
            price=state.get("limit_price") if limit else None,
            stop_price=stop if stop else None,
            average_price=avg if avg else None,
            time_in_force=_TIF.get(str(state.get("time_in_force") or "").upper())
            if limit else None,
            post_only=state.get("post_only"),
            reduce_only=state.get("reduce_only"),
            created_at=created,
            updated_at=updated,
        )

    def _fill(self, report: Execution, state: dict, market: str, ts: int | None) -> Fill:
        fee = report.fees[0] if report.fees else None
        liquidity = {"m": Liquidity.MAKER, "t": Liquidity.TAKER}.get(report.liquidity_ind or "")
        return Fill(
            fill_id=str(report.exec_id),
            order_id=report.order_id,
            client_order_id=state.get("cl_ord_id") or None,
            market=market,
            side=str(state["side"]).upper(),  # type: ignore[arg-type]
            price=float(report.last_price or 0.0),
            quantity=float(report.last_qty or 0.0),
            time=ts or 0,
            fee=sum(f.qty for f in report.fees or () if f.asset == fee.asset) if fee else None,
            fee_asset=normalize_token(fee.asset, self.exchange) if fee else None,
            liquidity=liquidity,
        )

    def on_balances(self, message: BalancesMessage) -> list[Balance]:
        out = []
        for entry in message.data:
            if entry.wallets is not None:
                spot = [w.balance for w in entry.wallets if w.type == "spot"]
                total = sum(spot) if spot else entry.balance
            elif entry.wallet_type not in (None, "spot"):
                continue  # an earn or other wallet moved: not what spot trading holds
            else:
                total = entry.balance
            token = normalize_token(entry.asset, self.exchange)
            out.append(Balance(asset=token, free=total, locked=0.0, total=total,
                               exchange_asset=entry.asset if entry.asset != token else None,
                               account="spot"))
        return out


async def run_spot_user_stream(
    http: aiohttp.ClientSession,
    url: str,
    get_token: Callable[[], Awaitable[dict]],
    markets: Mapping[str, str],
    exchange: str,
    sink: UserDataSink,
    *,
    silence: float = 30.0,
) -> None:
    """Keep ``sink`` supplied with the spot account's orders, fills and balances until
    cancelled. ``get_token`` is the signed ``GetWebSocketsToken`` call (ccxt)."""
    attempt = 0
    while True:
        try:
            response = await get_token()
            token = (response.get("result") or {})["token"]
            async with http.ws_connect(url, heartbeat=30.0) as ws:
                sink.on_resync("user stream (re)connected")
                state = SpotUserState(markets, exchange)
                for request in subscribe_requests(token):
                    await ws.send_str(msgspec.json.encode(request).decode())
                acked = 0
                while True:
                    msg = await ws.receive(timeout=silence)
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                        break
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        continue
                    data = msg.data.encode() if isinstance(msg.data, str) else msg.data
                    try:
                        kind = state.handle(data, sink)
                    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                        log.warning("%s user stream: undecodable message skipped", exchange)
                        continue
                    if kind == "subscribe":
                        acked += 1
                        if acked == 2:
                            attempt = 0  # both subscriptions live: a healthy connection
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a venue or socket failure: back off, never spin
            log.info("%s user stream: %s", exchange, str(exc) or type(exc).__name__)
        attempt += 1
        sink.on_resync("user stream lost")
        await asyncio.sleep(backoff(attempt))
