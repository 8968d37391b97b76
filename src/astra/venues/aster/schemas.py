"""Aster wire messages as msgspec Structs, named after the venue's own docs.

Field names are the venue's (single letters included) so a Struct encodes to, and decodes
from, exactly the documented payload. The simulator encodes these; the Aster feed handler
decodes them. Where the spot and futures docs differ, the difference is kept visible:
spot partial depth carries ``bids``/``asks`` while futures partial depth and every diff
depth carry ``b``/``a`` (ccxt parses ``b``/``a`` for both; the docs win).

Prices and quantities are decimal strings, as on the wire.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from astra.core import Side
from astra.core import Trade as Trade_

__all__ = [
    "AggTrade",
    "BookTicker",
    "DepthSnapshot",
    "DepthUpdate",
    "ForceOrder",
    "ForceOrderEvent",
    "Kline",
    "KlineEvent",
    "MarkPriceUpdate",
    "MiniTicker",
    "SpotPartialDepth",
    "Ticker24hr",
    "Trade",
    "TradePro",
]

PriceLevel = tuple[str, str]


class DepthUpdate(msgspec.Struct, kw_only=True, gc=False):
    """``<symbol>@depth[@100ms]`` diff, and futures ``<symbol>@depth<N>`` partial depth.

    ``U``/``u`` are the first and last update ids in the event; ``pu`` is the previous
    event's ``u``. Quantities are absolute; ``"0"`` removes the level. Binance spot, whose
    streams share this shape, sends neither ``T`` nor ``pu``.
    """

    e: Literal["depthUpdate"]
    E: int
    T: int | UnsetType = UNSET
    s: str
    U: int
    u: int
    pu: int | UnsetType = UNSET
    b: list[PriceLevel]
    a: list[PriceLevel]

    def to_changes(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Bid and ask changes as (price, quantity) floats; quantity 0 deletes the level."""
        return (
            [(float(p), float(q)) for p, q in self.b],
            [(float(p), float(q)) for p, q in self.a],
        )


class SpotPartialDepth(msgspec.Struct, gc=False):
    """Spot ``<symbol>@depth<5|10|20>[@100ms]``: the top levels, keyed ``bids``/``asks``."""

    e: Literal["depthUpdate"]
    E: int
    T: int
    s: str
    U: int
    u: int
    pu: int
    bids: list[PriceLevel]
    asks: list[PriceLevel]


class DepthSnapshot(msgspec.Struct, kw_only=True, gc=False):
    """``GET /api/v1/depth`` and ``GET /fapi/v1/depth`` response (Binance spot: no E/T)."""

    lastUpdateId: int
    E: int | UnsetType = UNSET
    T: int | UnsetType = UNSET
    bids: list[PriceLevel]
    asks: list[PriceLevel]


class AggTrade(msgspec.Struct, gc=False):
    """``<symbol>@aggTrade``: fills of one taker order at one price. ``m``: buyer is maker."""

    e: Literal["aggTrade"]
    E: int
    s: str
    a: int
    p: str
    q: str
    f: int
    l: int  # noqa: E741 - the venue's field name
    T: int
    m: bool
    M: bool | UnsetType = UNSET  # spot only ("ignore")

    def to_trade(self) -> Trade_:
        """Our model: the taker sold when the buyer was the maker."""
        return Trade_(
            price=float(self.p),
            quantity=float(self.q),
            side=Side.SELL if self.m else Side.BUY,
            time=self.T,
            trade_id=str(self.a),
        )


class Trade(msgspec.Struct, gc=False):
    """``<symbol>@trade``: one match between one taker and one maker."""

    e: Literal["trade"]
    E: int
    s: str
    t: int
    p: str
    q: str
    T: int
    m: bool


class TradePro(msgspec.Struct, gc=False):
    """``<symbol>@tradepro``: a trade with its transaction hash ``h`` and its participants
    ``m`` (taker address, maker address; ``"hidden"`` in the docs' example)."""

    e: Literal["tradepro"]
    E: int
    T: int
    s: str
    t: int
    p: str
    q: str
    h: str
    m: tuple[str, str]


class BookTicker(msgspec.Struct, gc=False, omit_defaults=True):
    """``<symbol>@bookTicker``. Futures add ``e``, ``E`` and ``T``; spot sends neither."""

    u: int
    s: str
    b: str
    B: str
    a: str
    A: str
    e: Literal["bookTicker"] | UnsetType = UNSET
    E: int | UnsetType = UNSET
    T: int | UnsetType = UNSET


class Kline(msgspec.Struct, gc=False):
    t: int
    T: int
    s: str
    i: str
    f: int
    L: int
    o: str
    c: str
    h: str
    l: str  # noqa: E741 - the venue's field name
    v: str
    n: int
    x: bool
    q: str
    V: str
    Q: str
    B: str = "0"


class KlineEvent(msgspec.Struct, gc=False):
    """``<symbol>@kline_<interval>``: the current candle."""

    e: Literal["kline"]
    E: int
    s: str
    k: Kline


class MiniTicker(msgspec.Struct, gc=False):
    """``<symbol>@miniTicker`` and the elements of ``!miniTicker@arr``."""

    e: Literal["24hrMiniTicker"]
    E: int
    s: str
    c: str
    o: str
    h: str
    l: str  # noqa: E741 - the venue's field name
    v: str
    q: str


class Ticker24hr(msgspec.Struct, gc=False):
    """``<symbol>@ticker`` and the elements of ``!ticker@arr``."""

    e: Literal["24hrTicker"]
    E: int
    s: str
    p: str
    P: str
    w: str
    c: str
    Q: str
    o: str
    h: str
    l: str  # noqa: E741 - the venue's field name
    v: str
    q: str
    O: int  # noqa: E741 - the venue's field name
    C: int
    F: int
    L: int
    n: int


class MarkPriceUpdate(msgspec.Struct, gc=False):
    """Futures ``<symbol>@markPrice[@1s]`` and the elements of ``!markPrice@arr``."""

    e: Literal["markPriceUpdate"]
    E: int
    s: str
    p: str
    i: str
    P: str
    r: str
    T: int


class ForceOrder(msgspec.Struct, gc=False):
    """The ``o`` of a futures ``forceOrder`` event: one liquidation order."""

    s: str
    S: Literal["BUY", "SELL"]
    o: str  # order type
    f: str  # time in force
    q: str  # original quantity
    p: str
    ap: str  # average price
    X: str  # order status
    l: str  # noqa: E741 - the venue's field name: last filled quantity
    z: str  # filled accumulated quantity
    T: int  # trade time


class ForceOrderEvent(msgspec.Struct, gc=False):
    """Futures ``<symbol>@forceOrder`` and ``!forceOrder@arr`` (one event per liquidation:
    the latest of each symbol per second)."""

    e: Literal["forceOrder"]
    E: int
    o: ForceOrder
