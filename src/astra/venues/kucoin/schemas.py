"""KuCoin wire messages as msgspec Structs, named after the venue's own docs.

Field names are the venue's (camelCase included) so a Struct decodes exactly the documented
payload and encodes back to it.

- Every WebSocket frame is an ``Envelope``: ``{"type": "welcome"|"ack"|"pong"|"error"|
  "message", "id", "topic", "subject", "data"}``; for ``error`` frames ``data`` is a text.
  A shared connection decodes ``RawEnvelope`` (``data`` left raw) and hands ``data`` to the
  topic's consumer, which decodes its own Struct.
- The client sends ``Subscribe`` (``type`` ``subscribe`` or ``unsubscribe``; one channel,
  several symbols comma-joined in ``topic``), answered by an ``ack`` with the same ``id`` or
  an ``error``; and ``Ping``, answered by ``pong``.
- Spot ``/market/level2:<symbol>`` carries ``Level2`` (``changes`` per side as
  ``[price, size, sequence]`` strings); futures ``/contractMarket/level2:<symbol>`` carries
  ``ContractLevel2`` (one ``"price,side,size"`` change per ``sequence``).
- ``Level2.to_changes(after)`` / ``ContractLevel2.to_changes(after)`` return only changes
  whose own sequence is greater than ``after`` (the book's sequence), in sequence order,
  minus the documented no-op entries whose price is ``0`` (they only advance the sequence).
- Spot prices and sizes are decimal strings; futures sizes are integer lots (contracts).
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from astra.core import Side, Trade

__all__ = [
    "Bullet",
    "BulletResponse",
    "ContractExecution",
    "ContractLevel2",
    "ContractSnapshot",
    "ContractTradeHistory",
    "Envelope",
    "InstanceServer",
    "Level2",
    "Level2Changes",
    "Match",
    "Ping",
    "RawEnvelope",
    "Response",
    "SpotSnapshot",
    "SpotTradeHistory",
    "Subscribe",
]

T = TypeVar("T")
Changes = list[tuple[float, float]]
_NS_PER_MS = 1_000_000


class Envelope(msgspec.Struct, Generic[T], gc=False):
    """One WebSocket frame. ``id`` is a text on ``welcome``/``pong`` and whatever the client
    sent on ``ack``; ``code`` is set on ``error`` frames."""

    type: str
    id: str | int = ""
    topic: str = ""
    subject: str = ""
    code: int | str | UnsetType = UNSET
    data: T | str | UnsetType = UNSET


class RawEnvelope(msgspec.Struct, gc=False):
    """An ``Envelope`` whose ``data`` stays undecoded JSON (a text on ``error`` frames)."""

    type: str
    id: str | int = ""
    topic: str = ""
    subject: str = ""
    code: int | str | UnsetType = UNSET
    data: msgspec.Raw = msgspec.Raw()


class Subscribe(msgspec.Struct, gc=False):
    """A (un)subscribe request: ``topic`` is ``<channel>:<symbol>[,<symbol>...]``."""

    id: int
    type: Literal["subscribe", "unsubscribe"]
    topic: str
    privateChannel: bool = False
    response: bool = True  # ask for the ack


class Ping(msgspec.Struct, gc=False):
    id: str
    type: Literal["ping"] = "ping"


class Response(msgspec.Struct, Generic[T], gc=False):
    """A REST body: ``code`` ``"200000"`` on success, else ``msg`` says why."""

    code: str
    data: T | UnsetType = UNSET
    msg: str = ""


class InstanceServer(msgspec.Struct, gc=False):
    endpoint: str
    protocol: str = "websocket"
    encrypt: bool = True
    pingInterval: int = 18_000  # ms between client pings
    pingTimeout: int = 10_000  # ms the server waits for one


class Bullet(msgspec.Struct, gc=False):
    """``POST /api/v1/bullet-public`` data: a connect token and the servers to use it on."""

    token: str
    instanceServers: list[InstanceServer]


BulletResponse = Response[Bullet]


class Level2Changes(msgspec.Struct, gc=False):
    asks: list[tuple[str, str, str]] = []
    bids: list[tuple[str, str, str]] = []


def _spot_side(side: list[tuple[str, str, str]], after: int, all_new: bool) -> Changes:
    if len(side) > 1:  # KuCoin lists changes by sequence, but says nothing that guarantees it
        side = sorted(side, key=_sequence_of)
    out = []
    for p, s, q in side:
        price = float(p)
        # price 0: a sequence-only no-op (documented); all_new spares the int() parse.
        if price > 0 and (all_new or int(q) > after):
            out.append((price, float(s)))
    return out


def _sequence_of(change: tuple[str, str, str]) -> int:
    return int(change[2])


class Level2(msgspec.Struct, gc=False):
    """Spot ``trade.l2update``: changes ``sequenceStart..sequenceEnd``; size ``0`` deletes.
    ``time`` (ms) is absent from older sessions."""

    sequenceStart: int
    sequenceEnd: int
    symbol: str
    changes: Level2Changes
    time: int = 0

    def bounds(self) -> tuple[int, int]:
        return self.sequenceStart, self.sequenceEnd

    @property
    def timestamp(self) -> int:
        return self.time

    def to_changes(self, after: int) -> tuple[Changes, Changes]:
        """Bid and ask changes with a sequence greater than ``after``, as floats."""
        all_new = self.sequenceStart > after  # the usual case: nothing to filter by sequence
        changes = self.changes
        return _spot_side(changes.bids, after, all_new), _spot_side(changes.asks, after, all_new)


class ContractLevel2(msgspec.Struct, gc=False):
    """Futures ``level2``: one change ``"price,side,size"`` (size in lots, 0 deletes)."""

    sequence: int
    change: str
    timestamp: int = 0

    def bounds(self) -> tuple[int, int]:
        return self.sequence, self.sequence

    def to_changes(self, after: int) -> tuple[Changes, Changes]:
        if self.sequence <= after:
            return [], []
        price_text, side, size = self.change.split(",")
        price = float(price_text)
        if price <= 0:  # as on spot: a sequence-only entry
            return [], []
        level = [(price, float(size))]
        return (level, []) if side == "buy" else ([], level)


class SpotSnapshot(msgspec.Struct, gc=False):
    """``GET /api/v1/market/orderbook/level2_{20,100}`` and ``/api/v3/market/orderbook/level2``
    data. Decode with ``strict=False``: prices and sizes are strings on the wire."""

    sequence: int
    bids: Changes
    asks: Changes
    time: int = 0


class ContractSnapshot(msgspec.Struct, gc=False):
    """Futures ``GET /api/v1/level2/snapshot`` data; ``ts`` in nanoseconds. Decode with
    ``strict=False``: the docs show prices both as numbers and as strings."""

    sequence: int
    bids: Changes
    asks: Changes
    symbol: str = ""
    ts: int = 0


class Match(msgspec.Struct, gc=False):
    """Spot ``/market/match`` ``trade.l3match``; ``side`` is the taker's, ``time`` in ns."""

    symbol: str
    sequence: str
    side: str
    size: str
    price: str
    time: str | int
    tradeId: str = ""
    type: str = "match"
    takerOrderId: str = ""
    makerOrderId: str = ""

    def to_trade(self) -> Trade:
        # ``sequence`` is the id REST's trade history also carries (current venue: tradeId
        # equals it), so a trade seen on both paths dedups by the same id.
        return Trade(
            price=float(self.price),
            quantity=float(self.size),
            side=Side.BUY if self.side == "buy" else Side.SELL,
            time=int(self.time) // _NS_PER_MS,
            trade_id=self.sequence,
        )


class ContractExecution(msgspec.Struct, gc=False):
    """Futures ``/contractMarket/execution`` ``match``: ``size`` in lots, ``ts`` in ns."""

    symbol: str
    sequence: int
    side: str
    size: float
    price: str
    tradeId: str
    ts: int
    takerOrderId: str = ""
    makerOrderId: str = ""

    def to_trade(self) -> Trade:
        return Trade(
            price=float(self.price),
            quantity=float(self.size),
            side=Side.BUY if self.side == "buy" else Side.SELL,
            time=self.ts // _NS_PER_MS,
            trade_id=self.tradeId,
        )


class SpotTradeHistory(msgspec.Struct, gc=False):
    """``GET /api/v1/market/histories`` row (``time`` in ns, no trade id besides sequence)."""

    sequence: str
    price: str
    size: str
    side: str
    time: int

    def nanos(self) -> int:
        return self.time

    def to_trade(self) -> Trade:
        return Trade(
            price=float(self.price),
            quantity=float(self.size),
            side=Side.BUY if self.side == "buy" else Side.SELL,
            time=self.time // _NS_PER_MS,
            trade_id=self.sequence,
        )


class ContractTradeHistory(msgspec.Struct, gc=False):
    """Futures ``GET /api/v1/trade/history`` row (``ts`` in ns)."""

    sequence: int
    tradeId: str
    price: str
    size: float
    side: str
    ts: int

    def nanos(self) -> int:
        return self.ts

    def to_trade(self) -> Trade:
        return Trade(
            price=float(self.price),
            quantity=float(self.size),
            side=Side.BUY if self.side == "buy" else Side.SELL,
            time=self.ts // _NS_PER_MS,
            trade_id=self.tradeId,
        )
