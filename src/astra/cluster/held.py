"""What a feed node holds per wanted market (``FeedPublisher``'s listeners on the engine's
channels: each engine event becomes one wire message with the market's next ``seq``), and the
JetStream stream the messages go to.

Invariants: every book message of a market — snapshot, delta, resync — takes the next
``seq`` of that market (trades their own), under the publisher's ``epoch``; a listener call
never awaits (``Publisher._send`` only queues).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import msgspec
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from astra.core import Trade
from astra.marketdata.channels import BookChannel
from astra.marketdata.trades import TradeChannel

from . import wire
from .wire import BookDelta, BookResync, ClusterConfig, TradeBatch, TradeConnection

if TYPE_CHECKING:
    import asyncio

    from nats.js import JetStreamContext

__all__ = ["HeldBook", "HeldMarket", "HeldTrades", "Publisher", "ensure_stream", "trade_state"]

_STREAM_IN_USE = 10058  # JetStream: "stream name already in use with a different configuration"


class Publisher(Protocol):
    """What a held market needs of its ``FeedPublisher``."""

    epoch: str
    _clock: Callable[[], float]

    def _send(self, held: HeldMarket, subject: str, message: msgspec.Struct) -> None: ...

    def _snapshot(self, held: HeldBook) -> None: ...


async def ensure_stream(js: JetStreamContext, config: ClusterConfig) -> None:
    """Create ``wire.STREAM`` (or bring an existing one to this config): both subject trees,
    memory storage, ``max_age`` = ``retention_seconds``, discard old, direct gets allowed (an
    edge reads a subject's last message). Idempotent: any number of feeds may call it."""
    stream = StreamConfig(
        name=wire.STREAM, subjects=[wire.BOOK_SUBJECTS, wire.TRADE_SUBJECTS],
        storage=StorageType.MEMORY, max_age=config.retention_seconds,
        discard=DiscardPolicy.OLD, allow_direct=True)
    try:
        await js.add_stream(stream)  # the same config again is accepted as is
    except BadRequestError as exc:
        if exc.err_code != _STREAM_IN_USE:
            raise
        await js.update_stream(stream)


class HeldMarket:
    """One held market (a listener of its channel): subjects, seq and the clock's times."""

    __slots__ = ("channel", "key", "pub", "sent_at", "seq", "snap", "snapshot_at",
                 "snapshot_later", "subject", "symbol", "wanted_at")

    def __init__(self, pub: Publisher, key: str, symbol: str,
                 channel: BookChannel | TradeChannel, subject: str, snap: str, seq: int) -> None:
        self.pub, self.key, self.symbol, self.channel = pub, key, symbol, channel
        self.subject, self.snap = subject, snap  # upd (or trade) subject; snap: "" for trades
        self.seq = seq
        self.sent_at = self.wanted_at = self.snapshot_at = pub._clock()
        self.snapshot_later: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<feed {self.key} seq={self.seq}>"

    def synced(self) -> bool:
        raise NotImplementedError


class HeldBook(HeldMarket):
    __slots__ = ()
    channel: BookChannel

    def book_snapshot(self, channel: BookChannel) -> None:
        self.pub._snapshot(self)

    def book_update(self, channel: BookChannel, bids: list[tuple[float, float]],
                    asks: list[tuple[float, float]]) -> None:
        book = channel.book
        self.seq += 1
        self.pub._send(self, self.subject, BookDelta(
            self.pub.epoch, self.seq, book.update_id, book.timestamp, bids, asks,
            time.time_ns()))

    def book_state(self, channel: BookChannel) -> None:
        if channel.state == "synced":
            return  # the snapshot that synced it says so
        self.seq += 1
        self.pub._send(self, self.subject, BookResync(
            self.pub.epoch, self.seq, (channel.reason or channel.state)[:500], time.time_ns()))

    def synced(self) -> bool:
        return self.channel.synced.is_set()


class HeldTrades(HeldMarket):
    __slots__ = ()
    channel: TradeChannel

    def trade_batch(self, channel: TradeChannel, trades: list[Trade]) -> None:
        self.seq += 1
        self.pub._send(self, self.subject, TradeBatch(
            self.pub.epoch, self.seq, trades, time.time_ns()))

    def trade_connection(self, channel: TradeChannel, up: bool, reason: str) -> None:
        self.seq += 1
        self.pub._send(self, self.subject, TradeConnection(
            self.pub.epoch, self.seq, up, reason[:500], time.time_ns()))

    def synced(self) -> bool:
        return self.channel.live is not False  # None: not reported (yet, or ever)


def trade_state(channel: TradeChannel) -> str:
    return {True: "synced", False: "disconnected", None: "connecting"}[channel.live]


