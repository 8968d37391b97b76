"""Replay of recorded market data in the live WebSocket schema: the frames a live client got,
from the tape (``astra.tape``), merged across markets in the order this gateway received them.

Integrity rule: a replay client's book is, after each frame, what a live client held at that
frame's local time. ORDERBOOK, per market: first the book at ``from`` (the last snapshot at or
before ``from`` and every update after it up to ``from``, sent as one ``snapshot``; if the
last recorded event before ``from`` is a resync, that resync frame instead, and the snapshot
that ended it follows in the stream; if the record starts after ``from``, the replay starts at
its first snapshot), then every recorded row with ``from < local_ts <= to`` byte for byte,
except ``periodic`` snapshots (checkpoints of the recorder, never sent live). TRADE, per
market: one ``TradesMessage`` (with ``market``) per recorded batch (rows sharing a local
time), and a trade ``resync`` row as a ``BookResync``-shaped frame (state ``disconnected``,
``since`` its local time in ms).

Invariants:
- Streaming: rows are read with ``iter_batches`` (one row group at a time), never a day at
  once; markets are merged with ``heapq.merge`` by local time, ties in the order the markets
  were asked for; within a market, recorded order.
- ``replay_events`` blocks (pyarrow); ``ReplayStream`` runs it on its own thread, handing
  chunks to the event loop through a bounded hand-off (``max_chunks`` chunks of ``chunk``
  frames), so the loop never waits on Parquet and a slow consumer stops the reading too.
  ``ReplayStream.close`` stops the thread and returns once it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
from collections.abc import Iterator, Sequence
from operator import itemgetter
from pathlib import Path

import msgspec

from astra.core import BookResync, DataType, InvalidParameter, Side, Trade, TradesMessage
from astra.tape import BOOK, TRADE, check_market, iter_batches, partition_files

from .book import RecordedBook, decode_message, last_row_time

__all__ = ["ReplayStream", "book_anchor", "recorded_span", "replay_events"]

_encode = msgspec.json.Encoder().encode
_KIND = {DataType.ORDERBOOK.value: BOOK, DataType.TRADE.value: TRADE}
_ANCHORS = ("snapshot", "resync")
_SIDES = frozenset(s.value for s in Side)


def recorded_span(root: Path, market: str, kind: str) -> tuple[int, int] | None:
    """(first, last) local time (µs) of ``market``'s ``kind`` record, None when unrecorded."""
    files = partition_files(root, market, kind)
    if not files:
        return None
    return min(f.first for f in files), max(f.last for f in files)


def book_anchor(root: Path, market: str, at_us: int) -> int | None:
    """Local time of the last snapshot or resync row at or before ``at_us``: the book at
    ``at_us`` is rebuilt from there."""
    return last_row_time(root, market, _ANCHORS, at_us)


def _book_rows(root: Path, market: str, start: int, end: int
               ) -> Iterator[tuple[int, str, str | None, bytes]]:
    for batch in iter_batches(root, market, BOOK, start, end, ["type", "reason", "frame"]):
        yield from zip(batch.column("local_ts").to_pylist(), batch.column("type").to_pylist(),
                       batch.column("reason").to_pylist(), batch.column("frame").to_pylist(),
                       strict=True)


def _book_events(root: Path, market: str, from_us: int, to_us: int
                 ) -> Iterator[tuple[int, bytes]]:
    need_snapshot = True
    anchor = book_anchor(root, market, from_us)
    if anchor is not None:
        book, resync = RecordedBook(market), None
        for _, _, _, frame in _book_rows(root, market, anchor, from_us):
            msg = decode_message(frame)
            book.apply(msg)
            if msg.type == "resync":
                resync = frame
            elif msg.type == "snapshot":
                resync = None
        if book.synced:
            yield from_us, book.snapshot_frame()
            need_snapshot = False
        elif resync is not None:
            yield from_us, resync  # the book was out of sync at `from`: so is the client's
            need_snapshot = False
    if from_us >= to_us:
        return
    for ts, kind, reason, frame in _book_rows(root, market, from_us + 1, to_us):
        if need_snapshot:  # the record starts after `from`: begin at its first snapshot
            if kind == "snapshot":
                need_snapshot = False
                yield ts, frame
        elif kind != "snapshot" or reason != "periodic":
            yield ts, frame


def _trade_resync(market: str, ts: int, reason: str | None) -> bytes:
    return _encode(BookResync(market=market, reason=reason or "trade feed interrupted",
                              state="disconnected", since=ts // 1000))


def _trade_events(root: Path, market: str, from_us: int, to_us: int
                  ) -> Iterator[tuple[int, bytes]]:
    batch_ts: int | None = None
    trades: list[Trade] = []
    columns = ["type", "reason", "time", "price", "quantity", "side", "trade_id"]
    for batch in iter_batches(root, market, TRADE, from_us, to_us, columns):
        cols = [batch.column(name).to_pylist() for name in ("local_ts", *columns)]
        for ts, kind, reason, time_, price, qty, side, trade_id in zip(*cols, strict=True):
            if trades and ts != batch_ts:
                yield batch_ts, _encode(TradesMessage(trades=trades, market=market))
                trades = []
            if kind == "resync":
                yield ts, _trade_resync(market, ts, reason)
                continue
            if kind != "trade" or None in (price, qty, time_) or side not in _SIDES:
                continue  # not a trade row this version knows
            batch_ts = ts
            trades.append(Trade(price=price, quantity=qty, side=Side(side), time=time_,
                                trade_id=trade_id))
    if trades:
        yield batch_ts, _encode(TradesMessage(trades=trades, market=market))


def replay_events(root: Path, markets: Sequence[str], data_type: str, from_us: int,
                  to_us: int) -> Iterator[tuple[int, bytes]]:
    """``(local_us, frame)`` of ``markets``' ``data_type`` (ORDERBOOK or TRADE) record in
    [from_us, to_us], merged in local-time order (see the module's integrity rule). Blocking
    and lazy: nothing is read until the first item is asked for."""
    kind = _KIND.get(str(data_type))
    if kind is None:
        raise InvalidParameter("dataType", f"replay serves {', '.join(_KIND)}")
    if to_us < from_us:
        raise InvalidParameter("to", "must not be before from")
    markets = [check_market(m) for m in markets]
    events = _book_events if kind == BOOK else _trade_events
    streams = [events(Path(root), m, from_us, to_us) for m in markets]
    if len(streams) == 1:
        return streams[0]
    # heapq.merge breaks ties by iterable order: the markets' order as asked.
    return heapq.merge(*streams, key=itemgetter(0))


_END = object()
_names = itertools.count(1)


class ReplayStream:
    """``replay_events`` (or any blocking iterator) read on a thread of its own, consumed
    with ``async for`` in chunks (lists of ``(local_us, frame)``). At most ``max_chunks``
    chunks wait to be consumed; the thread blocks until one is taken (or the stream closed)."""

    def __init__(self, events: Iterator[tuple[int, bytes]], *, chunk: int = 256,
                 max_chunks: int = 4) -> None:
        self._events = events
        self._chunk = chunk
        self._slots = threading.Semaphore(max_chunks)
        self._stop = threading.Event()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._ended = self._loop.create_future()
        self.thread = threading.Thread(target=self._produce, name=f"astra-replay-{next(_names)}",
                                       daemon=True)
        self._started = False

    def _hand(self, item: object) -> bool:
        """Pass ``item`` to the loop; False when the stream is closed (or the loop is)."""
        while not self._slots.acquire(timeout=1.0):
            if self._stop.is_set():
                return False
        if self._stop.is_set():
            return False
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _produce(self) -> None:
        events = self._events
        try:
            while not self._stop.is_set():
                chunk = list(itertools.islice(events, self._chunk))
                if not chunk:
                    self._hand(_END)
                    break
                if not self._hand(chunk):
                    break
        except BaseException as exc:  # the consumer raises it
            self._hand(exc)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()  # closes the Parquet files of a generator stopped midway
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._set_ended)

    def _set_ended(self) -> None:
        if not self._ended.done():
            self._ended.set_result(None)

    def __aiter__(self) -> ReplayStream:
        if not self._started:
            self._started = True
            self.thread.start()
        return self

    async def __anext__(self) -> list[tuple[int, bytes]]:
        if self._stop.is_set():
            raise StopAsyncIteration
        item = await self._queue.get()
        self._slots.release()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self) -> None:
        """Stop the thread and wait until it has ended (it finishes the chunk it reads)."""
        self._stop.set()
        self._slots.release()  # wakes a thread waiting for room
        if self._started:
            await asyncio.shield(self._ended)
            self.thread.join()  # it has signalled its very last step: this returns at once

    async def __aenter__(self) -> ReplayStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
