"""The water-fill at the heart of the plan (``plan.py`` owns the public API and the rules).

A ``_Book`` is one venue, prepared once per plan: its levels cut at the price bound, its
fee factor, its capacity in a form that is compared exactly (a division only where a level
is cut by the capacity, then checked), its lot and minimums, and its running sums (depth
and notional at the end of each level), extended lazily and shared by every walk.

``walk`` takes *lot units* greedily in fee-adjusted order: the k-th lot of a venue ends at
the level where that venue's depth first reaches k lots and ranks at its average price
(within a venue these never decrease, so its take stays a prefix of its book: what one IOC
limit order takes); ties go to the venue listed first. A unit is taken whole or not at all:
one that does not fit what is left of the order, or the venue's capacity, closes that venue,
and what is left goes to the next units (the rounding dust of a coarse lot lands on a venue
with a finer one). Units are merged lazily in *chunks* (a heap of one cursor per venue): all
the whole lots inside one level share its price and go as one chunk; a lot spanning levels
is a chunk of its own. ``alone`` is the same walk over one venue, in closed form.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from decimal import Decimal

__all__: list[str] = []

_ZERO = Decimal(0)


class _Book:
    """One venue's prepared side. ``k`` is the capacity cost per unit of notional (``None``:
    the capacity counts base units); ``cap`` is the capacity on that scale (``None``:
    uncapped). ``depth[j]`` and ``notional[j]`` sum levels ``0..j``."""

    __slots__ = (
        "cap",
        "depth",
        "fee",
        "i",
        "k",
        "lot",
        "min_notional",
        "min_quantity",
        "n",
        "notional",
        "prices",
        "qtys",
        "source",
        "venue",
    )

    def __init__(self, i, source, prices, qtys, n, fee_key, cap, k):
        self.i = i
        self.source = source
        self.venue = source.venue
        self.prices = prices
        self.qtys = qtys
        self.n = n  # levels within the price bound (a prefix)
        self.fee = fee_key  # key = price * fee_key: ascending is best first on either side
        self.cap = cap
        self.k = k
        self.lot = source.lot
        self.min_quantity = source.min_quantity
        self.min_notional = source.min_notional
        self.depth: list[Decimal] = []
        self.notional: list[Decimal] = []

    def sums_to(self, j: int) -> None:
        """Extend the running sums through level ``j``."""
        depth, notional, qtys, prices = self.depth, self.notional, self.qtys, self.prices
        h = len(depth)
        d, s = (depth[-1], notional[-1]) if h else (_ZERO, _ZERO)
        while h <= j:
            x = qtys[h]
            d += x
            s += x * prices[h]
            depth.append(d)
            notional.append(s)
            h += 1

    def sums_until(self, quantity: Decimal, n: int) -> None:
        """Extend the running sums until the depth reaches ``quantity`` or level ``n - 1``."""
        depth, notional, qtys, prices = self.depth, self.notional, self.qtys, self.prices
        h = len(depth)
        d, s = (depth[-1], notional[-1]) if h else (_ZERO, _ZERO)
        while h < n and d < quantity:
            x = qtys[h]
            d += x
            s += x * prices[h]
            depth.append(d)
            notional.append(s)
            h += 1

    def limit(self, j: int, target: Decimal) -> tuple[Decimal, bool]:
        """``target`` (a depth reaching into level ``j``, sums through ``j`` known) cut by
        the capacity, and whether the capacity cut it (then no more from this venue)."""
        cap = self.cap
        if cap is None:
            return target, False
        if self.k is None:  # base units
            return (cap, True) if cap < target else (target, False)
        k = self.k
        if self.notional[j] * k <= cap:
            return target, False
        before = self.depth[j - 1] if j else _ZERO
        spent = self.notional[j - 1] * k if j else _ZERO
        reach = before + (cap - spent) / (self.prices[j] * k)
        return (reach, True) if reach < target else (target, False)

    def take(self, j: int, target: Decimal) -> tuple[Decimal, Decimal]:
        """(quantity, notional) of ``target`` rounded down to the lot, for a target within
        level ``j``'s reach (quantity 0 when less than a lot)."""
        lot = self.lot
        q = (target // lot) * lot
        while q > 0:
            jj = bisect_left(self.depth, q, 0, j + 1)  # the level where the q-th unit ends
            before = self.depth[jj - 1] if jj else _ZERO
            s = (self.notional[jj - 1] if jj else _ZERO) + (q - before) * self.prices[jj]
            if self.cap is None or (s * self.k if self.k is not None else q) <= self.cap:
                return q, s
            q -= lot  # the capacity division rounded up across a lot boundary
        return _ZERO, _ZERO


class _Take:
    """What one venue takes in a walk: ``quantity`` on its lot, the ``notional`` of the
    levels it takes, the worst ``price`` it reaches and the walk step at which it first
    took (its rank)."""

    __slots__ = ("book", "notional", "price", "quantity", "rank")

    def __init__(self, book: _Book, rank: int, quantity=_ZERO, notional=_ZERO, price=_ZERO):
        self.book = book
        self.rank = rank
        self.quantity = quantity
        self.notional = notional
        self.price = price

    def short_of_minimums(self) -> bool:
        b = self.book
        return self.quantity < b.min_quantity or self.notional < b.min_notional


def _next(b: _Book, taken: Decimal, spent: Decimal):
    """The next chunk of ``b`` after ``taken`` (on the lot, costing ``spent``): (key, level,
    depth it runs to), or ``None`` when no whole lot is left within the bound. A lot that
    lies within one level starts a chunk running to that level's end, keyed by its price; a
    lot spanning levels is a chunk of its own, keyed by its average price."""
    want = taken + b.lot
    n = b.n
    depth = b.depth
    if not depth or depth[-1] < want:
        b.sums_until(want, n)
    j = bisect_left(depth, want, 0, min(n, len(depth)))
    if j >= n or j >= len(depth):
        return None
    if not j or depth[j - 1] <= taken:
        return b.prices[j] * b.fee, j, depth[j]
    cost = b.notional[j - 1] + (want - depth[j - 1]) * b.prices[j] - spent
    return cost / b.lot * b.fee, j, want


def walk(books: list[_Book], quantity: Decimal) -> list[_Take]:
    """Greedy lot-unit fill of ``quantity`` over ``books``; the takes, best rank first."""
    heap = []
    for b in books:
        chunk = _next(b, _ZERO, _ZERO) if b.n else None
        if chunk is not None:
            heap.append((chunk[0], b.i, chunk[1], chunk[2], b))
    heapq.heapify(heap)
    remaining = quantity
    takes: dict[int, _Take] = {}
    step = 0
    while heap and remaining > 0:
        _, i, j, target, b = heapq.heappop(heap)
        step += 1
        tk = takes.get(i)
        taken = tk.quantity if tk is not None else _ZERO
        closed = False
        if taken + remaining < target:  # the order runs out here: no more from this venue
            target = taken + remaining
            closed = True
        target, capped = b.limit(j, target)
        lot = b.lot
        if target - taken >= lot:
            q = (target // lot) * lot  # > taken, so its last unit ends on level j
            before = b.depth[j - 1] if j else _ZERO
            s = (b.notional[j - 1] if j else _ZERO) + (q - before) * b.prices[j]
            if b.cap is not None:  # exact check: limit()'s division may have rounded up
                q, s = b.take(j, target)
            if q > taken:
                if tk is None:
                    tk = takes[i] = _Take(b, step)
                tk.quantity, tk.notional, tk.price = q, s, b.prices[j]
                remaining -= q - taken
        if not (closed or capped) and tk is not None:
            chunk = _next(b, tk.quantity, tk.notional)
            if chunk is not None:
                heapq.heappush(heap, (chunk[0], i, chunk[1], chunk[2], b))
    return sorted(takes.values(), key=lambda t: t.rank)


def fill(books: list[_Book], quantity: Decimal) -> list[_Take]:
    """``walk``, then the minimums: while a venue's take is below its minimum quantity or
    notional, that venue (the best-ranked such one) is left out and the walk runs again
    without it, so its quantity goes to the next levels elsewhere. Each round removes a
    venue, so this ends within ``len(books)`` rounds."""
    active = list(books)
    while True:
        takes = walk(active, quantity)
        short = next((t for t in takes if t.short_of_minimums()), None)
        if short is None:
            return takes
        active.remove(short.book)


def alone(b: _Book, quantity: Decimal) -> _Take | None:
    """``fill([b], quantity)`` in closed form: the most of ``quantity`` that ``b`` takes by
    itself (its bound, capacity, lot and minimums), or ``None``."""
    target, j = reach(b, True, True, quantity)
    if j < 0:
        return None
    q, s = b.take(j, target)
    if not q:
        return None
    jj = bisect_left(b.depth, q, 0, j + 1)
    t = _Take(b, 1, q, s, b.prices[jj])
    return None if t.short_of_minimums() else t


def reach(b: _Book, bounded: bool, capped: bool, quantity: Decimal | None = None):
    """(depth, level) — how far ``b`` alone reaches before lots and minimums, with or without
    its price bound and its capacity, up to ``quantity``; level -1 when it reaches nothing."""
    n = b.n if bounded else len(b.prices)
    if not n:
        return _ZERO, -1
    if quantity is not None:  # sums only as far as the quantity needs
        b.sums_until(quantity, n)
        j = min(bisect_left(b.depth, quantity, 0, min(n, len(b.depth))), n - 1)
    else:
        b.sums_to(n - 1)
        j = n - 1
    if capped and b.cap is not None:  # the first level the capacity does not cover whole
        if b.k is None:
            jc = bisect_right(b.depth, b.cap, 0, j + 1)
        else:
            k = b.k
            jc = bisect_right(b.notional, b.cap, 0, j + 1, key=lambda s: s * k)
        if jc <= j:
            target, _ = b.limit(jc, b.depth[jc])
            return (target if quantity is None else min(target, quantity)), jc
    target = b.depth[j]
    return (target if quantity is None else min(target, quantity)), j
