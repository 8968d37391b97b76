"""Writing and reading tape files: atomic parts, compaction, retention, ranged reads.

Invariants:
- ``write_rows`` splits rows by UTC date and writes one part per date: a temporary file in
  the partition, fsynced, then renamed into place (and the folder fsynced), so after a crash
  every named file is complete; ``.tmp-`` files are never read and are removed by the next
  ``TapeLock``.
- ``compact`` merges a partition's parts into one file per UTC hour (row groups of
  ``ROW_GROUP`` rows, statistics on ``local_ts``) and only then deletes them; a reader in
  between sees the compacted file and skips the parts it covers (``layout``).
- ``read_table``/``iter_batches`` return rows with ``start <= local_ts <= end`` in row order,
  reading only the files and row groups whose ``local_ts`` range meets [start, end].
- One writer per root: ``TapeLock`` holds an exclusive ``flock`` on ``ROOT/.lock``.
- A file named like a part that is not one (damaged, not Parquet, another schema) is never
  read around: a read that meets it raises ``RecordUnreadable`` naming it (and logs it);
  ``compact`` leaves its hour as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from astra.core import RecordUnreadable

from .layout import (
    TapeFile,
    _dates,
    _files_in,
    _market_dir,
    date_of,
    day_start_us,
    partition_dir,
    partition_files,
)
from .schema import schema_of

__all__ = ["ROW_GROUP", "TapeLock", "apply_retention", "atomic_file", "compact", "iter_batches",
           "read_table", "write_rows"]

log = logging.getLogger(__name__)

# 8,192 rows (about 80 s of a market at 100 updates/s): a book at a time reads one or two
# groups; 65,536 made it 4x slower (benchmarks/bench_history.py).
ROW_GROUP = 8_192
_US_PER_HOUR = 3_600_000_000
_COMPRESSION = "zstd"


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(target: Path, tmp: Path | None = None) -> Iterator[BinaryIO]:
    """A file written under a temporary name (``tmp``, default ``.tmp-<random>.parquet``
    beside ``target``), synced, then renamed to ``target`` and its folder synced: ``target``
    is never seen incomplete. On an error the temporary file is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp or target.parent / f".tmp-{uuid.uuid4().hex}.parquet"
    try:
        with tmp.open("wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _write_atomic(table: pa.Table, target: Path) -> None:
    with atomic_file(target) as sink:
        pq.write_table(table, sink, compression=_COMPRESSION, row_group_size=ROW_GROUP,
                       write_statistics=True)


def write_rows(root: Path, market: str, kind: str, table: pa.Table, seq: int) -> list[Path]:
    """Write ``table`` (rows in local-time order, ``schema_of(kind)``) as parts, one per UTC
    date; ``seq`` tells apart parts of one writer with the same first and last time."""
    table = table.cast(schema_of(kind))
    if table.num_rows == 0:
        return []
    ts = table.column("local_ts")
    first_day, last_day = date_of(ts[0].as_py()), date_of(ts[-1].as_py())
    written = []
    day = first_day
    while day <= last_day:
        if first_day == last_day:
            part = table
        else:
            lo, hi = day_start_us(day), day_start_us(day + timedelta(days=1))
            part = table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))
        if part.num_rows:
            col = part.column("local_ts")
            name = f"p-{col[0].as_py():016d}-{col[-1].as_py():016d}-{seq}.parquet"
            target = partition_dir(root, market, kind, day) / name
            _write_atomic(part, target)
            written.append(target)
        day += timedelta(days=1)
    return written


def _write_streamed(sources: list[TapeFile], kind: str, target: Path) -> None:
    """``sources``' rows, in order, into ``target`` (atomically), one row group at a time:
    memory stays at a few row groups whatever the files' size."""
    schema = schema_of(kind)
    with atomic_file(target) as sink, pq.ParquetWriter(
            sink, schema, compression=_COMPRESSION, write_statistics=True) as writer:
        for f in sources:
            with pq.ParquetFile(f.path) as parquet:
                for batch in parquet.iter_batches(batch_size=ROW_GROUP):
                    writer.write_batch(batch.cast(schema), row_group_size=ROW_GROUP)


def compact(root: Path, market: str, kind: str, before: int) -> int:
    """Merge, in each date partition, the parts whose rows all precede ``before`` (µs) into
    one compacted file per UTC hour (with that hour's compacted file, if any), so a day is
    at most 24 files and no run rewrites more than an hour; returns the parts merged."""
    merged = 0
    hours: dict[tuple[Path, int], list[TapeFile]] = {}
    for f in partition_files(root, market, kind, None, before):
        if f.last < before:
            hours.setdefault((f.path.parent, f.first // _US_PER_HOUR), []).append(f)
    for (folder, _), files in hours.items():
        parts = [f for f in files if not f.compacted]
        if not parts or len(files) < 2:
            continue
        group = sorted(files, key=lambda f: (f.first, f.last))
        try:
            for f in group:
                _open(root, f, kind, None).close()
        except (RecordUnreadable, FileNotFoundError):
            continue  # an hour with a file that is not the record's stays as it is (logged)
        target = folder / f"c-{group[0].first:016d}-{max(f.last for f in group):016d}.parquet"
        _write_streamed(group, kind, target)
        for f in group:
            if f.path != target:
                f.path.unlink(missing_ok=True)
        merged += len(parts)
    # Leftovers of an earlier, interrupted compaction: covered, so unread; delete them now.
    for day in _dates(_market_dir(root, market, kind)):
        leftovers: list[TapeFile] = []
        _files_in(partition_dir(root, market, kind, day), leftovers)
        for f in leftovers:
            f.path.unlink(missing_ok=True)
    return merged


def apply_retention(root: Path, keep_days: int, today: date) -> int:
    """Delete every date partition older than ``keep_days`` days before ``today``; returns how
    many were deleted."""
    cutoff = today - timedelta(days=keep_days)
    removed = 0
    for folder in Path(root).glob("exchange=*/type=*/symbol=*/date=*"):
        try:
            day = date.fromisoformat(folder.name[5:])
        except ValueError:
            continue
        if day < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _row_groups(meta: pq.FileMetaData, start: int | None, end: int | None) -> list[int]:
    keep = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(0).statistics  # local_ts is the first column
        if stats is not None and stats.has_min_max and (
                (start is not None and stats.max < start) or (end is not None and stats.min > end)):
            continue
        keep.append(i)
    return keep


def _ranged(batch: pa.RecordBatch | pa.Table, start: int | None, end: int | None):
    ts = batch.column("local_ts")
    mask = None
    if start is not None:
        mask = pc.greater_equal(ts, start)
    if end is not None:
        upper = pc.less_equal(ts, end)
        mask = upper if mask is None else pc.and_(mask, upper)
    return batch if mask is None else batch.filter(mask)


def _unreadable(root: Path, f: TapeFile, why: object) -> RecordUnreadable:
    try:
        name = f.path.relative_to(root)
    except ValueError:
        name = f.path
    log.error("tape: %s is unreadable (%s): move it out of the record", f.path, why)
    return RecordUnreadable(f"the record file {name} is unreadable (damaged, not Parquet, or "
                            "not of the record's schema): move it out of the record")


def _open(root: Path, f: TapeFile, kind: str, columns: Sequence[str] | None) -> pq.ParquetFile:
    """``f`` opened, its schema checked for ``columns`` (None: all) and ``local_ts`` first
    (row groups are picked by its statistics); ``FileNotFoundError`` when it vanished (a
    compaction or retention meanwhile), ``RecordUnreadable`` when it is not a record file."""
    try:
        parquet = pq.ParquetFile(f.path)
        have = parquet.schema_arrow
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(root, f, exc) from None
    schema = schema_of(kind)
    for name in columns or schema.names:
        i = have.get_field_index(name)
        if i < 0 or have.field(i).type != schema.field(name).type or have.names[0] != "local_ts":
            parquet.close()
            raise _unreadable(root, f, f"column {name}: not the record's schema")
    return parquet


def _read(root: Path, f: TapeFile, parquet: pq.ParquetFile, **options) -> Iterator[pa.RecordBatch]:
    try:
        yield from parquet.iter_batches(**options)
    except (pa.ArrowException, OSError) as exc:  # a damaged page past a sound footer
        raise _unreadable(root, f, exc) from None


def iter_batches(root: Path, market: str, kind: str, start: int | None = None,
                 end: int | None = None, columns: Sequence[str] | None = None,
                 batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
    """Rows of ``market``'s ``kind`` record with local time in [start, end], in order, in
    batches (a file's row groups are read one at a time: memory stays bounded). A file that
    vanished between the listing and its opening was compacted (its rows are in a file that
    sorts before it) or expired: the folder is listed again from the last row read on, and
    the rows already given at that time are not given twice. A file that is not one of the
    record's (damaged, not Parquet, another schema) raises ``RecordUnreadable`` naming it:
    its rows are unknown, so nothing is guessed around it."""
    cols = list(columns) if columns is not None else None
    if cols is not None and "local_ts" not in cols:
        cols = ["local_ts", *cols]
    last_ts, given, skip = None, 0, 0  # last local time given, rows given at it, to skip
    lo = start
    while True:
        for f in partition_files(root, market, kind, lo, end):
            try:
                parquet = _open(root, f, kind, cols)
            except FileNotFoundError:
                break  # list again, from last_ts
            with parquet:
                groups = _row_groups(parquet.metadata, lo, end)
                if not groups:
                    continue
                for batch in _read(root, f, parquet, batch_size=batch_size, row_groups=groups,
                                   columns=cols):
                    batch = _ranged(batch, lo, end)
                    if skip and batch.num_rows:  # resumed at last_ts: its rows come first
                        at_last = pc.sum(pc.equal(batch.column("local_ts"), last_ts)).as_py()
                        repeat = min(skip, at_last or 0)
                        batch, skip = batch.slice(repeat), skip - repeat
                    if not batch.num_rows:
                        continue
                    ts = batch.column("local_ts")
                    newest = ts[-1].as_py()
                    same = pc.sum(pc.equal(ts, newest)).as_py()
                    given = given + same if newest == last_ts else same
                    last_ts = newest
                    yield batch
        else:
            return
        lo, skip = (last_ts, given) if last_ts is not None else (start, 0)


def read_table(root: Path, market: str, kind: str, start: int | None = None,
               end: int | None = None, columns: Sequence[str] | None = None) -> pa.Table:
    """``iter_batches`` as one table (empty, with the schema, when nothing matches)."""
    schema = schema_of(kind)
    if columns is not None:
        # The order iter_batches reads them in: local_ts first unless asked for elsewhere.
        names = list(columns) if "local_ts" in columns else ["local_ts", *columns]
        schema = pa.schema([schema.field(n) for n in names])
    batches = list(iter_batches(root, market, kind, start, end, columns))
    return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


class TapeLock:
    """The one writer of a tape root: an exclusive lock on ``ROOT/.lock`` (``RuntimeError``
    when another process holds it), and stale ``.tmp-`` files of a crashed writer removed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise RuntimeError(f"another recorder is writing to {self.root}") from None
        for tmp in self.root.glob("exchange=*/type=*/symbol=*/date=*/.tmp-*"):
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
