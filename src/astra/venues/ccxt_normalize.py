"""ccxt's unified order/trade/balance/position dicts -> Astra's normalized trading models.

ccxt already parses every venue's private responses into one shape; this module is the single
place where that shape becomes ours, so every venue's orders look the same to a client. It is
in ``venues/`` because the venues' user streams need it as much as ``trading/`` does.

Status rule: ccxt's ``open`` is ``NEW`` until something fills (then ``PARTIALLY_FILLED``);
``closed`` is ``FILLED``; ``canceled``/``expired``/``rejected`` keep their meaning, except that
a canceled or expired order with fills stays what it is (the fills are in
``filledQuantity``).

Units rule: ccxt's amounts are the venue's (contracts on most derivatives venues); Astra's
quantities are base units. ``order_in_base``/``fill_in_base`` convert a normalized order or
fill with the market's ``ContractUnits`` (inverse contracts at the fill's, the order's average
or the order's price), ``position_from_ccxt`` converts as it reads.
"""

from __future__ import annotations

from typing import Any

import msgspec

from astra.core import ContractUnits, normalize_token
from astra.core._trading import (
    Balance,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    Position,
    PositionSide,
    TimeInForce,
)
from astra.venues.base import VenueMarket

__all__ = [
    "balances_from_ccxt",
    "ccxt_market",
    "fill_from_ccxt",
    "fill_in_base",
    "order_from_ccxt",
    "order_in_base",
    "position_from_ccxt",
]

_TYPES = {
    "limit": OrderType.LIMIT,
    "market": OrderType.MARKET,
    "stop": OrderType.STOP_LIMIT,
    "stop_limit": OrderType.STOP_LIMIT,
    "stop_market": OrderType.STOP_MARKET,
    "take_profit": OrderType.TAKE_PROFIT_LIMIT,
    "take_profit_limit": OrderType.TAKE_PROFIT_LIMIT,
    "take_profit_market": OrderType.TAKE_PROFIT_MARKET,
}
_TIF = {
    "GTC": TimeInForce.GTC,
    "IOC": TimeInForce.IOC,
    "FOK": TimeInForce.FOK,
    "PO": TimeInForce.GTC,
    "GTX": TimeInForce.GTC,
}


def ccxt_market(client: Any, market: VenueMarket) -> dict:
    """The ccxt market for an Astra market: by venue id, disambiguated by kind (a venue may use
    one id for its spot pair and its perpetual, as Aster does)."""
    candidates = client.markets_by_id.get(market.exchange_symbol) or []
    want_spot = market.metadata.asset_type == "SPOT"
    for m in candidates:
        if bool(m.get("spot")) == want_spot:
            return m
    if candidates:
        return candidates[0]
    raise KeyError(market.exchange_symbol)


def _f(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _status(raw: dict) -> OrderStatus:
    status = raw.get("status")
    filled = _f(raw.get("filled")) or 0.0
    amount = _f(raw.get("amount")) or 0.0
    if status == "open":
        return OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.NEW
    if status == "closed":
        return OrderStatus.FILLED if not amount or filled >= amount else OrderStatus.CANCELED
    return {
        "canceled": OrderStatus.CANCELED,
        "cancelled": OrderStatus.CANCELED,
        "expired": OrderStatus.EXPIRED,
        "rejected": OrderStatus.REJECTED,
    }.get(status or "", OrderStatus.UNKNOWN)


def _type(raw: dict) -> OrderType:
    info_type = str((raw.get("info") or {}).get("type") or "").lower()
    if info_type in _TYPES and info_type not in ("limit", "market"):
        return _TYPES[info_type]
    kind = _TYPES.get(str(raw.get("type") or "").lower(), OrderType.LIMIT)
    trigger = raw.get("triggerPrice") or raw.get("stopPrice")
    if trigger and kind == OrderType.LIMIT:
        return OrderType.STOP_LIMIT
    if trigger and kind == OrderType.MARKET:
        return OrderType.STOP_MARKET
    return kind


def order_from_ccxt(raw: dict, market: str) -> Order:
    tif = _TIF.get(str(raw.get("timeInForce") or "").upper())
    order_type = _type(raw)
    return Order(
        order_id=str(raw["id"]) if raw.get("id") is not None else None,
        client_order_id=str(raw.get("clientOrderId") or ""),
        market=market,
        side=str(raw["side"]).upper(),  # type: ignore[arg-type]
        type=order_type,
        quantity=_f(raw.get("amount")) or 0.0,
        filled_quantity=_f(raw.get("filled")) or 0.0,
        status=_status(raw),
        price=_f(raw.get("price"))
        if order_type not in (OrderType.MARKET, OrderType.STOP_MARKET)
        else None,
        stop_price=_f(raw.get("triggerPrice") or raw.get("stopPrice")),
        average_price=_f(raw.get("average")),
        time_in_force=tif
        if order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT)
        else None,
        post_only=raw.get("postOnly"),
        reduce_only=raw.get("reduceOnly"),
        created_at=raw.get("timestamp"),
        updated_at=raw.get("lastUpdateTimestamp") or raw.get("timestamp"),
    )


def fill_from_ccxt(raw: dict, market: str, exchange: str) -> Fill:
    fee = raw.get("fee") or {}
    taker = raw.get("takerOrMaker")
    return Fill(
        fill_id=str(raw["id"]),
        order_id=str(raw.get("order") or ""),
        market=market,
        side=str(raw["side"]).upper(),  # type: ignore[arg-type]
        price=float(raw["price"]),
        quantity=float(raw["amount"]),
        time=int(raw.get("timestamp") or 0),
        fee=_f(fee.get("cost")),
        fee_asset=normalize_token(fee["currency"], exchange) if fee.get("currency") else None,
        liquidity=Liquidity(taker.upper()) if taker in ("maker", "taker") else None,
    )


def order_in_base(order: Order, units: ContractUnits | None,
                  price: float | None = None) -> Order:
    """``order`` with base-unit quantities (``price``: the conversion price of an inverse
    contract's order that states none, e.g. a market order)."""
    if units is None:
        return order
    at = order.average_price or order.price or order.stop_price or price
    return msgspec.structs.replace(
        order,
        quantity=units.to_base(order.quantity, at),
        filled_quantity=units.to_base(order.filled_quantity, order.average_price or at),
    )


def fill_in_base(fill: Fill, units: ContractUnits | None) -> Fill:
    if units is None:
        return fill
    return msgspec.structs.replace(fill, quantity=units.to_base(fill.quantity, fill.price))


def balances_from_ccxt(raw: dict, exchange: str, account: str | None = None) -> list[Balance]:
    """ccxt's balance structure; ``account`` is the ``GET /balances?account=`` value that
    reads the account it came from (``Balance.account``)."""
    out = []
    for asset, row in sorted(raw.items()):
        if (
            not isinstance(row, dict)
            or "total" not in row
            or asset in ("info", "free", "used", "total", "debt")
        ):
            continue
        total = _f(row.get("total")) or 0.0
        free = _f(row.get("free")) or 0.0
        locked = _f(row.get("used"))
        token = normalize_token(asset, exchange)
        out.append(
            Balance(
                asset=token,
                free=free,
                locked=locked if locked is not None else max(total - free, 0.0),
                total=total,
                exchange_asset=asset if asset != token else None,
                account=account,
            )
        )
    return out


def position_from_ccxt(raw: dict, market: str,
                       units: ContractUnits | None = None) -> Position | None:
    """A position in base units: with ``units``, an inverse contract's at the mark price
    (else the entry price); without, ccxt's ``contractSize`` (linear contracts)."""
    contracts = _f(raw.get("contracts")) or 0.0
    if contracts == 0:
        return None
    if units is not None:
        size = units.to_base(contracts, _f(raw.get("markPrice")) or _f(raw.get("entryPrice")))
    else:
        size = contracts * (_f(raw.get("contractSize")) or 1.0)
    return Position(
        market=market,
        side=PositionSide.SHORT if raw.get("side") == "short" else PositionSide.LONG,
        quantity=abs(size),
        entry_price=_f(raw.get("entryPrice")),
        mark_price=_f(raw.get("markPrice")),
        unrealized_pnl=_f(raw.get("unrealizedPnl")),
        leverage=_f(raw.get("leverage")),
        liquidation_price=_f(raw.get("liquidationPrice")),
        margin_type=str(raw["marginMode"]).upper().replace("CROSSED", "CROSS")
        if raw.get("marginMode")
        else None,
    )
