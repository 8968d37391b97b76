"""The consolidated (SMART) book of one SMART market: its member venues' books merged.

No second copy of the books: the consolidated quantity at price p is, at any time, the sum
over contributing members of that member book's quantity at p (converted to base units), so
a member update at prices P is a consolidated update at exactly those prices.

Invariants:
- A member contributes only while its book is ``synced`` and not ``stale`` (unchanged for
  ``stale_after`` seconds). States shown: ``synced``, ``connecting``, ``resyncing``,
  ``stale``, ``disconnected``.
- ``update_id`` is the gateway's own sequence for this SMART market: +1 on every change (a
  contributing member's non-empty update, any member's change of state), with or without
  clients; never reused while the engine lives: across member resyncs, and across the
  channel's retirement (its successor goes on from its last id). REST and WebSocket share
  it, so a client can match a REST book to its stream.
- Members: the market's member venues when the channel began, plus any that join later (a
  venue whose markets could not load then: ``extend``, with a fresh snapshot). One member
  price is one consolidated price; raw prices that round to one fee-adjusted price add up.
- WebSocket clients see a ``snapshot`` (with ``members``), then ``update``s that continue it
  (per-venue quantities at each changed price; total 0 deletes the level). Any member's
  change of state (resync, stale, down, back) produces a fresh snapshot of the members then
  contributing; while none contributes, a ``{"type":"resync"}`` message instead.
- The channel holds a reference on each member's book channel while it has users (clients,
  REST reads: ``touch``), and releases them after its own ``linger``.
- ``next_updates`` (the router waiting for a round's fills to show) is woken by each member's
  own events (update, heartbeat, snapshot, state, stale, detach): no polling; a member event
  with nobody waiting costs one ``None`` check.
- Levels are at exact venue prices (no bucketing); ``fee_adjusted`` prices are net of each
  venue's taker fee (bids x (1 - fee), asks x (1 + fee)), rounded to 12 significant digits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import msgspec

from astra.core import (
    MAX_RECENT_RESYNCS,
    SMART,
    Bbo,
    BookResync,
    ConsolidatedBook,
    ConsolidatedLevel,
    ConsolidatedUpdate,
    DataType,
    FeedState,
    FeedStatus,
    FeedUnavailable,
    MemberState,
    ResyncEvent,
)
from astra.venues.base import Venue, VenueMarket

from .bbo import BboFeed, best_quotes, total
from .channels import Channel, Client, latency_ms
from .smart import MemberBook, SmartMarket
from .smart_members import SETTLED, Member, merge_levels, now_ms

__all__ = ["SmartChannel"]

_encode = msgspec.json.Encoder().encode
Side = dict[float, float]


class SmartChannel(Channel):
    """The consolidated book of one SMART market, its WebSocket and BBO clients."""

    def __init__(self, engine, smart: SmartMarket, venues: Mapping[str, Venue],
                 stale_after: float, first_id: int = 0) -> None:
        pseudo = VenueMarket(smart.symbol, smart.symbol, "smart", smart.metadata)
        super().__init__(engine, (smart.symbol, DataType.ORDERBOOK), None, pseudo)
        self.smart, self.stale_after, self._venues = smart, stale_after, venues
        self.members = {code: Member(self, code, venues[code], market)
                        for code, market in smart.members.items()}
        # The last id a retired channel of this market gave out: ids go on from it.
        self.update_id = first_id
        self.settled = False  # a first read has waited for every member to settle
        self._changed = asyncio.Event()  # set (and replaced) on every member state change
        self._cache: dict[tuple, bytes] = {}  # REST bodies of the current update_id
        self._cache_id = -1
        self._sent_resync = False
        self.bbo = BboFeed(self.current_bbo, self._resync_frame)

    # --- lifecycle -------------------------------------------------------------------------

    def acquire(self) -> None:
        if self.task is None:
            self._attach()
        super().acquire()

    def _attach(self) -> None:
        for member in self.members.values():
            self._attach_member(member)

    def _attach_member(self, member: Member) -> None:
        channel = self.engine._channel(member.venue, member.market, DataType.ORDERBOOK)
        channel.acquire()
        channel.listeners.add(member)
        member.channel, member.stale = channel, False
        member.changed_at = asyncio.get_running_loop().time()

    def extend(self, smart: SmartMarket, order: Sequence[str]) -> None:
        """Members that ``smart`` lists and this channel lacks (a venue whose markets could
        not load when the channel started) join it, in venue ``order``; its clients get a
        fresh snapshot that names them. Members are never dropped here: a venue that fails
        later shows as disconnected, not as gone."""
        new = [code for code in smart.members if code not in self.members]
        if not new:
            return
        self.smart = smart
        self.market = VenueMarket(smart.symbol, smart.symbol, "smart", smart.metadata)
        for code in new:
            member = self.members[code] = Member(
                self, code, self._venues[code], smart.members[code])
            if self.task is not None:
                self._attach_member(member)
        rank = {code: i for i, code in enumerate(order)}
        self.members = dict(sorted(self.members.items(), key=lambda kv: rank.get(kv[0], 1e9)))
        self._state_changed()

    def _detach(self) -> None:
        for member in self.members.values():
            channel, member.channel = member.channel, None
            member.wake()
            if channel is not None:
                channel.listeners.discard(member)
                if self.engine.channels.get(channel.key) is channel:
                    channel.release()

    async def _run(self) -> None:
        period = min(1.0, self.stale_after / 4)
        while True:
            await asyncio.sleep(period)
            self.check_stale()

    async def stop(self) -> None:
        await super().stop()
        self._detach()

    def check_stale(self) -> None:
        now = asyncio.get_running_loop().time()
        changed = False
        for m in self.members.values():
            if m.live and now - m.changed_at > self.stale_after:
                m.stale, m.stale_since, changed = True, now_ms(), True
                m.wake()
        if changed:
            self._state_changed()

    # --- member events -----------------------------------------------------------------------

    def _member_update(self, bids: list, asks: list) -> None:
        self.update_id += 1
        if self.clients:
            live = [m for m in self.members.values() if m.live]
            frame = _encode(ConsolidatedUpdate(
                type="update", market=self.smart.symbol, update_id=self.update_id,
                bids=self._levels_at(live, bids, True), asks=self._levels_at(live, asks, False),
                timestamp=self._timestamp(live)))
            self._fan_out(frame)
        if self.bbo.clients:
            self.bbo.changed()

    def _levels_at(self, live: list[Member], changes: list, bid: bool) -> list[ConsolidatedLevel]:
        out = []
        for p, _ in changes:
            venues = {}
            for m in live:
                side = m.channel.book.bids if bid else m.channel.book.asks
                q = side.get(p)
                if q:
                    venues[m.venue_code] = m.base(q, p)
            qty = total(list(venues.values())) if venues else 0.0
            out.append(ConsolidatedLevel(price=p, quantity=qty, venues=venues))
        return out

    def _state_changed(self) -> None:
        self.update_id += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self.clients:
            if any(m.live for m in self.members.values()):
                self._sent_resync = False
                self._fan_out(self.snapshot_frame())
            elif not self._sent_resync:
                self._sent_resync = True
                self._fan_out(self._resync_frame())
        if self.bbo.clients:
            self.bbo.changed()

    # --- reads -------------------------------------------------------------------------------

    def _timestamp(self, live: list[Member]) -> int | None:
        return max((m.channel.book.timestamp for m in live), default=0) or None

    def member_states(self, members: Sequence[Member] | None = None) -> list[MemberState]:
        return [m.member_state() for m in (members or self.members.values())]

    def _feed_state(self, members: Sequence[Member]) -> FeedState:
        states = [m.state for m in members]
        state = ("connecting" if "connecting" in states else
                 "resyncing" if "resyncing" in states or "stale" in states else "disconnected")
        reason = "no member book in sync: " + ", ".join(
            f"{m.venue_code} {s}" for m, s in zip(members, states, strict=True))
        return FeedState(state=state, since=now_ms(), reason=reason)  # type: ignore[arg-type]

    def status(self) -> FeedStatus | None:
        """This book's row of ``GET /feeds``, or None with no member attached: ``synced`` while
        any member contributes (since the earliest such member's change), else the members'
        combined state (since the latest change); its counters add up its members' (every
        member resync gives its clients a fresh snapshot), its recent resyncs are theirs,
        each prefixed with the venue; its latency is the member's that updated last."""
        members = [m for m in self.members.values() if m.channel is not None]
        if not members:
            return None
        books = [m.channel for m in members]
        live = [m for m in members if m.live]
        if live:
            state, reason = "synced", None
            since = min(m.channel.since for m in live)
        else:
            states = [m.state for m in members]
            state = ("connecting" if "connecting" in states else
                     "resyncing" if "resyncing" in states or "stale" in states else
                     "disconnected")
            reason = "no member book in sync: " + ", ".join(
                f"{m.venue_code} {s}" for m, s in zip(members, states, strict=True))
            since = max(m.stale_since if m.state == "stale" else m.channel.since
                        for m in members)
        recent = sorted(((at, f"{m.venue_code}: {why}") for m in members
                         for at, why in m.channel.recent_resyncs), reverse=True)
        last = max(books, key=lambda b: b.received_ns)
        return FeedStatus(
            market=self.smart.symbol, venue=SMART, data_type="ORDERBOOK",
            state=state, since=since, reason=reason,  # type: ignore[arg-type]
            resyncs=sum(b.resyncs for b in books),
            recent_resyncs=[ResyncEvent(at=at, reason=why)
                            for at, why in recent[:MAX_RECENT_RESYNCS]],
            updates=sum(b.updates for b in books),
            last_update=last.received_ns // 1_000_000 if last.received_ns else None,
            latency_ms=latency_ms(last.received_ns, last.event_ms),
            clients=len(self.clients) + len(self.bbo.clients),
        )

    def _resync_frame(self) -> bytes | None:
        members = list(self.members.values())
        if all(m.state == "connecting" for m in members):
            return None  # nothing known yet: silence until the first snapshot
        feed = self._feed_state(members)
        return _encode(BookResync(market=self.smart.symbol, reason=feed.reason or feed.state,
                                  state=feed.state, since=feed.since))

    def unavailable(self, members: Sequence[Member]) -> FeedUnavailable:
        feed = self._feed_state(members)
        return FeedUnavailable("SMART", f"no live book for '{self.smart.symbol}': {feed.reason}",
                               feed=feed, retry_after=1.0, members=self.member_states(members))

    def snapshot_frame(self) -> bytes:
        live = [m for m in self.members.values() if m.live]
        return _encode(ConsolidatedUpdate(
            type="snapshot", market=self.smart.symbol, update_id=self.update_id,
            bids=merge_levels(live, True, None, False), asks=merge_levels(live, False, None, False),
            timestamp=self._timestamp(live), members=self.member_states()))

    def add_client(self, client: Client) -> None:
        self.clients.add(client)
        if any(m.live for m in self.members.values()):
            client.deliver(self.snapshot_frame())
        else:
            frame = self._resync_frame()
            if frame is not None:
                client.deliver(frame)

    def select(self, venues: Sequence[str] | None) -> list[Member]:
        return list(self.members.values()) if not venues else [self.members[v] for v in venues]

    async def wait(self, members: Sequence[Member], deadline: float) -> None:
        """Until every member is synced or known down (disconnected, stale), at most
        ``deadline`` seconds (no error: the caller reads the states). A member this wait
        gives up on is ``overdue``: later waits do not wait for it again (one stuck venue
        must not cost every read, every routed order, its ``deadline``) until it syncs."""
        pending = [m for m in members if not m.overdue]
        try:
            async with asyncio.timeout(deadline):
                while not all(m.state in SETTLED for m in pending):
                    await self._changed.wait()
        except TimeoutError:
            for m in pending:
                if m.state not in SETTLED:
                    m.overdue = True

    async def next_updates(self, members: Sequence[Member], deadline: float) -> bool:
        """Until each of ``members`` is not live or has published a book update after this
        call, at most ``deadline`` seconds: woken by the member's own book events, no polling.
        True when every one did."""
        seen = {m.venue_code: m.channel.book.update_id for m in members if m.live}
        try:
            async with asyncio.timeout(deadline):
                for m in members:
                    while m.live and m.channel.book.update_id == seen.get(m.venue_code):
                        if m.moved is None:
                            m.moved = asyncio.Event()
                        await m.moved.wait()
        except TimeoutError:
            return False
        return True

    def rest_body(self, members: Sequence[Member], depth: int | None,
                  fee_adjusted: bool) -> bytes:
        """The ``GET /orderbook`` body (cached per update id); FeedUnavailable when none of
        ``members`` contributes."""
        live = [m for m in members if m.live]
        if not live:
            raise self.unavailable(members)
        key = (tuple(m.venue_code for m in members), depth, fee_adjusted)
        if self._cache_id != self.update_id:
            self._cache.clear()
            self._cache_id = self.update_id
        body = self._cache.get(key)
        if body is None:
            body = _encode(ConsolidatedBook(
                market=self.smart.symbol, bids=merge_levels(live, True, depth, fee_adjusted),
                asks=merge_levels(live, False, depth, fee_adjusted), update_id=self.update_id,
                timestamp=self._timestamp(live), fee_adjusted=fee_adjusted,
                members=self.member_states(members)))
            if len(self._cache) < 32:
                self._cache[key] = body
        return body

    def member_books(self, members: Sequence[Member], depth: int | None) -> list[MemberBook]:
        out = []
        for m in members:
            live = m.live
            book = m.channel.book if m.channel is not None else None
            out.append(MemberBook(
                venue=m.venue_code, market=m.market, state=m.state,
                bids=m.levels(True, depth) if live else [],
                asks=m.levels(False, depth) if live else [],
                update_id=book.update_id if live and book is not None else None,
                taker_fee=m.taker_fee, maker_fee=m.maker_fee))
        return out

    def current_bbo(self, members: Sequence[Member] | None = None) -> Bbo | None:
        live = [m for m in (members or self.members.values()) if m.live]
        if not live:
            return None
        bid, ask = best_quotes(
            [(m.venue_code, m.channel.book.bids, m.units) for m in live],
            [(m.venue_code, m.channel.book.asks, m.units) for m in live], True)
        return Bbo(type="bbo", market=self.smart.symbol, bid=bid, ask=ask,
                   update_id=self.update_id, timestamp=self._timestamp(live))
