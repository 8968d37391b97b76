"""The order journal's inline writes on an embedded SQLite file: the event loop's own path.

An event loop calls the journal in its own thread (``OrderJournal.inline``). The two writes on
every order's path, the intent (``begin``) and the acknowledgement, then run here as plain SQL
on one DB-API connection of SQLAlchemy's (``Engine.raw_connection``) kept for the journal's
life: SQLAlchemy's per-statement work (pool checkout, transaction objects, compiled-cache
lookup, parameter and result processing) cost more than SQLite takes to run them. Every other
statement keeps going through SQLAlchemy Core.

Invariants:
- No busy wait on the loop: the connection's ``busy_timeout`` is 0 and a transaction starts
  with ``BEGIN IMMEDIATE`` (the write lock, or "busy" at once); a write that meets another
  writer's lock raises ``JournalBusy`` having written nothing (rolled back), and the caller
  runs it on a thread, where it may wait.
- Acknowledgements ride along: ``begin`` writes the acknowledgements waiting in the journal's
  deferred queue in the intent's transaction, before its INSERT: one commit for all. If the
  transaction fails, none of it is committed and the caller puts them back in the queue.
- No automatic WAL checkpoint on the loop: a checkpoint copies the WAL into the database file
  and syncs it (milliseconds); inline connections run with ``wal_autocheckpoint=0`` and every
  ``CHECKPOINT_EVERY`` inline commits a PASSIVE checkpoint runs on a thread of its own (the
  engine's other connections keep SQLite's automatic one).
- One thread at a time uses the connection (``lock``); the journal's deferred writes may run
  on any thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from .journal_schema import JournalBusy, JournalState

__all__ = ["CHECKPOINT_EVERY", "AckRow", "InlineWriter", "busy", "inline_pragmas"]

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 256  # inline commits between two PASSIVE checkpoints (a few pages each)

# (venue_order_id, last_order JSON, order_status, updated_at, entry id)
AckRow = tuple[str, str, str | None, int, int]

_INSERT_SQL = (
    "INSERT INTO orders_journal (key_id, exchange, market, client_order_id, request, state, "
    "created_at, updated_at, sent_at, reconcile_attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"
)
# acknowledge's conditional UPDATE (journal.py): SENT, UNKNOWN, NOT_PLACED -> ACKNOWLEDGED
_ACK_SQL = (
    f"UPDATE orders_journal SET state = '{JournalState.ACKNOWLEDGED.value}', "
    "venue_order_id = ?, last_order = ?, order_status = ?, error = NULL, updated_at = ? "
    f"WHERE id = ? AND state IN ('{JournalState.SENT.value}', '{JournalState.UNKNOWN.value}', "
    f"'{JournalState.NOT_PLACED.value}')"
)


def inline_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """``_db``'s pragmas (WAL is the file's own, set by the main engine), but no busy wait and
    no automatic checkpoint: an inline write that meets another writer's lock fails at once
    (``JournalBusy``), and checkpoints run on a thread."""
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA busy_timeout = 0")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA wal_autocheckpoint = 0")
    finally:
        cur.close()


def busy(exc: BaseException) -> bool:
    """Whether ``exc`` (SQLAlchemy's or sqlite3's) says another writer holds the lock."""
    orig = exc.orig if isinstance(exc, OperationalError) else exc
    text = str(orig if orig is not None else exc).lower()
    return "locked" in text or "busy" in text


class InlineWriter:
    """The two hot statements on one kept connection of ``inline_engine``; checkpoints through
    ``engine`` (the journal's, whose connections may wait)."""

    def __init__(self, inline_engine: sa.Engine, engine: sa.Engine) -> None:
        self._inline_engine = inline_engine
        self._engine = engine
        self._conn: Any = None  # the pooled DB-API connection (``raw_connection``)
        self.lock = threading.Lock()
        self._commits = 0
        self._checkpoints: ThreadPoolExecutor | None = None
        self._checkpointing = False
        self.checkpoints = 0  # PASSIVE checkpoints run so far (a figure for tests)

    def _driver(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._inline_engine.raw_connection()
        return self._conn.driver_connection

    def begin(self, values: tuple, acks: list[AckRow]) -> tuple[int, list[int]]:
        """Insert the intent ``values`` (``_INSERT_SQL``'s order), the ``acks`` first, in one
        commit: ``(new id, each ack's rowcount)``. Raises ``JournalBusy`` or sqlite3's
        ``IntegrityError`` (the client order id taken) with nothing written."""
        return self._commit(acks, values)

    def acknowledge(self, acks: list[AckRow]) -> list[int]:
        """The ``acks`` in one commit: each one's rowcount (0: not applicable from the row's
        state, for ``OrderJournal.acknowledge`` to judge)."""
        return self._commit(acks, None)[1]

    def _commit(self, acks: list[AckRow], values: tuple | None) -> tuple[int, list[int]]:
        with self.lock:
            conn = self._driver()
            try:
                conn.execute("BEGIN IMMEDIATE")
                counts = [conn.execute(_ACK_SQL, row).rowcount for row in acks]
                entry_id = conn.execute(_INSERT_SQL, values).lastrowid if values else 0
                conn.commit()
            except BaseException as exc:
                self._rollback(conn)
                if isinstance(exc, sqlite3.OperationalError) and busy(exc):
                    raise JournalBusy(str(exc)[:200]) from None
                raise
            self._committed()
        return entry_id, counts

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.rollback()

    def _committed(self) -> None:
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and not self._checkpointing:
            if self._checkpoints is None:
                self._checkpoints = ThreadPoolExecutor(1, thread_name_prefix="astra-checkpoint")
            self._checkpointing = True
            self._checkpoints.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            self.checkpoints += 1
        except Exception as exc:  # a later one catches up; SQLite's own one remains too
            log.warning("WAL checkpoint failed: %s", str(exc)[:200])
        finally:
            self._checkpointing = False

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if self._checkpoints is not None:
            self._checkpoints.shutdown(wait=True)
            self._checkpoints = None
