"""Recorded market data on disk ("the tape"): partitioned Parquet files of every book event
and trade a gateway received, written by ``astra.history``'s recorder and read by its
queries, replay and export, and by the simulator's replay (``astra sim --replay``).

Layout, schemas and file rules: ``layout``, ``schema``, ``files``.
"""

from .files import (
    ROW_GROUP,
    TapeLock,
    apply_retention,
    atomic_file,
    compact,
    iter_batches,
    read_table,
    write_rows,
)
from .layout import (
    BOOK,
    KINDS,
    TRADE,
    TapeFile,
    check_kind,
    check_market,
    date_of,
    day_start_us,
    partition_dir,
    partition_files,
    recorded,
)
from .schema import BOOK_SCHEMA, TRADE_SCHEMA, schema_of
from .times import MAX_TIME_US, MIN_TIME_US, format_time, parse_time

__all__ = [
    "BOOK",
    "BOOK_SCHEMA",
    "KINDS",
    "MAX_TIME_US",
    "MIN_TIME_US",
    "ROW_GROUP",
    "TRADE",
    "TRADE_SCHEMA",
    "TapeFile",
    "TapeLock",
    "apply_retention",
    "atomic_file",
    "check_kind",
    "check_market",
    "compact",
    "date_of",
    "day_start_us",
    "format_time",
    "iter_batches",
    "parse_time",
    "partition_dir",
    "partition_files",
    "read_table",
    "recorded",
    "schema_of",
    "write_rows",
]
