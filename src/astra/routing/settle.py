"""Reading, canceling and reconciling routed orders: the half of ``SmartRouter`` that settles
parents from their venues' truth (``router.py`` places them).

Integrity rule: a child's outcome comes only from its venue, asked by client order id through
the order journal (``_resolve``); nothing here sends an order. A child journaled but never
handed to the order journal was never sent: it becomes ``NOT_SENT``, never sent late.

Canceling (``DELETE``): a parent whose rounds run in this process is stopped (no further round,
no rest) and canceled once the round in flight has its answers; a parent executing maybe in
another process sharing the database (``orphan_ms``) is refused (409). A child of unknown
outcome is looked up first (it may rest at its venue) and canceled there if it rests; while
any child's outcome stays unknown the parent is not marked canceled (503: cancel again).
Before a new order only parents orphaned or with an unknown child are reconciled, so resting
children cost no venue round trip per POST; reads refresh every child not final.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import msgspec

from astra.core import (
    AstraError,
    Conflict,
    CredentialsUnreadable,
    MissingCredentials,
    OrderNotFound,
    VenueUnavailable,
)
from astra.core._trading import Order, SmartOrder
from astra.core.credentials import ExchangeCredentials
from astra.store.credentials import CredentialStoreError
from astra.store.routing_journal import ChildEntry, ParentEntry, RoutingJournal
from astra.trading.service import TradingService

from .report import child_state, parent_state, smart_order
from .route import CredsFor

__all__ = ["Settling"]

log = logging.getLogger(__name__)
_PENDING = ("INTENT", "SENT", "UNKNOWN")


class Settling:
    """``SmartRouter``'s reads, cancels and reconciliation (module docstring)."""

    trading: TradingService
    journal: RoutingJournal
    orphan_ms: int
    _active: dict[str, asyncio.Event]  # parents whose rounds run here (set when they end)
    _stopping: set[str]  # of those, the ones their owner canceled meanwhile

    async def _finish(self, key_id: str, parent_id: str) -> ParentEntry:
        """The rounds are over (or were orphaned): the parent's state and status from its
        children as last known, read, recomputed and written in one trip to the journal."""
        return await asyncio.to_thread(self._finish_sync, key_id, parent_id)

    def _finish_sync(self, key_id: str, parent_id: str) -> ParentEntry:
        parent = self.journal.get(key_id, parent_id)
        if parent is None:
            raise OrderNotFound(f"no SMART order {parent_id} for this API key",
                                parameter="orderId")
        state = parent_state(parent)
        status = smart_order(dataclasses.replace(parent, state=state)).status.value
        at = self.journal.update_parent(parent_id, state=state, status=status)
        return dataclasses.replace(parent, state=state, status=status, updated_at=at)

    async def _parent(self, key_id: str, parent_id: str) -> ParentEntry:
        parent = await asyncio.to_thread(self.journal.get, key_id, parent_id)
        if parent is None:
            raise OrderNotFound(f"no SMART order {parent_id} for this API key",
                                parameter="orderId")
        return parent

    # -- reading, canceling, reconciling -------------------------------------------------------
    async def get(self, key_id: str, creds_for: CredsFor, market: str,
                  order_id: str) -> SmartOrder:
        parent = await asyncio.to_thread(self.journal.get, key_id, order_id)
        if parent is None or parent.market != market:
            raise OrderNotFound(f"no SMART order {order_id[:40]} on {market} for this API key",
                                parameter="orderId")
        if self._settleable(parent):
            parent = await self._refresh(parent, creds_for)
        return smart_order(parent)

    async def list_open(self, key_id: str, creds_for: CredsFor, market: str) -> list[SmartOrder]:
        await self.reconcile_key(key_id, creds_for, market)
        parents = await asyncio.to_thread(self.journal.live, key_id, market)
        return [smart_order(p) for p in parents]

    async def cancel(self, key_id: str, creds_for: CredsFor, market: str,
                     order_id: str) -> SmartOrder:
        """Cancel a parent's live remainder (its resting child) and mark it canceled (module
        docstring: a parent executing here is stopped first)."""
        parent = await asyncio.to_thread(self.journal.get, key_id, order_id)
        if parent is None or parent.market != market:
            raise OrderNotFound(f"no SMART order {order_id[:40]} on {market} for this API key",
                                parameter="orderId")
        running = self._active.get(parent.parent_id)
        if running is not None:
            # Executing here: no further round and no rest from now on; once the round in
            # flight has its answers, the parent is canceled (and read back below).
            self._stopping.add(parent.parent_id)
            await running.wait()
            parent = await self._parent(key_id, order_id)
        if parent.state == "DONE":
            return smart_order(parent)
        if not self._settleable(parent):  # executing, maybe in another process sharing the db
            raise Conflict(f"SMART order {order_id} is still executing its rounds; cancel it "
                           "again in a moment", parameter="orderId")
        # A child of unknown outcome may be resting at its venue: its truth first, so that it
        # is canceled there too, never left resting under a parent reported CANCELED.
        for child in parent.children:
            if child.state in _PENDING:
                await self._resolve(key_id, creds_for(child.venue), child)
        parent = await self._parent(key_id, order_id)
        for child in parent.children:
            if child.state != "OPEN":
                continue
            creds = creds_for(child.venue)
            try:
                order = await self.trading.cancel(key_id, creds, child.market, None,
                                                  child.client_order_id)
            except AstraError:
                # Filled or canceled at the venue meanwhile? Its truth decides; a child that
                # is still open there makes the cancel fail as the venue said.
                if (await self._resolve(key_id, creds, child)).state == "OPEN":
                    raise
                continue
            await asyncio.to_thread(self.journal.settle_child, child.id,
                                    child_state(order.status), msgspec.to_builtins(order))
        unknown = [c for c in parent.children if c.state in _PENDING]
        if unknown:  # its venue has not said whether it rests: not canceled yet
            raise VenueUnavailable(unknown[0].venue, f"the outcome of child "
                                   f"{unknown[0].client_order_id} is not known yet; cancel "
                                   "again once its venue answers (resting children were "
                                   "canceled)")
        await asyncio.to_thread(self.journal.update_parent, parent.parent_id,
                                state=parent.state, status=parent.status, canceled=True)
        return smart_order(await self._refresh(await self._parent(key_id, order_id), creds_for))

    async def cancel_all(self, key_id: str, creds_for: CredsFor, market: str) -> int:
        parents = await asyncio.to_thread(self.journal.live, key_id, market)
        done = 0
        for p in parents:  # (one still executing stops after its round in flight)
            done += (await self.cancel(key_id, creds_for, market, p.parent_id)).status in (
                "CANCELED", "FILLED", "EXPIRED")
        return done

    async def reconcile_key(self, key_id: str, creds_for: CredsFor,
                            market: str | None = None, *, unknown_only: bool = False) -> int:
        """Settle this key's parents left open (a resting child, an unknown outcome, a
        gateway stopped mid-round); returns how many are done now. A parent still executing
        is left alone for ``orphan_ms`` (another process sharing the database may own it);
        at startup (``reconcile_stored``) every one is an orphan. ``unknown_only`` (before a
        new order): only parents orphaned or with a child of unknown outcome, so that resting
        children cost no venue round trip on every POST."""
        done = 0
        for parent in await asyncio.to_thread(self.journal.live, key_id, market):
            if not self._settleable(parent):
                continue
            if unknown_only and parent.state != "EXECUTING" and not any(
                    c.state in _PENDING for c in parent.children):
                continue
            try:
                parent = await self._refresh(parent, creds_for)
            except AstraError as exc:  # a venue down must not block this key's other orders
                log.warning("reconciling SMART order %s failed: %s", parent.parent_id,
                            exc.message)
                continue
            done += parent.state == "DONE"
        return done

    def _settleable(self, parent: ParentEntry) -> bool:
        """Open, and not executing here nor (for ``orphan_ms``) maybe in another process."""
        if parent.state == "DONE" or parent.parent_id in self._active:
            return False
        young = time.time_ns() // 1_000_000 - self.orphan_ms
        return parent.state != "EXECUTING" or parent.updated_at <= young

    async def reconcile_stored(self, source: Any) -> int:
        """At startup: every open parent whose key has stored credentials."""
        done = 0
        for parent in await asyncio.to_thread(self.journal.live):
            if parent.parent_id in self._active:
                continue

            def creds_for(venue: str, key_id: str = parent.key_id) -> ExchangeCredentials:
                try:
                    found = source.get(key_id, venue) if source is not None else None
                except CredentialStoreError as exc:  # (another master key): this venue waits,
                    # the parent's other children do not
                    raise CredentialsUnreadable(f"stored {venue} credentials unusable: "
                                                f"{type(exc).__name__}") from None
                if found is None:
                    raise MissingCredentials(f"no stored {venue} credentials", venue=venue)
                return found

            try:
                parent = await self._refresh(parent, creds_for)
            except Exception as exc:  # one venue down must not stop the others
                log.warning("reconciling SMART order %s failed: %s", parent.parent_id,
                            getattr(exc, "message", None) or type(exc).__name__)
                continue
            done += parent.state == "DONE"
        return done

    async def _refresh(self, parent: ParentEntry, creds_for: CredsFor) -> ParentEntry:
        """Ask the venues about every child not final, then recompute the parent. A parent
        found ``EXECUTING`` here was orphaned by a stopped gateway: no further round runs."""
        for child in parent.children:
            if child.state not in ("INTENT", "SENT", "UNKNOWN", "OPEN"):
                continue
            try:
                creds = creds_for(child.venue)
            except (MissingCredentials, CredentialsUnreadable):
                continue  # settled on a request that has them
            await self._resolve(parent.key_id, creds, child)
        return await self._finish(parent.key_id, parent.parent_id)

    async def _resolve(self, key_id: str, creds: ExchangeCredentials,
                       child: ChildEntry) -> ChildEntry:
        """A child's venue truth, by client order id, through the order journal."""
        orders = self.trading.journal
        entry = await asyncio.to_thread(orders.get, key_id, child.venue, child.client_order_id)
        if entry is None:  # never handed to the order journal, so never sent: never send it
            await asyncio.to_thread(self.journal.settle_child, child.id, "NOT_SENT")
        else:
            if entry.pending:
                await self.trading.reconcile_pending(key_id, child.venue, creds)
                entry = await asyncio.to_thread(orders.get_entry, entry.id)
            if entry.state == "ACKNOWLEDGED" and entry.last_order is not None:
                order = msgspec.convert(entry.last_order, Order)
                if child_state(order.status) == "OPEN" and entry.venue_order_id:
                    order = await self.trading.get_order(key_id, creds, child.market,
                                                         entry.venue_order_id)
                await asyncio.to_thread(self.journal.settle_child, child.id,
                                        child_state(order.status), msgspec.to_builtins(order))
            elif entry.state == "REJECTED":
                await asyncio.to_thread(self.journal.settle_child, child.id, "REJECTED",
                                        error=entry.error or {"message": "rejected"})
            elif entry.state == "NOT_PLACED":
                await asyncio.to_thread(self.journal.settle_child, child.id, "NOT_SENT",
                                        error={"message": "the venue does not have it"})
            else:
                await asyncio.to_thread(self.journal.settle_child, child.id, "UNKNOWN")
        parent = await self._parent(key_id, child.parent_id)
        return next(c for c in parent.children if c.id == child.id)
