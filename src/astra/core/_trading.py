"""msgspec models of Astra's private (trading) API: order requests, orders, fills, balances and
positions, normalized across venues.

Same conventions as ``_models.py``: snake_case attributes, the seed's camelCase on the wire,
``None`` fields omitted, enums that are their wire strings, f64 prices and quantities,
integer millisecond timestamps. ``PlaceOrder`` rejects unknown fields, so a misspelt
``clientOrderID`` is a 400 rather than an order silently placed without its idempotency key.

Invariants of a normalized ``Order``: ``0 <= filled_quantity <= quantity``; ``status`` is
``UNKNOWN`` only while the venue's answer is outstanding (a timeout after sending), never
for an order the venue refused (that is ``REJECTED``).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from ._models import Side

__all__ = [
    "Balance",
    "BalancesMessage",
    "Fill",
    "FillsMessage",
    "Liquidity",
    "Order",
    "OrderStatus",
    "OrderType",
    "OrdersMessage",
    "PlaceOrder",
    "Position",
    "PositionSide",
    "ResyncMessage",
    "TimeInForce",
]


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    STOP_LIMIT = "STOP_LIMIT"
    STOP_MARKET = "STOP_MARKET"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class OrderStatus(StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    UNKNOWN = "UNKNOWN"  # sent, outcome not known yet (venue timeout); reconciled later


class Liquidity(StrEnum):
    MAKER = "MAKER"
    TAKER = "TAKER"


class PositionSide(StrEnum):
    LONG = "LONG"
    SHORT = "SHORT"


_STRUCT = dict(kw_only=True, omit_defaults=True, rename="camel")


class PlaceOrder(msgspec.Struct, forbid_unknown_fields=True, **_STRUCT):
    """``POST /orders`` body."""

    market: str
    side: Side
    type: OrderType
    quantity: float
    price: float | None = None
    stop_price: float | None = None
    time_in_force: TimeInForce | None = None
    post_only: bool = False
    reduce_only: bool = False
    client_order_id: str | None = None


class Order(msgspec.Struct, **_STRUCT):
    order_id: str | None  # None only while the status is UNKNOWN
    client_order_id: str
    market: str
    side: Side
    type: OrderType
    quantity: float
    filled_quantity: float
    status: OrderStatus
    price: float | None = None
    stop_price: float | None = None
    average_price: float | None = None
    time_in_force: TimeInForce | None = None
    post_only: bool | None = None
    reduce_only: bool | None = None
    created_at: int | None = None
    updated_at: int | None = None


class Fill(msgspec.Struct, **_STRUCT):
    fill_id: str
    order_id: str
    market: str
    side: Side
    price: float
    quantity: float
    time: int
    fee: float | None = None
    fee_asset: str | None = None  # AbstractToken
    liquidity: Liquidity | None = None
    client_order_id: str | None = None


class Balance(msgspec.Struct, **_STRUCT):
    asset: str  # AbstractToken
    free: float
    locked: float
    total: float
    exchange_asset: str | None = None  # the venue's own name when it differs
    # Which venue account holds it, as the ``GET /balances?account=`` value that reads that
    # account (ccxt's ``type``: "spot", "swap", "future"): spot and futures USDT both arrive
    # as "USDT", and a client told to resync must know which account to re-read. None: the
    # gateway has no ``account=`` naming it (e.g. Binance COIN-M).
    account: str | None = None


class Position(msgspec.Struct, **_STRUCT):
    market: str
    side: PositionSide
    quantity: float  # > 0; the side says which way
    entry_price: float | None = None
    mark_price: float | None = None
    unrealized_pnl: float | None = None
    leverage: float | None = None
    liquidation_price: float | None = None
    margin_type: str | None = None  # CROSS or ISOLATED


# Private WebSocket messages (``WS /ws?dataType=ORDERS|FILLS|BALANCES&exchange=``).
class OrdersMessage(msgspec.Struct, tag="orders", tag_field="type", **_STRUCT):
    orders: list[Order]


class FillsMessage(msgspec.Struct, tag="fills", tag_field="type", **_STRUCT):
    fills: list[Fill]


class BalancesMessage(msgspec.Struct, tag="balances", tag_field="type", **_STRUCT):
    exchange: str
    balances: list[Balance]


class ResyncMessage(msgspec.Struct, tag="resync", tag_field="type", **_STRUCT):
    """The venue's user stream restarted: events may have been missed; re-read over REST."""

    exchange: str
    reason: str
