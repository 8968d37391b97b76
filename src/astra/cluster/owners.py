"""Which feed node publishes a market, when several feed nodes serve the same venues.

Every feed gets every want (no queue group). Only one of them may publish a market: two
epochs on one subject would make every edge resync at each message. The owner of a market is
decided by compare-and-set in a JetStream KV bucket (``OWNERS_BUCKET``):

- ``book.<MARKET>`` / ``trade.<MARKET>`` -> the owning feed's epoch, written with ``create``
  (only if absent) or ``update(last=revision)`` (only if unchanged since read): two feeds
  racing for a market cannot both win;
- ``feed.<epoch>`` -> the feed's wall clock, re-written every ``heartbeat_seconds``: its
  liveness. A market whose owner's liveness is older than ``silence_seconds`` (a crashed or
  cut-off feed: its edges are already stale) may be taken over by compare-and-set;
- a feed that stops cleanly deletes its keys: a standby takes its markets over at the next
  want, without waiting out the silence bound.

A feed that finds it no longer owns a market it publishes (another took it over while this
one was cut off) stops publishing it (``FeedPublisher`` checks at each periodic snapshot).
When the KV bucket cannot be reached, a feed answers wants as if it were alone (counted in
``errors``): better two publishers for a while, which edges see as gaps and resync from, than
none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = ["OWNERS_BUCKET", "Ownership"]

log = logging.getLogger(__name__)
OWNERS_BUCKET = "ASTRA_FEEDS"
_encode = msgspec.msgpack.Encoder().encode
_decode_time = msgspec.msgpack.Decoder(float).decode


def _market_key(key: str) -> str:
    """``"SIM-SPOT-BTC-USDT/ORDERBOOK"`` -> ``"book.SIM-SPOT-BTC-USDT"``."""
    market, _, data_type = key.partition("/")
    return f"{'book' if data_type == 'ORDERBOOK' else 'trade'}.{market}"


class Ownership:
    def __init__(self, js: JetStreamContext, epoch: str, silence_seconds: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.js, self.epoch, self.silence = js, epoch, silence_seconds
        self._clock = clock
        self.kv: KeyValue | None = None
        self._revisions: dict[str, int] = {}  # market key -> the revision this feed wrote
        self.errors = 0

    async def start(self) -> Ownership:
        try:
            self.kv = await self.js.create_key_value(KeyValueConfig(
                bucket=OWNERS_BUCKET, history=1, storage=StorageType.MEMORY))
            await self.alive()
        except Exception as exc:  # JetStream unavailable: this feed answers as if alone
            self._failed("open", exc)
        return self

    def _failed(self, what: str, exc: Exception) -> None:
        self.errors += 1
        log.warning("feed ownership: %s failed (%s); answering wants as the only feed",
                    what, type(exc).__name__)

    async def alive(self) -> None:
        """This feed is alive now (its ``feed.<epoch>`` key)."""
        if self.kv is None:
            return
        try:
            await self.kv.put(f"feed.{self.epoch}", _encode(self._clock()))
        except Exception as exc:
            self.errors += 1
            log.debug("feed liveness not written: %r", exc)

    async def _owner_alive(self, epoch: str) -> bool:
        try:
            entry = await self.kv.get(f"feed.{epoch}")
            return self._clock() - _decode_time(entry.value or b"") <= self.silence
        except (KeyNotFoundError, msgspec.DecodeError):
            return False

    async def claim(self, key: str) -> bool:
        """True when this feed owns ``key``'s market now (it was free, ours, or its owner is
        gone); False when another live feed owns it."""
        if self.kv is None:
            return True
        name = _market_key(key)
        mine = self.epoch.encode()
        try:
            for _ in range(3):  # create, or read and compare-and-set; a lost race reads again
                try:
                    self._revisions[name] = await self.kv.create(name, mine)
                    return True
                except KeyWrongLastSequenceError:
                    pass
                try:
                    entry = await self.kv.get(name)
                except KeyNotFoundError:
                    continue  # deleted meanwhile: create again
                owner = (entry.value or b"").decode(errors="replace")
                if owner != self.epoch and await self._owner_alive(owner):
                    return False
                try:
                    self._revisions[name] = await self.kv.update(name, mine, last=entry.revision)
                    if owner != self.epoch:
                        log.info("%s: taken over from feed %s (silent)", key, owner)
                    return True
                except KeyWrongLastSequenceError:
                    continue
            return False
        except Exception as exc:
            self._failed("claim", exc)
            return True

    async def owns(self, key: str) -> bool:
        """Whether ``key``'s market is still this feed's (True when it cannot tell)."""
        if self.kv is None:
            return True
        try:
            entry = await self.kv.get(_market_key(key))
        except KeyNotFoundError:
            return True  # nobody claims it: keep publishing; the next want claims it again
        except Exception:
            return True
        return (entry.value or b"").decode(errors="replace") == self.epoch

    async def release(self, key: str) -> None:
        name = _market_key(key)
        revision = self._revisions.pop(name, None)
        if self.kv is None or revision is None:
            return
        try:  # only if still ours (unchanged since this feed wrote it)
            await self.kv.delete(name, last=revision)
        except Exception:
            pass

    async def close(self) -> None:
        """Give every market up at once (a standby takes over at the next want)."""
        for name in list(self._revisions):
            await self.release(name.split(".", 1)[1] + (
                "/ORDERBOOK" if name.startswith("book.") else "/TRADE"))
        if self.kv is not None:
            try:
                await self.kv.delete(f"feed.{self.epoch}")
            except Exception:
                pass
