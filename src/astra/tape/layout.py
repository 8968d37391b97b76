"""Where recorded market data lies on disk: one folder per (exchange, type, market, UTC date),
hive-style, so pyarrow datasets, DuckDB and polars read the tree as it is.

``ROOT/exchange=SIM/type=book/symbol=SIM-SPOT-BTC-USDT/date=2026-12-06/<file>.parquet``

File names carry the local receive times (µs since the epoch) of their first and last row, so
a reader picks the files of a time range without opening any:

- ``p-<first>-<last>-<seq>.parquet``: a part, written by one flush;
- ``c-<first>-<last>.parquet``: a compaction of the parts it covers.

Invariants:
- A file appears under its final name only once complete (written to ``.tmp-…``, synced,
  renamed), so a reader never sees half a file, and a crash leaves every named file readable.
- Within one partition, rows are in local-time order across files ordered by (first, last):
  the recorder's clock never goes back and each flush starts after the previous one ended.
- A file (a part, or an older compacted file) whose range lies within another compacted
  file's range is a leftover of that compaction (a crash between the rename and the deletes):
  readers skip it, the next compaction deletes it. Hence a writer never starts a part at or
  before the last row on disk (the recorder moves a row sharing that µs one µs on).
- Market symbols and types reach paths only through ``check_market``/``check_kind``: no
  separator, no leading dot, nothing else than the symbol alphabet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from astra.core import InvalidMarket, InvalidParameter

__all__ = [
    "BOOK",
    "KINDS",
    "TRADE",
    "TapeFile",
    "check_kind",
    "check_market",
    "date_of",
    "day_start_us",
    "partition_dir",
    "partition_files",
    "recorded",
]

BOOK = "book"
TRADE = "trade"
KINDS = (BOOK, TRADE)
_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_NAME = re.compile(r"([pc])-(\d{1,19})-(\d{1,19})(?:-(\d{1,9}))?\.parquet")
_US_PER_DAY = 86_400_000_000


@dataclass(frozen=True, slots=True)
class TapeFile:
    path: Path
    first: int  # local receive time of its first row, µs
    last: int  # ... and of its last
    compacted: bool
    seq: int = 0


def check_market(market: str) -> str:
    if not isinstance(market, str) or not _SYMBOL.fullmatch(market) or "-" not in market:
        raise InvalidMarket(f"not a market symbol: {str(market)[:40]!r}", market=str(market)[:40])
    return market


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidParameter("type", f"expected one of {', '.join(KINDS)}, not {kind[:20]!r}")
    return kind


def date_of(us: int) -> date:
    return datetime.fromtimestamp(us / 1_000_000, UTC).date()


def day_start_us(day: date) -> int:
    return (day - date(1970, 1, 1)).days * _US_PER_DAY


def partition_dir(root: Path, market: str, kind: str, day: date) -> Path:
    check_market(market)
    exchange = market.split("-", 1)[0]
    return (Path(root) / f"exchange={exchange}" / f"type={check_kind(kind)}"
            / f"symbol={market}" / f"date={day.isoformat()}")


def _market_dir(root: Path, market: str, kind: str) -> Path:
    return partition_dir(root, market, kind, date(1970, 1, 1)).parent


def _dates(market_dir: Path) -> list[date]:
    out = []
    if not market_dir.is_dir():
        return out
    for entry in market_dir.iterdir():
        if entry.name.startswith("date="):
            try:
                out.append(date.fromisoformat(entry.name[5:]))
            except ValueError:
                continue  # not ours
    return sorted(out)


def _files_in(folder: Path, leftovers: list[TapeFile] | None = None) -> list[TapeFile]:
    """The files of one partition folder to read, in row order; ``leftovers`` collects the
    ones a compacted file covers (parts, or an older compacted file, it was made from)."""
    found = []
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:  # removed by retention meanwhile
        return found
    for entry in entries:
        m = _NAME.fullmatch(entry.name)
        if m is not None:
            found.append(TapeFile(entry, int(m[2]), int(m[3]), m[1] == "c", int(m[4] or 0)))
    found.sort(key=lambda f: (f.first, -f.last, not f.compacted, f.seq))
    kept: list[TapeFile] = []
    covered: list[TapeFile] = [f for f in found if f.compacted]
    for f in found:
        if any(c is not f and c.first <= f.first and f.last <= c.last for c in covered):
            if leftovers is not None:  # a compaction's leftover (it crashed before deleting)
                leftovers.append(f)
            continue
        kept.append(f)
    return kept


def partition_files(root: Path, market: str, kind: str, start: int | None = None,
                    end: int | None = None) -> list[TapeFile]:
    """The files of ``market``'s ``kind`` record that may hold rows with local time in
    [start, end] (µs; None: unbounded), in row order."""
    out: list[TapeFile] = []
    first_day = date_of(start) if start is not None else None
    last_day = date_of(end) if end is not None else None
    for day in _dates(_market_dir(root, market, kind)):
        if (first_day and day < first_day) or (last_day and day > last_day):
            continue
        for f in _files_in(partition_dir(root, market, kind, day)):
            if (start is None or f.last >= start) and (end is None or f.first <= end):
                out.append(f)
    return out


def recorded(root: Path) -> dict[tuple[str, str], list[TapeFile]]:
    """Every recorded (market, kind) and its files, in row order."""
    out: dict[tuple[str, str], list[TapeFile]] = {}
    root = Path(root)
    if not root.is_dir():
        return out
    for exchange in root.glob("exchange=*"):
        for kind in KINDS:
            for symbol in (exchange / f"type={kind}").glob("symbol=*"):
                market = symbol.name[7:]
                if not _SYMBOL.fullmatch(market):
                    continue
                files = partition_files(root, market, kind)
                if files:
                    out[(market, kind)] = files
    return out
