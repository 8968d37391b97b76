"""The recorder: every book message and trade of the configured markets, as a live WebSocket
client of the engine receives them, written to the tape (``astra.tape``) every few seconds.

Integrity rule: a market's book record is exactly the message sequence a live client got
(``snapshot``, the ``update``s continuing it, ``resync`` then a fresh ``snapshot``), each with
its local receive time, plus ``periodic`` snapshots the recorder takes between two messages
(equal to the book the record rebuilds to at that point). Whatever the record misses is marked
by a ``resync`` row: the recorder dropping rows (``recorder overflow``, from the first one
dropped) or stopping (``recorder stopped``; after a kill, the next run on the folder marks it
just after the last row on disk); the snapshot after it is a ``resync`` one.

Invariants:
- The hot path (``deliver``) only appends ``(local µs, frame)`` to the market's list and counts;
  decoding, Arrow and I/O happen in a thread (``asyncio.to_thread``) every ``flush_seconds``.
  A crash loses at most the rows of the last ``flush_seconds`` (plus a write in flight).
- Local times come from one clock per recorder: wall time at start plus a monotonic delta, so
  they never go back within a run.
- Snapshot reasons: the first snapshot of a market in this run is ``start``; one the recorder
  asked for is ``periodic`` (taken right after the update that makes it due, or on a timer
  between two messages, only while the channel is synced); every other one (after a resync,
  a SMART member's change) is ``resync``.
- At most ``max_pending`` rows wait (new, in flight, kept after a failed write); beyond, a
  market's new rows are dropped until the writer catches up, then a ``recorder overflow``
  resync row (at the first dropped row's time) and a fresh snapshot are recorded. A write
  error is logged and counted and never stops the gateway.
- One recorder per folder (``TapeLock``: a second one is a ``RuntimeError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from astra.core import AstraError, BookResync, DataType
from astra.marketdata.channels import BookChannel
from astra.marketdata.engine import MarketDataEngine
from astra.tape import (
    BOOK,
    TRADE,
    TapeFile,
    TapeLock,
    apply_retention,
    compact,
    date_of,
    partition_files,
    write_rows,
)

from .config import HistoryConfig

__all__ = ["Recorder", "monotonic_clock"]

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_SMART = "SMART"
_UPDATE = b'{"type":"update"'
OVERFLOW = "recorder overflow"
STOPPED = "recorder stopped"


def monotonic_clock() -> Callable[[], int]:
    """µs since the epoch that never go back: the wall time once, then a monotonic delta."""
    wall, mono = time.time_ns() // 1000, time.perf_counter_ns()
    return lambda: wall + (time.perf_counter_ns() - mono) // 1000


class _Header(msgspec.Struct, rename="camel"):
    """What the writer reads of a book message (the levels are skipped, not built)."""

    type: str
    update_id: int | None = None
    timestamp: int | None = None
    reason: str | None = None


class _Trade(msgspec.Struct, rename="camel"):
    price: float
    quantity: float
    side: str
    time: int
    trade_id: str | None = None


class _TradeFrame(msgspec.Struct):
    """A ``TradesMessage`` or a ``BookResync`` of a trade stream."""

    trades: list[_Trade] = []
    type: str | None = None
    reason: str | None = None


_header = msgspec.json.Decoder(_Header).decode
_trade_frame = msgspec.json.Decoder(_TradeFrame).decode


def _stopped(f: TapeFile) -> bool:
    """Whether a file's last row is a ``recorder stopped`` mark (its last row group only is
    read): a run that ended so marked its end; one killed did not."""
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(f.path) as parquet:
            groups = parquet.metadata.num_row_groups
            if not groups:
                return False
            last = parquet.read_row_group(groups - 1, columns=["type", "reason"])
    except Exception:  # unreadable: its end is unknown, so marked (a gap, never a guess)
        log.exception("history: reading the end of %s failed", f.path)
        return False
    row = last.slice(max(last.num_rows - 1, 0)).to_pylist()
    return bool(row) and (row[0]["type"], row[0]["reason"]) == ("resync", STOPPED)


class _Stream:
    """One recorded (market, kind): the engine's client. Only ``deliver`` runs per message."""

    def __init__(self, rec: Recorder, market: str, kind: str) -> None:
        self.rec, self.market, self.kind = rec, market, kind
        self.book = kind == BOOK
        self.items: list[tuple] = []  # (local µs, frame[, snapshot reason]) not yet swapped out
        self.remove: Callable[[_Stream], None] | None = None
        self.dropping = False  # rows are being dropped (overflow) until the writer catches up
        self.dropped_since = 0  # local µs of the first row dropped
        self.updates = 0  # book updates since the last snapshot
        self.snapshot_at = 0  # local µs of the last snapshot
        # The writer's (thread-side) state:
        self.started = False  # a snapshot of this run was written: the next ones are resyncs
        self.written = 0  # local µs of the last row on disk: the next part starts after it
        self.retry: list[tuple[object, int]] = []  # (table, items) a failed write kept

    def deliver(self, frame: bytes) -> None:
        rec = self.rec
        if self.dropping or rec.pending >= rec.max_pending:
            self._drop()
            return
        now = rec.clock()
        self.items.append((now, frame))
        rec.pending += 1
        if self.book:
            if frame.startswith(_UPDATE):
                self.updates += 1
                if self.updates >= rec.snapshot_every:
                    # Now, not on a later turn: the feed may deliver several updates in one
                    # turn, and the channel's book is exactly the one this row leaves.
                    self.periodic()
            else:  # a snapshot or a resync: the next checkpoint counts from here
                self.updates, self.snapshot_at = 0, now

    def _drop(self) -> None:
        if not self.dropping:
            self.dropping, self.dropped_since = True, self.rec.clock()
            log.warning("history: %s %s: %d rows pending, dropping until written",
                        self.market, self.kind, self.rec.pending)
        self.rec.stats["rows_dropped"] += 1

    def synced(self) -> bool:
        channel = self.rec.engine.channels.get((self.market, DataType.ORDERBOOK))
        if channel is None:
            return False
        if isinstance(channel, BookChannel):
            return channel.synced.is_set()
        return any(m.live for m in channel.members.values())  # SMART: one member contributes

    def snapshot(self, reason: str) -> bool:
        """Append the channel's current book as a snapshot row (on the loop, between two
        messages: it continues the record exactly); False when the book is not in sync."""
        if not self.synced():
            return False
        now = self.rec.clock()
        frame = self.rec.engine.channels[(self.market, DataType.ORDERBOOK)].snapshot_frame()
        self.items.append((now, frame, reason))
        self.rec.pending += 1
        self.updates, self.snapshot_at = 0, now
        return True

    def periodic(self) -> None:
        """The checkpoint ``deliver`` takes after ``snapshot_every`` updates (once every
        ``snapshot_every`` updates: one encode of the book, amortized)."""
        if not self.dropping and self.rec.pending < self.rec.max_pending:
            self.snapshot("periodic")

    def checkpoint_due(self, now: int, every: int) -> bool:
        """A timed checkpoint is due: ``every`` µs since the last snapshot and something to
        add (updates since, or a new day: each day's partition starts from a snapshot)."""
        return (self.book and not self.dropping
                and now - self.snapshot_at >= every
                and (self.updates > 0 or date_of(self.snapshot_at) != date_of(now)))

    def mark(self, at: int, reason: str, state: str) -> None:
        """Append a resync row at ``at``: a stretch of the record is missing from there."""
        frame = _encode(BookResync(market=self.market, reason=reason, state=state,
                                   since=at // 1000))
        self.items.append((at, frame))
        self.rec.pending += 1

    # --- the writer's side (a thread; flushes never overlap) ------------------------------------

    def table(self, items: list[tuple]):
        import pyarrow as pa

        from astra.tape import BOOK_SCHEMA, TRADE_SCHEMA

        # Rows sharing a µs must not straddle two parts (a part inside another's range reads
        # as a compaction's leftover), nor may a restart go back (the wall clock did): after
        # the last row written, each row is at least one µs later.
        floor = self.written + 1
        if self.book:
            cols: dict[str, list] = {n: [] for n in BOOK_SCHEMA.names}
            for item in items:
                try:
                    head = _header(item[1])
                except msgspec.DecodeError:
                    log.error("history: %s: undecodable book message skipped", self.market)
                    continue
                reason = head.reason if head.type == "resync" else None
                if head.type == "snapshot":
                    if len(item) > 2:
                        reason = item[2] if self.started or item[2] != "periodic" else "start"
                    else:
                        reason = "resync" if self.started else "start"
                    self.started = True
                cols["local_ts"].append(item[0] if item[0] > floor else floor)
                cols["type"].append(head.type)
                cols["reason"].append(reason)
                cols["update_id"].append(head.update_id)
                cols["timestamp"].append(head.timestamp)
                cols["frame"].append(item[1])
            return pa.table(cols, schema=BOOK_SCHEMA)
        cols = {n: [] for n in TRADE_SCHEMA.names}
        for item in items:
            try:
                msg = _trade_frame(item[1])
            except msgspec.DecodeError:
                log.error("history: %s: undecodable trade message skipped", self.market)
                continue
            if msg.type == "resync":
                rows = [("resync", msg.reason, None, None, None, None, None)]
            else:
                rows = [("trade", None, t.time, t.price, t.quantity, t.side, t.trade_id)
                        for t in msg.trades]
            us = item[0] if item[0] > floor else floor
            for row in rows:
                cols["local_ts"].append(us)
                for name, value in zip(TRADE_SCHEMA.names[1:], row, strict=True):
                    cols[name].append(value)
        return pa.table(cols, schema=TRADE_SCHEMA)


class Recorder:
    """Records the markets ``config.markets`` names, as an ordinary client of ``engine``.

    ``await start()`` (``RuntimeError`` when another recorder holds the folder), ``await
    flush()`` writes now, ``await close()`` writes what is pending and lets go."""

    def __init__(self, engine: MarketDataEngine, config: HistoryConfig, *,
                 clock: Callable[[], int] | None = None, retry_seconds: float = 30.0) -> None:
        self.engine, self.config = engine, config
        self.root = Path(config.dir)
        self.clock = clock or monotonic_clock()
        self.max_pending, self.snapshot_every = config.max_pending, config.snapshot_every
        self.retry_seconds = retry_seconds
        self.pending = 0  # rows waiting to be written: new, in flight, kept after an error
        self.stats = {"rows_recorded": 0, "rows_dropped": 0, "files_written": 0, "flushes": 0,
                      "write_errors": 0}
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._lock: TapeLock | None = None
        self._flushing = asyncio.Lock()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []  # retries of venues, the checkpoint timer
        self._flusher: asyncio.Task | None = None
        self._seq = 0
        self._compacted_at = 0
        self._retained_on = None

    @property
    def markets(self) -> list[str]:
        """The symbols being recorded."""
        return sorted({market for market, _ in self._streams})

    # --- start and stop ----------------------------------------------------------------------

    async def start(self) -> Recorder:
        """Lock the folder, subscribe to every market the patterns match now (a venue whose
        markets cannot be read is tried again in the background), start writing. No
        patterns: nothing is recorded and the folder is left to any other recorder."""
        if not self.config.markets:
            return self
        self._lock = await asyncio.to_thread(TapeLock, self.root)  # clears a crash's .tmp- files
        try:
            await asyncio.to_thread(self._retention, self.clock())
            self._compacted_at = self.clock()
            patterns = self.config.markets
            exchanges = {p.split("-", 1)[0] for p in patterns}
            codes = [c for c in self.engine.venues
                     if any(fnmatch.fnmatchcase(c, e) for e in exchanges)]
            smart = any(fnmatch.fnmatchcase(_SMART, e) for e in exchanges)
            found = await asyncio.gather(*(self._venue(c) for c in codes))
            if smart:
                await self._smart()
            for code, ok in zip(codes, found, strict=True):
                if not ok:
                    self._tasks.append(asyncio.create_task(self._retry(code)))
            if patterns:
                log.info("history: recording %d markets into %s (%s)", len(self.markets),
                         self.root, ", ".join(self.markets[:10]) or "none yet")
            self._flusher = asyncio.create_task(self._flush_loop(), name="history flush")
            self._tasks.append(asyncio.create_task(self._snapshot_loop(), name="history ckpt"))
        except BaseException:
            for task in self._tasks:
                task.cancel()
            await self._unsubscribe()
            self._lock.release()
            self._lock = None
            raise
        return self

    def _matches(self, symbol: str) -> bool:
        return any(fnmatch.fnmatchcase(symbol.upper(), p) for p in self.config.markets)

    async def _venue(self, code: str) -> bool:
        """Record ``code``'s markets that match; False when its markets cannot be read now."""
        try:
            async with asyncio.timeout(self.engine.book_wait):
                markets = await self.engine.markets(code)
        except (AstraError, TimeoutError, OSError) as exc:
            log.warning("history: %s markets unavailable (%s): trying again every %g s",
                        code, exc, self.retry_seconds)
            return False
        for meta in markets:
            if self._matches(meta.symbol):
                await self._record(meta.symbol)
        return True

    async def _smart(self) -> None:
        for symbol in await self.engine.smart_markets():
            if self._matches(symbol):
                await self._record(symbol)

    async def _retry(self, code: str) -> None:
        while True:
            await asyncio.sleep(self.retry_seconds)
            if await self._venue(code):
                await self._smart()  # SMART markets it is a member of may be new
                log.info("history: %s markets read: recording %d markets", code,
                         len(self.markets))
                return

    async def _record(self, symbol: str) -> None:
        kinds = (BOOK,) if symbol.startswith(_SMART + "-") else (BOOK, TRADE)
        for kind in kinds:
            if (symbol, kind) in self._streams:
                continue
            data_type = DataType.ORDERBOOK if kind is BOOK else DataType.TRADE
            try:
                add, remove = await self.engine.subscription(symbol, data_type)
            except AstraError as exc:
                log.warning("history: %s %s not recorded: %s", symbol, kind, exc)
                continue
            stream = _Stream(self, symbol, kind)
            files = await asyncio.to_thread(partition_files, self.root, symbol, kind)
            stream.written = files[-1].last if files else 0
            ended = not files or await asyncio.to_thread(_stopped, files[-1])
            if (symbol, kind) in self._streams:  # recorded meanwhile (a venue's retry)
                continue
            if not ended:  # the last run was killed: what it had not written is a gap
                stream.mark(stream.written + 1, STOPPED, "disconnected")
            self._streams[(symbol, kind)] = stream
            stream.remove = remove
            add(stream)

    async def _unsubscribe(self) -> None:
        for stream in self._streams.values():
            remove, stream.remove = stream.remove, None
            if remove is not None:
                remove(stream)

    async def close(self) -> None:
        """Stop recording: the last rows written (with a ``recorder stopped`` mark, so the
        time until the next start is a visible gap), the folder released."""
        if self._lock is None:
            return
        self._stop.set()  # the flusher ends after the write it may be doing
        for task in self._tasks:
            task.cancel()
        for task in (*self._tasks, *([self._flusher] if self._flusher else [])):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._unsubscribe()
        now = self.clock()
        for stream in self._streams.values():
            if stream.dropping:
                stream.dropping = False
                stream.mark(stream.dropped_since, OVERFLOW, "resyncing")
            stream.mark(now, STOPPED, "disconnected")
        await self.flush()
        lock, self._lock = self._lock, None
        lock.release()

    # --- periodic work -----------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.flush_seconds)
                return
            try:
                await self.flush()
            except Exception:  # never the gateway's end: logged, tried again next time
                log.exception("history: flush failed")

    async def _snapshot_loop(self) -> None:
        every = int(self.config.snapshot_seconds * 1_000_000)
        while True:
            await asyncio.sleep(min(self.config.snapshot_seconds, 1.0))
            now = self.clock()
            for stream in list(self._streams.values()):
                if stream.checkpoint_due(now, every) and self.pending < self.max_pending:
                    stream.snapshot("periodic")

    def _retention(self, now: int) -> None:
        today = date_of(now)
        if self._retained_on != today:
            removed = apply_retention(self.root, self.config.retention_days, today)
            self._retained_on = today
            if removed:
                log.info("history: retention removed %d day partitions", removed)

    # --- writing -----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write every pending row now (and compact, and apply retention, when due)."""
        async with self._flushing:
            batch = []
            for stream in self._streams.values():
                if stream.items:
                    items, stream.items = stream.items, []
                    batch.append((stream, items))
            now = self.clock()
            due = now - self._compacted_at >= self.config.compact_seconds * 1_000_000
            if due:
                self._compacted_at = now
            before = now - int(self.config.flush_seconds * 2_000_000)
            streams = list(self._streams.values())  # the thread must not see the dict grow
            written = await asyncio.to_thread(self._write, streams, batch,
                                              before if due else None, now)
            self.pending -= written
            self.stats["flushes"] += 1
            self._after_write()

    def _write(self, streams: list[_Stream], batch: list[tuple[_Stream, list[tuple]]],
               compact_before: int | None, now: int) -> int:
        """In a thread: each stream's rows (after what a failed write kept) as one part;
        returns how many pending rows are done with."""
        import pyarrow as pa

        done = 0
        for stream, items in batch:
            try:
                stream.retry.append((stream.table(items), len(items)))
            except Exception:  # a bug, not the disk: these rows cannot be written, ever
                log.exception("history: %s %s: %d rows lost", stream.market, stream.kind,
                              len(items))
                self.stats["rows_dropped"] += len(items)
                done += len(items)
        for stream in streams:
            if not stream.retry:
                continue
            tables = [t for t, _ in stream.retry]
            count = sum(n for _, n in stream.retry)
            table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
            self._seq += 1
            try:
                paths = write_rows(self.root, stream.market, stream.kind, table, self._seq)
            except Exception as exc:  # disk full, permissions: kept for the next flush
                self.stats["write_errors"] += 1
                log.error("history: writing %s %s failed (%s): %d rows kept", stream.market,
                          stream.kind, exc, table.num_rows)
                continue
            stream.retry = []
            if table.num_rows:
                stream.written = table.column("local_ts")[-1].as_py()
            done += count
            self.stats["rows_recorded"] += table.num_rows
            self.stats["files_written"] += len(paths)
        try:
            if compact_before is not None:
                for stream in streams:
                    compact(self.root, stream.market, stream.kind, compact_before)
            self._retention(now)
        except Exception:
            log.exception("history: compaction or retention failed")
        return done

    def _after_write(self) -> None:
        """On the loop after a write: rows kept past ``max_pending`` are dropped (a gap), and
        markets that dropped rows get their gap marked once the writer has caught up."""
        if self.pending >= self.max_pending:
            for stream in self._streams.values():
                if stream.retry:
                    first = min((t.column("local_ts")[0].as_py() for t, _ in stream.retry
                                 if t.num_rows), default=self.clock())
                    lost = sum(n for _, n in stream.retry) + len(stream.items)
                    self.pending -= lost
                    self.stats["rows_dropped"] += lost
                    stream.retry, stream.items = [], []
                    # The gap starts at the first row lost: these may precede the first
                    # row ``deliver`` dropped.
                    since = min(first, stream.dropped_since) if stream.dropping else first
                    stream.dropping, stream.dropped_since = True, since
        if self.pending >= max(1, self.max_pending // 2):
            return
        for stream in self._streams.values():
            if stream.dropping:
                stream.dropping = False
                stream.mark(stream.dropped_since, OVERFLOW, "resyncing")
                if stream.book:
                    stream.snapshot("resync")
                log.warning("history: %s %s: recording again after an overflow", stream.market,
                            stream.kind)
