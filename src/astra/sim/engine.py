"""Price-time priority matching engine for one market.

The engine's book is the single source of truth for every feed the simulator serves: REST
depth, diff and partial depth streams, book tickers and trades are all read from it.

Invariants (checked by ``check_invariants`` and by property tests):
- Prices and quantities are positive integers (units of the market's precision).
- Each price level holds a FIFO queue of resting orders; orders at a better price always
  match first, and within a level the earliest order matches first (price-time priority).
- The aggregate quantity of a level equals the sum of its orders' remaining quantities, and
  a level exists only while that sum is positive.
- The book is never crossed at rest: best bid < best ask after every operation.
- ``update_id`` increases by exactly one for every operation that changed at least one level,
  and never otherwise; ``touched`` accumulates the (side, price) keys changed since the caller
  last cleared it, so feeds can publish exactly the levels that moved.
- Hidden orders (``timeInForce=HIDDEN``) rest in a book of their own that no level, depth,
  best price, ``update_id`` or ``touched`` ever shows, yet they match like any resting order:
  an incoming order takes the best price across both books, and at one price the displayed
  orders fill before the hidden ones (display buys priority). Post-only and fill-or-kill
  checks see hidden liquidity too, and no hidden order rests crossing a displayed one.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator
from heapq import merge
from typing import NamedTuple

__all__ = ["BUY", "SELL", "Fill", "MatchingEngine", "Order"]

BUY = 0
SELL = 1


class Order:
    """A resting or incoming order. ``qty`` is the remaining quantity."""

    __slots__ = ("hidden", "id", "owner", "price", "qty", "side")

    def __init__(
        self, id: int, owner: int, side: int, price: int, qty: int, hidden: bool = False
    ) -> None:
        self.id = id
        self.owner = owner
        self.side = side
        self.price = price
        self.qty = qty
        self.hidden = hidden  # rests out of sight (timeInForce=HIDDEN)


class Fill(NamedTuple):
    maker_id: int
    maker_owner: int
    taker_id: int
    taker_owner: int
    taker_side: int
    price: int
    qty: int


class MatchingEngine:
    """One market's limit order book with price-time priority matching."""

    def __init__(self) -> None:
        # Per side: price -> FIFO of orders; price -> aggregate quantity; sorted prices.
        self._queues: tuple[dict[int, deque[Order]], dict[int, deque[Order]]] = ({}, {})
        self.levels: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self._prices: tuple[list[int], list[int]] = ([], [])  # both ascending
        # The hidden book: the same shape, never published.
        self._hidden_queues: tuple[dict[int, deque[Order]], dict[int, deque[Order]]] = ({}, {})
        self._hidden_prices: tuple[list[int], list[int]] = ([], [])
        self.orders: dict[int, Order] = {}
        self._shown_change = False  # set by an operation that changed a displayed level
        self.update_id = 0
        self.touched: set[tuple[int, int]] = set()

    # -- queries ---------------------------------------------------------------------------
    def best_bid(self) -> int | None:
        prices = self._prices[BUY]
        return prices[-1] if prices else None

    def best_ask(self) -> int | None:
        prices = self._prices[SELL]
        return prices[0] if prices else None

    def best_resting(self, side: int) -> int | None:
        """The best resting price of ``side``, hidden orders included: what a post-only
        order must not reach (never published)."""
        return self._best(side)

    def depth(
        self, limit: int | None = None
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Aggregated levels: bids best (highest) first, asks best (lowest) first."""
        bid_qty, ask_qty = self.levels
        bid_prices = self._prices[BUY]
        ask_prices = self._prices[SELL]
        if limit is None:
            bids = [(p, bid_qty[p]) for p in reversed(bid_prices)]
            asks = [(p, ask_qty[p]) for p in ask_prices]
        else:
            bids = [(p, bid_qty[p]) for p in bid_prices[: -limit - 1 : -1]]
            asks = [(p, ask_qty[p]) for p in ask_prices[:limit]]
        return bids, asks

    def level_qty(self, side: int, price: int) -> int:
        return self.levels[side].get(price, 0)

    def reachable(self, side: int) -> Iterator[tuple[int, int]]:
        """``side``'s resting quantity per price, best first, hidden orders included (what a
        taker can reach; never published). Lazy, so a caller that stops early pays only for
        the levels it read; the book must not change while it is being iterated."""
        shown, hidden = self._prices[side], self._hidden_prices[side]
        if side == BUY:
            prices = merge(reversed(shown), reversed(hidden), reverse=True)
        else:
            prices = merge(shown, hidden)
        levels, queues = self.levels[side], self._hidden_queues[side]
        last = None
        for price in prices:
            if price == last:  # a price resting in both books comes twice, adjacent
                continue
            last = price
            yield price, levels.get(price, 0) + sum(o.qty for o in queues.get(price, ()))

    # -- operations --------------------------------------------------------------------------
    def submit(
        self,
        order: Order,
        *,
        limit: bool = True,
        post_only: bool = False,
        rest: bool = True,
        all_or_none: bool = False,
    ) -> list[Fill]:
        """Match an incoming order, then rest what remains if ``limit`` and ``rest``.

        ``limit=False`` is a market order (no price bound). ``post_only`` rejects (returns no
        fills, rests nothing, changes nothing) an order that would take liquidity;
        ``all_or_none`` (FOK) matches only if the whole quantity can fill at once.
        ``rest=False`` is IOC: the unfilled rest is dropped.
        """
        if order.qty <= 0 or (limit and order.price <= 0):
            raise ValueError("order price and quantity must be positive")
        if order.id in self.orders:
            raise ValueError(f"duplicate order id {order.id}")
        if post_only and self._marketable(order, limit):
            return []
        if all_or_none and self._fillable(order, limit) < order.qty:
            return []
        self._shown_change = False
        fills = self._match(order, limit)
        if limit and rest and order.qty > 0:
            self._rest(order)
        if self._shown_change:  # a displayed level changed (hidden activity shows nothing)
            self.update_id += 1
        return fills

    def cancel(self, order_id: int) -> Order | None:
        """Remove a resting order; returns it, or None if it is not resting."""
        order = self.orders.pop(order_id, None)
        if order is None:
            return None
        side, price = order.side, order.price
        if order.hidden:
            queue = self._hidden_queues[side][price]
            queue.remove(order)
            if not queue:
                self._drop_hidden_level(side, price)
            return order
        queue = self._queues[side][price]
        queue.remove(order)
        self._reduce_level(side, price, order.qty, queue)
        self.update_id += 1
        return order

    # -- internals ---------------------------------------------------------------------------
    def _best(self, side: int) -> int | None:
        """The best resting price of ``side``, hidden orders included."""
        best = None
        for prices in (self._prices[side], self._hidden_prices[side]):
            if prices:
                p = prices[-1] if side == BUY else prices[0]
                if best is None or (p > best if side == BUY else p < best):
                    best = p
        return best

    def _marketable(self, order: Order, limit: bool) -> bool:
        best = self._best(SELL if order.side == BUY else BUY)
        if best is None:
            return False
        return not limit or (best <= order.price if order.side == BUY else best >= order.price)

    def _fillable(self, order: Order, limit: bool) -> int:
        """Quantity available to this order right now (hidden orders included), up to its
        size."""
        total = 0
        for p, qty in self.reachable(SELL if order.side == BUY else BUY):
            if (limit and (p > order.price if order.side == BUY else p < order.price)) or (
                total >= order.qty
            ):
                break
            total += qty
        return total

    def _match(self, taker: Order, limit: bool) -> list[Fill]:
        fills: list[Fill] = []
        maker_side = SELL if taker.side == BUY else BUY
        while taker.qty > 0:
            price = self._best(maker_side)
            if price is None:
                break
            if limit and (price > taker.price if taker.side == BUY else price < taker.price):
                break
            # Displayed orders at this price first, then the hidden ones.
            queue = self._queues[maker_side].get(price)
            if queue:
                traded = self._take(queue, taker, price, fills)
                self._reduce_level(maker_side, price, traded, queue)
                self._shown_change = True
                continue
            hidden = self._hidden_queues[maker_side][price]
            self._take(hidden, taker, price, fills)
            if not hidden:
                self._drop_hidden_level(maker_side, price)
        return fills

    def _take(self, queue: deque[Order], taker: Order, price: int, fills: list[Fill]) -> int:
        """Fill ``taker`` against one price's queue, oldest first; returns the quantity."""
        traded = 0
        while taker.qty > 0 and queue:
            maker = queue[0]
            qty = min(maker.qty, taker.qty)
            maker.qty -= qty
            taker.qty -= qty
            traded += qty
            fills.append(Fill(maker.id, maker.owner, taker.id, taker.owner, taker.side, price, qty))
            if maker.qty == 0:
                queue.popleft()
                del self.orders[maker.id]
        return traded

    def _rest(self, order: Order) -> None:
        side, price = order.side, order.price
        if order.hidden:
            queues = self._hidden_queues[side]
            if price not in queues:
                queues[price] = deque()
                insort(self._hidden_prices[side], price)
            queues[price].append(order)
            self.orders[order.id] = order
            return
        self._shown_change = True
        queues = self._queues[side]
        queue = queues.get(price)
        if queue is None:
            queue = queues[price] = deque()
            insort(self._prices[side], price)
            self.levels[side][price] = 0
        queue.append(order)
        self.levels[side][price] += order.qty
        self.orders[order.id] = order
        self.touched.add((side, price))

    def _reduce_level(self, side: int, price: int, qty: int, queue: deque[Order]) -> None:
        levels = self.levels[side]
        remaining = levels[price] - qty
        self.touched.add((side, price))
        if queue:
            levels[price] = remaining
            return
        # Empty queue: the level is gone (its aggregate must be exactly zero).
        assert remaining == 0, "level aggregate out of sync with its orders"
        del levels[price]
        del self._queues[side][price]
        prices = self._prices[side]
        del prices[bisect_left(prices, price)]

    def _drop_hidden_level(self, side: int, price: int) -> None:
        del self._hidden_queues[side][price]
        prices = self._hidden_prices[side]
        del prices[bisect_left(prices, price)]

    def check_invariants(self) -> None:
        """Raise AssertionError if any invariant in the module docstring is violated."""
        for side in (BUY, SELL):
            queues, levels, prices = self._queues[side], self.levels[side], self._prices[side]
            assert prices == sorted(prices) and len(set(prices)) == len(prices)
            assert set(prices) == set(levels) == set(queues)
            for price, queue in queues.items():
                assert queue, "empty level kept"
                assert sum(o.qty for o in queue) == levels[price] > 0
                for o in queue:
                    assert o.qty > 0 and o.price == price and o.side == side
                    assert self.orders[o.id] is o
            hidden, hidden_prices = self._hidden_queues[side], self._hidden_prices[side]
            assert hidden_prices == sorted(hidden_prices) and set(hidden_prices) == set(hidden)
            for price, queue in hidden.items():
                assert queue and all(o.hidden and o.price == price and o.qty > 0 for o in queue)
        bid, ask = self.best_bid(), self.best_ask()
        assert bid is None or ask is None or bid < ask, "crossed book at rest"
        bid, ask = self._best(BUY), self._best(SELL)
        assert bid is None or ask is None or bid < ask, "crossed book (hidden orders) at rest"
        assert len(self.orders) == sum(
            len(q) for books in (self._queues, self._hidden_queues) for qs in books
            for q in qs.values()
        )
