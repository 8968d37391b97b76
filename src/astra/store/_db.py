"""The database: one SQLAlchemy Core ``MetaData`` for every table Astra keeps, and the engine.

Which database ``open_database`` opens, first match wins:

1. ``url`` — any SQLAlchemy URL (``postgresql+psycopg://...`` at scale);
2. ``data_dir`` — the embedded SQLite file ``<data_dir>/astra.db``;
3. the ``ASTRA_DATABASE_URL`` environment variable;
4. SQLite at ``default_data_dir()/astra.db`` (``ASTRA_DATA_DIR``, else ``~/.astra``).

Invariants:
- ``METADATA`` is the only ``MetaData``: modules that define tables (``keys.py``, later the
  orders journal) attach to it, and ``open_database`` creates every attached table that is
  missing. Nothing is ever dropped or altered here.
- SQLite is shared by several processes (a running server and the ``astra keys`` CLI): every
  connection uses the WAL journal (readers never block the writer) and a busy timeout (a
  writer waits for the lock instead of failing with "database is locked").
- Tables are created under a lock on PostgreSQL (a transaction-scoped advisory lock, the
  check and the ``CREATE TABLE`` in one transaction): several gateway processes starting at
  once on an empty database would otherwise both find a table missing and one fail on the
  other's ``CREATE`` (a unique violation in the catalog).
- The data directory is created private (``0o700``) and the SQLite file ``0o600``: they
  hold key hashes and trading state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DATABASE_FILE",
    "DATABASE_URL_ENV",
    "DATA_DIR_ENV",
    "METADATA",
    "default_data_dir",
    "open_database",
]

DATA_DIR_ENV = "ASTRA_DATA_DIR"
DATABASE_URL_ENV = "ASTRA_DATABASE_URL"
DATABASE_FILE = "astra.db"
BUSY_TIMEOUT_MS = 10_000

METADATA = sa.MetaData()
_SCHEMA_LOCK = 0x61737472615F6462  # "astra_db": the advisory lock creating tables takes


def default_data_dir() -> Path:
    """``$ASTRA_DATA_DIR`` when set (``~`` expanded), else ``~/.astra``."""
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".astra"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")  # answers 'memory' for in-memory databases
        cur.execute("PRAGMA synchronous = NORMAL")  # durable across crashes of the process in WAL
        cur.execute("PRAGMA foreign_keys = ON")
    finally:
        cur.close()


def _sqlite_file(data_dir: Path) -> sa.URL:
    data_dir = data_dir.expanduser()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / DATABASE_FILE
    # An empty file is a valid empty database; creating it ourselves fixes its mode, and SQLite
    # gives the -wal and -shm files the mode of the database file.
    path.touch(mode=0o600, exist_ok=True)
    return sa.URL.create("sqlite+pysqlite", database=str(path))


def open_database(url: str | None = None, data_dir: Path | None = None) -> sa.Engine:
    """An engine on the configured database (see the module docstring), tables created."""
    if url is None and data_dir is None:
        url = os.environ.get(DATABASE_URL_ENV, "").strip() or None
    target = sa.make_url(url) if url is not None else _sqlite_file(data_dir or default_data_dir())
    sqlite = target.get_backend_name() == "sqlite"
    # Server databases drop idle connections; a ping on checkout replaces them transparently.
    engine = sa.create_engine(target, pool_pre_ping=not sqlite)
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
        METADATA.create_all(engine)
        return engine
    with engine.begin() as conn:
        if target.get_backend_name() == "postgresql":  # released at commit
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
        METADATA.create_all(conn)
    return engine
