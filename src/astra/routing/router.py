"""Executing routed orders: ``POST /orders`` on a ``SMART-`` market becomes IOC child orders on
the member venues, in parallel, for a bounded number of rounds, then (GTC) one resting child.

How an order runs (``SmartRouter.place``):
1. Checks (4xx, nothing sent, nothing journaled): the SMART market, the type (LIMIT or
   MARKET), prices and quantity, ``venues`` (members only), ``maxSlippageBps`` in (0, 10000],
   the time in force (GTC needs LIMIT), the client order id (``legs.PARENT_CLIENT_ID_RE``: the
   children's ids derive from it), and credentials for at least one member.
2. Plan (``plan.plan_order``) on the member books (``MarketDataEngine.member_books``), each
   venue's slice capped by the account's free balance there (read in parallel), the bound the
   tighter of ``price`` and the arrival consolidated mid +/- ``maxSlippageBps`` (a MARKET order
   without it gets ``DEFAULT_SLIPPAGE_BPS``, 100). ``dryRun`` returns this plan and stops.
   An empty plan, a FOK plan short of the quantity, or a plan the balances cannot pay in full
   (``limited_by`` "balance") is refused with the reason: balance, liquidity inside the
   bound, or the venues' minimums. An IOC plan short only for liquidity executes what it can.
3. The parent and its first children are journaled in one transaction (``RoutingJournal``)
   before anything is sent; each child goes through ``TradingService.place`` (its own journal
   entry under its client order id, before its own send): an IOC LIMIT at the leg's limit.
4. The residual (requested - filled) is re-planned on refreshed books and balances, bounded by
   the same arrival price (once every child of the round has its answer, the balances of the
   venues planned on are read again while the gateway waits, woken by the book events, for
   the next book update of each venue the round sent to: a traded venue's shows the round's
   fills, and a venue whose leg found less than its book showed was behind it, so the next
   round does not resend at the same stale price), for at most ``rounds`` rounds (3),
   stopping at an empty plan. GTC:
   the rest then rests as one LIMIT at the parent's price on the member with the lowest maker
   fee that can hold it.

Integrity rule: a child is sent at most once. A child whose outcome is unknown (a timeout, a
gateway stopped mid-send) is resolved only by asking its venue by client order id (the order
journal's reconciliation); a child journaled but never handed to the order journal is marked
``NOT_SENT`` on reconciliation, never sent late. Rounds stop as soon as any child's outcome is
unknown: the residual is not known, and over-filling is worse than under-filling. The same
(API key, clientOrderId) gives one parent: a per-(key, id) lock in this process and the
journal's UNIQUE constraint across processes (where the race's loser waits, polling the
journal, for the winner's rounds to end, and answers with the same parent). Parents left
open by a stopped gateway are reconciled at startup (keys with stored credentials) and on
the key's next SMART request.
A venue still unreachable when a child's unknown outcome is first looked up leaves that child
``UNKNOWN`` (the POST answers 202 with the other children's fills, never a 5xx for an order
that traded); every child's send ends before its round does.

Reading, canceling (a parent executing here is stopped, then canceled) and reconciling:
``settle.py`` (``Settling``, this class's base).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import msgspec

from astra.core import AstraError, Conflict
from astra.core._trading import (
    PlaceOrder,
    SmartOrder,
    SmartOrderRequest,
    SmartPlan,
    TimeInForce,
)
from astra.marketdata.engine import MarketDataEngine
from astra.store.routing_journal import (
    ChildEntry,
    ChildIntent,
    ParentEntry,
    RoutingJournal,
    new_parent_id,
)
from astra.trading.service import IN_FLIGHT_MARGIN, TradingService

from .legs import MAX_ROUNDS, child_client_order_id, child_request, dec, rest_choice
from .plan import Plan
from .report import child_state, plan_view, smart_order
from .route import (
    DEFAULT_SLIPPAGE_BPS,
    CredsFor,
    Route,
    Snapshot,
    capacities,
    check_route,
    refuse,
    snapshot,
)
from .settle import Settling

__all__ = ["DEFAULT_ROUNDS", "DEFAULT_SLIPPAGE_BPS", "SmartRouter"]

log = logging.getLogger(__name__)
DEFAULT_ROUNDS = 3
_EXECUTING_POLL = 0.02  # seconds between reads of a parent executing in another process


class SmartRouter(Settling):
    """Routed orders of every API key (module docstring). ``before_send``: an optional hook
    awaited with ``(round, plan)`` after a round is journaled and before it is sent (tests
    move a book there to exercise the residual re-route)."""

    def __init__(self, engine: MarketDataEngine, trading: TradingService,
                 journal: RoutingJournal, *, rounds: int = DEFAULT_ROUNDS,
                 book_wait: float | None = None, settle_wait: float = 1.0,
                 orphan_ms: int = 60_000) -> None:
        if not 1 <= rounds < MAX_ROUNDS:
            raise ValueError(f"rounds must be 1 to {MAX_ROUNDS - 1}")
        self.engine, self.trading, self.journal = engine, trading, journal
        self.rounds = rounds
        self.book_wait = book_wait
        self.settle_wait = settle_wait
        self.orphan_ms = orphan_ms
        self.before_send: Callable[[int, Plan], Awaitable[None]] | None = None
        self._locks: dict[tuple[str, str], list[Any]] = {}  # (key, cid) -> [lock, users]
        # Parents whose rounds run in this process (set when they end), and those whose owner
        # canceled them meanwhile: no further round, no rest, then canceled.
        self._active: dict[str, asyncio.Event] = {}
        self._stopping: set[str] = set()

    # -- placing -------------------------------------------------------------------------------
    async def place(self, key_id: str, creds_for: CredsFor,
                    body: SmartOrderRequest) -> SmartOrder | SmartPlan:
        route = await check_route(self.engine, key_id, creds_for, body)
        if body.dry_run:
            snap = await self._snapshot(route, dec(body.quantity))
            return plan_view(body, snap.plan, snap.members)
        lock_key = (key_id, route.client_order_id)
        slot = self._locks.setdefault(lock_key, [asyncio.Lock(), 0])
        slot[1] += 1
        try:
            async with slot[0]:
                existing = await asyncio.to_thread(self.journal.by_client_id, key_id,
                                                   route.client_order_id)
                if existing is not None:
                    return await self._existing(existing, route, creds_for)
                return await self._execute(route)
        finally:
            slot[1] -= 1
            if slot[1] == 0:
                del self._locks[lock_key]

    def _request(self, route: Route) -> dict:
        data = msgspec.to_builtins(route.body)
        data.pop("dryRun", None)
        data["clientOrderId"] = route.client_order_id
        return data

    async def _existing(self, parent: ParentEntry, route: Route,
                        creds_for: CredsFor) -> SmartOrder:
        if parent.request != self._request(route):
            raise Conflict(f"clientOrderId '{route.client_order_id}' was already used for a "
                           "different SMART order; send a new clientOrderId for a new order",
                           parameter="clientOrderId")
        parent = await self._executed_elsewhere(parent)
        if self._settleable(parent):
            parent = await self._refresh(parent, creds_for)
        return smart_order(parent)

    async def _executed_elsewhere(self, parent: ParentEntry) -> ParentEntry:
        """A parent another process sharing the journal is executing (it won the race for
        this client order id): wait for its rounds to end, polling the journal, so both
        answers show the same outcome; at most as long as its rounds may take, then it is
        answered as it stands (a parent idle for ``orphan_ms`` is an orphan: not waited for)."""
        if parent.parent_id in self._active:
            return parent
        per_round = self.trading.timeout + IN_FLIGHT_MARGIN + self.settle_wait
        deadline = time.monotonic() + self.rounds * per_round
        while (parent.state == "EXECUTING" and time.monotonic() < deadline
               and time.time_ns() // 1_000_000 - parent.updated_at < self.orphan_ms):
            await asyncio.sleep(_EXECUTING_POLL)
            parent = await asyncio.to_thread(self.journal.get, parent.key_id,
                                             parent.parent_id) or parent
        return parent

    async def _execute(self, route: Route) -> SmartOrder:
        body, key_id = route.body, route.key_id
        requested = dec(body.quantity)
        snap = await self._snapshot(route, requested)
        refuse(route, snap)
        plan, mid = snap.plan, snap.mid
        parent_id = new_parent_id()
        summary = {"arrivalMid": str(mid) if mid is not None else None,
                   "bestSingleVenue": plan.best_single_venue,
                   "bestSingleNetPrice": (str(plan.best_single_net_price)
                                          if plan.best_single_net_price is not None else None),
                   "priceBound": str(plan.price_bound) if plan.price_bound is not None else None,
                   "venues": route.venues, "maxSlippageBps": route.bound_bps}
        self._active[parent_id] = asyncio.Event()
        try:
            parent, created = await asyncio.to_thread(
                self.journal.begin, key_id, body.market, route.client_order_id,
                self._request(route), parent_id, summary, self._intents(route, snap, 1))
            if not created:  # another gateway process took this id first
                return smart_order(await self._executed_elsewhere(parent))
            filled, round_, kids = Decimal(0), 1, list(parent.children)
            while True:
                if self.before_send is not None:
                    await self.before_send(round_, snap.plan)
                outcomes = await self._send_round(route, kids)
                filled += sum(f for f, _ in outcomes)
                if any(unknown for _, unknown in outcomes) or round_ >= self.rounds:
                    break
                if parent_id in self._stopping:
                    break
                residual = requested - filled
                if residual <= 0:
                    break
                sent = {c.venue for c in kids}
                try:
                    # Every child has its answer: balances read from now on show its fills,
                    # so they are read while the books catch up with them (both end here).
                    caps, shown = await asyncio.gather(
                        capacities(self.trading, route, list(route.capacities)),
                        self._books_caught_up(route, sent), return_exceptions=True)
                    for result in (caps, shown):
                        if isinstance(result, BaseException):
                            raise result
                    snap = await self._snapshot(route, residual, mid, caps)
                except AstraError as exc:  # books or balances gone: what is done stands
                    log.info("SMART order %s: no round %d (%s)", parent_id, round_ + 1,
                             exc.message)
                    break
                if not snap.plan.legs:
                    break
                round_ += 1
                kids = await asyncio.to_thread(self.journal.add_children, parent_id,
                                               self._intents(route, snap, round_))
            unknown = any(u for _, u in outcomes)
            stopped = parent_id in self._stopping
            if stopped:  # canceled by its owner while its rounds ran: what is done stands
                await asyncio.to_thread(self.journal.update_parent, parent_id,
                                        state="EXECUTING", status="NEW", canceled=True)
            elif route.tif == TimeInForce.GTC and not unknown and requested - filled > 0:
                try:
                    await self._rest(route, parent_id, requested - filled)
                except AstraError as exc:  # the fills stand; the rest expires
                    log.info("SMART order %s: the rest could not rest (%s)", parent_id,
                             exc.message)
            return smart_order(await self._finish(key_id, parent_id))
        finally:
            self._stopping.discard(parent_id)
            self._active.pop(parent_id).set()

    async def _snapshot(self, route: Route, quantity: Decimal,
                        arrival_mid: Decimal | None = None,
                        read: dict[str, Any] | None = None) -> Snapshot:
        return await snapshot(self.engine, self.trading, route, quantity, arrival_mid,
                              self.book_wait, read)

    async def _books_caught_up(self, route: Route, sent: set[str]) -> None:
        """Before re-planning: wait (at most ``settle_wait``) until each venue this round sent
        to has published a book update after its answers (woken by the books' own events).
        Where a leg traded, the next round must not plan on liquidity this one took; where it
        found less than the book showed (a venue publishing every 100 ms, its makers requoting
        in between), the book was behind the venue, and re-planning on it at once would send
        the same price to the same missing level."""
        if not sent or self.settle_wait <= 0:
            return
        await self.engine.member_updates(route.body.market, sorted(sent), self.settle_wait)

    def _intents(self, route: Route, snap: Snapshot, round_: int) -> list[ChildIntent]:
        fees = {b.venue: b.taker_fee for b in snap.books}
        out = []
        for i, leg in enumerate(snap.plan.legs):
            cid = child_client_order_id(route.client_order_id, round_, i)
            out.append(ChildIntent(
                round=round_, leg=i, venue=leg.venue, market=leg.market, client_order_id=cid,
                request=child_request(leg.market, route.body.side, leg.quantity,
                                      leg.limit_price, TimeInForce.IOC, cid),
                fee_rate=float(fees.get(leg.venue, 0.0))))
        return out

    async def _send_round(self, route: Route,
                          kids: list[ChildEntry]) -> list[tuple[Decimal, bool]]:
        await asyncio.to_thread(self.journal.mark_sent, [c.id for c in kids])
        # Every child's task ends before the round does (no child left in flight behind an
        # error); one that failed unexpectedly counts as unknown: no further round.
        done = await asyncio.gather(*(self._send(route, c) for c in kids),
                                    return_exceptions=True)
        for child, result in zip(kids, done, strict=True):
            if isinstance(result, BaseException):
                log.warning("SMART child %s: %s", child.client_order_id, type(result).__name__)
        return [(Decimal(0), True) if isinstance(r, BaseException) else r for r in done]

    async def _send(self, route: Route, child: ChildEntry) -> tuple[Decimal, bool]:
        """One child through the order journal: ``(filled, outcome unknown)``."""
        body = msgspec.convert(child.request, PlaceOrder)
        started = time.perf_counter()
        try:
            order = await self.trading.place(route.key_id, route.creds[child.venue], body)
        except Exception as err:  # an unexpected failure: its outcome is unknown
            latency = (time.perf_counter() - started) * 1000
            known = isinstance(err, AstraError) and err.status != 202
            state = "REJECTED" if known else "UNKNOWN"
            await asyncio.to_thread(self.journal.settle_child, child.id, state, error=err,
                                    latency_ms=latency)
            return Decimal(0), state == "UNKNOWN"
        latency = (time.perf_counter() - started) * 1000
        state = child_state(order.status)
        await asyncio.to_thread(self.journal.settle_child, child.id, state,
                                msgspec.to_builtins(order), latency_ms=latency)
        if state == "UNKNOWN":  # ask the venue by client order id once, never send again
            try:
                parent = await self._parent(route.key_id, child.parent_id)
                fresh = next(c for c in parent.children if c.id == child.id)
                fresh = await self._resolve(route.key_id, route.creds[child.venue], fresh)
            except Exception as exc:  # still down: the child stays UNKNOWN, reconciled later;
                # the parent's answer (with the other children's fills) must not become a 5xx
                log.info("SMART child %s still unknown: %s", child.client_order_id,
                         getattr(exc, "message", None) or type(exc).__name__)
                return Decimal(0), True
            return dec((fresh.last_order or {}).get("filledQuantity")), fresh.state in (
                "INTENT", "SENT", "UNKNOWN")
        return dec(order.filled_quantity), False

    async def _rest(self, route: Route, parent_id: str, residual: Decimal) -> None:
        """GTC: the remainder rests at the parent's price where it is cheapest to rest."""
        snap = await self._snapshot(route, residual)  # refreshed books and capacities
        books = [b for b in snap.books if b.venue in route.capacities]
        choice = rest_choice(books, route.capacities, route.body.side, dec(route.body.price),
                             residual)
        if choice is None:
            return
        book, qty, price = choice
        round_ = self.rounds + 1
        cid = child_client_order_id(route.client_order_id, round_, 0)
        intent = ChildIntent(round=round_, leg=0, venue=book.venue, market=book.market.symbol,
                             client_order_id=cid, fee_rate=book.maker_fee,
                             request=child_request(book.market.symbol, route.body.side, qty,
                                                   price, TimeInForce.GTC, cid))
        kids = await asyncio.to_thread(self.journal.add_children, parent_id, [intent])
        await self._send_round(route, kids)
