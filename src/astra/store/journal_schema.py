"""The order journal's table, states, rows and errors (``journal.py`` has the state machine).

Invariants:
- ``ORDERS_JOURNAL`` is attached to ``_db.METADATA``: ``open_database`` creates it.
- The statements below are built once with bound parameters: building and cache-keying a
  fresh SQLAlchemy statement costs more than SQLite takes to run it.
- Times are integer milliseconds since the Unix epoch.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from astra.core import MAX_MARKET_LENGTH, Conflict

from ._db import METADATA

__all__ = [
    "CLIENT_ORDER_ID_MAX_LENGTH",
    "CLOSED_ORDER_STATUSES",
    "ORDERS_JOURNAL",
    "PENDING_STATES",
    "RECONCILE_GRACE_MS",
    "ClientOrderIdConflict",
    "InvalidTransition",
    "JournalBusy",
    "JournalEntry",
    "JournalState",
]

CLIENT_ORDER_ID_MAX_LENGTH = 64  # what the journal stores; each venue is stricter (see above)
RECONCILE_GRACE_MS = 120_000
MAX_REQUEST_BYTES = 64 * 1024
MAX_ERROR_MESSAGE_LENGTH = 500
_KEY_ID_MAX = 64
_EXCHANGE_RE = re.compile(r"[A-Z][A-Z0-9_]{0,15}")
_VENUE_ORDER_ID_MAX = 128
_ORDER_STATUS_MAX = 32

# Order statuses (``last_order["status"]``, upper-cased) after which an acknowledged order is no
# longer open. Covers the Binance-style and the ccxt vocabularies.
CLOSED_ORDER_STATUSES = frozenset(
    {"FILLED", "CANCELED", "CANCELLED", "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH", "CLOSED"}
)


class JournalState(StrEnum):
    INTENT = "INTENT"  # written, not yet (known to be) sent
    SENT = "SENT"  # about to go / gone on the wire, no answer yet
    ACKNOWLEDGED = "ACKNOWLEDGED"  # the venue has the order (venue_order_id is set)
    REJECTED = "REJECTED"  # the venue refused it, or it failed before being sent: final
    UNKNOWN = "UNKNOWN"  # sent, outcome unknown (timeout, connection lost): reconcile it
    NOT_PLACED = "NOT_PLACED"  # reconciled: the venue does not have it after the grace period


PENDING_STATES = frozenset({JournalState.INTENT, JournalState.SENT, JournalState.UNKNOWN})
_PENDING_VALUES = sorted(s.value for s in PENDING_STATES)
_S = JournalState

ORDERS_JOURNAL = sa.Table(
    "orders_journal",
    METADATA,
    # INTEGER PRIMARY KEY on SQLite (the rowid, autoincrementing); BIGINT identity elsewhere.
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("key_id", sa.String(_KEY_ID_MAX), nullable=False),  # the owner (Astra API key id)
    sa.Column("exchange", sa.String(16), nullable=False),
    sa.Column("market", sa.String(MAX_MARKET_LENGTH), nullable=False),  # Astra symbol
    sa.Column("client_order_id", sa.String(CLIENT_ORDER_ID_MAX_LENGTH), nullable=False),
    sa.Column("request", sa.Text, nullable=False),  # JSON, keys sorted, no credentials
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("venue_order_id", sa.String(_VENUE_ORDER_ID_MAX), nullable=True),
    sa.Column("last_order", sa.Text, nullable=True),  # JSON of the last normalized order
    sa.Column("order_status", sa.String(_ORDER_STATUS_MAX), nullable=True),  # its "status"
    sa.Column("error", sa.Text, nullable=True),  # JSON {code, message, venue?, venueCode?}
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("sent_at", sa.BigInteger, nullable=True),
    sa.Column("reconciled_at", sa.BigInteger, nullable=True),
    sa.Column("reconcile_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint(
        "key_id", "exchange", "client_order_id", name="uq_orders_journal_client_order_id"
    ),
    sa.Index("ix_orders_journal_state", "state"),
    sa.Index("ix_orders_journal_venue_order", "exchange", "venue_order_id"),
    sa.Index("ix_orders_journal_owner", "key_id", "exchange", "market"),
)
_T = ORDERS_JOURNAL

# Statements are built once with bound parameters: constructing and cache-keying a fresh
# SQLAlchemy statement costs more than SQLite takes to run it, and three run per order.
_INSERT = sa.insert(_T)
_BY_ID = sa.select(_T).where(_T.c.id == sa.bindparam("entry_id"))
_BY_CLIENT_ID = sa.select(_T).where(
    _T.c.key_id == sa.bindparam("key_id"),
    _T.c.exchange == sa.bindparam("exchange"),
    _T.c.client_order_id == sa.bindparam("client_order_id"),
)
_BY_VENUE_ID = sa.select(_T).where(
    _T.c.key_id == sa.bindparam("key_id"),
    _T.c.exchange == sa.bindparam("exchange"),
    _T.c.venue_order_id == sa.bindparam("venue_order_id"),
)

_MARK_SENT = (
    sa.update(_T)
    .where(
        _T.c.id == sa.bindparam("entry_id"),
        sa.or_(
            _T.c.state == JournalState.INTENT.value,
            sa.and_(_T.c.state == JournalState.UNKNOWN.value, _T.c.sent_at.is_(None)),
        ),
    )
    .values(
        state=JournalState.SENT.value,
        sent_at=sa.bindparam("new_sent_at"),
        updated_at=sa.bindparam("new_updated_at"),
    )
)


@functools.cache
def _update(
    allowed: frozenset[str], columns: tuple[str, ...], settled: bool = False, bump: bool = False
) -> sa.Update:
    """``UPDATE ... SET <columns> WHERE id = :entry_id AND state IN <allowed>``; ``settled``
    adds ``AND coalesce(sent_at, created_at) <= :settled_before``, ``bump`` increments
    ``reconcile_attempts``. Values are bound as ``new_<column>``."""
    where = [_T.c.id == sa.bindparam("entry_id"), _T.c.state.in_(sorted(allowed))]
    if settled:
        where.append(
            sa.func.coalesce(_T.c.sent_at, _T.c.created_at) <= sa.bindparam("settled_before")
        )
    values: dict[str, Any] = {c: sa.bindparam(f"new_{c}") for c in columns}
    if bump:
        values["reconcile_attempts"] = _T.c.reconcile_attempts + 1
    return sa.update(_T).where(*where).values(values)


class ClientOrderIdConflict(Conflict):
    """A client order id reused for a different order (409, code ``CONFLICT``)."""

    def __init__(self, exchange: str, client_order_id: str) -> None:
        super().__init__(
            f"clientOrderId '{client_order_id}' was already used on {exchange} for a different "
            "order; send a new clientOrderId for a new order",
            parameter="clientOrderId",
        )


class InvalidTransition(RuntimeError):
    """A journal operation not allowed from the entry's current state (a bug or a lost race)."""

    def __init__(self, entry_id: int, operation: str, state: str, detail: str = "") -> None:
        self.entry_id = entry_id
        self.operation = operation
        self.state = JournalState(state)
        msg = f"order journal entry {entry_id}: cannot {operation} an order in state {state}"
        super().__init__(msg + (f" ({detail})" if detail else ""))


class JournalBusy(RuntimeError):
    """An inline write found the database locked by another writer (``OrderJournal.inline``):
    nothing was written; run the call on a thread instead, where it may wait for the lock."""



@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled order. ``request``, ``last_order`` and ``error`` are decoded JSON."""

    id: int
    key_id: str
    exchange: str
    market: str
    client_order_id: str
    request: dict[str, Any]
    state: JournalState
    created_at: int
    updated_at: int
    venue_order_id: str | None = None
    last_order: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    sent_at: int | None = None
    reconciled_at: int | None = None
    reconcile_attempts: int = 0

    @property
    def pending(self) -> bool:
        """The outcome at the venue is not known yet: reconcile before trusting it."""
        return self.state in PENDING_STATES

    @property
    def order_status(self) -> str | None:
        status = (self.last_order or {}).get("status")
        return _order_status(status)




def _order_status(status: object) -> str | None:
    return str(status).upper()[:_ORDER_STATUS_MAX] if status not in (None, "") else None
