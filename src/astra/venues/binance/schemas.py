"""Binance wire messages as msgspec Structs, named after the venue's own docs.

Spot, USD-M and COIN-M speak the stream family Aster copied, so their messages are Aster's
Structs, re-exported here: ``DepthUpdate`` (``<symbol>@depth@100ms``; spot sends neither
``T`` nor ``pu``, COIN-M adds ``ps``, which is ignored) and ``AggTrade``
(``<symbol>@aggTrade``). Options differ only in trades, defined below. Prices and
quantities are decimal strings, as on the wire.

Every feed runs on a combined-stream connection (``/stream``), which wraps each event as
``{"stream": name, "data": event}`` (``CombinedStreamEvent``; ``data`` is kept raw and decoded
by the market's own Struct) and answers live ``StreamRequest``s (``SUBSCRIBE``/``UNSUBSCRIBE``)
with ``{"result": null, "id": n}`` or an error ``{"code", "msg", "id"}``, which share that
Struct's optional fields: one decode per frame tells them apart.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from astra.core import Side, Trade
from astra.venues.aster.schemas import AggTrade, DepthSnapshot, DepthUpdate

__all__ = [
    "AggTrade",
    "CombinedStreamEvent",
    "DepthSnapshot",
    "DepthUpdate",
    "OptionRecentTrade",
    "OptionTrade",
    "RequestError",
    "StreamRequest",
]


class StreamRequest(msgspec.Struct, gc=False):
    """A live request on a stream connection: ``SUBSCRIBE``/``UNSUBSCRIBE`` of ``params``
    (stream names); Binance answers with the same ``id``."""

    method: Literal["SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS"]
    params: list[str]
    id: int


class RequestError(msgspec.Struct, gc=False):
    """The ``error`` object some Binance endpoints nest instead of top-level code/msg."""

    code: int = 0
    msg: str = ""


class CombinedStreamEvent(msgspec.Struct, gc=False):
    """A frame on a ``/stream`` connection. An event: ``stream`` and ``data``. The answer to
    a ``StreamRequest``: ``id`` with ``result`` (null on success) or, refused, ``code`` and
    ``msg`` (or a nested ``error``). ``e == "serverShutdown"`` (spot): the server is about to
    close the connection."""

    stream: str = ""
    data: msgspec.Raw = msgspec.Raw()
    id: int | str | None = None
    result: Any = None
    code: int | UnsetType = UNSET
    msg: str = ""
    error: RequestError | None = None
    e: str = ""

    def refusal(self) -> str | None:
        """Why the request ``id`` was refused, or None when it succeeded."""
        if self.error is not None:
            return f"{self.error.code}: {self.error.msg}"
        if self.code is not UNSET:
            return f"{self.code}: {self.msg}"
        return None


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
