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
    "ExecutionReport",
    "Fill",
    "FillsMessage",
    "Liquidity",
    "Order",
    "OrderStatus",
    "OrderType",
    "OrdersMessage",
    "PlaceOrder",
    "PlanMember",
    "PlannedLeg",
    "Position",
    "PositionSide",
    "ResyncMessage",
    "SmartChild",
    "SmartOrder",
    "SmartOrderRequest",
    "SmartPlan",
    "TimeInForce",
    "VenueFills",
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


# -- routed (SMART) orders: ``POST /orders`` on a ``SMART-`` market ----------------------------
# A parent order on the consolidated market, executed as child orders on its member venues
# (``astra.routing``). Quantities are base units; fees are quote units at each venue's
# published rate; bps are positive when worse for the taker (``vsBestSingleBps``: positive
# when the routed order did better than the best single venue would have).


class SmartOrderRequest(PlaceOrder, forbid_unknown_fields=True, **_STRUCT):
    """``POST /orders`` body on a ``SMART-`` market: ``PlaceOrder`` plus the router's fields."""

    venues: list[str] | None = None  # member venue codes to route to (default: every member)
    max_slippage_bps: float | None = None  # bound around the arrival consolidated mid
    dry_run: bool = False  # plan only: nothing is sent, nothing journaled


class SmartChild(msgspec.Struct, **_STRUCT):
    """One child order of a routed order, as journaled and as its venue last reported it."""

    client_order_id: str
    venue: str
    market: str
    round: int  # 1..rounds for the IOC rounds; rounds + 1 for the GTC rest
    leg: int
    side: Side
    time_in_force: TimeInForce
    quantity: float
    price: float  # its LIMIT price (the worst venue price the leg takes)
    status: OrderStatus
    filled_quantity: float = 0.0
    order_id: str | None = None
    average_price: float | None = None
    fee: float | None = None  # estimated: filled notional x the venue's published rate
    latency_ms: float | None = None  # from send to the venue's answer
    error: str | None = None


class VenueFills(msgspec.Struct, **_STRUCT):
    venue: str
    quantity: float
    notional: float
    fee: float
    average_price: float | None = None


class ExecutionReport(msgspec.Struct, **_STRUCT):
    """What a routed order did: fills per venue, prices, fees and slippage."""

    filled_quantity: float
    notional: float
    fees: float
    rounds: int
    fills: list[VenueFills]
    average_price: float | None = None
    net_average_price: float | None = None  # fees included
    arrival_mid: float | None = None  # the consolidated mid when the order arrived
    slippage_bps: float | None = None  # average price vs the arrival mid
    best_single_venue: str | None = None
    best_single_net_price: float | None = None  # that venue alone, same size, fees included
    vs_best_single_bps: float | None = None  # positive: the routed order did better


class SmartOrder(Order, **_STRUCT):
    """The parent order on a ``SMART-`` market (``orderId`` ``sor-...``) with its children."""

    venues: list[str] | None = None
    max_slippage_bps: float | None = None
    children: list[SmartChild] = []
    report: ExecutionReport | None = None


class PlannedLeg(msgspec.Struct, **_STRUCT):
    venue: str
    market: str
    quantity: float
    limit_price: float
    average_price: float
    notional: float
    fee: float


class PlanMember(msgspec.Struct, **_STRUCT):
    """A member venue as the planner saw it: its book state and the capacity it was given."""

    venue: str
    market: str
    state: str  # the book's state, or why the venue was left out
    taker_fee: float | None = None
    capacity: float | None = None  # free balance usable there
    capacity_asset: str | None = None
    reason: str | None = None  # why it was not planned on (no credentials, balance unread...)


class SmartPlan(msgspec.Struct, **_STRUCT):
    """``dryRun: true``: the plan the router would execute now; nothing was sent."""

    market: str
    side: Side
    type: OrderType
    requested: float
    quantity: float
    unfilled: float
    legs: list[PlannedLeg]
    members: list[PlanMember]
    fees: float
    dry_run: bool  # always true: says what this answer is
    time_in_force: TimeInForce | None = None
    average_price: float | None = None
    net_average_price: float | None = None
    arrival_mid: float | None = None
    slippage_bps: float | None = None
    best_single_venue: str | None = None
    best_single_net_price: float | None = None
    vs_best_single_bps: float | None = None
    price_bound: float | None = None
    limited_by: str | None = None
