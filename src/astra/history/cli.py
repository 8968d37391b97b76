"""``astra history``: the recorded market data from the command line (``export``).

The parser is built without pyarrow (``astra``'s start stays fast); ``run_history`` imports
the export only when the command runs. Bad input exits with status 2 and a message naming
the option; success exits 0 after printing each file written and its row count.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

__all__ = ["add_history_parser", "run_history"]

_EXPORT_HELP = """\
Files: OUT/<market>_<incremental_book_L2|trades>_<from>_<to>.<parquet|csv>, times in compact
UTC (20261206T100000Z). Columns are tardis.dev's: incremental_book_L2 = exchange, symbol,
timestamp, local_timestamp, is_snapshot, side (bid|ask), price, amount (0 deletes the level);
trades = exchange, symbol, timestamp, local_timestamp, id, side (buy|sell), price, amount.
Timestamps are µs since the epoch: timestamp the venue's, local_timestamp this gateway's
receive time. The book file starts with the book at --from as snapshot rows, then every
update, and a fresh snapshot after any resync in the record; trades are those whose venue
time lies in [--from, --to]. Times: ISO 8601 (2026-12-06T10:00:00Z; no zone = UTC) or Unix
milliseconds."""


def add_history_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``history`` and its sub-commands to ``subparsers``; returns it."""
    history = subparsers.add_parser("history", help="recorded market data: export")
    sub = history.add_subparsers(dest="history_command", required=True)
    export = sub.add_parser(
        "export", help="write recorded books and trades as Parquet or CSV (tardis.dev columns)",
        description="Export recorded market data in tardis.dev's incremental_book_L2 and "
        "trades formats.", epilog=_EXPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("--market", action="append", required=True, metavar="MARKET",
                        help="a recorded market (repeat for several)")
    export.add_argument("--from", dest="start", required=True, metavar="TIME",
                        help="start, inclusive (ISO 8601 or Unix ms)")
    export.add_argument("--to", dest="end", required=True, metavar="TIME",
                        help="end, inclusive (ISO 8601 or Unix ms)")
    export.add_argument("--format", required=True, choices=("parquet", "csv"))
    export.add_argument("--type", default="both", choices=("book", "trade", "both"),
                        help="what to export (default both; a SMART market has books only)")
    export.add_argument("--dir", type=Path, metavar="ROOT",
                        help="the record's directory (default: --config's [history] dir, else "
                        "$ASTRA_DATA_DIR/history or ~/.astra/history)")
    export.add_argument("--config", type=Path, metavar="FILE",
                        help="a gateway configuration whose [history] dir is the record's")
    export.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                        help="where to write the files (default: the current directory)")
    return history


def _fail(message: str) -> int:
    print(f"astra history export: {message}", file=sys.stderr)
    return 2


def _root(args: argparse.Namespace) -> Path:
    """The record's directory: --dir, else --config's [history] dir, else the default."""
    from astra.store import default_data_dir

    if args.dir is not None:
        return args.dir.expanduser()
    if args.config is None:
        return default_data_dir() / "history"
    from .config import HistoryConfig

    with args.config.open("rb") as f:
        config = tomllib.load(f)
    return HistoryConfig.from_config(config.get("history"), default_data_dir()).dir


def run_history(args: argparse.Namespace) -> int:
    """Run ``astra history <command>``; returns the exit status."""
    from astra.core import AstraError
    from astra.tape import BOOK, TRADE, parse_time

    from .export import export

    try:
        root = _root(args)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return _fail(f"--config: {args.config}: {exc}")
    except ValueError as exc:  # HistoryConfig: a bad [history] setting, named
        return _fail(f"--config: {args.config}: {exc}")
    if not root.is_dir():
        return _fail(f"--dir: no recorded market data in {root} (not a directory)")
    kinds = {"book": (BOOK,), "trade": (TRADE,), "both": (BOOK, TRADE)}[args.type]
    try:
        start = parse_time(args.start, "--from")
        end = parse_time(args.end, "--to")
        files = export(root, args.market, start, end, args.format, kinds, args.out)
    except AstraError as exc:
        return _fail(exc.message)
    except OSError as exc:  # --out not writable, disk full
        return _fail(f"--out: {exc}")
    for f in files:
        print(f"{f.path} ({f.rows} rows)")
    return 0
