"""Binance wire messages as msgspec Structs, named after the venue's own docs.

Spot, USD-M and COIN-M speak the stream family Aster copied, so their messages are Aster's
Structs, re-exported here: ``DepthUpdate`` (``<symbol>@depth@100ms``; spot sends neither
``T`` nor ``pu``, COIN-M adds ``ps``, which is ignored) and ``AggTrade``
(``<symbol>@aggTrade``). Options differ only in trades, defined below. Prices and
quantities are decimal strings, as on the wire.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from astra.core import Side, Trade
from astra.venues.aster.schemas import AggTrade, DepthSnapshot, DepthUpdate

__all__ = ["AggTrade", "DepthSnapshot", "DepthUpdate", "OptionRecentTrade", "OptionTrade"]


class OptionTrade(msgspec.Struct, gc=False):
    """Options ``<symbol>@optionTrade``: one trade. ``m``: the buyer is the maker;
    ``X`` is ``MARKET`` (order book) or ``BLOCK`` (block trade)."""

    e: Literal["trade"]
    E: int
    T: int
    s: str
    t: int
    p: str
    q: str
    m: bool
    X: str = "MARKET"
    S: str = ""

    def to_trade(self) -> Trade:
        return Trade(
            price=float(self.p),
            quantity=float(self.q),
            side=Side.SELL if self.m else Side.BUY,
            time=self.T,
            trade_id=str(self.t),
        )


class OptionRecentTrade(msgspec.Struct, gc=False):
    """An element of options ``GET /eapi/v1/trades``; ``side`` is the taker's: 1 buy, -1 sell."""

    id: int | str
    price: str
    qty: str
    side: int
    time: int
    symbol: str = ""
    quoteQty: str = ""
    tradeId: int | str | None = None

    def to_trade(self) -> Trade:
        return Trade(
            price=float(self.price),
            quantity=float(self.qty),
            side=Side.BUY if self.side > 0 else Side.SELL,
            time=self.time,
            trade_id=str(self.tradeId if self.tradeId is not None else self.id),
        )
