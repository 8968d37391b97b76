"""Best bid and offer, for single-venue and SMART markets, and its WebSocket fan-out.

Invariants:
- A BBO side is the best price of the in-sync book(s) and the quantity there in base units;
  on SMART the quantity is the sum over contributing members at that exact price, ``venue``
  the member with the most of it (ties: the first in configured order), ``venues`` all of them.
- ``BboFeed`` sends a message only when the BBO changes (price, quantity, venue or, on
  SMART, the per-venue split of either side); while its book is not in sync it sends one
  ``{"type":"resync"}`` message, and the BBO again once the book is back. Each message is
  encoded once for all its clients.
- The best price is found by a scan of the book's side (no sort; a C side's ``best()`` scans
  in C, a dict is scanned by ``max``/``min``): on a single venue only when an update touches a
  price at or better than the current best (or removes it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from math import fsum

import msgspec

from astra.core import Bbo, BboQuote, ContractUnits

from .channels import BookChannel, Client

__all__ = ["BboFeed", "best_quotes", "single_bbo", "total"]

_encode = msgspec.json.Encoder().encode
Source = tuple[str, Mapping[float, float], ContractUnits | None]  # venue, one book side, units


def total(quantities: list[float]) -> float:
    """A sum of venue quantities, rounded to 15 significant digits (0.1 + 0.2 is 0.3): the
    exact decimal sum whenever it has at most 15 (a float carries 15 for certain; 12 would
    turn 98765432109.87 + 0.01 into 98765432109.9)."""
    if len(quantities) == 1:
        return quantities[0]
    return float(f"{fsum(quantities):.15g}")


def _base(units: ContractUnits | None, qty: float, price: float) -> float:
    return qty if units is None else units.to_base(qty, price)


def _best_price(side: Mapping[float, float], pick: Callable) -> float:
    """A non-empty side's best price: a C side finds it in one pass of its table."""
    if isinstance(side, dict):
        return pick(side)
    return side.best()[0]


def _best(sources: Iterable[Source], bid: bool, smart: bool) -> BboQuote | None:
    sources = [s for s in sources if s[1]]
    if not sources:
        return None
    pick = max if bid else min
    price = pick(_best_price(side, pick) for _, side, _ in sources)
    venues = {v: _base(u, side[price], price) for v, side, u in sources if price in side}
    venue = max(venues, key=venues.__getitem__)  # first of the largest, in venue order
    return BboQuote(price=price, quantity=total(list(venues.values())), venue=venue,
                    venues=venues if smart else None)


def best_quotes(
    bids: Iterable[Source], asks: Iterable[Source], smart: bool
) -> tuple[BboQuote | None, BboQuote | None]:
    return _best(bids, True, smart), _best(asks, False, smart)


def single_bbo(channel: BookChannel) -> Bbo | None:
    """The BBO of a single venue's synced book, else None."""
    if not channel.synced.is_set():
        return None
    book, code, units = channel.book, channel.venue.code, channel.units
    bid, ask = best_quotes([(code, book.bids, units)], [(code, book.asks, units)], False)
    return Bbo(type="bbo", market=channel.market.symbol, bid=bid, ask=ask,
               update_id=book.update_id, timestamp=book.timestamp or None)


class BboFeed:
    """The WebSocket clients of one market's BBO. ``compute`` gives the current BBO (None
    while the book is not in sync), ``resync`` the frame that says so. For a single venue it
    is a ``BookListener`` of the market's book channel; SMART channels call ``changed``."""

    def __init__(
        self, compute: Callable[[], Bbo | None], resync: Callable[[], bytes | None]
    ) -> None:
        self.compute, self.resync = compute, resync
        self.clients: set[Client] = set()
        self._last: tuple | None = None  # what the clients were last sent
        self._bid: float | None = None  # the last BBO's prices: updates beyond them are no-ops
        self._ask: float | None = None

    @staticmethod
    def _key(bbo: Bbo) -> tuple:
        return tuple(q and (q.price, q.quantity, q.venue, q.venues and tuple(q.venues.items()))
                     for q in (bbo.bid, bbo.ask))

    def changed(self) -> None:
        if not self.clients:
            return
        bbo = self.compute()
        if bbo is None:
            self._bid = self._ask = None
            if self._last != ("resync",):
                self._last = ("resync",)
                frame = self.resync()
                if frame is not None:
                    self._fan_out(frame)
            return
        self._bid = bbo.bid.price if bbo.bid else None
        self._ask = bbo.ask.price if bbo.ask else None
        key = self._key(bbo)
        if key != self._last:
            self._last = key
            self._fan_out(_encode(bbo))

    def _fan_out(self, frame: bytes) -> None:
        for client in tuple(self.clients):
            client.deliver(frame)

    def add_client(self, client: Client) -> None:
        self.clients.add(client)
        bbo = self.compute()
        if bbo is not None:
            self._last = self._key(bbo)
            self._bid = bbo.bid.price if bbo.bid else None
            self._ask = bbo.ask.price if bbo.ask else None
            # The others already have it: changed() keeps them current while they listen.
            client.deliver(_encode(bbo))
        else:
            frame = self.resync()
            if frame is not None:
                client.deliver(frame)

    # --- BookListener (single venue) --------------------------------------------------------

    def book_snapshot(self, channel: BookChannel) -> None:
        self.changed()

    def book_state(self, channel: BookChannel) -> None:
        self.changed()

    def book_update(
        self, channel: BookChannel, bids: list[tuple[float, float]],
        asks: list[tuple[float, float]],
    ) -> None:
        bid, ask = self._bid, self._ask
        if (
            bid is None or ask is None
            or any(p >= bid for p, _ in bids) or any(p <= ask for p, _ in asks)
        ):
            self.changed()
