"""Kraken Futures user data: ccxt.pro ``krakenfutures`` on the futures WebSocket
(``wss://futures.kraken.com/ws/v1``), read by the shared loop
(``astra.venues.ccxt_user_stream``) into Astra orders, fills and balances.

Flow per connection: ``{"event": "challenge", "api_key"}``, answered with a UUID the client
signs (base64 of HMAC-SHA512 over SHA-256 of the challenge, keyed with the base64-decoded
secret; ccxt's ``authenticate``); then ``subscribe`` to ``open_orders``, ``fills`` and
``balances``, each carrying ``api_key``, ``original_challenge`` and ``signed_challenge``.

Integrity rule: the private feeds have no gap detection a client could use, so every
(re)connection and every failure is a possible gap: the loop calls the sink's ``on_resync``
and builds a fresh client (fresh challenge) after a backoff. A refused challenge or
subscription (``event`` ``error`` / ``subscribed_failed``, which ccxt leaves unanswered)
fails the connection instead of leaving a watch waiting forever.

What ``KrakenFuturesStream`` reads differently from ccxt, per Kraken's feed docs:

- ``open_orders``: each delta carrying an ``order`` is that order's whole current state
  (``qty`` the order's quantity, ``filled`` its total filled), so it replaces the order; ccxt
  would instead read any update of a known order as a trade. Fills come from ``fills``
  only. ``is_cancel`` ends the order: ``full_fill`` is filled, the post-only, self-trade and
  reduce-only refusals are rejected, anything else is canceled; a removal naming only the
  ``order_id`` of an order never seen on this connection is dropped (the resync told the
  client to re-read REST).
- ``fills``: the snapshot of past fills is skipped (read over REST, as on spot); live fills
  carry ``fill_id``, ``qty`` at ``price``, ``fee_paid`` in ``fee_currency``, ``fill_type``
  ``maker``/``taker``.
- ``balances``: the multi-collateral (``flex_futures``) wallet, the account of the linear
  contracts and ``fetch_balance``'s default: per currency ``quantity`` is the total and
  ``available`` the free part (ccxt reads ``collateral_value``, a USD value, as used). The
  holding wallet and the single-collateral margin accounts are not streamed.
"""

from __future__ import annotations

from typing import Any

import ccxt.pro as ccxt_pro
from ccxt.async_support.base.ws.cache import ArrayCacheBySymbolById
from ccxt.base.errors import ExchangeError
from ccxt.base.precise import Precise

from astra.venues.ccxt_user_stream import Watch

__all__ = ["FUTURES_WATCHES", "KrakenFuturesStream"]

# Removal reasons that mean the order never rested or traded (Kraken's open_orders docs).
_REJECTED = frozenset({
    "post_order_failed_because_it_would_filled",
    "post_order_failed_because_it_would_be_filled",
    "would_execute_self",
    "would_not_reduce_position",
    "order_for_edit_not_found",
})

FUTURES_WATCHES: list[Watch] = [
    ("orders", lambda c: c.watch_orders()),
    ("trades", lambda c: c.watch_my_trades()),
    # the flex wallet: what ``GET /balances?account=future`` reads (``private.py``)
    ("balance", lambda c: c.watch_balance({"account": "flex_futures"}), "future"),
]


def _end_status(reason: str | None) -> str:
    if reason == "full_fill":
        return "closed"
    return "rejected" if reason in _REJECTED else "canceled"


class KrakenFuturesStream(ccxt_pro.krakenfutures):
    """ccxt.pro's krakenfutures for one set of credentials (see the module docstring)."""

    def handle_message(self, client: Any, message: dict) -> None:
        event = self.safe_string(message, "event")
        if event in ("error", "subscribed_failed"):
            # Only Kraken's own text: the frame echoes the key and the signed challenge.
            text = self.safe_string(message, "message", event)
            client.reject(ExchangeError(f"{self.id} {event}: {text}"))
            return
        if self.safe_string(message, "feed") == "fills_snapshot":
            return
        super().handle_message(client, message)

    def parse_ws_order(self, order: dict, market: Any = None) -> dict:
        quantity = self.safe_string(order, "qty")
        filled = self.safe_string(order, "filled", "0")
        stop = self.safe_string(order, "stop_price")
        trigger = stop if stop is not None and Precise.string_gt(stop, "0") else None
        timestamp = self.safe_integer(order, "time")
        return self.safe_order({
            "info": order,
            "id": self.safe_string(order, "order_id"),
            "clientOrderId": self.safe_string(order, "cli_ord_id"),
            "symbol": self.safe_symbol(self.safe_string(order, "instrument"), market),
            "timestamp": timestamp,
            "datetime": self.iso8601(timestamp),
            "lastUpdateTimestamp": self.safe_integer(order, "last_update_time"),
            "lastTradeTimestamp": None,
            "type": self.safe_string(order, "type"),
            "side": "buy" if self.safe_integer(order, "direction") == 0 else "sell",
            "price": self.safe_string(order, "limit_price"),
            "triggerPrice": trigger,
            "stopPrice": trigger,
            "amount": quantity,
            "filled": filled,
            "remaining": Precise.string_sub(quantity, filled) if quantity is not None else None,
            "status": "open",
            "reduceOnly": self.safe_bool(order, "reduce_only"),
            "timeInForce": None,
            "postOnly": None,
            "cost": None,
            "average": None,
            "fee": None,
            "trades": None,
        })

    def handle_order(self, client: Any, message: dict) -> dict:
        if self.orders is None:
            self.orders = ArrayCacheBySymbolById(
                self.safe_integer(self.options, "ordersLimit", 1000))
        raw = self.safe_dict(message, "order")
        reason = self.safe_string(message, "reason")
        ended = self.safe_bool(message, "is_cancel") is True
        if raw is not None:
            order = self.parse_ws_order(raw)
            if ended:
                order = self._ended(order, reason)
        else:
            order_id = self.safe_string(message, "order_id")
            known = next((o for o in self.orders if o.get("id") == order_id), None)
            if known is None or not ended:
                return message
            order = self._ended(known, reason)
        self.orders.append(order)
        client.resolve(self.orders, "orders")
        client.resolve(self.orders, f"orders:{order['symbol']}")
        return message

    def _ended(self, order: dict, reason: str | None) -> dict:
        status = _end_status(reason)
        done = {"status": status, "info": {**(order.get("info") or {}), "reason": reason}}
        if status == "closed" and order.get("amount") is not None:
            # A full fill removed by id alone: the fills feed has the fills themselves.
            done.update(filled=order["amount"], remaining=0)
        return self.extend(order, done)

    def handle_balance(self, client: Any, message: dict) -> None:
        flex = self.safe_dict(message, "flex_futures")
        rest = self.omit(message, ["flex_futures"])
        if "holding" in rest or "futures" in rest:
            super().handle_balance(client, rest)  # ccxt's own caches of the other wallets
        if flex is None:
            return
        if self.balance is None:
            self.balance = {}
        # Kept in place: a waiting watch holds this object (ccxt resolves by reference).
        wallet = self.balance.setdefault("flex", {})
        wallet.clear()
        timestamp = self.safe_integer(message, "timestamp")
        wallet.update(info=message, timestamp=timestamp, datetime=self.iso8601(timestamp))
        for currency_id, row in self.safe_dict(flex, "currencies", {}).items():
            account = self.account()
            account["free"] = self.safe_string(row, "available")
            account["total"] = self.safe_string(row, "quantity")
            wallet[self.safe_currency_code(currency_id)] = account
        wallet.update(self.safe_balance(wallet))
        client.resolve(wallet, "balances:flex_futures")
