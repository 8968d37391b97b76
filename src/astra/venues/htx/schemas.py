"""HTX (Huobi) market-data messages as msgspec Structs, named after the venue's docs.

Every WebSocket frame HTX sends is gzip-compressed JSON. One connection carries one kind of
topic here, so each kind has its own envelope (``MbpMessage``, ``DepthMessage``,
``TradeMessage``) holding every shape that can arrive on it: a push (``ch`` + ``tick``), a
heartbeat (``ping``), a ``req`` reply (``rep`` + ``data``), a ``sub`` acknowledgement
(``subbed``) or an error (``status: "error"``, ``err-code``, ``err-msg``). One decode per frame.

Prices and quantities arrive as JSON numbers on the spot feeds; some contract endpoints send
them as strings, so decoders are built with ``strict=False`` (numeric strings become floats).
Book quantities are in the venue's unit: base asset on spot, contracts on swaps.
"""

from __future__ import annotations

import msgspec

from astra.core import Side
from astra.core import Trade as Trade_

__all__ = [
    "DepthMessage",
    "DepthTick",
    "MbpMessage",
    "MbpTick",
    "TradeDetail",
    "TradeHistory",
    "TradeMessage",
    "TradeTick",
]

Level = tuple[float, float]  # [price, size]
_encode = msgspec.json.Encoder().encode


class _Envelope(msgspec.Struct, kw_only=True, gc=False):
    """The fields every HTX market-data frame may carry."""

    ping: int | None = None  # heartbeat: answer {"pong": ping} or be disconnected
    ch: str | None = None  # topic of a push
    ts: int = 0  # server time (ms)
    id: str | int | None = None  # echo of the client's request id
    rep: str | None = None  # topic of a req reply
    subbed: str | None = None  # topic of a sub acknowledgement
    status: str | None = None  # "ok" | "error" on replies and acknowledgements
    err_code: str | int | None = msgspec.field(name="err-code", default=None)
    err_msg: str | None = msgspec.field(name="err-msg", default=None)


class MbpTick(msgspec.Struct, kw_only=True, gc=False):
    """``market.$symbol.mbp.$levels``: an increment (``tick``, with ``prevSeqNum``) or the
    full refresh returned by ``req`` on the same topic (``data``, without ``prevSeqNum``).

    Sizes are absolute; size 0 removes the level. A 5-level increment may carry one side only.
    """

    seqNum: int
    prevSeqNum: int | None = None
    bids: list[Level] = []
    asks: list[Level] = []

    def to_changes(self) -> tuple[list[Level], list[Level]]:
        """Bid and ask changes as (price, size) floats, straight from the decoder."""
        return self.bids, self.asks


class MbpMessage(_Envelope, kw_only=True, gc=False):
    tick: MbpTick | None = None  # push
    data: MbpTick | None = None  # req reply


class DepthTick(msgspec.Struct, kw_only=True, gc=False):
    """``market.$symbol.depth.step0`` (spot and contracts): the whole aggregated book, up to
    150 levels a side. Each side is kept as its JSON text (``[[price, size], ...]``, numbers
    or numeric strings): ``FullBookDiff`` compares it with the previous push's text and parses
    only the levels that changed (``fullbook.py``). ``of`` builds one from levels.

    Spot: ``version`` increases from one push to the next (not by 1). Contracts (coin- and
    USDT-margined): ``version`` and ``id`` are the push's epoch second, shared by every push
    (one per ~100 ms) within that second; ``mrid`` (documented as the match id, "unique
    identification") is what orders the pushes. ``ts`` (ms) is when the book was taken
    and is not monotonic (recorded: 8 ms backwards with ``mrid`` going forwards)."""

    bids: msgspec.Raw = msgspec.Raw(b"[]")
    asks: msgspec.Raw = msgspec.Raw(b"[]")
    version: int
    mrid: int | None = None  # contracts only
    ts: int = 0

    @classmethod
    def of(
        cls,
        bids: list[Level],
        asks: list[Level],
        *,
        version: int,
        mrid: int | None = None,
        ts: int = 0,
    ) -> DepthTick:
        """The push of these levels, as the decoder would give it."""
        bids_text, asks_text = msgspec.Raw(_encode(bids)), msgspec.Raw(_encode(asks))
        return cls(bids=bids_text, asks=asks_text, version=version, mrid=mrid, ts=ts)


class DepthMessage(_Envelope, kw_only=True, gc=False):
    tick: DepthTick | None = None


class TradeDetail(msgspec.Struct, kw_only=True, gc=False):
    """One fill of ``market.$symbol.trade.detail`` (and of the REST trade history).
    ``direction`` is the taker's side. Spot: ``amount`` in base; the trade id is ``tradeId``
    on the stream and ``trade-id`` in the REST history (``id`` is a legacy composite that
    differs from it, so a trade seen on both paths would not match by ``id``); swaps:
    ``amount`` in contracts, ``quantity`` in coins, only ``id`` (the same on both paths)."""

    id: int | float | None = None
    ts: int
    price: float
    amount: float
    direction: str
    tradeId: int | None = None
    trade_id: int | None = msgspec.field(name="trade-id", default=None)  # REST spot
    quantity: float | None = None

    def to_trade(self) -> Trade_:
        trade_id = self.tradeId if self.tradeId is not None else self.trade_id
        if trade_id is None:
            trade_id = self.id
        if isinstance(trade_id, float):
            trade_id = int(trade_id)
        return Trade_(
            price=self.price,
            quantity=self.amount,
            side=Side.BUY if self.direction == "buy" else Side.SELL,
            time=self.ts,
            trade_id=None if trade_id is None else str(trade_id),
        )


class TradeTick(msgspec.Struct, kw_only=True, gc=False):
    id: int | None = None
    ts: int = 0
    data: list[TradeDetail] = []


class TradeMessage(_Envelope, kw_only=True, gc=False):
    tick: TradeTick | None = None


class TradeHistory(msgspec.Struct, kw_only=True, gc=False):
    """``GET /market/history/trade`` (spot) and ``/swap-ex|linear-swap-ex/market/history/
    trade`` (swaps): batches of fills, newest batch first."""

    status: str
    data: list[TradeTick] = []
    err_code: str | int | None = msgspec.field(name="err-code", default=None)
    err_msg: str | None = msgspec.field(name="err-msg", default=None)
