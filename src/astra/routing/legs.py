"""From member books and balances to the planner's inputs, and from a plan to child orders.

Pure helpers of the router (``router.py``): no I/O here.

Invariants:
- Every float from a book, a balance or market metadata becomes a ``Decimal`` through
  ``str()`` (the shortest repr: ``0.1`` stays ``0.1``), so tick and lot multiples stay exact.
- A child's client order id is its parent's plus ``-<round><leg:02d>``: at most
  ``PARENT_CLIENT_ID_MAX`` + 4 = 32 characters of ``[A-Za-z0-9_-]``, inside every Binance-like
  venue's 36-character rule (SIM*, Aster, Binance) and KuCoin's 40. A (parent, round, leg)
  is journaled once, so a child id is never reused for another order.
- Capacity is the free balance the order would spend there: the quote asset for a spot buy,
  the base asset for a spot sell, the margin asset for a perpetual (either side), at 1x
  leverage unless the caller knows the venue's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import msgspec

from astra.core import AssetType, MarketMetadata
from astra.core._trading import Balance, OrderType, PlaceOrder, Side, TimeInForce
from astra.marketdata.smart import MemberBook

from .plan import VenueInput

__all__ = [
    "MAX_ROUNDS",
    "PARENT_CLIENT_ID_MAX",
    "PARENT_CLIENT_ID_RE",
    "capacity_of",
    "child_client_order_id",
    "child_request",
    "dec",
    "rest_choice",
    "venue_input",
]

MAX_ROUNDS = 9  # one digit of the child id
PARENT_CLIENT_ID_MAX = 28
_NO_STEP = Decimal("1e-12")  # a venue publishing no tick or lot: the planner needs a step
PARENT_CLIENT_ID_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{PARENT_CLIENT_ID_MAX}}}")


def dec(value: float | int | str | None) -> Decimal:
    """A float as the Decimal of its shortest repr; None and 0 as 0."""
    return Decimal(str(value)) if value else Decimal(0)


def child_client_order_id(parent_cid: str, round_: int, leg: int) -> str:
    if not 1 <= round_ <= MAX_ROUNDS or not 0 <= leg <= 99:
        raise ValueError(f"round {round_} / leg {leg} out of the id scheme's range")
    return f"{parent_cid}-{round_}{leg:02d}"


def capacity_of(meta: MarketMetadata, side: str,
                balances: Iterable[Balance]) -> tuple[str, str, Decimal]:
    """``(capacity_kind, asset, free)`` of an order on ``meta`` from the account's balances."""
    if meta.asset_type is AssetType.SPOT:
        kind, asset = ("quote", meta.quote_asset) if side == Side.BUY else ("base",
                                                                            meta.base_asset)
    else:
        kind, asset = "margin", meta.margin_asset or meta.quote_asset
    free = sum((dec(b.free) for b in balances if b.asset == asset), Decimal(0))
    return kind, asset, max(free, Decimal(0))


def venue_input(book: MemberBook, side: str, kind: str, capacity: Decimal | None,
                leverage: Decimal = Decimal(1)) -> VenueInput:
    meta = book.market.metadata
    levels = book.asks if side == Side.BUY else book.bids
    return VenueInput(
        venue=book.venue,
        market=book.market.symbol,
        levels=[(dec(p), dec(q)) for p, q in levels],
        taker_fee=dec(book.taker_fee),
        tick=dec(meta.tick_size) or _NO_STEP,
        lot=dec(meta.lot_size) or _NO_STEP,
        min_quantity=dec(meta.min_quantity),
        min_notional=dec(meta.min_notional),
        capacity=capacity,
        capacity_kind=kind,
        leverage=leverage,
    )


def child_request(market: str, side: str, quantity: Decimal, price: Decimal,
                  tif: TimeInForce, client_order_id: str) -> dict:
    """The child's ``POST /orders`` body as the order journal stores it (a LIMIT order)."""
    body = PlaceOrder(market=market, side=Side(side), type=OrderType.LIMIT,
                      quantity=float(quantity), price=float(price), time_in_force=tif,
                      client_order_id=client_order_id)
    return msgspec.to_builtins(body)


def _affordable(kind: str, capacity: Decimal | None, price: Decimal, fee: Decimal,
                leverage: Decimal) -> Decimal | None:
    """Base units ``capacity`` pays for at ``price`` (None: uncapped)."""
    if capacity is None:
        return None
    if kind == "base":
        return capacity
    per_unit = price * (1 + fee) if kind == "quote" else price * (1 / leverage + fee)
    return capacity / per_unit if per_unit > 0 else Decimal(0)


def rest_choice(books: Sequence[MemberBook], capacities: Mapping[str, tuple[str, Decimal]],
                side: str, price: Decimal, quantity: Decimal,
                ) -> tuple[MemberBook, Decimal, Decimal] | None:
    """Where a GTC remainder rests: ``(member, quantity, price on its tick)`` or None.

    At the parent's price every venue quotes the same, so the best fee-adjusted price is the
    lowest maker fee (ties: the configured venue order). A venue whose capacity cannot hold the
    whole remainder is passed over for one that can; if none can, the one holding the most
    rests what it can. The price is rounded passively to the venue's tick (down for a buy,
    up for a sell) and the quantity down to its lot; below its minimums nothing rests there.
    """
    options = []
    for order, book in enumerate(books):
        if book.venue not in capacities:
            continue
        meta = book.market.metadata
        tick, lot = dec(meta.tick_size), dec(meta.lot_size)
        at = price
        if tick:
            rounding = ROUND_FLOOR if side == Side.BUY else ROUND_CEILING
            at = (price / tick).to_integral_value(rounding) * tick
        if at <= 0:
            continue
        kind, capacity = capacities[book.venue]
        fits = _affordable(kind, capacity, at, dec(book.maker_fee), Decimal(1))
        qty = quantity if fits is None else min(quantity, fits)
        if lot:
            qty = (qty / lot).to_integral_value(ROUND_FLOOR) * lot
        if qty <= 0 or qty < dec(meta.min_quantity) or qty * at < dec(meta.min_notional):
            continue
        options.append((qty < quantity, dec(book.maker_fee), -qty, order, book, qty, at))
    if not options:
        return None
    *_, book, qty, at = min(options, key=lambda o: o[:4])
    return book, qty, at
