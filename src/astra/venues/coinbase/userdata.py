"""Coinbase Advanced Trade user data (the gateway's ``WS /ws``): orders, fills and balances
of one account, through ccxt.pro's ``coinbase`` on the ``user`` channel.

ccxt.pro subscribes ``user`` with a fresh JWT (a CDP key: ES256 over the EC PEM, 2 minutes;
the secret never sent). This module adds:

- The endpoint is the venue's configured ``private_ws`` (Coinbase's user order data
  endpoint, ``wss://advanced-trade-ws-user.coinbase.com``).
- Each ``user`` message reaches the sink exactly once, in wire order, from ccxt's handler
  (``handle_order``), with the orders read from Coinbase's fields (ccxt's ws parser takes
  ``cumulative_quantity`` for the amount): quantity ``cumulative_quantity +
  leaves_quantity``, ``limit_price``, ``avg_price``, ``status``, ``time_in_force``.
- Fills: the ``user`` channel carries no per-fill records, so a fill is derived from an
  ``update`` raising an order's ``cumulative_quantity``: the increase, at the price of the
  added ``filled_value`` (else ``avg_price`` times quantity), the added ``total_fees`` (in
  the quote currency), id ``<order_id>:<number_of_fills>``, time the message's. The
  ``snapshot`` event (open orders at subscription) only sets the baseline.
- Balances: Coinbase has no spot balance channel; they are fetched over REST
  (``fetch_balance``, Advanced Trade accounts) at every (re)connection and after each fill.
- Integrity: every (re)connection calls the sink's ``on_resync`` (clients re-read REST);
  any error closes the client, and a fresh one subscribes again after the backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import ccxt.pro as ccxt_pro

from astra.core._trading import Fill, Order
from astra.venues.ccxt_normalize import balances_from_ccxt, fill_from_ccxt, order_from_ccxt
from astra.venues.retry import backoff

__all__ = ["CoinbaseUserStream", "run_user_stream"]

log = logging.getLogger(__name__)

_TIF = {"GOOD_UNTIL_CANCELLED": "GTC", "GOOD_UNTIL_DATE_TIME": "GTC",
        "IMMEDIATE_OR_CANCEL": "IOC", "FILL_OR_KILL": "FOK"}
_TYPES = {"LIMIT": "limit", "MARKET": "market", "STOP_LIMIT": "stop_limit",
          "STOP": "stop_limit", "BRACKET": "limit", "TWAP": "limit"}


def _ms(text: str | None) -> int | None:
    """Milliseconds of an RFC 3339 time with up to nanosecond digits."""
    if not text:
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    ms = int((frac + "000")[:3]) if frac else 0
    stamp = datetime.fromisoformat(head.replace(" ", "T") + "+00:00")
    return int(stamp.timestamp()) * 1000 + ms


def _num(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


class CoinbaseUserStream(ccxt_pro.coinbase):
    """ccxt.pro's coinbase reporting every ``user`` message through ``astra_orders(orders,
    fills)`` (see the module)."""

    astra_code: str = "COINBASE"
    astra_symbols: Mapping[str, str] = {}  # ccxt symbol -> Astra symbol
    astra_orders: Callable[[list[Order], list[Fill]], None] | None = None
    astra_subscribed: bool = False

    def handle_order(self, client, message):
        super().handle_order(client, message)
        if self.astra_orders is None:
            return
        if not hasattr(self, "astra_seen"):
            self.astra_seen: dict[str, tuple[float, float, float]] = {}
        when = _ms(message.get("timestamp"))
        orders: list[Order] = []
        fills: list[Fill] = []
        for event in message.get("events") or []:
            snapshot = event.get("type") == "snapshot"
            for row in event.get("orders") or []:
                market = self.safe_market(row.get("product_id"))
                symbol = self.astra_symbols.get(market.get("symbol") or "")
                if symbol is None:
                    continue
                orders.append(order_from_ccxt(self._astra_order(row, when), symbol))
                fill = self._astra_fill(row, market, when, snapshot)
                if fill is not None:
                    fills.append(fill_from_ccxt(fill, symbol, self.astra_code))
        if orders or fills:
            self.astra_orders(orders, fills)

    def _astra_order(self, row: dict, when: int | None) -> dict:
        filled, left = _num(row.get("cumulative_quantity")), _num(row.get("leaves_quantity"))
        kind = _TYPES.get(str(row.get("order_type") or "").upper().replace(" ", "_"), "limit")
        return {
            "id": row.get("order_id"),
            "clientOrderId": row.get("client_order_id"),
            "side": str(row.get("order_side") or "").lower(),
            "type": kind,
            "amount": filled + left,
            "filled": filled,
            "price": _num(row.get("limit_price")) or None,
            "triggerPrice": _num(row.get("stop_price")) or None,
            "average": _num(row.get("avg_price")) or None,
            "status": self.parse_order_status(row.get("status")),
            "timeInForce": _TIF.get(str(row.get("time_in_force") or "").upper()),
            "postOnly": row.get("post_only"),
            "timestamp": _ms(row.get("creation_time")),
            "lastUpdateTimestamp": when,
        }

    def _astra_fill(self, row: dict, market: dict, when: int | None, snapshot: bool) -> dict | None:
        oid = str(row.get("order_id") or "")
        filled = _num(row.get("cumulative_quantity"))
        value = _num(row.get("filled_value")) or filled * _num(row.get("avg_price"))
        fees = _num(row.get("total_fees"))
        before = self.astra_seen.get(oid)
        self.astra_seen[oid] = (filled, value, fees)
        if snapshot or filled <= (before[0] if before else 0.0) + 1e-15:
            return None
        prev_filled, prev_value, prev_fees = before or (0.0, 0.0, 0.0)
        qty = filled - prev_filled
        return {
            "id": f"{oid}:{row.get('number_of_fills') or filled}",
            "order": oid,
            "side": str(row.get("order_side") or "").lower(),
            "price": (value - prev_value) / qty,
            "amount": qty,
            "timestamp": when,
            "fee": {"cost": fees - prev_fees, "currency": market.get("quote")},
            "takerOrMaker": None,
        }


async def run_user_stream(
    make_client: Callable[[], CoinbaseUserStream],
    fetch_balance: Callable[[], Awaitable[dict]],
    code: str,
    sink: Any,
) -> None:
    """Orders, fills and balances until cancelled; every (re)connection resyncs."""
    attempt = 0
    while True:
        client = make_client()
        try:
            sink.on_resync("connecting")
            if await _connection(client, fetch_balance, code, sink):
                attempt = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            errors = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
            reason = f"{type(errors[0]).__name__}: {errors[0]}"
            log.warning("%s user stream: %s; reconnecting", code, reason)
            sink.on_resync(f"user stream lost ({reason})")
            if client.astra_subscribed:
                attempt = 0
        finally:
            client.astra_orders = None
            with contextlib.suppress(Exception):
                await client.close()
        await asyncio.sleep(backoff(attempt))
        attempt += 1


async def _connection(
    client: CoinbaseUserStream,
    fetch_balance: Callable[[], Awaitable[dict]],
    code: str,
    sink: Any,
) -> bool:
    """One client's life: the ``user`` subscription and the REST balances, until an error."""
    refresh = asyncio.Event()

    def on_orders(orders: list[Order], fills: list[Fill]) -> None:
        sink.on_orders(orders, fills)
        if fills:
            refresh.set()

    client.astra_orders = on_orders

    async def watch_orders() -> None:
        while True:
            await client.watch_orders()
            client.astra_subscribed = True  # the snapshot of open orders arrived

    async def balances() -> None:
        while True:
            try:
                # ``fetch_balance()`` without a type: ccxt's default, "spot"
                sink.on_balances(balances_from_ccxt(await fetch_balance(), code, "spot"))
            except Exception as exc:
                log.warning("%s user stream: balances unavailable: %s", code, exc)
            await refresh.wait()
            refresh.clear()

    async with asyncio.TaskGroup() as group:
        group.create_task(watch_orders())
        group.create_task(balances())
    return client.astra_subscribed
