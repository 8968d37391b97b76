"""VenueLimiter's hook for a budget shared across processes (``SharedBudget``), on fake clocks:
a small in-process budget stands for what the cluster shares (``tests/cluster/test_limits.py``
runs the real one on NATS)."""

from __future__ import annotations

import json

import pytest
from tests.venues.test_limiter import FakeTime, make

from astra.core import RateLimited
from astra.venues.limiter import SharedBudget, VenueLimiter, set_shared_budget, shared_budget


class MemoryBudget:
    """One token bucket per key (reservations may go negative, as the cluster's do) and one
    gate per (key, account), on ``t``'s clocks; every take is recorded."""

    def __init__(self, t: FakeTime) -> None:
        self.t = t
        self.buckets: dict[str, tuple[float, float]] = {}
        self.gates: dict[tuple[str, str | None], float] = {}
        self.takes: list[tuple[str, float, float | None]] = []

    async def take(self, key: str, weight: float, *, rate: float, capacity: float,
                   max_wait: float, reserve: float | None = None) -> float:
        self.takes.append((key, weight, reserve))
        now = self.t()
        tokens, updated = self.buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - updated) * rate)
        deficit = weight + (reserve or 0.0) - tokens
        wait = deficit / rate if deficit > 0 else 0.0
        if (reserve is not None and wait > 0) or wait > max_wait:
            self.buckets[key] = (tokens, now)
            return wait
        self.buckets[key] = (tokens - weight, now)
        return wait

    def close_gate(self, key: str, until: float, account: str | None = None) -> None:
        self.gates[(key, account)] = max(until, self.gates.get((key, account), 0.0))

    def gate(self, key: str, account: str | None = None) -> float:
        until = self.gates.get((key, None), 0.0)
        return max(until, self.gates.get((key, account), 0.0)) if account else until


def test_memory_budget_is_a_shared_budget():
    budget: SharedBudget = MemoryBudget(FakeTime())  # typed: the Protocol's shape
    assert budget.gate("X.y") == 0.0


def test_keys_name_the_venue_and_the_kind_of_limit():
    t = FakeTime()
    assert make(t, scope="spot").key == "BINANCE.spot"
    assert VenueLimiter("binance", rate=10, scope="spot").key == "BINANCE.spot"
    # No scope: the numbers name the kind, the same on every node.
    assert make(t).key == make(t).key == "BINANCE.10x2"
    assert make(t, rate=5.0).key != make(t).key


async def test_two_limiters_draw_from_one_budget():
    t = FakeTime()
    t.advance = False  # reservations pile up: each sleep is its request's place in line
    budget = MemoryBudget(t)
    a, b = make(t, scope="public", budget=budget), make(t, scope="public", budget=budget)
    for limiter in (a, b, a, b, a):
        await limiter.acquire()
    # Two free (the shared capacity), then 0.1 s apart at the shared rate, though each
    # limiter alone had 2 tokens of its own.
    assert t.sleeps == pytest.approx([0.1, 0.2, 0.3])
    assert [k for k, _, _ in budget.takes] == ["BINANCE.public"] * 5
    # The control: without the budget the same calls do not wait at all.
    t.sleeps.clear()
    c, d = make(t, scope="public"), make(t, scope="public")
    for limiter in (c, d, c, d):
        await limiter.acquire()
    assert t.sleeps == [] and len(budget.takes) == 5


async def test_a_shared_wait_over_max_wait_fails_and_gives_the_local_tokens_back():
    t = FakeTime()
    budget = MemoryBudget(t)
    a, b = make(t, scope="public", budget=budget), make(t, scope="public", budget=budget)
    await a.acquire()
    await a.acquire()
    with pytest.raises(RateLimited) as refused:
        await b.acquire(max_wait=0.05)
    assert refused.value.retry_after == pytest.approx(0.1)
    b.budget = None  # b's own bucket is whole again: two requests at once
    await b.acquire()
    await b.acquire()
    assert t.sleeps == []


async def test_a_429_closes_the_gate_of_every_limiter_sharing_the_key():
    t = FakeTime()
    budget = MemoryBudget(t)
    a, b = make(t, scope="public", budget=budget), make(t, scope="public", budget=budget)
    other = make(t, scope="trading", budget=budget)
    assert a.observe_response(429, {"Retry-After": "30"}) == pytest.approx(30)
    assert budget.gates == {("BINANCE.public", None): pytest.approx(t.wall() + 30)}
    assert b.closed and b.retry_after() == pytest.approx(30)
    with pytest.raises(RateLimited) as refused:
        await b.acquire()
    assert refused.value.retry_after == pytest.approx(30)
    assert (b.blocked, b.signals) == (1, 0)  # refused, though b met no 429 itself
    assert len(budget.takes) == 0  # refused before the budget was asked
    await other.acquire()  # another kind of limit stays open
    t.now += 31
    await b.acquire()
    assert not b.closed


async def test_an_account_limit_closes_that_account_on_every_limiter():
    t = FakeTime()
    budget = MemoryBudget(t)
    a, b = make(t, scope="spot", budget=budget), make(t, scope="spot", budget=budget)
    body = json.dumps({"code": -1015, "msg": "Too many new orders; current limit is 10"})
    assert a.observe_response(429, {"Retry-After": "10"}, body, account="desk") is not None
    assert b.retry_after("desk") == pytest.approx(10)
    assert b.retry_after() is None and b.retry_after("other") is None
    with pytest.raises(RateLimited):
        await b.acquire(account="desk")
    await b.acquire(account="other")


async def test_a_gate_learnt_while_waiting_for_the_budget_refuses_the_request():
    t = FakeTime()

    class ClosingBudget(MemoryBudget):  # another node's 429 arrives with the take's answer
        async def take(self, key, weight, **kw):
            self.close_gate(key, self.t.wall() + 5)
            return await super().take(key, weight, **kw)

    limiter = make(t, scope="public", budget=ClosingBudget(t))
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire()
    assert refused.value.retry_after == pytest.approx(5)
    limiter.budget = None
    await limiter.acquire()
    await limiter.acquire()  # the refused request's local token was given back
    assert t.sleeps == []


async def test_low_priority_leaves_the_shared_reserve():
    t = FakeTime()
    budget = MemoryBudget(t)
    normal = make(t, scope="public", budget=budget)
    low = make(t, scope="public", reserve=1.0, budget=budget)
    await normal.acquire()  # the shared bucket has 1 token left: exactly the reserve
    with pytest.raises(RateLimited):
        await low.acquire(low_priority=True, max_wait=0.05)
    assert budget.takes[-1] == ("BINANCE.public", 1.0, 1.0)
    await low.acquire(low_priority=True)  # waits for the reserve to refill, holding nothing
    assert t.sleeps == pytest.approx([0.1])
    assert budget.buckets["BINANCE.public"][0] == pytest.approx(1.0)


async def test_the_process_budget_reaches_limiters_made_before_and_after():
    t = FakeTime()
    process, own = MemoryBudget(t), MemoryBudget(t)
    before = make(t, scope="public")
    try:
        assert set_shared_budget(process) is None
        assert shared_budget() is process
        after = make(t, scope="public")
        mine = make(t, scope="public", budget=own)  # a limiter's own budget wins
        for limiter in (before, after, mine):
            await limiter.acquire()
        assert len(process.takes) == 2 and len(own.takes) == 1
        assert after.observe_response(429, {"Retry-After": "3"}) is not None
        assert before.retry_after() == pytest.approx(3)  # the gate reached it through the budget
    finally:
        assert set_shared_budget(None) is process
    t.now += 4
    await before.acquire()
    assert len(process.takes) == 2  # not shared any more
