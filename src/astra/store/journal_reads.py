"""The order journal's reads: one entry by id, client order id or venue order id; the pending
entries to reconcile; an owner's orders (``journal.OrderJournal`` mixes this in).

Invariants:
- Every read first runs (or waits for) this process's deferred writes (``_deferred.settle``):
  a reader never sees an entry as it was before an acknowledgement already answered.
- Reads never write; entries come back decoded (``JournalEntry``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from .deferred import DeferredWrites
from .journal_payloads import _entry
from .journal_schema import (
    _BY_CLIENT_ID,
    _BY_ID,
    _BY_VENUE_ID,
    _PENDING_VALUES,
    CLOSED_ORDER_STATUSES,
    ORDERS_JOURNAL,
    JournalEntry,
    JournalState,
)

__all__ = ["JournalReads"]

_S = JournalState
_T = ORDERS_JOURNAL


class JournalReads:
    """The reading half of ``OrderJournal`` (which provides the attributes typed here)."""

    _deferred: DeferredWrites
    _clock: Callable[[], int]

    def _reader(self) -> contextlib.AbstractContextManager[sa.Connection]:
        raise NotImplementedError  # (OrderJournal's: the inline engine or the engine)

    def get(self, key_id: str, exchange: str, client_order_id: str) -> JournalEntry | None:
        """The entry of this owner's client order id on ``exchange``, or None."""
        return self._one(
            _BY_CLIENT_ID,
            {"key_id": key_id, "exchange": str(exchange), "client_order_id": client_order_id},
        )

    def get_entry(self, entry_id: int) -> JournalEntry | None:
        return self._one(_BY_ID, {"entry_id": entry_id})

    def by_venue_order(
        self, key_id: str, exchange: str, venue_order_id: str
    ) -> JournalEntry | None:
        """The entry of this owner whose venue order id is ``venue_order_id``, or None."""
        return self._one(
            _BY_VENUE_ID,
            {"key_id": key_id, "exchange": str(exchange), "venue_order_id": venue_order_id},
        )

    def pending(
        self,
        exchange: str | None = None,
        *,
        key_id: str | None = None,
        older_than_ms: int = 0,
    ) -> list[JournalEntry]:
        """Entries whose outcome at the venue is unknown (``INTENT``, ``SENT``, ``UNKNOWN``),
        oldest first: what to reconcile on startup.

        ``older_than_ms`` skips entries touched more recently: for periodic sweeps while other
        gateway processes may own young in-flight entries (on startup of the only process,
        everything pending is orphaned: 0, the default).
        """
        where = [_T.c.state.in_(_PENDING_VALUES)]
        if exchange is not None:
            where.append(_T.c.exchange == str(exchange))
        if key_id is not None:
            where.append(_T.c.key_id == key_id)
        if older_than_ms > 0:
            where.append(_T.c.updated_at <= self._clock() - older_than_ms)
        return self._many(sa.select(_T).where(*where).order_by(_T.c.id))

    def list_orders(
        self,
        key_id: str,
        exchange: str | None = None,
        market: str | None = None,
        open_only: bool = False,
        limit: int | None = None,
    ) -> list[JournalEntry]:
        """This owner's entries, newest first.

        ``open_only`` keeps what may be live at the venue: pending entries, and acknowledged
        ones whose last known status is not in ``CLOSED_ORDER_STATUSES``.
        """
        where = [_T.c.key_id == key_id]
        if exchange is not None:
            where.append(_T.c.exchange == str(exchange))
        if market is not None:
            where.append(_T.c.market == market)
        if open_only:
            where.append(
                sa.or_(
                    _T.c.state.in_(_PENDING_VALUES),
                    sa.and_(
                        _T.c.state == _S.ACKNOWLEDGED.value,
                        sa.or_(
                            _T.c.order_status.is_(None),
                            _T.c.order_status.not_in(sorted(CLOSED_ORDER_STATUSES)),
                        ),
                    ),
                )
            )
        query = sa.select(_T).where(*where).order_by(_T.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        return self._many(query)


    @staticmethod
    def _read(conn: sa.Connection, entry_id: int) -> JournalEntry:
        row = conn.execute(_BY_ID, {"entry_id": entry_id}).first()
        if row is None:
            raise LookupError(f"no order journal entry with id {entry_id}")
        return _entry(row)

    def _one(self, stmt: sa.Select, params: dict[str, Any]) -> JournalEntry | None:
        self._deferred.settle()
        with self._reader() as conn:
            row = conn.execute(stmt, params).first()
        return None if row is None else _entry(row)

    def _many(self, query: sa.Select) -> list[JournalEntry]:
        self._deferred.settle()
        with self._reader() as conn:
            return [_entry(r) for r in conn.execute(query)]
