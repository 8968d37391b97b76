"""Matching engine: worked examples, and a property test against a naive reference book."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astra.sim import BUY, SELL, MatchingEngine, Order


def _order(oid: int, side: int, price: int, qty: int, owner: int = 0,
           hidden: bool = False) -> Order:
    return Order(oid, owner, side, price, qty, hidden)


def test_price_time_priority_and_partial_fill():
    eng = MatchingEngine()
    eng.submit(_order(1, SELL, 101, 5))
    eng.submit(_order(2, SELL, 100, 3))
    eng.submit(_order(3, SELL, 100, 4))  # same price, later: behind order 2
    fills = eng.submit(_order(4, BUY, 101, 9))
    assert [(f.maker_id, f.price, f.qty) for f in fills] == [(2, 100, 3), (3, 100, 4), (1, 101, 2)]
    assert eng.depth() == ([], [(101, 3)])
    assert eng.orders[1].qty == 3 and 4 not in eng.orders  # taker fully filled, nothing rests
    eng.check_invariants()


def test_limit_rests_remainder_and_update_ids_count_changes():
    eng = MatchingEngine()
    eng.submit(_order(1, SELL, 100, 2))
    assert eng.update_id == 1
    eng.submit(_order(2, BUY, 100, 5))  # takes 2, rests 3 at 100
    assert eng.update_id == 2
    assert eng.depth() == ([(100, 3)], [])
    assert eng.touched == {(SELL, 100), (BUY, 100)}
    assert eng.cancel(99) is None and eng.update_id == 2  # nothing changed, no new id
    assert eng.cancel(2).qty == 3 and eng.update_id == 3
    assert eng.depth() == ([], [])


def test_market_ioc_fok_and_post_only():
    eng = MatchingEngine()
    eng.submit(_order(1, SELL, 100, 2))
    eng.submit(_order(2, SELL, 105, 2))
    assert eng.submit(_order(3, BUY, 100, 1), post_only=True) == []  # would take: rejected
    assert eng.submit(_order(4, BUY, 105, 5), all_or_none=True, rest=False) == []  # only 4
    assert eng.depth()[1] == [(100, 2), (105, 2)] and eng.update_id == 2
    fills = eng.submit(_order(5, BUY, 0, 3), limit=False)  # market: sweeps both levels
    assert [(f.price, f.qty) for f in fills] == [(100, 2), (105, 1)]
    fills = eng.submit(_order(6, BUY, 110, 5), rest=False)  # IOC: fills 1, drops 4
    assert [(f.price, f.qty) for f in fills] == [(105, 1)] and eng.depth() == ([], [])


def test_rejects_bad_orders():
    eng = MatchingEngine()
    with pytest.raises(ValueError):
        eng.submit(_order(1, BUY, 100, 0))
    with pytest.raises(ValueError):
        eng.submit(_order(2, BUY, -1, 1))
    eng.submit(_order(3, BUY, 100, 1))
    with pytest.raises(ValueError):
        eng.submit(_order(3, BUY, 99, 1))


def test_reachable_merges_displayed_and_hidden_levels_best_first_and_lazily():
    eng = MatchingEngine()
    for oid, side, price, qty, hidden in [
        (1, SELL, 103, 2, False), (2, SELL, 101, 4, True), (3, SELL, 103, 5, True),
        (4, SELL, 102, 1, False), (5, BUY, 99, 3, False), (6, BUY, 100, 2, True),
        (7, BUY, 99, 1, True), (8, BUY, 97, 6, False),
    ]:
        eng.submit(_order(oid, side, price, qty, hidden=hidden))
    # One row per price, displayed + hidden summed, in the order a taker would reach them.
    assert list(eng.reachable(SELL)) == [(101, 4), (102, 1), (103, 7)]
    assert list(eng.reachable(BUY)) == [(100, 2), (99, 4), (97, 6)]
    asks = eng.reachable(SELL)
    assert next(asks) == (101, 4)  # a generator: read one level, stop
    # Fill-or-kill sees the merged levels: 4 + 1 + 7 = 12 reachable up to 103, 5 up to 102.
    assert eng.submit(_order(9, BUY, 102, 6), all_or_none=True, rest=False) == []
    fills = eng.submit(_order(10, BUY, 103, 12), all_or_none=True, rest=False)
    assert [(f.maker_id, f.price, f.qty) for f in fills] == [(2, 101, 4), (4, 102, 1),
                                                              (1, 103, 2), (3, 103, 5)]
    assert list(eng.reachable(SELL)) == []
    eng.check_invariants()


def test_hidden_order_rests_unseen_and_fills_when_crossed():
    eng = MatchingEngine()
    eng.submit(_order(1, SELL, 105, 2))
    assert eng.update_id == 1
    assert eng.submit(_order(2, SELL, 103, 4, hidden=True)) == []
    eng.submit(_order(3, SELL, 103, 1))  # displayed, later, same price: still fills first
    # Unseen: no level, no best price, no update id, nothing touched by the hidden order.
    assert eng.depth() == ([], [(103, 1), (105, 2)]) and eng.best_ask() == 103
    assert eng.update_id == 2 and (SELL, 103) in eng.touched
    eng.touched.clear()
    eng.cancel(3)
    assert eng.depth() == ([], [(105, 2)]) and eng.best_ask() == 105 and eng.update_id == 3
    eng.touched.clear()
    # Post-only is refused against hidden liquidity; fill-or-kill counts it.
    assert eng.submit(_order(4, BUY, 103, 1), post_only=True) == []
    assert eng.submit(_order(5, BUY, 104, 5), all_or_none=True, rest=False) == []
    fills = eng.submit(_order(7, BUY, 104, 4), all_or_none=True, rest=False)
    assert [(f.maker_id, f.price, f.qty) for f in fills] == [(2, 103, 4)]
    assert eng.update_id == 3 and eng.touched == set()  # only hidden liquidity traded
    eng.check_invariants()
    # A hidden order that crosses takes first, then rests hidden; cancel removes it unseen.
    fills = eng.submit(_order(6, BUY, 105, 3, hidden=True))
    assert [(f.maker_id, f.qty) for f in fills] == [(1, 2)] and eng.depth() == ([], [])
    assert eng.orders[6].qty == 1 and list(eng.reachable(BUY)) == [(105, 1)]
    assert list(eng.reachable(SELL)) == []
    assert eng.cancel(6).qty == 1 and list(eng.reachable(BUY)) == [] and 6 not in eng.orders
    eng.check_invariants()


class ReferenceBook:
    """The obvious O(n) book: a list of resting orders in arrival order; at one price the
    displayed orders fill before the hidden ones, which no depth shows."""

    def __init__(self) -> None:
        self.resting: list[list[int]] = []  # [id, side, price, qty, hidden]

    def submit(self, oid: int, side: int, price: int, qty: int,
               hidden: bool = False) -> list[tuple[int, int, int]]:
        fills = []
        while qty:
            crossing = [
                o
                for o in self.resting
                if o[1] != side and (o[2] <= price if side == BUY else o[2] >= price)
            ]
            if not crossing:
                break
            best = min(o[2] for o in crossing) if side == BUY else max(o[2] for o in crossing)
            # Displayed first, then in arrival order.
            maker = min((o for o in crossing if o[2] == best), key=lambda o: o[4])
            q = min(qty, maker[3])
            fills.append((maker[0], best, q))
            maker[3] -= q
            qty -= q
            if maker[3] == 0:
                self.resting.remove(maker)
        if qty:
            self.resting.append([oid, side, price, qty, int(hidden)])
        return fills

    def cancel(self, oid: int) -> None:
        self.resting = [o for o in self.resting if o[0] != oid]

    def depth(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        agg: dict[tuple[int, int], int] = {}
        for _, side, price, qty, hidden in self.resting:
            if not hidden:
                agg[(side, price)] = agg.get((side, price), 0) + qty
        bids = sorted(((p, q) for (s, p), q in agg.items() if s == BUY), reverse=True)
        asks = sorted((p, q) for (s, p), q in agg.items() if s == SELL)
        return bids, asks


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("limit"), st.sampled_from([BUY, SELL]), st.integers(90, 110), st.integers(1, 20)
        ),
        st.tuples(st.just("cancel"), st.integers(0, 200)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_engine_agrees_with_reference_book(operations):
    eng, ref = MatchingEngine(), ReferenceBook()
    for oid, op in enumerate(operations):
        if op[0] == "limit":
            _, side, price, qty = op
            fills = eng.submit(_order(oid, side, price, qty))
            assert [(f.maker_id, f.price, f.qty) for f in fills] == ref.submit(
                oid, side, price, qty
            )
        else:
            eng.cancel(op[1])
            ref.cancel(op[1])
        assert eng.depth() == ref.depth()
        eng.check_invariants()


hidden_ops = st.lists(
    st.tuples(st.sampled_from([BUY, SELL]), st.integers(95, 105), st.integers(1, 20),
              st.booleans(), st.integers(0, 60)),
    max_size=150,
)


@settings(max_examples=300, deadline=None)
@given(hidden_ops)
def test_engine_with_hidden_orders_agrees_with_reference_book(operations):
    """Hidden orders: the same fills as the reference, a depth that never shows them, and an
    update id that moves only when a displayed level does."""
    eng, ref = MatchingEngine(), ReferenceBook()
    for oid, (side, price, qty, hidden, cancel) in enumerate(operations):
        eng.touched.clear()
        before, shown = eng.update_id, eng.depth()
        fills = eng.submit(_order(oid, side, price, qty, hidden=hidden))
        assert [(f.maker_id, f.price, f.qty) for f in fills] == ref.submit(
            oid, side, price, qty, hidden
        )
        assert eng.depth() == ref.depth()
        assert (eng.update_id != before) == (eng.depth() != shown or bool(eng.touched))
        eng.cancel(cancel)
        ref.cancel(cancel)
        assert eng.depth() == ref.depth()
        eng.check_invariants()
