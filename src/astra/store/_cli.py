"""What the store's command-line tools share (``astra keys``, ``astra credentials``): the
database options, opening the database with an error that never quotes the URL (it may
carry a password), and the formatting of times and database errors."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ._db import open_database

__all__ = ["database_options", "open_engine", "reason", "when"]


def database_options() -> argparse.ArgumentParser:
    """A parent parser with ``--data-dir`` and ``--database-url``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        help="directory of the embedded SQLite database (default $ASTRA_DATA_DIR or ~/.astra)",
    )
    common.add_argument(
        "--database-url", help="SQLAlchemy database URL (default $ASTRA_DATABASE_URL)"
    )
    return common


def open_engine(args: argparse.Namespace, prog: str) -> sa.Engine | None:
    """The database of ``args``, or None after saying on stderr why it cannot be used."""
    try:
        return open_database(args.database_url, args.data_dir)
    except (ArgumentError, ImportError) as exc:
        # ArgumentError's text quotes the URL, which may carry a password.
        detail = type(exc).__name__ if isinstance(exc, ArgumentError) else exc
        print(f"{prog}: cannot use the database URL ({detail})", file=sys.stderr)
    except (OSError, SQLAlchemyError) as exc:
        print(f"{prog}: cannot open the database: {reason(exc)}", file=sys.stderr)
    return None


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def reason(exc: BaseException) -> str:
    """A database error's first line (the driver's message when it has one)."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]
