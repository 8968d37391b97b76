"""What feed and edge nodes say to each other over NATS: subjects, the JetStream stream, the
messages (msgpack, array-like msgspec Structs) and the cluster's settings.

Subjects (a market symbol is one NATS token: ``[A-Z0-9-]``, no dots)::

    astra.book.<MARKET>.snap   a full book (BookSnapshot), every ``snapshot_seconds`` and on
                               every resync, and when an edge asks for one (Want.snapshot)
    astra.book.<MARKET>.upd    BookDelta, BookResync, Heartbeat (in feed order)
    astra.trade.<MARKET>       TradeBatch, TradeConnection, Heartbeat
    astra.want                 Want requests from edges (core NATS request/reply; the feed
                               answers WantReply). Every feed hears every want; the
                               market's owner answers (``owners.py``: one publisher per
                               market, decided in JetStream KV, when feeds share venues).

All of ``astra.book.>`` and ``astra.trade.>`` are captured by one JetStream stream
(``STREAM``, memory storage, ``max_age`` = ``ClusterConfig.retention_seconds``). Feeds publish
with core ``publish`` (no per-message acknowledgement wait: the stream stores what reaches
the server; a message lost on the way is a sequence gap the edge sees).

Integrity rule (the edge's): every message of one market's book — snapshot, delta, resync —
carries ``seq``, the feed node's per-market sequence, +1 per message, starting at 1 when the
feed starts the market, and the feed's ``epoch`` (a random id per feed process). Heartbeats
carry the last ``seq`` sent without taking a new one. An edge applies a delta only when its
``(epoch, seq)`` is exactly its book's ``(epoch, seq + 1)``; anything else marks the book
resyncing and asks for a snapshot, except a single repeat (a delta whose ``seq`` <= the book's
within the same epoch), which is dropped: a second one in a row means the book's seq is not
the feed's (it was pushed ahead), a gap too. A snapshot always re-bases the book (any epoch,
any seq), except the very one the book stands on. A heartbeat whose ``seq`` differs from the
book's (ahead: the tail was lost; behind: the book is not the feed's) is a gap too. A message
that does not decode (``Levels``: finite prices > 0, finite quantities >= 0) is a gap.
Silence — no message at all on a market for ``silence_seconds`` — marks the book
``disconnected`` (REST 503, WS resync) until the next snapshot. Trades carry their own
per-market ``seq`` with the same rule; a gap there is reported to the edge's trade channel as
a lost connection (its clients get the resync message, its memory is re-seeded); one repeat
is dropped, a second in a row (or a heartbeat behind) is a gap.

Book levels are in the venue's units, exactly as the feed's ``BookChannel`` applied them
(the edge's channel converts contracts to base units itself, once, as a single process does).
``sent_ns`` is the feed's ``time.time_ns()`` at publish (for latency figures only).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import msgspec

from astra.core import Trade

__all__ = [
    "STREAM",
    "TRADE_SUBJECTS",
    "WANT_SUBJECT",
    "BookDelta",
    "BookMessage",
    "BookResync",
    "BookSnapshot",
    "ClusterConfig",
    "Heartbeat",
    "TradeBatch",
    "TradeConnection",
    "TradeMessage",
    "Want",
    "WantReply",
    "book_subject",
    "decode_book",
    "decode_trade",
    "encode",
    "new_epoch",
    "trade_subject",
]

STREAM = "ASTRA_MD"
BOOK_SUBJECTS = "astra.book.>"
TRADE_SUBJECTS = "astra.trade.>"
WANT_SUBJECT = "astra.want"
NATS_URL_ENV = "ASTRA_NATS_URL"
_TOKEN = re.compile(r"[A-Z0-9][A-Z0-9-]{0,99}")

# What an edge accepts (checked by the decoder, in C): a price is a finite number > 0, a
# quantity a finite number >= 0 (0 deletes), an epoch a short id. Anything else — NaN, inf,
# a negative quantity, a megabyte of epoch — fails to decode, which the edge treats as a gap:
# it is never applied to a book served to clients. (``new_epoch`` ids are 12 characters.)
_MAX_FLOAT = 1.7976931348623157e308
Price = Annotated[float, msgspec.Meta(gt=0, le=_MAX_FLOAT)]
Quantity = Annotated[float, msgspec.Meta(ge=0, le=_MAX_FLOAT)]
Epoch = Annotated[str, msgspec.Meta(max_length=64)]
Reason = Annotated[str, msgspec.Meta(max_length=1000)]
Levels = list[tuple[Price, Quantity]]


def _token(market: str) -> str:
    if not _TOKEN.fullmatch(market):  # a dot or wildcard would address other subjects
        raise ValueError(f"market {market[:40]!r} is not a NATS subject token")
    return market


def book_subject(market: str, part: str) -> str:
    """``astra.book.<MARKET>.snap`` / ``.upd`` (``part``: ``snap``, ``upd`` or ``*``)."""
    return f"astra.book.{_token(market)}.{part}"


def trade_subject(market: str) -> str:
    return f"astra.trade.{_token(market)}"


def new_epoch() -> str:
    return os.urandom(6).hex()


# --- book messages -----------------------------------------------------------------------------


class BookSnapshot(msgspec.Struct, tag="s", array_like=True):
    epoch: Epoch
    seq: int
    update_id: int
    timestamp: int
    bids: Levels  # best first, venue units
    asks: Levels
    sent_ns: int = 0


class BookDelta(msgspec.Struct, tag="u", array_like=True):
    epoch: Epoch
    seq: int
    update_id: int
    timestamp: int
    bids: Levels  # absolute quantities, 0 deletes (L2Book.apply)
    asks: Levels
    sent_ns: int = 0


class BookResync(msgspec.Struct, tag="r", array_like=True):
    """The feed's book left ``synced`` (its channel's ``on_resync`` reason: a reason
    starting with ``RECONNECTING`` means the venue connection is down)."""

    epoch: Epoch
    seq: int
    reason: Reason
    sent_ns: int = 0


class Heartbeat(msgspec.Struct, tag="h", array_like=True):
    """Sent on a market's ``upd`` (or trade) subject after ``heartbeat_seconds`` without any
    other message; ``seq`` is the last one sent (not a new one); ``synced`` the feed book's."""

    epoch: Epoch
    seq: int
    synced: bool = True
    sent_ns: int = 0


BookMessage = BookSnapshot | BookDelta | BookResync | Heartbeat


# --- trade messages ----------------------------------------------------------------------------


class TradeBatch(msgspec.Struct, tag="t", array_like=True):
    epoch: Epoch
    seq: int
    trades: list[Trade]  # venue units, as the feed's TradeChannel received them
    sent_ns: int = 0


class TradeConnection(msgspec.Struct, tag="c", array_like=True):
    """The feed's ``TradeSink.on_connection(up, reason)``."""

    epoch: Epoch
    seq: int
    up: bool
    reason: Reason = ""
    sent_ns: int = 0


TradeMessage = TradeBatch | TradeConnection | Heartbeat


# --- wants -------------------------------------------------------------------------------------


class Want(msgspec.Struct, kw_only=True):
    """An edge's interest in ``market``'s ``data_type`` (``ORDERBOOK`` or ``TRADE``), renewed
    every ``lease_seconds / 3`` while the edge has a user; ``snapshot``: publish a fresh
    snapshot now (the edge is resyncing)."""

    market: str
    data_type: str
    edge: str
    snapshot: bool = False


class WantReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    ok: bool
    epoch: str = ""
    state: str = ""  # the feed channel's state: connecting, synced, resyncing, disconnected
    error: str = ""  # why not (unknown market, venue not served by this feed): the edge's 4xx/503
    code: str = ""  # error's AstraError code (MARKET_NOT_FOUND ...): AstraError.from_code(code)


_book_decoder = msgspec.msgpack.Decoder(BookMessage)
_trade_decoder = msgspec.msgpack.Decoder(TradeMessage)
encode = msgspec.msgpack.Encoder().encode


def decode_book(data: bytes) -> BookMessage:
    return _book_decoder.decode(data)


def decode_trade(data: bytes) -> TradeMessage:
    return _trade_decoder.decode(data)


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterConfig:
    """``[cluster]`` of the config file (all optional) and ``--nats-url``."""

    nats_url: str = "nats://127.0.0.1:4222"
    heartbeat_seconds: float = 1.0  # a quiet market's feed says it is alive this often
    silence_seconds: float = 3.0  # an edge marks a book stale after this long without a word
    snapshot_seconds: float = 30.0  # a feed re-publishes each running book this often
    lease_seconds: float = 15.0  # a feed keeps a market this long after the last want
    retention_seconds: float = 120.0  # the stream's max_age
    want_timeout: float = 2.0  # an edge's want request waits this long for a feed
    lag_seconds: float = 1.0  # an edge further behind its feed than this starts again

    _LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "heartbeat_seconds": (0.05, 60.0),
        "silence_seconds": (0.1, 600.0),
        "snapshot_seconds": (1.0, 3600.0),
        "lease_seconds": (1.0, 3600.0),
        "retention_seconds": (10.0, 86400.0),
        "want_timeout": (0.05, 60.0),
        "lag_seconds": (0.01, 600.0),
    }

    @classmethod
    def from_config(cls, section: dict[str, Any] | None, nats_url: str | None = None
                    ) -> ClusterConfig:
        """From ``[cluster]``; ``ValueError`` naming a bad setting. The URL: ``nats_url``
        (``--nats-url``), else ``$ASTRA_NATS_URL``, else the section's, else loopback."""
        section = dict(section or {})
        values: dict[str, Any] = {}
        for name, (low, high) in cls._LIMITS.items():
            if name not in section:
                continue
            value = section.pop(name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    low <= value <= high):
                raise ValueError(f"[cluster] {name} must be a number of seconds between "
                                 f"{low:g} and {high:g}, got {value!r}")
            values[name] = float(value)
        url = section.pop("nats_url", None)
        if section:
            raise ValueError(f"[cluster] unknown setting {sorted(section)[0]!r}")
        url = nats_url or os.environ.get(NATS_URL_ENV, "").strip() or url or cls.nats_url
        if not isinstance(url, str) or not url.startswith(("nats://", "tls://")):
            raise ValueError(f"[cluster] nats_url must be a nats:// or tls:// URL, got {url!r}")
        config = cls(nats_url=url, **values)
        if config.silence_seconds <= config.heartbeat_seconds:
            raise ValueError("[cluster] silence_seconds must be longer than heartbeat_seconds")
        return config
