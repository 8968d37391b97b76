"""KuCoin's private REST API through ccxt: one ``ccxt.kucoin`` client per set of credentials
trades spot (``api.kucoin.com``) and futures (``api-futures.kucoin.com``) markets; ccxt picks
the host and endpoint from the market (since ccxt 4.5 ``kucoin`` also speaks futures, and
``kucoinfutures`` is a thin subclass).

Account modes are settings, not discovered per call (the client lives for one call, and ccxt
would otherwise ask the venue before every call): ``hf`` (default on) sends spot orders to
the high-frequency endpoints (``/api/v1/hf/orders``...) every spot account now uses;
``uta`` (default off) would send everything to the unified-account API instead.

What this class adds to ccxt's ``kucoin``, all of it venue-specific:

- Trigger orders named the gateway's way (``STOP``, ``STOP_MARKET``, ``TAKE_PROFIT``,
  ``TAKE_PROFIT_MARKET`` with ``stopPrice``): spot becomes ccxt's ``stopLossPrice``/
  ``takeProfitPrice`` (KuCoin ``stop=entry|loss`` by side); futures becomes a ``triggerPrice``
  order with the trigger direction of a stop (``up`` to buy, ``down`` to sell) or of a
  take-profit (the other way), without forcing ``reduceOnly``.
- KuCoin answers an order with its ids only (``{"orderId", "clientOid"}``): the order is
  then reported from the request (``open``), not as an order of unknown status; a cancel
  answers ids only too, so the canceled order is looked up to be described.
- ``reduceOnly`` on a spot order is refused before anything is sent (KuCoin spot has no
  such flag).
- ``fetch_balance({"type": "futures"})`` is the futures account (ccxt's ``contract``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ccxt.async_support as ccxt_async
from ccxt.base.errors import InvalidOrder

from astra.venues.ccxt_errors import ServerErrorsUnavailable

__all__ = ["FUTURES_ACCOUNT_TYPES", "KucoinPrivate"]

FUTURES_ACCOUNT_TYPES = frozenset({"futures", "future", "swap", "contract", "derivatives"})

_SPOT_TRIGGERS = {
    # gateway type -> (ccxt unified type, ccxt trigger param)
    "STOP": ("limit", "stopLossPrice"),
    "STOP_MARKET": ("market", "stopLossPrice"),
    "TAKE_PROFIT": ("limit", "takeProfitPrice"),
    "TAKE_PROFIT_MARKET": ("market", "takeProfitPrice"),
}
# futures: (ccxt unified type, take-profit?) -> triggerPrice + KuCoin's "stop" direction
_FUTURES_TRIGGERS = {
    "STOP": ("limit", False),
    "STOP_MARKET": ("market", False),
    "TAKE_PROFIT": ("limit", True),
    "TAKE_PROFIT_MARKET": ("market", True),
}

_TRIGGER_PARAMS = ("triggerPrice", "stopLossPrice", "takeProfitPrice")


def _client_order_id(params: Mapping[str, Any]) -> str | None:
    cid = params.get("clientOrderId", params.get("clientOid"))
    return str(cid) if cid not in (None, "") else None


class KucoinPrivate(ServerErrorsUnavailable, ccxt_async.kucoin):
    """ccxt's kucoin for one set of credentials (see the module docstring)."""

    def _trigger_order(self, symbol: str, type: str, side: str, params: dict
                       ) -> tuple[str, dict]:
        upper = str(type).upper()
        if upper not in _SPOT_TRIGGERS:
            return type, params
        params = dict(params)
        stop = params.pop("stopPrice", None)
        if self.market(symbol).get("spot"):
            kind, trigger = _SPOT_TRIGGERS[upper]
            if stop is not None:
                params[trigger] = stop
            return kind, params
        kind, take_profit = _FUTURES_TRIGGERS[upper]
        if stop is not None:
            params["triggerPrice"] = stop
            rises = (side == "buy") != take_profit  # a buy stop triggers on the way up
            params["stop"] = "up" if rises else "down"
        return kind, params

    async def create_order(self, symbol: str, type: str, side: str, amount: float,
                           price: float | None = None, params: dict | None = None) -> dict:
        if self.markets is None:
            await self.load_markets()
        # Numbers, not the precision strings callers may pass: ccxt's futures order compares
        # the amount with 1 (re-applying the precision to a float gives the same string).
        amount = float(amount)
        price = float(price) if price is not None else None
        params = dict(params or {})
        if params.get("reduceOnly") and self.market(symbol).get("spot"):
            raise InvalidOrder(f"{self.id} spot orders take no reduceOnly")
        type, params = self._trigger_order(symbol, type, side, params)
        cid = _client_order_id(params)
        order = await super().create_order(symbol, type, side, amount, price, params)
        # {"code": "200000", "data": {"orderId": "...", "clientOid": "..."}}: ids only.
        if order.get("id") is not None and order.get("side") is None:
            order.update(
                symbol=symbol,
                type=type,
                side=side,
                amount=amount,
                price=price if type == "limit" else None,
                status=order.get("status") or "open",
                filled=order.get("filled") or 0.0,
            )
            trigger = next((params[k] for k in _TRIGGER_PARAMS if params.get(k) is not None),
                           None)
            if trigger is not None and order.get("triggerPrice") is None:
                order["triggerPrice"] = float(trigger)
        if not order.get("clientOrderId") and cid is not None:
            order["clientOrderId"] = cid
        return order

    async def cancel_order(self, id: str, symbol: str | None = None,
                           params: dict | None = None) -> dict:
        params = dict(params or {})
        cid = _client_order_id(params)
        ack = await super().cancel_order(id, symbol, params)
        if ack.get("side") is not None:
            return ack
        # {"data": {"orderId": ...}} / {"cancelledOrderIds": [...]}: the order is looked up.
        try:
            order = await self.fetch_order(id, symbol, {} if id else {"clientOrderId": cid})
        except Exception:  # the cancel stands; only its description is missing
            order = ack
            order.update(id=id or ack.get("id"), clientOrderId=cid or ack.get("clientOrderId"),
                         symbol=symbol)
        if order.get("status") in (None, "open"):  # a cancel in flight: reported as it ends
            order["status"] = "canceled"
        return order

    async def fetch_balance(self, params: dict | None = None) -> dict:
        params = dict(params or {})
        if str(params.get("type") or "").lower() in FUTURES_ACCOUNT_TYPES:
            params["type"] = "contract"
        return await super().fetch_balance(params)
