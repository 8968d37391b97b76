"""Queries over the record (``astra.tape``): what is recorded, the book at a past moment,
pages of past trades, candles. Blocking (pyarrow): the routes call them in a thread.

Integrity rules:
- The book at ``time`` is exactly what a live client held after the last message it got at
  or before ``time`` (local receive time, inclusive): the last snapshot at or before it (any
  reason), then every update after it (``RecordedBook``). It is never guessed across a gap:
  a resync row after that snapshot, or a recorder restart (a ``start`` snapshot) after it,
  means the book was not known then: ``BookNotInSync`` (409) naming the gap, its reason and
  when the next snapshot came. A time outside the record is ``NoHistory`` (404) stating the
  recorded range.
- Trades and candles select by the trade's venue ``time`` (ms), inclusive, reading the
  rows with local time within ``SLACK_US`` of the range (a trade received more than that
  away from its venue time is not found). Trades are ordered by (venue time, local time,
  record order); a cursor is that position, so paging returns every trade of the range
  exactly once, in order, whatever the page size. Resync rows are gaps, never trades.
- Candles are aligned to the epoch; a candle covers the trades with venue time in
  [open, open + interval): open = first by that order, close = last.

Bad input is a 4xx naming the parameter: a malformed market (400), one not recorded (404),
``end`` before ``start``, a range over ``MAX_RANGE_US``, a time before the retention window
(the start of the oldest UTC day retention keeps), a ``limit`` outside 1..``MAX_LIMIT``, more
than ``MAX_CANDLES`` candles, an unknown interval, a cursor not issued for that market (or
altered).
"""

from __future__ import annotations

import base64
import re
import threading
import time
import zlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from astra.core import (
    BookNotInSync,
    Candle,
    HistoricalBook,
    HistoricalLevel,
    HistoricalTrade,
    HistoryGap,
    HistoryMarket,
    InvalidParameter,
    MarketNotFound,
    MemberState,
    NoHistory,
    RecordUnreadable,
    Side,
    TradesPage,
)
from astra.tape import (
    BOOK,
    TRADE,
    TapeFile,
    check_market,
    date_of,
    day_start_us,
    format_time,
    iter_batches,
    partition_files,
    read_table,
    recorded,
)

from .book import RecordedBook, decode_message, last_row_time

__all__ = [
    "CANDLE_CHUNK_ROWS",
    "DEFAULT_LIMIT",
    "INTERVALS",
    "MAX_CANDLES",
    "MAX_LIMIT",
    "MAX_RANGE_US",
    "SLACK_US",
    "HistoryReader",
]

SLACK_US = 60_000_000  # a trade's local receive time is within this of its venue time
MAX_RANGE_US = 31 * 86_400_000_000  # the longest trades/candles range per request
MAX_LIMIT = 1000  # trades per page
DEFAULT_LIMIT = 100
MAX_CANDLES = 1500
INTERVALS = {"1s": 1_000, "1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000,
             "4h": 14_400_000, "1d": 86_400_000}  # ms
NEXT_SNAPSHOT_US = 3_600_000_000  # how far past a gap to look for the snapshot that ended it
CANDLE_CHUNK_ROWS = 1 << 19  # candles aggregate this many trades at a time, then merge
MARKETS_TTL = 1.0  # seconds markets() answers from its cache
_DATA_TYPES = {BOOK: "ORDERBOOK", TRADE: "TRADE"}
# time (ms).local_ts (µs).k: bounded so each fits an int64 (tape times end in 2100); then a
# check of the market and those three (crc32): a cursor of another market, or altered, is a
# 400, never a silent jump to another place in the record.
_CURSOR = re.compile(r"(\d{1,13})\.(\d{1,16})\.(\d{1,9})\.([0-9a-f]{8})")
_TRADE_COLUMNS = ["type", "reason", "time", "price", "quantity", "side", "trade_id"]
_encode = msgspec.json.Encoder().encode
_decode_members = msgspec.json.Decoder(list[MemberState]).decode


def _check(market: str, position: str) -> str:
    return f"{zlib.crc32(f'{market}|{position}'.encode()):08x}"


def _cursor(market: str, time_ms: int, local_ts: int, k: int) -> str:
    position = f"{time_ms}.{local_ts}.{k}"
    raw = f"{position}.{_check(market, position)}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _parse_cursor(text: str, market: str) -> tuple[int, int, int]:
    bad = InvalidParameter("cursor", f"not a cursor of {market[:40]}'s trades: pass nextCursor "
                           "as given, with the same market")
    if not isinstance(text, str) or len(text) > 96 or not text.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise bad from None
    m = _CURSOR.fullmatch(raw)
    if m is None or _check(market, f"{m[1]}.{m[2]}.{m[3]}") != m[4]:
        raise bad
    return int(m[1]), int(m[2]), int(m[3])


def _side(text: str | None) -> Side:
    try:
        return Side(text)
    except ValueError:  # the recorder writes BUY/SELL only: a damaged or hand-made file
        raise RecordUnreadable(f"a recorded trade has side {str(text)[:20]!r}, the record is "
                               "damaged") from None


def _last_index(mask: pa.Array) -> int | None:
    found = pc.indices_nonzero(mask)
    return found[-1].as_py() if len(found) else None


class HistoryReader:
    """Read-only queries over the tape under ``root``; ``retention_days`` (None: no
    window) refuses times older than the retention keeps; ``clock`` (epoch seconds) is
    "now" for that window and the markets cache. Safe to call from several threads."""

    def __init__(self, root: Path, retention_days: int | None = None,
                 clock: Callable[[], float] = time.time, *,
                 chunk_rows: int = CANDLE_CHUNK_ROWS) -> None:
        self.root = Path(root)
        self.chunk_rows = chunk_rows  # trades aggregated at a time (candles)
        self.retention_days = retention_days
        self.clock = clock
        self._lock = threading.Lock()
        self._markets: tuple[float, list[HistoryMarket]] | None = None

    # --- what is recorded ------------------------------------------------------------------

    def markets(self) -> list[HistoryMarket]:
        """Every recorded market with its data types, first and last times, files, bytes."""
        now = self.clock()
        with self._lock:
            if self._markets is not None and 0 <= now - self._markets[0] < MARKETS_TTL:
                return self._markets[1]
        by_market: dict[str, dict] = {}
        for (market, kind), files in sorted(recorded(self.root).items()):
            entry = by_market.setdefault(market, {"types": [], "start": files[0].first,
                                                  "end": files[-1].last, "files": 0,
                                                  "bytes": 0})
            entry["types"].append(_DATA_TYPES[kind])
            entry["start"] = min(entry["start"], files[0].first)
            entry["end"] = max(entry["end"], files[-1].last)
            for f in files:
                try:
                    entry["bytes"] += f.path.stat().st_size
                except FileNotFoundError:  # compacted or expired meanwhile
                    continue
                entry["files"] += 1
        answer = [
            HistoryMarket(market=m, exchange=m.split("-", 1)[0],
                          data_types=sorted(e["types"], key=("ORDERBOOK", "TRADE").index),
                          start=e["start"] // 1000, end=e["end"] // 1000, files=e["files"],
                          bytes=e["bytes"])
            for m, e in sorted(by_market.items())
        ]
        with self._lock:
            self._markets = (now, answer)
        return answer

    def _files(self, market: str, kind: str) -> list[TapeFile]:
        check_market(market)
        files = partition_files(self.root, market, kind)
        if files:
            return files
        what = "order book" if kind == BOOK else "trades"
        other = TRADE if kind == BOOK else BOOK
        if partition_files(self.root, market, other):
            raise MarketNotFound(market, f"market {market} has no recorded {what} (only its "
                                 f"{'trades' if kind == BOOK else 'order book'})")
        raise MarketNotFound(market, f"market {market} is not recorded")

    # --- bounds --------------------------------------------------------------------------

    def window_start(self) -> int | None:
        """The oldest time (µs) retention keeps: the start of its oldest UTC day."""
        if self.retention_days is None:
            return None
        today = date_of(int(self.clock() * 1_000_000))
        return day_start_us(today - timedelta(days=self.retention_days))

    def _check_retention(self, us: int, parameter: str) -> None:
        oldest = self.window_start()
        if oldest is not None and us < oldest:
            raise InvalidParameter(
                parameter, f"{format_time(us)} is before the retention window: history is "
                f"kept {self.retention_days} days, from {format_time(oldest)}")

    def _check_range(self, start_us: int, end_us: int) -> None:
        if end_us < start_us:
            raise InvalidParameter("end", f"end ({format_time(end_us)}) is before start "
                                   f"({format_time(start_us)})")
        if end_us - start_us > MAX_RANGE_US:
            raise InvalidParameter("end", "the range from start to end is longer than 31 "
                                   "days: split it")
        self._check_retention(start_us, "start")

    # --- the book at a time --------------------------------------------------------------

    def book_at(self, market: str, time_us: int, depth: int | None = None) -> bytes:
        """The ``HistoricalBook`` of ``market`` at ``time_us`` (µs, local time, inclusive),
        ``depth`` levels a side (None: all), encoded as JSON."""
        files = self._files(market, BOOK)
        self._check_retention(time_us, "time")
        first, last = files[0].first, files[-1].last
        if time_us < first or time_us // 1000 > last // 1000:  # (to the ms: its last row's)
            raise NoHistory(f"the order book of {market} is recorded from {format_time(first)} "
                            f"to {format_time(last)}: nothing at {format_time(time_us)}",
                            parameter="time")
        snap_ts = last_row_time(self.root, market, ("snapshot",), time_us)
        if snap_ts is None:
            raise BookNotInSync(self._no_snapshot(market, time_us), parameter="time")
        rows = read_table(self.root, market, BOOK, snap_ts, time_us,
                          columns=["type", "reason", "frame"])
        types = rows.column("type")
        i = _last_index(pc.equal(types, "snapshot"))
        j = pc.indices_nonzero(pc.equal(types.slice(i), "resync"))
        if len(j):
            k = i + j[0].as_py()
            raise BookNotInSync(self._after_resync(market, time_us, rows.column("local_ts")[k]
                                                   .as_py(), rows.column("reason")[k].as_py()),
                                parameter="time")
        self._check_running(market, time_us, rows.column("local_ts")[-1].as_py())
        book = RecordedBook(market)
        for frame in rows.column("frame").slice(i).to_pylist():
            book.apply(decode_message(frame))
        bids, asks = book.top(depth)
        members = None
        if book.members is not None:
            try:
                members = _decode_members(book.members)
            except msgspec.ValidationError:
                members = None  # a newer schema's members: the levels still stand
        ts = rows.column("local_ts")
        return _encode(HistoricalBook(
            market=book.market or market, time=time_us // 1000,
            bids=[HistoricalLevel(lv.price, lv.quantity, lv.venues) for lv in bids],
            asks=[HistoricalLevel(lv.price, lv.quantity, lv.venues) for lv in asks],
            update_id=book.update_id, timestamp=book.timestamp,
            local_timestamp=ts[-1].as_py(), snapshot_local_timestamp=ts[i].as_py(),
            snapshot_reason=rows.column("reason")[i].as_py(), members=members))

    def _next_snapshot(self, market: str, after_us: int) -> tuple[int, str | None] | None:
        """The first snapshot after ``after_us`` within ``NEXT_SNAPSHOT_US``: (time, reason)."""
        for batch in iter_batches(self.root, market, BOOK, after_us + 1,
                                  after_us + NEXT_SNAPSHOT_US, columns=["type", "reason"]):
            k = pc.indices_nonzero(pc.equal(batch.column("type"), "snapshot"))
            if len(k):
                row = k[0].as_py()
                return batch.column("local_ts")[row].as_py(), batch.column("reason")[row].as_py()
        return None

    def _next_words(self, market: str, after_us: int) -> str:
        nxt = self._next_snapshot(market, after_us)
        if nxt is None:
            return "no snapshot followed within the hour"
        return f"the next snapshot came at {format_time(nxt[0])}"

    def _no_snapshot(self, market: str, time_us: int) -> str:
        return (f"the order book of {market} was not in sync at {format_time(time_us)}: the "
                f"record has no snapshot before it; {self._next_words(market, time_us)}")

    def _after_resync(self, market: str, time_us: int, resync_us: int,
                      reason: str | None) -> str:
        return (f"the order book of {market} was not in sync at {format_time(time_us)}: "
                f"resync at {format_time(resync_us)} ({reason or 'no reason given'}); "
                f"{self._next_words(market, time_us)}")

    def _check_running(self, market: str, time_us: int, last_row_us: int) -> None:
        """A ``start`` snapshot as the next row: the recorder restarted after ``time_us``,
        so what happened between its last row before and that snapshot is unknown (the
        book at that last row itself is known)."""
        if last_row_us == time_us:
            return
        for batch in iter_batches(self.root, market, BOOK, time_us + 1, None,
                                  columns=["type", "reason"]):
            if (batch.column("type")[0].as_py() == "snapshot"
                    and batch.column("reason")[0].as_py() == "start"):
                restart = batch.column("local_ts")[0].as_py()
                raise BookNotInSync(
                    f"the order book of {market} was not recorded at {format_time(time_us)}: "
                    f"the recorder was not running between {format_time(last_row_us)} and "
                    f"its restart at {format_time(restart)}", parameter="time")
            return

    # --- trades ----------------------------------------------------------------------------

    def trades(self, market: str, start_us: int, end_us: int, limit: int = DEFAULT_LIMIT,
               cursor: str | None = None) -> TradesPage:
        """Trades of ``market`` with venue time in [start_us, end_us] (µs), ``limit`` of
        them after ``cursor`` (a previous page's ``nextCursor``)."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidParameter("limit", f"expected an integer from 1 to {MAX_LIMIT}")
        self._files(market, TRADE)
        self._check_range(start_us, end_us)
        after = _parse_cursor(cursor, market) if cursor is not None else None
        t_lo, t_hi = -(-start_us // 1000), end_us // 1000  # ms, inclusive
        # From the cursor on: a row of the cursor's local time sorting after it is read
        # with its whole group (the read starts at or before that local time), or not at all.
        lo_local = max(t_lo, after[0] if after is not None else 0) * 1000 - SLACK_US
        picked: list[pa.Table] = []
        gaps: list[pa.Table] = []
        all_ts: list[pa.Array] = []
        count, offset = 0, 0
        cursor_pos: int | None = None
        for batch in iter_batches(self.root, market, TRADE, lo_local, t_hi * 1000 + SLACK_US,
                                  columns=_TRADE_COLUMNS):
            n = batch.num_rows
            ts = batch.column("local_ts")
            all_ts.append(ts)
            # pos: the row's place in this read (record order; ties of local time keep it).
            pos = pc.add(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), offset - 1)
            table = pa.Table.from_batches([batch]).append_column("pos", pos)
            if (after is not None and cursor_pos is None
                    and (at := pc.index(ts, after[1]).as_py()) >= 0):
                cursor_pos = offset + at + after[2]  # the cursor's row, in this read
            offset += n
            kind, when = table.column("type"), table.column("time")
            gaps.append(table.filter(pc.equal(kind, "resync")))
            mask = pc.and_(pc.equal(kind, "trade"), pc.and_(pc.greater_equal(when, t_lo),
                                                            pc.less_equal(when, t_hi)))
            if after is not None:
                ct, cl = after[0], after[1]
                # (no row of the cursor's local time before its group is read: no tie)
                tie = pc.and_(pc.equal(ts, cl), pc.greater(pos, cursor_pos or 0))
                later = pc.or_(pc.greater(ts, cl), tie)
                mask = pc.and_(mask, pc.or_(pc.greater(when, ct),
                                            pc.and_(pc.equal(when, ct), later)))
            chosen = table.filter(mask)
            if chosen.num_rows:
                picked.append(chosen)
                count += chosen.num_rows
            if count > limit:
                # Every row not read yet has a venue time past (its local time - slack), so
                # past the (limit+1)-th time read so far: nothing unread sorts before it.
                times = pa.concat_arrays([c for t in picked for c in t.column("time").chunks])
                kth = times.take(pc.sort_indices(times))[limit].as_py()
                if kth * 1000 <= ts[-1].as_py() - SLACK_US:
                    break
        order = [("time", "ascending"), ("local_ts", "ascending"), ("pos", "ascending")]
        if picked:
            rows = pa.concat_tables(picked)
            rows = rows.take(pc.sort_indices(rows, sort_keys=order)).slice(0, limit + 1)
        else:
            rows = None
        more = rows is not None and rows.num_rows > limit
        page = rows.slice(0, limit) if rows is not None else None
        trades = [] if page is None else [
            HistoricalTrade(price=p, quantity=q, side=_side(s), time=t, trade_id=i,
                            local_timestamp=lt)
            for p, q, s, t, i, lt in zip(
                *(page.column(c).to_pylist() for c in
                  ("price", "quantity", "side", "time", "trade_id", "local_ts")), strict=True)
        ]
        next_cursor = None
        if more:
            last = trades[-1]
            first_of_group = sum(pc.sum(pc.less(t, last.local_timestamp)).as_py() or 0
                                 for t in all_ts)
            k = page.column("pos")[-1].as_py() - first_of_group
            next_cursor = _cursor(market, last.time, last.local_timestamp, k)
        upper = trades[-1].time if more else t_hi
        return TradesPage(market=market, trades=trades, next_cursor=next_cursor,
                          gaps=self._gaps(gaps, after[0] if after else None, t_lo, upper))

    @staticmethod
    def _gaps(tables: list[pa.Table], after_ms: int | None, t_lo: int,
              upper: int) -> list[HistoryGap]:
        """Resyncs in (after_ms, upper], or [t_lo, upper] on a first page."""
        out = []
        for t in tables:
            for local_ts, when, reason in zip(*(t.column(c).to_pylist() for c in
                                                ("local_ts", "time", "reason")), strict=True):
                at = when if when is not None else local_ts // 1000
                low_ok = at > after_ms if after_ms is not None else at >= t_lo
                if low_ok and at <= upper:
                    out.append(HistoryGap(time=at, reason=reason))
        return out

    # --- candles ---------------------------------------------------------------------------

    def candles(self, market: str, interval: str, start_us: int, end_us: int) -> list[Candle]:
        """OHLCV candles of ``interval`` whose open time lies in [start, end] (start aligned
        down to the interval), from trades by venue time; intervals without trades omitted."""
        iv = INTERVALS.get(interval)
        if iv is None:
            raise InvalidParameter("interval", f"expected one of {', '.join(INTERVALS)}")
        self._files(market, TRADE)
        self._check_range(start_us, end_us)
        first_open = start_us // 1000 // iv * iv
        last_open = end_us // 1000 // iv * iv
        n = (last_open - first_open) // iv + 1
        if n > MAX_CANDLES:
            raise InvalidParameter("end", f"{n} {interval} candles from start to end: at most "
                                   f"{MAX_CANDLES} a request (narrow the range or take a "
                                   "larger interval)")
        t_lo, t_hi = first_open, last_open + iv - 1
        merged: dict[int, list] = {}
        chunk: list[pa.RecordBatch] = []
        rows = 0
        for batch in iter_batches(self.root, market, TRADE, t_lo * 1000 - SLACK_US,
                                  t_hi * 1000 + SLACK_US, columns=["type", "time", "price",
                                                                   "quantity"]):
            when = batch.column("time")
            batch = batch.filter(pc.and_(pc.equal(batch.column("type"), "trade"), pc.and_(
                pc.greater_equal(when, t_lo), pc.less_equal(when, t_hi))))
            chunk.append(batch)
            rows += batch.num_rows
            if rows >= self.chunk_rows:  # memory stays bounded over a long range
                _merge(merged, _aggregate(pa.Table.from_batches(chunk), iv))
                chunk, rows = [], 0
        if rows:
            _merge(merged, _aggregate(pa.Table.from_batches(chunk), iv))
        # A float sum carries binary noise (2.9632300000000003): 12 significant digits.
        return [Candle(time=b, open=c[1], high=c[2], low=c[3], close=c[5],
                       volume=float(f"{c[6]:.12g}"), trades=c[7])
                for b, c in sorted(merged.items())]


def _aggregate(table: pa.Table, iv: int) -> pa.Table:
    """Per bucket of ``iv`` ms: first time, open, high, low, last time, close, volume, count.
    Arrow's sort is stable and the rows come in record order, so trades of one millisecond
    keep it (open/close). (One sort key sorts ~3x faster than two.)"""
    table = table.take(pc.sort_indices(table.column("time")))
    bucket = pc.multiply(pc.divide(table.column("time"), iv), iv)
    return table.append_column("bucket", bucket).group_by("bucket", use_threads=False).aggregate(
        [("time", "min"), ("price", "first"), ("price", "max"), ("price", "min"),
         ("time", "max"), ("price", "last"), ("quantity", "sum"), ("price", "count")])


def _merge(merged: dict[int, list], part: pa.Table) -> None:
    """Fold a later chunk's buckets in: its open wins only with an earlier trade time, its
    close with a time as late or later (record order breaks ties)."""
    cols = [part.column(c).to_pylist() for c in
            ("bucket", "time_min", "price_first", "price_max", "price_min", "time_max",
             "price_last", "quantity_sum", "price_count")]
    for b, t0, o, h, lo, t1, c, v, n in zip(*cols, strict=True):
        cur = merged.get(b)
        if cur is None:
            merged[b] = [t0, o, h, lo, t1, c, v, n]
            continue
        if t0 < cur[0]:
            cur[0], cur[1] = t0, o
        if t1 >= cur[4]:
            cur[4], cur[5] = t1, c
        cur[2], cur[3] = max(cur[2], h), min(cur[3], lo)
        cur[6] += v
        cur[7] += n
