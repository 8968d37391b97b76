"""Aster's order answer (and SIM's) as a msgspec Struct, and the Astra ``Order`` it is.

``POST``/``DELETE /api|fapi/v3/order`` (and their v1 paths) answer with one order object,
named here after Aster's docs (spot and futures "New Order" / "Cancel Order" responses).
Before this, the gateway read it through ccxt (``parse_order``, whose ``safe_order``
reconciles amounts, costs, fees and trades for every venue) and then
``ccxt_normalize.order_from_ccxt``: more time than the simulator takes to match the order.
``OrderResponse.to_order`` reads the same answer into the same ``Order`` directly.

Invariants:
- Equal results: for every answer it accepts, ``to_order(market)`` equals
  ``order_from_ccxt(client.parse_order(raw, ccxt_market), market)`` field for field (tests
  compare them over generated answers and the simulator's own). ccxt's rules are restated
  here, not simplified: a zero price, average or stop price means none; a closed order with
  no quantity takes its filled one; a market-kind order with no price shows its average; a
  time in force missing from a market order is ``IOC``; ``postOnly`` is ``timeInForce ==
  "PO"`` when a time in force is given, else unknown.
- What it does not restate, it refuses: ``Irregular`` (a ``ValueError``) for an answer whose
  numbers are not plain decimal strings, whose times are not exact integers, whose side is
  neither BUY nor SELL, or whose average ccxt would compute from ``cumQuote`` (a zero
  ``avgPrice`` with fills: ccxt's 18-digit decimal division). ``decode_order`` then falls
  back to ccxt's path, so such an answer gives exactly what it gave before.
- Nothing here raises anything but ``Irregular`` for an answer of the right shape (a
  ``msgspec.ValidationError`` for the wrong shape, which also falls back).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from astra.core._trading import Order, OrderStatus, OrderType
from astra.venues.ccxt_normalize import _TIF, _TYPES

__all__ = ["Irregular", "OrderResponse", "decode_order"]


class Irregular(ValueError):
    """An answer ``to_order`` does not read the way ccxt would: read it through ccxt."""


# A plain decimal: what Aster and the simulator send for prices and quantities. float() of
# it is what ccxt's parse_number gives; anything else (exponents, signs, "NaN") goes to ccxt.
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DIGITS = re.compile(r"[0-9]{1,15}")  # an exact integer through float(): ccxt's safe_integer
_FLOAT_EXACT = 2**53

# ccxt aster's parse_order_type / parse_order_status (unknown values pass through upper-cased)
_CCXT_KIND = {
    "LIMIT": "limit",
    "MARKET": "market",
    "STOP": "limit",
    "STOP_MARKET": "market",
    "TAKE_PROFIT": "limit",
    "TAKE_PROFIT_MARKET": "market",
    "TRAILING_STOP_MARKET": "market",
}
_CCXT_STATUS = {
    "NEW": "open",
    "PARTIALLY_FILLED": "open",
    "FILLED": "closed",
    "CANCELED": "canceled",
    "REJECTED": "canceled",
    "EXPIRED": "canceled",
}
# ccxt_normalize's _status, for the same answers (its _TYPES and _TIF are imported)
_CLOSED_STATUS = {
    "canceled": OrderStatus.CANCELED,
    "cancelled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}
_PRICELESS = (OrderType.MARKET, OrderType.STOP_MARKET)
_TIF_TYPES = (OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT)


def _decimal(value: str) -> str:
    if _DECIMAL.fullmatch(value) is None:
        raise Irregular("not a plain decimal")
    return value


def _nonzero(value: str | UnsetType) -> str | None:
    """ccxt's ``omit_zero(safe_string(...))`` of a plain decimal: None when absent or zero."""
    if value is UNSET:
        return None
    return value if float(_decimal(value)) != 0 else None  # type: ignore[arg-type]


def _millis(value: int | str | UnsetType) -> int | None:
    """ccxt's ``safe_integer`` (``int(float(x))``), for values where that is exact."""
    if value is UNSET:
        return None
    if type(value) is int:
        if -_FLOAT_EXACT < value < _FLOAT_EXACT:
            return value
    elif _DIGITS.fullmatch(value) is not None:  # type: ignore[arg-type]
        return int(value)  # type: ignore[arg-type]
    raise Irregular("not an exact integer time")


class OrderResponse(msgspec.Struct, kw_only=True, gc=False):
    """One order as Aster answers a create or cancel (spot and futures; futures add
    ``reduceOnly``, ``positionSide`` and more, which an Astra ``Order`` does not carry).
    Prices and quantities are decimal strings, times epoch milliseconds."""

    orderId: int | str
    symbol: str | UnsetType = UNSET
    status: str
    clientOrderId: str
    price: str
    avgPrice: str | UnsetType = UNSET
    origQty: str
    executedQty: str
    cumQuote: str | UnsetType = UNSET
    timeInForce: str | UnsetType = UNSET
    type: str
    side: str
    stopPrice: str | UnsetType = UNSET
    time: int | str | UnsetType = UNSET
    updateTime: int | str | UnsetType = UNSET
    reduceOnly: Any = None  # ccxt reads it (or ``ro``) as a flag only when it is a bool
    ro: Any = None

    def to_order(self, market: str) -> Order:
        """The Astra ``Order`` on ``market`` (see the module docstring); ``Irregular`` when
        ccxt's reading of this answer is not restated here."""
        if (self.orderId == "") or not self.status:  # ccxt: no id, no status
            raise Irregular("no order id or status")
        side = self.side.lower().upper()
        if side != "BUY" and side != "SELL":
            raise Irregular("side")
        raw_type = self.type
        kind = _CCXT_KIND.get(raw_type.upper(), raw_type.upper())
        status = self.status.upper()
        status = _CCXT_STATUS.get(status, status)
        trigger = _nonzero(self.stopPrice)
        stop_price = float(trigger) if trigger is not None else None
        amount = _nonzero(self.origQty)
        filled = _decimal(self.executedQty)
        average = _nonzero(self.avgPrice)
        price = _nonzero(self.price)
        if amount is None and status == "closed":
            amount = filled
        if average is None and self.cumQuote is not UNSET and filled.strip("0.") != "":
            _decimal(self.cumQuote)  # (a malformed one is ccxt's to judge as well)
            raise Irregular("average from cumQuote")
        if price is None and kind == "market":
            price = average
        tif = self.timeInForce or None
        post_only: bool | None = None
        if tif is None:
            if stop_price is None and kind == "market":
                tif = "IOC"
        else:
            post_only = tif == "PO"
        info_type = raw_type.lower()
        if info_type in _TYPES and info_type != "limit" and info_type != "market":
            order_type = _TYPES[info_type]
        else:
            order_type = _TYPES.get(kind.lower(), OrderType.LIMIT)
            if stop_price:
                if order_type is OrderType.LIMIT:
                    order_type = OrderType.STOP_LIMIT
                elif order_type is OrderType.MARKET:
                    order_type = OrderType.STOP_MARKET
        quantity = float(amount) if amount else 0.0
        filled_quantity = float(filled) or 0.0
        if status == "open":
            order_status = OrderStatus.PARTIALLY_FILLED if filled_quantity > 0 else OrderStatus.NEW
        elif status == "closed":
            order_status = (
                OrderStatus.FILLED
                if not quantity or filled_quantity >= quantity
                else OrderStatus.CANCELED
            )
        else:
            order_status = _CLOSED_STATUS.get(status, OrderStatus.UNKNOWN)
        reduce_only = self.reduceOnly
        if type(reduce_only) is not bool:
            reduce_only = self.ro if type(self.ro) is bool else None
        created = _millis(self.time)
        updated = _millis(self.updateTime)
        return Order(
            order_id=str(self.orderId),
            client_order_id=self.clientOrderId,
            market=market,
            side=side,  # type: ignore[arg-type]
            type=order_type,
            quantity=quantity,
            filled_quantity=filled_quantity,
            status=order_status,
            price=float(price) if price and order_type not in _PRICELESS else None,
            stop_price=stop_price,
            average_price=float(average) if average else None,
            time_in_force=_TIF.get(tif.upper()) if tif and order_type in _TIF_TYPES else None,
            post_only=post_only,
            reduce_only=reduce_only,
            created_at=created,
            updated_at=updated or created,
        )


_convert = msgspec.convert


def decode_order(raw: Any, market: str, fallback: Callable[[Any], Order]) -> Order:
    """``raw`` (a decoded answer) as an ``Order`` on ``market``: read directly, or by
    ``fallback(raw)`` (ccxt's path) when it is not of the shape ``to_order`` restates."""
    if type(raw) is dict:
        try:
            return _convert(raw, OrderResponse).to_order(market)
        except (msgspec.ValidationError, Irregular):
            pass
    return fallback(raw)
