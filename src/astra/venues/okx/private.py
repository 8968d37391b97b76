"""OKX's private REST API through ccxt: one ``ccxt.okx`` instance per set of credentials
trades every market kind (SPOT, SWAP, FUTURES, OPTION) on the configured REST root; ccxt
signs with ``OK-ACCESS-KEY``/``-SIGN``/``-TIMESTAMP``/``-PASSPHRASE`` and sends a single
order through ``/api/v5/trade/batch-orders`` (its default: a higher rate limit than
``/trade/order``, same answer).

What this class adds to ccxt's ``okx``:

- An HTTP 429 is a rate limit whatever its body says; an HTTP 5xx that ccxt leaves as a bare
  ``ExchangeError`` is raised as ``ExchangeNotAvailable`` quoting the status (no refusal: a
  placement that met it is of unknown outcome, reconciled).
- Conditional orders (the gateway's ``STOP``, ``STOP_MARKET``, ``TAKE_PROFIT``,
  ``TAKE_PROFIT_MARKET``) are refused before any request: OKX keeps them apart as algo
  orders (``/trade/order-algo``, ids ``algoId``/``algoClOrdId``), which the gateway's
  get/cancel/open-orders calls (regular orders) would never find again.
- ``postOnly`` with ``IOC``/``FOK`` is refused (ccxt would silently send ``post_only``), and
  ``reduceOnly`` on a SPOT order is refused rather than sent (OKX applies it to margin and
  derivatives only).
- OKX answers a placement or a cancel with an acknowledgement only (``ordId``,
  ``clOrdId``, ``sCode``). A placement's order is completed from the request (status
  ``open``, i.e. accepted: the amount, price, flags sent); a cancel's is the order as OKX
  then reports it (one ``GET /api/v5/trade/order``), ``canceled`` while OKX still shows it
  live.
- A fill's time is OKX's ``fillTime`` (when it traded); ccxt reads ``ts`` (when the record
  was generated).
- ``cancel_all_orders(symbol)``, which ccxt does not offer on OKX: the market's open orders,
  canceled through ``/api/v5/trade/cancel-batch-orders`` (at most 20 per request).
"""

from __future__ import annotations

import ccxt.async_support as ccxt_async
from ccxt.base.errors import (
    InvalidOrder,
    NotSupported,
    RateLimitExceeded,
)

from astra.venues.ccxt_errors import ServerErrorsUnavailable

__all__ = ["OkxPrivate"]

_CONDITIONAL = frozenset({"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"})
_BATCH = 20  # OKX: at most 20 orders per cancel-batch-orders request


class OkxPrivate(ServerErrorsUnavailable, ccxt_async.okx):
    """ccxt's okx for one set of credentials (see the module docstring)."""

    def handle_errors(self, code, reason, url, method, headers, body, response, *request):
        if code == 429:  # whatever the body says
            raise RateLimitExceeded(f"{self.id} 429 {reason} {body}")
        return super().handle_errors(
            code, reason, url, method, headers, body, response, *request
        )

    async def create_order(self, symbol, type, side, amount, price=None, params=None):
        params = dict(params or {})
        market = self.market(symbol)
        if str(type).upper() in _CONDITIONAL:
            raise NotSupported(f"{self.id} conditional orders ({type}) are OKX algo orders, "
                               "which the gateway does not place yet")
        if params.get("postOnly"):
            tif = params.pop("timeInForce", None)
            if tif is not None and str(tif).upper() not in ("GTC", "PO"):
                raise InvalidOrder(f"{self.id} postOnly orders rest on the book: timeInForce "
                                   f"{tif} is not allowed with postOnly")
        if market["spot"] and params.pop("reduceOnly", False):
            raise InvalidOrder(f"{self.id} reduceOnly applies to margin and derivatives, not "
                               f"to spot {symbol}")
        order = await super().create_order(symbol, type, side, amount, price, params)
        if order.get("status") is None:  # an acknowledgement: what was sent, accepted
            limit = str(type).lower() != "market"
            order.update(
                status="open",
                amount=float(amount),
                price=float(price) if limit and price is not None else None,
                timeInForce=str(params.get("timeInForce") or "GTC").upper() if limit else None,
                postOnly=bool(params.get("postOnly")),
                reduceOnly=bool(params.get("reduceOnly")),
                filled=order.get("filled") or 0.0,
            )
            if order.get("timestamp") is None:
                ts = self.safe_integer(order.get("info") or {}, "ts")
                order.update(timestamp=ts, datetime=self.iso8601(ts) if ts else None)
        return order

    async def cancel_order(self, id, symbol=None, params=None):
        params = dict(params or {})
        ack = await super().cancel_order(id, symbol, params)
        if ack.get("side") is not None:  # a full order already
            return ack
        found = ack.get("id") or id
        lookup = {} if found else {"clientOrderId": ack.get("clientOrderId") or
                                   params.get("clientOrderId")}
        order = await self.fetch_order(found or "", symbol, lookup)
        if order.get("status") == "open":  # accepted for cancellation, not yet shown so
            order["status"] = "canceled"
        return order

    def parse_trade(self, trade, market=None):
        parsed = super().parse_trade(trade, market)
        filled_at = self.safe_integer(trade, "fillTime") if isinstance(trade, dict) else None
        if filled_at:
            parsed.update(timestamp=filled_at, datetime=self.iso8601(filled_at))
        return parsed

    async def cancel_all_orders(self, symbol=None, params=None):
        if symbol is None:
            raise NotSupported(f"{self.id} cancel_all_orders needs a symbol")
        opened = await self.fetch_open_orders(symbol, None, None, params or {})
        ids = [o["id"] for o in opened]
        canceled = []
        for i in range(0, len(ids), _BATCH):
            canceled += await self.cancel_orders(ids[i : i + _BATCH], symbol)
        return canceled
