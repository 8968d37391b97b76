"""OKX user data (the gateway's ``WS /ws``): orders, fills and balances of one account from
OKX's private WebSocket, through ccxt.pro's ``okx``.

ccxt.pro logs in (``op: login``: apiKey, passphrase, timestamp and
``base64(HMAC-SHA256(secret, timestamp + "GET" + "/users/self/verify"))``; the secret itself
is never sent), then subscribes ``orders`` (``instType: ANY``) and ``account``. This module
adds:

- The private endpoint is the venue's configured ``private_ws`` (ccxt would derive it from
  its own ``wss://ws.okx.com:443/ws/v5`` root).
- Each pushed message reaches the sink exactly once, in wire order, from ccxt's own message
  handlers (``handle_orders``, ``handle_balance``): ccxt's ``watch_*`` caches keep only the
  latest state per order id, so two updates of one order between two reads would lose a
  fill. The ``watch_*`` loops keep the subscriptions and surface connection errors.
- An ``orders`` push whose row carries a ``tradeId`` is also a fill (OKX reports fills on
  the order channel: ``fillPx``, ``fillSz``, ``fillFee``/``fillFeeCcy``, ``execType``,
  ``fillTime``), converted by ccxt's ``order_to_trade``.
- ``account`` pushes carry the currencies that changed (periodic pushes: all of them); each
  push's currencies become Balances (``eq`` total, ``availEq``/``availBal`` free).
- Integrity: a private stream has no sequence numbers, so every login is a possible gap: the
  sink's ``on_resync`` is called once the login is accepted (clients re-read REST). Any
  error (refused login, dropped socket, a missed pong) closes the client, and a fresh one
  logs in again after the backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import ccxt.pro as ccxt_pro

from astra.core._trading import Balance, Fill, Order
from astra.venues.ccxt_normalize import balances_from_ccxt, fill_from_ccxt, order_from_ccxt
from astra.venues.retry import backoff

__all__ = ["OkxUserStream", "run_user_stream"]

log = logging.getLogger(__name__)


class OkxUserStream(ccxt_pro.okx):
    """ccxt.pro's okx on one private endpoint, reporting every pushed message through
    ``astra_orders(orders, fills)`` and ``astra_balances(balances)`` (see the module)."""

    astra_private_ws: str = "wss://ws.okx.com:8443/ws/v5/private"
    astra_code: str = "OKX"
    astra_symbols: Mapping[str, str] = {}  # ccxt symbol -> Astra symbol
    astra_orders: Callable[[list[Order], list[Fill]], None] | None = None
    astra_balances: Callable[[list[Balance]], None] | None = None

    def get_url(self, channel, access="public"):
        url = super().get_url(channel, access)
        if url.startswith(self.urls["api"]["ws"] + "/private"):
            return self.astra_private_ws
        return url

    def handle_orders(self, client, message):
        super().handle_orders(client, message)
        if self.astra_orders is None or (message.get("arg") or {}).get("channel") != "orders":
            return
        orders: list[Order] = []
        fills: list[Fill] = []
        for row in message.get("data") or []:
            parsed = self.parse_order(row)
            if parsed.get("timeInForce") is None and row.get("ordType") == "limit":
                parsed["timeInForce"] = "GTC"  # OKX: a plain limit order rests until canceled
            market = self.astra_symbols.get(parsed.get("symbol") or "")
            if market is None:
                log.debug("%s user stream: order on unknown instrument %s", self.astra_code,
                          row.get("instId"))
                continue
            orders.append(order_from_ccxt(parsed, market))
            if row.get("tradeId"):
                trade = self.order_to_trade(parsed)
                fee = self.safe_string(row, "fillFee")
                if fee:  # OKX signs fees as balance changes (a charge < 0), as REST fills do not
                    trade["fee"] = {**(trade.get("fee") or {}), "cost": -float(fee)}
                fills.append(fill_from_ccxt(trade, market, self.astra_code))
        if orders or fills:
            self.astra_orders(orders, fills)

    def handle_balance(self, client, message):
        super().handle_balance(client, message)
        if self.astra_balances is None:
            return
        # the trading account: what ``GET /balances`` reads by default ("spot")
        balances = balances_from_ccxt(self.parse_trading_balance(message), self.astra_code,
                                      "spot")
        if balances:
            self.astra_balances(balances)


async def run_user_stream(
    make_client: Callable[[], OkxUserStream], code: str, sink: Any
) -> None:
    """Orders, fills and balances until cancelled; every login resyncs (see the module)."""
    attempt = 0
    while True:
        client = make_client()
        client.astra_orders, client.astra_balances = sink.on_orders, sink.on_balances
        try:
            await client.authenticate()
            sink.on_resync("logged in")

            async def watch(method: Callable[[], Any]) -> None:
                nonlocal attempt
                while True:
                    await method()
                    # Data flows: the next failure starts the backoff over. (Not at login:
                    # a login that works before a subscription that fails must back off.)
                    attempt = 0

            async with asyncio.TaskGroup() as group:
                group.create_task(watch(client.watch_orders))
                group.create_task(watch(client.watch_balance))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            errors = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
            reason = f"{type(errors[0]).__name__}: {errors[0]}"
            log.warning("%s user stream: %s; reconnecting", code, reason)
            sink.on_resync(f"user stream lost ({reason})")
        finally:
            client.astra_orders = client.astra_balances = None
            with contextlib.suppress(Exception):
                await client.close()
        await asyncio.sleep(backoff(attempt))
        attempt += 1
