"""The routed-order journal: SMART parent orders and their child orders (SQLAlchemy Core).

The smart order router (``astra.routing``) writes here before anything reaches a venue:

1. ``begin(key_id, market, client_order_id, request, parent_id, plan, children)`` writes the
   parent and its first round of children (state ``INTENT``) in one transaction. It returns
   ``(parent, True)`` only to the caller that created the row; a retried or concurrent request
   with the same client order id gets ``(existing, False)`` and sends nothing. The same id with
   another request raises ``ClientOrderIdConflict`` (409).
2. ``add_children`` journals a later round (a residual re-route, the GTC rest) before it is
   sent and returns its children as written; ``mark_sent`` marks a round's children just
   before they go out (``SENT``).
3. Each child's outcome: ``settle_child(id, state, order, ...)``: ``DONE`` (the venue's order is
   final), ``OPEN`` (resting), ``UNKNOWN`` (sent, no answer yet: reconciled by client order id
   through the order journal, never sent again), ``REJECTED`` or ``NOT_SENT`` (the gateway
   stopped before sending it: nothing reached a venue).
4. ``update_parent`` records the parent's recomputed status and state: ``EXECUTING`` (a gateway
   is running its rounds), ``OPEN`` (a child rests or has an unknown outcome: refreshed on
   reads and reconciled at startup) or ``DONE``.

Invariants:
- A (``key_id``, ``client_order_id``) names at most one parent: a UNIQUE constraint, not a
  check-then-insert, so it holds across processes sharing one database. Parent ids
  (``sor-`` + base62) are unique too and stable across restarts.
- A (``parent_id``, ``round``, ``leg``) is journaled once, so a child (and its client order id)
  is never created twice; each child's venue-side idempotency is the order journal's
  (``orders_journal``: one order per key, venue and client order id).
- No credentials are stored (the order journal's payload checks apply to every JSON column).
- Times are integer milliseconds since the Unix epoch. Synchronous: call from a thread.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from astra.core import MAX_MARKET_LENGTH

from ._db import METADATA
from .journal import (
    CLIENT_ORDER_ID_MAX_LENGTH,
    ClientOrderIdConflict,
    _decode,
    _encode,
    _encode_error,
)

__all__ = [
    "CHILD_STATES",
    "PARENT_STATES",
    "ROUTED_CHILDREN",
    "ROUTED_PARENTS",
    "ChildEntry",
    "ChildIntent",
    "ParentEntry",
    "RoutingJournal",
    "new_parent_id",
]

PARENT_STATES = ("EXECUTING", "OPEN", "DONE")
CHILD_STATES = ("INTENT", "SENT", "OPEN", "UNKNOWN", "DONE", "REJECTED", "NOT_SENT")
_LIVE_PARENT = ("EXECUTING", "OPEN")
_ID_MAX = 40

ROUTED_PARENTS = sa.Table(
    "routed_parents",
    METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("parent_id", sa.String(_ID_MAX), nullable=False, unique=True),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("market", sa.String(MAX_MARKET_LENGTH), nullable=False),
    sa.Column("client_order_id", sa.String(CLIENT_ORDER_ID_MAX_LENGTH), nullable=False),
    sa.Column("request", sa.Text, nullable=False),  # the SmartOrderRequest as sent, JSON
    sa.Column("plan", sa.Text, nullable=False),  # arrival mid, best single venue, rounds, ...
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),  # the parent's OrderStatus
    sa.Column("canceled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("key_id", "client_order_id", name="uq_routed_parents_client_order_id"),
    sa.Index("ix_routed_parents_owner", "key_id", "market", "state"),
    sa.Index("ix_routed_parents_state", "state"),
)

ROUTED_CHILDREN = sa.Table(
    "routed_children",
    METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("parent_id", sa.String(_ID_MAX), nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("leg", sa.Integer, nullable=False),
    sa.Column("venue", sa.String(16), nullable=False),
    sa.Column("market", sa.String(MAX_MARKET_LENGTH), nullable=False),
    sa.Column("client_order_id", sa.String(CLIENT_ORDER_ID_MAX_LENGTH), nullable=False),
    sa.Column("request", sa.Text, nullable=False),  # the PlaceOrder body, JSON
    sa.Column("fee_rate", sa.Float, nullable=False),  # the venue's published rate it pays
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("last_order", sa.Text, nullable=True),  # the venue's last answer (Order JSON)
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("parent_id", "round", "leg", name="uq_routed_children_leg"),
    sa.Index("ix_routed_children_parent", "parent_id"),
)
_P, _C = ROUTED_PARENTS, ROUTED_CHILDREN
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def new_parent_id() -> str:
    """``sor-`` + 20 base62 characters (119 random bits): unique without coordination."""
    return "sor-" + "".join(secrets.choice(_BASE62) for _ in range(20))


@dataclass(frozen=True, slots=True)
class ChildIntent:
    round: int
    leg: int
    venue: str
    market: str
    client_order_id: str
    request: Mapping[str, Any]
    fee_rate: float


@dataclass(frozen=True, slots=True)
class ChildEntry:
    id: int
    parent_id: str
    round: int
    leg: int
    venue: str
    market: str
    client_order_id: str
    request: dict[str, Any]
    fee_rate: float
    state: str
    created_at: int
    updated_at: int
    last_order: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class ParentEntry:
    id: int
    parent_id: str
    key_id: str
    market: str
    client_order_id: str
    request: dict[str, Any]
    plan: dict[str, Any]
    state: str
    status: str
    canceled: bool
    created_at: int
    updated_at: int
    children: tuple[ChildEntry, ...] = field(default=())


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RoutingJournal:
    """The ``routed_parents`` and ``routed_children`` tables of ``engine`` (module docstring)."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], int] = _now_ms) -> None:
        self._engine = engine
        self._clock = clock
        ROUTED_PARENTS.create(engine, checkfirst=True)
        ROUTED_CHILDREN.create(engine, checkfirst=True)

    # -- writing

    def begin(self, key_id: str, market: str, client_order_id: str,
              request: Mapping[str, Any], parent_id: str, plan: Mapping[str, Any],
              children: Sequence[ChildIntent], status: str = "NEW") -> tuple[ParentEntry, bool]:
        """Journal a parent and its first children, or find the parent this id already names."""
        body = _encode(request, "routed order request")
        now = self._clock()
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(_P), {
                    "parent_id": parent_id, "key_id": key_id, "market": market,
                    "client_order_id": client_order_id, "request": body,
                    "plan": _encode(plan, "routing plan"), "state": "EXECUTING",
                    "status": status, "canceled": False, "created_at": now, "updated_at": now})
                self._insert_children(conn, parent_id, children, now)
        except IntegrityError:
            existing = self.by_client_id(key_id, client_order_id)
            if existing is None:
                raise
            if existing.market != market or existing.request != _decode(body):
                raise ClientOrderIdConflict("SMART", client_order_id) from None
            return existing, False
        found = self.get(key_id, parent_id)
        assert found is not None
        return found, True

    def add_children(self, parent_id: str,
                     children: Sequence[ChildIntent]) -> list[ChildEntry]:
        """Journal a later round's children; returns them as written (``INTENT``, their ids),
        read in the same transaction, so the caller sends them without reading the parent."""
        with self._engine.begin() as conn:
            self._insert_children(conn, parent_id, children, self._clock())
            if not children:
                return []
            rounds = sorted({c.round for c in children})
            rows = conn.execute(sa.select(_C).where(_C.c.parent_id == parent_id,
                                                    _C.c.round.in_(rounds))
                                .order_by(_C.c.round, _C.c.leg))
            wanted = {(c.round, c.leg) for c in children}
            return [_child(r) for r in rows if (r.round, r.leg) in wanted]

    def _insert_children(self, conn: sa.Connection, parent_id: str,
                         children: Sequence[ChildIntent], now: int) -> None:
        if not children:
            return
        conn.execute(sa.insert(_C), [{
            "parent_id": parent_id, "round": c.round, "leg": c.leg, "venue": c.venue,
            "market": c.market, "client_order_id": c.client_order_id,
            "request": _encode(c.request, "child order"), "fee_rate": float(c.fee_rate),
            "state": "INTENT", "created_at": now, "updated_at": now} for c in children])

    def mark_sent(self, child_ids: Sequence[int]) -> None:
        """``INTENT`` -> ``SENT`` for a round's children, right before they are sent."""
        with self._engine.begin() as conn:
            conn.execute(sa.update(_C).where(_C.c.id.in_(list(child_ids)),
                                             _C.c.state == "INTENT")
                         .values(state="SENT", updated_at=self._clock()))

    def settle_child(self, child_id: int, state: str, order: Mapping[str, Any] | None = None,
                     *, error: Any = None, latency_ms: float | None = None) -> None:
        if state not in CHILD_STATES:
            raise ValueError(f"unknown child state {state!r}")
        values: dict[str, Any] = {"state": state, "updated_at": self._clock()}
        if order is not None:
            values["last_order"] = _encode(order, "order")
        if error is not None:
            values["error"] = _encode_error(error)
        if latency_ms is not None:
            values["latency_ms"] = float(latency_ms)
        with self._engine.begin() as conn:
            conn.execute(sa.update(_C).where(_C.c.id == child_id).values(values))

    def update_parent(self, parent_id: str, *, state: str, status: str,
                      canceled: bool | None = None) -> int:
        """Returns the ``updated_at`` written (the caller's copy stays exact without a read)."""
        if state not in PARENT_STATES:
            raise ValueError(f"unknown parent state {state!r}")
        values: dict[str, Any] = {"state": state, "status": status, "updated_at": self._clock()}
        if canceled is not None:
            values["canceled"] = canceled
        with self._engine.begin() as conn:
            conn.execute(sa.update(_P).where(_P.c.parent_id == parent_id).values(values))
        return values["updated_at"]

    # -- reading

    def get(self, key_id: str, parent_id: str) -> ParentEntry | None:
        return self._parent(sa.select(_P).where(_P.c.key_id == key_id,
                                                _P.c.parent_id == parent_id))

    def by_client_id(self, key_id: str, client_order_id: str) -> ParentEntry | None:
        return self._parent(sa.select(_P).where(_P.c.key_id == key_id,
                                                _P.c.client_order_id == client_order_id))

    def live(self, key_id: str | None = None, market: str | None = None) -> list[ParentEntry]:
        """Parents that are not ``DONE`` (of one key and market when given), oldest first."""
        where = [_P.c.state.in_(_LIVE_PARENT)]
        if key_id is not None:
            where.append(_P.c.key_id == key_id)
        if market is not None:
            where.append(_P.c.market == market)
        return self._parents(sa.select(_P).where(*where).order_by(_P.c.id))

    def _parent(self, query: sa.Select) -> ParentEntry | None:
        found = self._parents(query)
        return found[0] if found else None

    def _parents(self, query: sa.Select) -> list[ParentEntry]:
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
            if not rows:
                return []
            ids = [r.parent_id for r in rows]
            kids: dict[str, list[ChildEntry]] = {}
            for c in conn.execute(sa.select(_C).where(_C.c.parent_id.in_(ids))
                                  .order_by(_C.c.round, _C.c.leg)):
                kids.setdefault(c.parent_id, []).append(_child(c))
        return [_parent(r, kids.get(r.parent_id, ())) for r in rows]


def _child(row: sa.Row) -> ChildEntry:
    return ChildEntry(
        id=row.id, parent_id=row.parent_id, round=row.round, leg=row.leg, venue=row.venue,
        market=row.market, client_order_id=row.client_order_id,
        request=_decode(row.request), fee_rate=row.fee_rate, state=row.state,
        created_at=row.created_at, updated_at=row.updated_at,
        last_order=_decode(row.last_order), error=_decode(row.error), latency_ms=row.latency_ms)


def _parent(row: sa.Row, children: Sequence[ChildEntry]) -> ParentEntry:
    return ParentEntry(
        id=row.id, parent_id=row.parent_id, key_id=row.key_id, market=row.market,
        client_order_id=row.client_order_id, request=_decode(row.request),
        plan=_decode(row.plan), state=row.state, status=row.status,
        canceled=bool(row.canceled), created_at=row.created_at, updated_at=row.updated_at,
        children=tuple(children))
