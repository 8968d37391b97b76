"""Recorded market data exported in tardis.dev's formats, as Parquet or CSV files.

Two kinds of file per market (columns exactly tardis.dev's, timestamps in µs since the epoch):

- ``incremental_book_L2``: ``exchange,symbol,timestamp,local_timestamp,is_snapshot,side,
  price,amount``, one row per book level a message set (``side`` bid|ask; ``amount`` 0
  deletes the level);
- ``trades``: ``exchange,symbol,timestamp,local_timestamp,id,side,price,amount`` (``side``
  buy|sell, the taker's).

``exchange`` is the venue code in lower case (``sim``, ``smart``), ``symbol`` Astra's market
symbol, ``timestamp`` the venue's time (the local one when the venue sent none),
``local_timestamp`` when this gateway received the message.

Integrity rule (book): replaying the rows of ``[from, to]`` into a book the tardis way (a
snapshot row after update rows resets the book; amount 0 deletes a level) gives, at any
moment ``t`` the record was in sync, exactly the book a live client held at ``t``
(``RecordedBook`` rebuilt from the record). So the file starts with the book at ``from`` as
snapshot rows (the last recorded snapshot at or before it plus the updates after it); then
every update; where the record has a resync, the recorded snapshot that ended it follows as
snapshot rows (updates between the resync and that snapshot were never sent to clients).
The recorder's own ``periodic`` checkpoints are not messages a client got: skipped. Two
cases the tardis format cannot say by itself get one row with price 0 and amount 0 (a
deletion of a level that never exists): before a snapshot that follows another snapshot
with no update between (``is_snapshot`` false: consumers then reset on the second), and as
a snapshot with no level at all (``is_snapshot`` true: consumers empty the book).

Trades: the trades whose venue time lies in ``[from, to]``, in the order of
``GET /history/trades`` (venue time, receive time, record order); the recorder's resync rows
have no tardis equivalent and are left out.

Memory stays bounded: the record is read in batches (``astra.tape.iter_batches``) and the
output written as it goes (``pq.ParquetWriter``, ``pyarrow.csv``), so a busy market's day
needs no memory for all of it. A file appears under its name only once complete.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from astra.core import InvalidMarket, InvalidParameter
from astra.tape import (
    BOOK,
    TRADE,
    atomic_file,
    check_market,
    iter_batches,
    partition_files,
    read_table,
)

from .book import RecordedBook, decode_message, last_row_time

__all__ = [
    "BOOK_COLUMNS",
    "BOOK_FORMAT",
    "BOOK_SCHEMA_OUT",
    "FORMATS",
    "TRADES_FORMAT",
    "TRADE_COLUMNS",
    "TRADE_SCHEMA_OUT",
    "ExportedFile",
    "book_at",
    "book_rows",
    "export",
    "export_name",
    "trade_rows",
]

BOOK_FORMAT = "incremental_book_L2"
TRADES_FORMAT = "trades"
FORMATS = ("parquet", "csv")
BOOK_SCHEMA_OUT = pa.schema([
    ("exchange", pa.string()), ("symbol", pa.string()), ("timestamp", pa.int64()),
    ("local_timestamp", pa.int64()), ("is_snapshot", pa.bool_()), ("side", pa.string()),
    ("price", pa.float64()), ("amount", pa.float64()),
])
TRADE_SCHEMA_OUT = pa.schema([
    ("exchange", pa.string()), ("symbol", pa.string()), ("timestamp", pa.int64()),
    ("local_timestamp", pa.int64()), ("id", pa.string()), ("side", pa.string()),
    ("price", pa.float64()), ("amount", pa.float64()),
])
BOOK_COLUMNS = tuple(BOOK_SCHEMA_OUT.names)
TRADE_COLUMNS = tuple(TRADE_SCHEMA_OUT.names)
_BATCH_ROWS = 65_536  # output rows per written batch (a Parquet row group at most)
_TRADE_SLACK_US = 60_000_000  # a trade's venue time vs its receive time (spec: 60 s)
_CSV_SPECIAL = r'[,"\n\r]'


@dataclass(frozen=True, slots=True)
class ExportedFile:
    path: Path
    market: str
    kind: str  # BOOK or TRADE
    rows: int


def book_at(root: Path, market: str, time_us: int) -> RecordedBook:
    """The book a live client held at ``time_us``: the last recorded snapshot at or before it
    (any reason) and every message after it up to ``time_us``; ``synced`` False when the
    record has no snapshot before or a resync after the last one."""
    book = RecordedBook(market)
    since = last_row_time(root, market, ("snapshot",), time_us)
    if since is None:
        return book
    # Several rows may share the snapshot's µs: start at the snapshot row itself.
    rows = read_table(root, market, BOOK, since, time_us, columns=["type", "frame"])
    first = _last_snapshot(rows.column("type"))
    for frame in rows.column("frame").slice(first).to_pylist():
        book.apply(decode_message(frame))
    return book


def _last_snapshot(types: pa.ChunkedArray) -> int | None:
    hits = pc.indices_nonzero(pc.equal(types, "snapshot"))
    return hits[-1].as_py() if len(hits) else None


class _BookOut:
    """Output rows as column lists, taken as batches of about ``_BATCH_ROWS``."""

    def __init__(self, market: str) -> None:
        self.exchange, self.symbol = market.split("-", 1)[0].lower(), market
        self.cols: tuple[list, ...] = ([], [], [], [], [], [])
        self.last_snapshot = False  # the last row written was a snapshot row

    def levels(self, ts: int, local: int, snapshot: bool, bids, asks) -> None:
        tss, locals_, snaps, sides, prices, amounts = self.cols
        for side, levels in (("bid", bids), ("ask", asks)):
            n = len(levels)
            if not n:
                continue
            tss.extend([ts] * n)
            locals_.extend([local] * n)
            snaps.extend([snapshot] * n)
            sides.extend([side] * n)
            prices.extend([lv.price for lv in levels])
            amounts.extend([lv.quantity for lv in levels])

    def marker(self, ts: int, local: int, snapshot: bool) -> None:
        for col, value in zip(self.cols, (ts, local, snapshot, "bid", 0.0, 0.0), strict=True):
            col.append(value)

    def snapshot(self, ts: int, local: int, bids, asks) -> None:
        if self.last_snapshot:  # no update since the last snapshot: make consumers reset
            self.marker(ts, local, False)
        if bids or asks:
            self.levels(ts, local, True, bids, asks)
        else:
            self.marker(ts, local, True)
        self.last_snapshot = True

    def update(self, ts: int, local: int, bids, asks) -> None:
        if bids or asks:
            self.levels(ts, local, False, bids, asks)
            self.last_snapshot = False

    def take(self, force: bool = False) -> pa.RecordBatch | None:
        n = len(self.cols[0])
        if not n or (not force and n < _BATCH_ROWS):
            return None
        tss, locals_, snaps, sides, prices, amounts = self.cols
        batch = pa.RecordBatch.from_arrays([
            pa.array([self.exchange] * n, pa.string()), pa.array([self.symbol] * n, pa.string()),
            pa.array(tss, pa.int64()), pa.array(locals_, pa.int64()),
            pa.array(snaps, pa.bool_()), pa.array(sides, pa.string()),
            pa.array(prices, pa.float64()), pa.array(amounts, pa.float64()),
        ], schema=BOOK_SCHEMA_OUT)
        self.cols = ([], [], [], [], [], [])
        return batch


def book_rows(root: Path, market: str, start_us: int, end_us: int) -> Iterator[pa.RecordBatch]:
    """``market``'s ``incremental_book_L2`` rows for ``[start_us, end_us]`` (local time), in
    batches of ``BOOK_SCHEMA_OUT``: the book at ``start_us`` as snapshot rows, then every
    message after it (see the module's rule)."""
    out = _BookOut(market)
    book = book_at(root, market, start_us)
    synced = book.synced
    if synced:
        bids, asks = book.top()
        out.snapshot(_venue_us(book.timestamp, start_us), start_us, bids, asks)
    for batch in iter_batches(root, market, BOOK, start_us + 1, end_us,
                              columns=["type", "reason", "frame"]):
        locals_ = batch.column("local_ts").to_pylist()
        types = batch.column("type").to_pylist()
        reasons = batch.column("reason").to_pylist()
        frames = batch.column("frame").to_pylist()
        for i, kind in enumerate(types):
            if kind == "update":
                if not synced:
                    continue  # between a resync and its snapshot: no client got it
                msg = decode_message(frames[i])
                out.update(_venue_us(msg.timestamp, locals_[i]), locals_[i], msg.bids, msg.asks)
            elif kind == "snapshot":
                if synced and reasons[i] == "periodic":
                    continue
                msg = decode_message(frames[i])
                out.snapshot(_venue_us(msg.timestamp, locals_[i]), locals_[i], msg.bids,
                             msg.asks)
                synced = True
            elif kind == "resync":
                synced = False
        if (ready := out.take()) is not None:
            yield ready
    if (rest := out.take(force=True)) is not None:
        yield rest


def _venue_us(ms: int | None, local_us: int) -> int:
    return ms * 1000 if ms is not None else local_us


def trade_rows(root: Path, market: str, start_us: int, end_us: int) -> Iterator[pa.RecordBatch]:
    """``market``'s ``trades`` rows whose venue time lies in ``[start_us, end_us]``, ordered
    as ``GET /history/trades`` pages them (venue time, then receive time, then record order),
    in batches of ``TRADE_SCHEMA_OUT``.

    Sorted as it streams: a row not read yet was received later than the last row read, so
    its venue time is past that receive time minus the slack; the rows before that horizon
    are final and leave, sorted (a stable sort keeps record order among equals)."""
    exchange = market.split("-", 1)[0].lower()
    columns = ["type", "time", "price", "quantity", "side", "trade_id"]
    pending: list[pa.Table] = []
    order = [("timestamp", "ascending"), ("local_timestamp", "ascending")]

    def sorted_rows(table: pa.Table) -> Iterator[pa.RecordBatch]:
        table = table.take(pc.sort_indices(table, sort_keys=order))
        yield from table.combine_chunks().to_batches(max_chunksize=_BATCH_ROWS)

    for batch in iter_batches(root, market, TRADE, start_us - _TRADE_SLACK_US,
                              end_us + _TRADE_SLACK_US, columns=columns, batch_size=_BATCH_ROWS):
        local = batch.column("local_ts")
        venue = pc.multiply(batch.column("time"), 1000)
        keep = pc.and_(pc.equal(batch.column("type"), "trade"),
                       pc.and_(pc.greater_equal(venue, start_us), pc.less_equal(venue, end_us)))
        keep = pc.fill_null(keep, False)
        n = pc.sum(keep).as_py() or 0
        if n:
            pending.append(pa.Table.from_arrays([
                pa.array([exchange] * n, pa.string()), pa.array([market] * n, pa.string()),
                pc.filter(venue, keep), pc.filter(local, keep),
                pc.fill_null(pc.filter(batch.column("trade_id"), keep), ""),
                pc.utf8_lower(pc.filter(batch.column("side"), keep)),
                pc.filter(batch.column("price"), keep), pc.filter(batch.column("quantity"), keep),
            ], schema=TRADE_SCHEMA_OUT))
        if not pending:
            continue
        table = pa.concat_tables(pending)
        final = pc.less(table.column("timestamp"), local[-1].as_py() - _TRADE_SLACK_US)
        if pc.any(final).as_py():
            yield from sorted_rows(table.filter(final))
            table = table.filter(pc.invert(final))
        pending = [table] if table.num_rows else []
    if pending:
        yield from sorted_rows(pa.concat_tables(pending))


def export_name(market: str, kind: str, start_us: int, end_us: int, fmt: str) -> str:
    """``<market>_<incremental_book_L2|trades>_<from>_<to>.<fmt>``, times as compact UTC
    (``20261206T100000Z``, with ``.fff`` milliseconds when not whole seconds)."""
    label = BOOK_FORMAT if kind == BOOK else TRADES_FORMAT
    return f"{market}_{label}_{_compact(start_us)}_{_compact(end_us)}.{fmt}"


def _compact(us: int) -> str:
    moment = datetime.fromtimestamp(us // 1_000_000, UTC)
    ms = (us % 1_000_000) // 1000
    return moment.strftime("%Y%m%dT%H%M%S") + (f".{ms:03d}" if ms else "") + "Z"


def _write(batches: Iterator[pa.RecordBatch], schema: pa.Schema, target: Path, fmt: str) -> int:
    rows = 0
    with atomic_file(target, target.with_name(f".{target.name}.partial")) as sink:
        if fmt == "parquet":
            with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
                for batch in batches:
                    writer.write_batch(batch, row_group_size=_BATCH_ROWS)
                    rows += batch.num_rows
        else:
            # The header as tardis writes it (pyarrow would quote each name).
            sink.write((",".join(schema.names) + "\n").encode())
            for batch in batches:
                pacsv.write_csv(batch, sink, pacsv.WriteOptions(
                    include_header=False, quoting_style=_quoting(batch)))
                rows += batch.num_rows
    return rows


def _quoting(batch: pa.RecordBatch) -> str:
    """Bare values as tardis writes them; quotes only for a batch whose trade ids hold a
    comma, a quote or a line break (pyarrow quotes every string then, which CSV allows)."""
    if "id" in batch.schema.names:
        ids = batch.column("id")
        if pc.any(pc.match_substring_regex(ids, _CSV_SPECIAL)).as_py():
            return "needed"
    return "none"


def export(root: Path, markets: Sequence[str], start_us: int, end_us: int, fmt: str,
           kinds: Sequence[str] = (BOOK, TRADE), out: Path = Path(".")) -> list[ExportedFile]:
    """Write each of ``markets``' ``kinds`` for ``[start_us, end_us]`` as ``fmt`` files in
    ``out``; returns them in order. ``InvalidParameter`` naming the command's option (before
    any file is written) for a bad format, an empty or reversed range, or a market with no
    record of any asked kind in ``root`` (with ``kinds`` both, a market recorded as book
    only, such as a SMART market, gets its book file)."""
    if fmt not in FORMATS:
        raise InvalidParameter("--format", f"expected parquet or csv, not {str(fmt)[:20]!r}")
    if end_us < start_us:
        raise InvalidParameter("--to", "is before --from")
    if not markets:
        raise InvalidParameter("--market", "name at least one market")
    root, out = Path(root), Path(out)
    plan: list[tuple[str, str]] = []
    for market in dict.fromkeys(markets):
        try:
            check_market(market)
        except InvalidMarket as exc:
            raise InvalidParameter("--market", exc.message) from None
        have = [k for k in kinds if partition_files(root, market, k)]
        if not have:
            what = " or ".join(f"{k}" for k in kinds)
            raise InvalidParameter("--market", f"{market} has no {what} record in {root}")
        plan.extend((market, k) for k in have)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for market, kind in plan:
        target = out / export_name(market, kind, start_us, end_us, fmt)
        if kind == BOOK:
            rows = _write(book_rows(root, market, start_us, end_us), BOOK_SCHEMA_OUT, target, fmt)
        else:
            rows = _write(trade_rows(root, market, start_us, end_us), TRADE_SCHEMA_OUT, target,
                          fmt)
        written.append(ExportedFile(target, market, kind, rows))
    return written
