"""One market's feed on a shared Kraken connection: what spot and futures books have in common.

A feed is a ``Consumer`` of one key on a ``StreamPool`` (``stream.py``); ``run()`` registers
it, waits until cancelled, and unregisters it (the stream then unsubscribes the key, or closes
the connection when it was the last key). The integrity checks themselves (checksum, sequence)
live in each API's feed module, which calls ``resync`` when one fails.

Invariants of a book subscription:
- ``synced`` is False from every subscribe until the venue's snapshot is accepted; updates
  meanwhile are dropped, never forwarded.
- A failed check, a reset connection, a refused subscription, or no snapshot within
  ``silence`` of subscribing tells the sink ``on_resync`` first. A failed check or a missing
  snapshot then resubscribes *this key only* on the same connection (the other markets there
  are untouched); a reset connection resubscribes everything itself.
- Repeated failures back off (``retry.backoff``) before resubscribing: a venue sending bad
  data is not hammered. A refused subscription is retried after the backoff too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from astra.venues.base import BookSink, TradeSink
from astra.venues.retry import backoff

from .stream import Key, KrakenStream, StreamPool

__all__ = ["BookSubscription", "Subscription", "TradeSubscription"]

log = logging.getLogger(__name__)


class Subscription:
    """A consumer that lives as long as ``run()``; refused subscriptions retry with backoff."""

    def __init__(self, pool: StreamPool, key: Key, symbol: str) -> None:
        self.pool, self.key, self.symbol = pool, key, symbol
        self.stream: KrakenStream | None = None
        self.failures = 0  # consecutive failures: retries back off
        self._retry: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        self.stream = self.pool.add(self.key, self)
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            self._cancel_timers()
            self.pool.remove(self.stream, self.key, self)

    def _cancel_timers(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _later(self, action: Any) -> None:
        """Run ``action`` now on the first failure, else after a growing backoff."""
        self.failures += 1
        if self._retry is not None:
            self._retry.cancel()
        if self.failures <= 1:
            self._retry = None
            action()
        else:
            self._retry = asyncio.get_running_loop().call_later(
                backoff(self.failures - 2), self._fire, action
            )

    def _fire(self, action: Any) -> None:
        self._retry = None
        action()

    # -- Consumer ------------------------------------------------------------------------

    def on_message(self, kind: str, data: Any) -> None:
        raise NotImplementedError

    def on_subscribing(self) -> None:
        pass

    def on_live(self) -> None:
        pass

    def on_reset(self, reason: str) -> None:
        self._cancel_timers()  # the new connection subscribes everything anyway

    def on_rejected(self, reason: str) -> None:
        log.warning("kraken: subscription to %s refused: %s", self.key, reason)
        self._later(lambda: self.stream.subscribe_again(self.key))


class TradeSubscription(Subscription):
    """A trade consumer: its sink hears that the subscription is live once Kraken confirms
    it, and that it was lost (trades may be missed) when the connection is."""

    def __init__(self, pool: StreamPool, key: Key, symbol: str, sink: TradeSink) -> None:
        super().__init__(pool, key, symbol)
        self.sink = sink

    def on_live(self) -> None:
        self.sink.on_connection(True)

    def on_reset(self, reason: str) -> None:
        super().on_reset(reason)
        self.sink.on_connection(False, reason)


class BookSubscription(Subscription):
    """A book consumer: the sink, the synced flag and the resync mechanics."""

    def __init__(
        self, pool: StreamPool, key: Key, symbol: str, sink: BookSink, silence: float
    ) -> None:
        super().__init__(pool, key, symbol)
        self.sink, self.silence = sink, silence
        self.synced = False
        self._watchdog: asyncio.TimerHandle | None = None

    def _cancel_timers(self) -> None:
        super()._cancel_timers()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def accepted(self) -> None:
        """The snapshot is in: the book is synced."""
        self.synced = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def resync(self, reason: str) -> None:
        """The book cannot be trusted: tell the sink, then resubscribe this key alone."""
        self.synced = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        log.warning("kraken book resync: %s", reason)
        self.sink.on_resync(reason)
        self._later(lambda: self.stream.resubscribe(self.key))

    def _no_snapshot(self) -> None:
        self._watchdog = None
        self.resync(f"{self.symbol}: no book snapshot {self.silence:g} s after subscribing")

    # -- Consumer ------------------------------------------------------------------------

    def on_subscribing(self) -> None:
        self.synced = False
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = asyncio.get_running_loop().call_later(self.silence, self._no_snapshot)

    def on_reset(self, reason: str) -> None:
        self._cancel_timers()  # the new connection subscribes (and arms the watchdog) anew
        self.synced = False
        self.sink.on_resync(reason)

    def on_rejected(self, reason: str) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.synced = False
        self.sink.on_resync(f"{self.symbol}: subscription rejected: {reason}")
        super().on_rejected(reason)
