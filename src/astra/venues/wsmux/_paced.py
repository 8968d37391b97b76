"""Paced, acknowledged requests (Binance, KuCoin): venues that count a connection's uplink
messages and answer each (un)subscribe by id.

Invariants:
- ``load`` counts the keys whose unsubscribe has not gone out yet: they are still on the wire.
- Requests leave one at a time, at least ``interval`` s apart (the venue's message rate, with
  room kept for pings), each joining a run of one operation from the head of the queue
  (``_batch``); ops made while a request waits for its slot go out together, in the order
  they were made, so a key is never unsubscribed after being subscribed again. No request
  goes out before ``_ready`` (e.g. KuCoin's welcome).
- Every request is answered within ``response_timeout``, or the connection counts as dead, as
  it does after ``silence`` seconds without a frame. A planned retirement after ``max_age``
  reconnects at once.
- A refused subscribe resets its keys' consumers. With ``split_refused``, a refused request of
  several keys is asked again key by key at once (one bad symbol must not hold the others
  back); a refused lone key, or any with ``split_refused`` off, is asked again after a
  backoff, on the same connection. The other keys are untouched.
- A subscribe's acknowledgement makes its keys live (``MuxConnection._confirmed``); an
  unsubscribe sent or a refusal ends that. One consumer's failure is contained: that
  consumer is reset (and hears ``on_live`` again at once when its key is live: the stream
  goes on, only that message was lost), the connection goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Hashable
from typing import ClassVar, Protocol

import aiohttp
import msgspec

from astra.venues.retry import backoff

from ._connection import MuxConnection

__all__ = ["DataConsumer", "PacedConnection", "Pacer"]

log = logging.getLogger(__name__)

SUBSCRIBE, UNSUBSCRIBE = "subscribe", "unsubscribe"


class DataConsumer(Protocol):
    def on_data(self, data: msgspec.Raw) -> None:
        """One message of the key (its payload, undecoded), in wire order."""

    def on_reset(self, reason: str) -> None:
        """The key was interrupted (connection lost, subscription refused, a bad message);
        it is subscribed again and messages resume later."""

    def on_live(self) -> None:
        """The key's subscription is acknowledged: every message from now on is delivered."""


class Pacer:
    """Request slots ``interval`` seconds apart."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = -math.inf

    def reserve(self, now: float) -> float:
        """Take the next free slot: the wait from ``now`` until it."""
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        return at - now

    async def wait(self) -> None:
        delay = self.reserve(asyncio.get_running_loop().time())
        if delay > 0:
            await asyncio.sleep(delay)


class PacedConnection(MuxConnection[Hashable, DataConsumer]):
    """A connection whose requests are paced, batched from a queue and answered by id."""

    split_refused: ClassVar[bool] = False
    retirement: ClassVar[str] = "connection lifetime reached"

    def __init__(
        self,
        session,
        url: str,
        *,
        interval: float,
        max_keys: int,
        silence: float,
        max_age: float | None,
        response_timeout: float,
    ) -> None:
        super().__init__(session, url)
        self.max_keys, self.silence, self.max_age = max_keys, silence, max_age
        self.response_timeout = response_timeout
        self._ops: list[tuple[str, Hashable]] = []  # (op, key) not sent yet, in order
        self._leaving: set[Hashable] = set()  # keys with an unsubscribe in _ops
        self._solo: set[Hashable] = set()  # keys refused in a batch: asked alone from now on
        self._pending: dict[str, tuple[str, list, float]] = {}  # id -> op, keys, sent at
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._pacer = Pacer(interval)
        self._refusals = 0
        self._retry: asyncio.TimerHandle | None = None  # refused keys, asked for again
        self._retry_keys: dict[Hashable, None] = {}  # ordered: asked again in the same order

    @property
    def load(self) -> int:
        return len(self.consumers) + len(self._leaving)

    # -- what a venue defines ----------------------------------------------------------------

    def _request(self, op: str, keys: list, request_id: int) -> str:
        """The wire text of one request."""
        raise NotImplementedError

    def _same_request(self, first: Hashable, other: Hashable) -> bool:
        """Whether ``other`` may join a request that starts with ``first``."""
        return True

    async def _ready(self) -> None:
        """Returns once the connection accepts requests."""

    def _on_frame(self, data: str) -> None:
        """One text frame: ``_dispatch`` data, ``_answered``/``_refused`` answers; raise to
        reconnect."""
        raise NotImplementedError

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The venue's application-level ping, every ``_ping_every`` seconds."""

    _ping_every: float = math.inf

    # -- consumers ---------------------------------------------------------------------------

    def _added(self, key: Hashable, *, first: bool) -> None:
        if not first:
            return
        if key in self._leaving:  # its unsubscribe has not gone out: keep the key
            self._leaving.discard(key)
            self._ops.remove((UNSUBSCRIBE, key))
        else:
            self._queue(SUBSCRIBE, key)

    def _removed(self, key: Hashable) -> None:
        if (SUBSCRIBE, key) in self._ops:
            self._ops.remove((SUBSCRIBE, key))  # it never went out
        elif self.consumers and self._queue(UNSUBSCRIBE, key):
            self._leaving.add(key)  # (the last key goes with its connection)

    def _dispatch(self, key: Hashable, data: msgspec.Raw) -> None:
        consumers = self.consumers.get(key)
        if not consumers:
            return  # unsubscribed: in-flight data after an unsubscribe
        self.mark_alive()
        for consumer in consumers:
            try:
                consumer.on_data(data)
            except Exception as exc:  # that market resyncs; the others go on
                log.warning("%s: %s message rejected (%r)", self.url, key, exc)
                consumer.on_reset(f"bad message: {exc!r}")
                if key in self.live:  # the subscription itself goes on
                    consumer.on_live()

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        await super().close()

    # -- requests ----------------------------------------------------------------------------

    def _queue(self, op: str, key: Hashable) -> bool:
        if not self.connected:
            return False  # everything is subscribed on connect
        self._ops.append((op, key))
        self._wake.set()
        return True

    def _batch(self) -> tuple[str, list]:
        """The next request: a run of one op (and ``_same_request``) from the queue's head."""
        ops, solo = self._ops, self._solo
        op, first = ops[0]
        n = 1
        if first not in solo:
            while (
                n < len(ops)
                and n < self.max_keys
                and ops[n][0] == op
                and ops[n][1] not in solo
                and self._same_request(first, ops[n][1])
            ):
                n += 1
        keys = [key for _, key in ops[:n]]
        del ops[:n]
        return op, keys

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The connection's only request writer, one paced request at a time."""
        loop = asyncio.get_running_loop()
        ops = self._ops
        try:
            await self._ready()
            while True:
                while not ops:
                    self._wake.clear()
                    await self._wake.wait()
                await self._pacer.wait()
                if not ops:
                    continue  # withdrawn while waiting for the slot
                op, keys = self._batch()
                if op == UNSUBSCRIBE:
                    self._leaving.difference_update(keys)
                    self.live.difference_update(keys)
                request_id = next(self._ids)
                self._pending[str(request_id)] = (op, keys, loop.time())
                await ws.send_str(self._request(op, keys, request_id))
        except self.errors as exc:
            log.warning("%s: send failed (%r)", self.url, exc)
            await ws.close()  # ends the receive loop, which reconnects

    def _answered(self, request_id: object) -> bool:
        """An acknowledgement: False when it answers no request of ours."""
        request = self._pending.pop(str(request_id), None)
        if request is None:
            return False
        if request[0] == SUBSCRIBE:
            self._refusals = 0
            for key in request[1]:
                self._confirmed(key)
        return True

    def _refused(self, request_id: object, reason: str) -> bool:
        """A refusal: False when it answers no request of ours."""
        request = self._pending.pop(str(request_id), None)
        if request is None:
            return False
        op, keys, _ = request
        log.error("%s: %s %s refused (%s)", self.url, op, keys, reason)
        if op != SUBSCRIBE:
            return True  # a key left on the wire has no consumer: its messages are dropped
        wanted = [k for k in keys if k in self.consumers]
        self.live.difference_update(keys)
        for key in wanted:
            for consumer in self.consumers[key]:
                consumer.on_reset(f"subscription refused ({reason})")
        if self.split_refused and len(keys) > 1:
            self._solo.update(wanted)
            for key in wanted:
                self._queue(SUBSCRIBE, key)
            return True
        self._retry_keys.update(dict.fromkeys(wanted))
        if self._retry is None:
            self._refusals += 1
            self._retry = asyncio.get_running_loop().call_later(
                backoff(self._refusals), self._subscribe_again
            )
        return True

    def _subscribe_again(self) -> None:
        self._retry = None
        keys, self._retry_keys = self._retry_keys, {}
        for key in keys:  # (a reconnect meanwhile subscribed everything already)
            if key in self.consumers and (SUBSCRIBE, key) not in self._ops:
                self._queue(SUBSCRIBE, key)

    # -- connection --------------------------------------------------------------------------

    def _opened(self, ws: aiohttp.ClientWebSocketResponse) -> list[asyncio.Task]:
        if self._retry is not None:  # refused keys are in the batch below
            self._retry.cancel()
            self._retry, self._retry_keys = None, {}
        self._ops[:] = [(SUBSCRIBE, key) for key in self.consumers]
        self._wake.set()
        return [asyncio.create_task(self._send(ws))]

    def _closed(self) -> None:
        self._ops.clear()
        self._leaving.clear()
        self._pending.clear()

    def _silence(self) -> float:
        return self.silence

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Route frames and ping until ``max_age`` (returns) or a failure (raises)."""
        loop = asyncio.get_running_loop()
        pending, on_frame = self._pending, self._on_frame
        silence, answer_within = self._silence(), self.response_timeout
        ping_every = self._ping_every
        now = loop.time()
        last, next_ping = now, now + ping_every
        retire_at = now + (self.max_age if self.max_age is not None else math.inf)
        while True:
            now = loop.time()
            if now >= retire_at:
                log.info("%s: connection reached its %.0f s lifetime", self.url, self.max_age)
                return self.retirement
            if pending:
                request_id, (op, _, sent) = next(iter(pending.items()))
                if now - sent > answer_within:
                    raise TimeoutError(f"{op} {request_id} unanswered for {answer_within:g} s")
            if now >= next_ping:
                await self._ping(ws)
                next_ping = now + ping_every
            # Wake for pings, silence, retirement, and every answer_within to check answers.
            wait = min(next_ping, last + silence, retire_at, now + answer_within) - now
            try:
                msg = await ws.receive(timeout=max(wait, 0.001))
            except TimeoutError:
                if loop.time() - last >= silence:
                    raise TimeoutError(f"silent for {silence:g} s") from None
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"upstream sent {msg.type.name}")
            last = loop.time()
            on_frame(msg.data)
