"""OKX v5 public WebSocket and REST messages as msgspec Structs, named after OKX's docs.

Field names are OKX's own (``instId``, ``seqId``, ``px``, ``sz``) so a Struct decodes from,
and encodes to, exactly the documented payload. Prices and sizes stay decimal strings, as on
the wire: the book checksum is computed over the strings as sent, never over re-formatted
floats. Sizes of SWAP/FUTURES/OPTION are in contracts (see ``MarketMetadata.contract_size``).
A book message's ``bids``/``asks`` stay the JSON text OKX sent (``msgspec.Raw``): the book
side (``book.py``) parses them itself, so a message costs no Python object per level and a
malformed level resyncs its market instead of failing the connection's decode. ``BookLevel``
is that text's shape (price and size kept, the rest skipped), used by the pure-Python side.

Every push has the same envelope (``Push``): ``arg`` names the channel and instrument,
``action`` is ``snapshot``/``update`` on the incremental book channels, ``data`` is a list.
Control messages (``event``: ``subscribe``, ``unsubscribe``, ``error``, ``notice``) share the
envelope and carry no ``data``. ``"ping"``/``"pong"`` are bare text frames, not JSON.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from astra.core import Side, Trade

__all__ = ["Arg", "BookData", "BookLevel", "Push", "SubscribeRequest", "TradeData"]

T = TypeVar("T")


class BookLevel(msgspec.Struct, array_like=True, gc=False):
    """A level as OKX sends it, ``[price, size, "0" (deprecated), number of orders]``: the
    first two are kept as text (the checksum is over that text), the rest is not decoded.
    Missing fields decode as "" so a malformed level fails its market's float parse (a
    resync of that market) instead of the whole connection's decode."""

    px: str = ""
    sz: str = ""


class Arg(msgspec.Struct, frozen=True, gc=False):
    """``{"channel": "books", "instId": "BTC-USDT"}``: what a push or an ack is about."""

    channel: str
    instId: str = ""


class BookData(msgspec.Struct, kw_only=True, gc=False):
    """One element of ``data`` on ``books`` / ``books-l2-tbt`` / ``books50-l2-tbt``.

    ``bids``/``asks`` are the levels' JSON (``msgspec.Raw``: best first, a list of
    ``BookLevel``), parsed by ``book.BookSide``; ``msgspec.json.decode(data.bids,
    type=list[BookLevel])`` reads them as Structs.

    ``seqId`` numbers this message and ``prevSeqId`` names the previous one (``-1`` on a
    snapshot); both are absent in recordings older than 2022-06. ``checksum`` is the signed
    CRC32 of the top 25 levels after applying this message; OKX sends 0 once it deprecates
    the field (announced for June 2026), and 0 is never checked.
    """

    asks: msgspec.Raw  # [["px", "sz", "0", "n"], ...] as sent: see BookLevel
    bids: msgspec.Raw
    ts: str
    checksum: int = 0
    seqId: int | UnsetType = UNSET
    prevSeqId: int | UnsetType = UNSET


class TradeData(msgspec.Struct, kw_only=True, gc=False):
    """``trades`` push element and ``GET /api/v5/market/trades`` row. ``side`` is the
    taker's; ``count`` (push only) is how many fills OKX aggregated into this one."""

    instId: str
    tradeId: str
    px: str
    sz: str
    side: Literal["buy", "sell"]
    ts: str
    count: str | UnsetType = UNSET

    def to_trade(self) -> Trade:
        return Trade(
            price=float(self.px),
            quantity=float(self.sz),
            side=Side.BUY if self.side == "buy" else Side.SELL,
            time=int(self.ts),
            trade_id=self.tradeId,
        )


class Push(msgspec.Struct, Generic[T], kw_only=True, gc=False):
    """Every WebSocket JSON frame: a data push (``arg`` + ``data``) or a control ``event``."""

    arg: Arg | None = None
    action: str = ""  # "snapshot" | "update" on incremental book channels
    data: list[T] = []
    event: str = ""  # "subscribe" | "unsubscribe" | "error" | "notice"
    code: str = ""
    msg: str = ""
    connId: str = ""


class SubscribeRequest(msgspec.Struct, gc=False):
    """``{"op": "subscribe", "args": [{"channel": .., "instId": ..}, ..]}`` (or unsubscribe)."""

    op: Literal["subscribe", "unsubscribe"]
    args: list[Arg]
