"""Coinbase Advanced Trade's private REST API through ccxt: one ``ccxt.coinbase`` instance
per set of credentials, on the configured REST root. A CDP key (name
``organizations/.../apiKeys/...`` plus its EC PEM, or an Ed25519 secret) signs each request
with a fresh JWT in ``Authorization: Bearer`` (ES256/EdDSA, 2 minutes, bound to the request's
method and path).

What this class adds to ccxt's ``coinbase`` (Coinbase-specific, all before or after the
venue round trip):

- The gateway's client order id is sent as ``client_order_id`` (ccxt would send its own
  ``ccxt-<uuid>`` and drop ours).
- A spot market BUY is sent with ``base_size`` (the gateway's quantity is in the base
  asset; ccxt would turn it into a ``quote_size`` and need a price).
- ``STOP`` / ``TAKE_PROFIT`` (the gateway's stop-limit and take-profit-limit) become
  ``stop_limit_stop_limit_gtc`` with the stop direction of a stop-loss (sell: price falls
  to the stop; buy: rises) or of a take-profit (the opposite). Coinbase has no stop-market
  orders, no reduce-only flag on orders (ccxt would close the whole position instead) and
  no post-only IOC/FOK: those are refused before any request.
- Balances come from ``/api/v3/brokerage/accounts`` (Advanced Trade), not ccxt's default
  ``/v2/accounts``.
- An HTTP 429 is a rate limit whatever its body says; an HTTP 5xx that ccxt leaves as a bare
  ``ExchangeError`` (its messages omit the status) is raised as ``ExchangeNotAvailable``
  quoting the status: no refusal, so a placement that met it is of unknown outcome
  (reconciled), never reported as failed.
- An order refused in a 200 answer (``success: false``) maps by its ``error``
  (``INSUFFICIENT_FUND``, ...) even when ``preview_failure_reason`` says nothing.
- Coinbase answers a placement with an acknowledgement (``order_id``, ``client_order_id``)
  and a cancel with ``{success, failure_reason}``: the placed order is completed from the
  request (status ``open``: accepted); a cancel refused (``UNKNOWN_CANCEL_ORDER``, ...) is an
  error carrying that reason, and a cancel accepted reports the order as Coinbase then shows
  it (one ``GET .../orders/historical/{order_id}``), ``canceled`` while it still shows open.
- Coinbase cancels and looks up orders by order id only: by client order id, the order is
  found among the product's recent orders (``.../orders/historical/batch``).
- ``cancel_all_orders(symbol)`` (not in ccxt's coinbase): the open orders, canceled in
  batches of 100.
"""

from __future__ import annotations

import json

import ccxt.async_support as ccxt_async
from ccxt.base.errors import (
    InvalidOrder,
    NotSupported,
    OrderNotFound,
    RateLimitExceeded,
)

from astra.venues.ccxt_errors import ServerErrorsUnavailable

__all__ = ["CoinbasePrivate"]

# gateway type -> (stop direction for a SELL, for a BUY)
_STOP_LIMITS = {
    "STOP": ("STOP_DIRECTION_STOP_DOWN", "STOP_DIRECTION_STOP_UP"),
    "TAKE_PROFIT": ("STOP_DIRECTION_STOP_UP", "STOP_DIRECTION_STOP_DOWN"),
}
_STOP_MARKETS = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET"})
_BATCH = 100  # Coinbase: at most 100 order ids per batch_cancel
_RECENT = 250  # orders searched for a client order id


class CoinbasePrivate(ServerErrorsUnavailable, ccxt_async.coinbase):
    """ccxt's coinbase for one set of credentials (see the module docstring)."""

    def handle_errors(self, code, reason, url, method, headers, body, response, *request):
        if code == 429:  # whatever the body says (its casing has varied)
            raise RateLimitExceeded(f"{self.id} 429 {reason} {body}")
        inner = response.get("error_response") if isinstance(response, dict) else None
        if isinstance(inner, dict):
            feedback = f"{self.id} {body}"
            for key in ("error", "preview_failure_reason", "new_order_failure_reason"):
                value = inner.get(key)
                if isinstance(value, str):
                    self.throw_exactly_matched_exception(self.exceptions["exact"], value,
                                                         feedback)
        return super().handle_errors(code, reason, url, method, headers, body, response,
                                     *request)

    async def create_order(self, symbol, type, side, amount, price=None, params=None):
        params = dict(params or {})
        market = self.market(symbol)
        kind = str(type).upper()
        if params.get("reduceOnly"):
            raise NotSupported(f"{self.id} has no reduce-only orders")
        if kind in _STOP_MARKETS:
            raise NotSupported(f"{self.id} has no stop-market orders; use a stop-limit order")
        tif = str(params.get("timeInForce") or "GTC").upper()
        if params.get("postOnly") and tif not in ("GTC", "PO"):
            raise InvalidOrder(f"{self.id} postOnly orders rest on the book: timeInForce "
                               f"{tif} is not allowed with postOnly")
        if kind in _STOP_LIMITS:
            sell, buy = _STOP_LIMITS[kind]
            params.setdefault("stop_direction", sell if side == "sell" else buy)
            type = "limit"
        client_order_id = params.pop("clientOrderId", None)
        if client_order_id:
            params["client_order_id"] = client_order_id
        if str(type).lower() == "market" and side == "buy" and market["spot"]:
            params["order_configuration"] = {
                "market_market_ioc": {"base_size": self.amount_to_precision(symbol, amount)}
            }
            params["createMarketBuyOrderRequiresPrice"] = False  # replaced just above
        order = await super().create_order(symbol, type, side, amount, price, params)
        if order.get("status") is None:  # an acknowledgement: what was sent, accepted
            limit = str(type).lower() != "market"
            order.update(
                status="open",
                type="limit" if limit else "market",
                side=order.get("side") or side,
                symbol=order.get("symbol") or symbol,
                clientOrderId=order.get("clientOrderId") or client_order_id,
                amount=float(amount),
                price=float(price) if limit and price is not None else None,
                timeInForce=tif if limit else None,
                postOnly=bool(params.get("postOnly")),
                reduceOnly=False,
                filled=order.get("filled") or 0.0,
            )
            stop = params.get("stopPrice")
            if stop is not None and order.get("triggerPrice") is None:
                order.update(triggerPrice=float(stop), stopPrice=float(stop))
        return order

    async def _by_client_id(self, client_order_id: str, symbol: str | None) -> dict:
        """The order placed with ``client_order_id``, among the product's recent orders."""
        for order in await self.fetch_orders(symbol, None, _RECENT):
            if order.get("clientOrderId") == client_order_id:
                return order
        raise OrderNotFound(
            f"{self.id} " + json.dumps({"error": "NOT_FOUND", "message":
                                        "no recent order has this client_order_id"}))

    async def fetch_order(self, id, symbol=None, params=None):
        params = dict(params or {})
        client_order_id = params.pop("clientOrderId", None)
        if not id and client_order_id:
            return await self._by_client_id(client_order_id, symbol)
        return await super().fetch_order(id, symbol, params)

    async def cancel_order(self, id, symbol=None, params=None):
        params = dict(params or {})
        client_order_id = params.pop("clientOrderId", None)
        if not id and client_order_id:
            id = (await self._by_client_id(client_order_id, symbol))["id"]
        response = await self.v3PrivatePostBrokerageOrdersBatchCancel(
            {"order_ids": [id], **params})
        results = response.get("results") or [{}]
        result = results[0]
        if result.get("success") is not True:
            reason = str(result.get("failure_reason") or "")
            error = OrderNotFound if reason == "UNKNOWN_CANCEL_ORDER" else InvalidOrder
            raise error(f"{self.id} {json.dumps(result)}")
        order = await super().fetch_order(result.get("order_id") or id, symbol)
        if order.get("status") == "open":  # accepted for cancellation, not yet shown so
            order["status"] = "canceled"
        return order

    async def cancel_all_orders(self, symbol=None, params=None):
        if symbol is None:
            raise NotSupported(f"{self.id} cancel_all_orders needs a symbol")
        ids = [o["id"] for o in await self.fetch_open_orders(symbol, None, None, params or {})]
        canceled = []
        for i in range(0, len(ids), _BATCH):
            canceled += await self.cancel_orders(ids[i : i + _BATCH], symbol)
        return canceled
