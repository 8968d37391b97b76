"""One member venue's book as its SMART channel sees it (``Member``, a ``BookListener`` on the
member's ``BookChannel``), and the merge of members' levels at exact or fee-adjusted prices.

Invariants: a member is ``live`` (contributes) only while its book is synced and not stale;
its levels leave in base units (contracts converted at the level's price); the merged
quantity at a price is the exact sum of the live members' quantities there (``bbo.total``),
also where two raw prices of one venue round to one fee-adjusted price.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from astra.core import ConsolidatedLevel, MemberState
from astra.venues.base import Venue, VenueMarket

from .bbo import total
from .channels import BookChannel, public_reason, units_of

__all__ = ["SETTLED", "Member", "MemberOwner", "merge_levels", "now_ms"]


class MemberOwner(Protocol):
    """What a member needs of its SMART channel (``consolidated.SmartChannel``)."""

    def _state_changed(self) -> None: ...

    def _member_update(self, bids: list, asks: list) -> None: ...


def now_ms() -> int:
    return int(time.time() * 1000)


class Member:
    """One member venue's book as seen by its SMART channel (a ``BookListener``)."""

    __slots__ = (
        "changed_at",
        "channel",
        "maker_fee",
        "market",
        "moved",
        "overdue",
        "owner",
        "stale",
        "stale_since",
        "taker_fee",
        "units",
        "venue",
        "venue_code",
    )

    def __init__(self, owner: MemberOwner, code: str, venue: Venue, market: VenueMarket):
        self.owner, self.venue_code, self.venue, self.market = owner, code, venue, market
        self.units = units_of(market)
        meta = market.metadata
        self.taker_fee = (meta.taker_fee if meta is not None else None) or 0.0
        self.maker_fee = (meta.maker_fee if meta is not None else None) or 0.0
        self.channel: BookChannel | None = None
        self.changed_at = 0.0  # loop time of the book's last change
        self.stale = False
        self.stale_since = 0
        self.overdue = False  # a read waited ``book_wait`` for it in vain: not again, until synced
        self.moved: asyncio.Event | None = None  # made by a waiter, set on the next change

    def wake(self) -> None:
        """The book changed (an update, a snapshot, a state): ``next_updates`` waiters go on."""
        moved, self.moved = self.moved, None
        if moved is not None:
            moved.set()

    @property
    def state(self) -> str:
        channel = self.channel
        if channel is None:
            return "connecting"
        if channel.state == "synced" and self.stale:
            return "stale"
        return channel.state

    @property
    def live(self) -> bool:
        channel = self.channel
        return channel is not None and channel.state == "synced" and not self.stale

    def base(self, qty: float, price: float) -> float:
        units = self.units
        return qty if units is None else units.to_base(qty, price)

    def member_state(self) -> MemberState:
        channel, state = self.channel, self.state
        if channel is None:
            return MemberState(venue=self.venue_code, market=self.market.symbol, state=state)
        since = self.stale_since if state == "stale" else channel.since
        reason = public_reason(channel.reason) if channel.reason and state != "synced" else None
        return MemberState(venue=self.venue_code, market=self.market.symbol, state=state,
                           since=since, reason=reason)  # type: ignore[arg-type]

    def levels(self, bid: bool, depth: int | None) -> list[tuple[float, float]]:
        """This member's side, best first, base units (empty unless it contributes)."""
        if not self.live:
            return []
        book = self.channel.book
        side = book.sorted_bids() if bid else book.sorted_asks()
        if depth is not None:
            side = side[:depth]
        return [(p, self.base(q, p)) for p, q in side]

    # --- BookListener ----------------------------------------------------------------------

    def book_snapshot(self, channel: BookChannel) -> None:
        self.changed_at = asyncio.get_running_loop().time()
        self.stale = self.overdue = False
        self.wake()
        self.owner._state_changed()

    def book_update(self, channel: BookChannel, bids: list, asks: list) -> None:
        self.changed_at = asyncio.get_running_loop().time()
        self.wake()  # heartbeats too: the book's update id moved
        if self.stale:  # alive again: a fresh snapshot with it
            self.stale = False
            self.owner._state_changed()
        elif bids or asks:  # an empty diff (a venue's heartbeat) shows it alive, changes nothing
            self.owner._member_update(bids, asks)

    def book_state(self, channel: BookChannel) -> None:
        self.wake()
        self.owner._state_changed()


SETTLED = ("synced", "stale", "disconnected")


def _adjusted(price: float, fee: float, bid: bool) -> float:
    if not fee:
        return price
    return float(f"{price * (1 - fee if bid else 1 + fee):.12g}")


def merge_levels(members: Sequence[Member], bid: bool, depth: int | None, fee_adjusted: bool,
           ) -> list[ConsolidatedLevel]:
    by_price: dict[float, dict[str, float]] = {}
    for m in members:
        fee = m.taker_fee if fee_adjusted else 0.0
        code = m.venue_code
        for p, q in m.levels(bid, depth):
            venues = by_price.setdefault(_adjusted(p, fee, bid), {})
            # Two raw prices of one venue may round to one net price: their sum, not the last.
            venues[code] = total([venues[code], q]) if code in venues else q
    prices = sorted(by_price, reverse=bid)
    if depth is not None:
        prices = prices[:depth]
    return [ConsolidatedLevel(price=p, quantity=total(list(by_price[p].values())),
                              venues=by_price[p]) for p in prices]
