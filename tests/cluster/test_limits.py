"""The cluster-wide rate-limit budget (``astra.cluster.limits``) on a real nats-server: two
"edges" (two NATS connections, two ``KvBudget``s, two ``VenueLimiter``s) guarding one loopback
HTTP server that counts what reaches it."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import textwrap
import time

import aiohttp
import nats
import pytest
from aiohttp import web
from tests.venues.loopback import serve

from astra.cluster.limits import KvBudget, share_limits
from astra.core import RateLimited
from astra.venues.limiter import VenueLimiter, set_shared_budget, shared_budget

RATE, CAPACITY = 20.0, 5.0


async def _connect(url: str):
    return await nats.connect(url, reconnect_time_wait=0.1, max_reconnect_attempts=-1,
                              connect_timeout=2)


class Venue:
    """A loopback "venue": ``/ok`` answers 200, ``/limited`` 429 with Retry-After: 30; every
    request's arrival (monotonic) is kept."""

    def __init__(self) -> None:
        self.hits: list[float] = []
        self.app = web.Application()
        self.app.router.add_get("/ok", self.ok)
        self.app.router.add_get("/limited", self.limited)

    async def ok(self, request: web.Request) -> web.Response:
        self.hits.append(time.monotonic())
        return web.Response(text="ok")

    async def limited(self, request: web.Request) -> web.Response:
        self.hits.append(time.monotonic())
        return web.Response(status=429, headers={"Retry-After": "30"})


@contextlib.asynccontextmanager
async def edges(url: str, n: int = 2, **kw):
    """``n`` nodes, each its own NATS connection and budget (not installed process-wide)."""
    conns = [await _connect(url) for _ in range(n)]
    budgets = [KvBudget(nc, node=f"edge-{i}", **kw) for i, nc in enumerate(conns)]
    try:
        for budget in budgets:
            await budget.start()
        yield budgets
    finally:
        for budget in budgets:
            await budget.close()
        for nc in conns:
            await nc.close()


async def hammer(limiter: VenueLimiter, http: aiohttp.ClientSession, url: str,
                 until: float, workers: int = 3) -> int:
    """``workers`` tasks sending through ``limiter`` as fast as it lets them until ``until``
    (monotonic); returns the requests that got an answer."""
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < until:
            try:
                async with limiter.slot(), http.get(url) as resp:
                    await resp.read()
                    done += 1
            except RateLimited:
                await asyncio.sleep(0.01)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done


async def test_racing_nodes_never_both_take_the_last_tokens(nats_server):
    # Practically no refill: 30 tokens in all, 80 concurrent takes on two connections.
    async with asyncio.timeout(30), edges(nats_server.url) as (a, b):
        async def take(budget: KvBudget) -> float:
            return await budget.take("SIM.race", 1.0, rate=1e-4, capacity=30.0, max_wait=0.0)

        waits = await asyncio.gather(*(take(budget) for _ in range(40) for budget in (a, b)))
        assert sum(1 for w in waits if w == 0.0) == 30
        assert all(w > 0 for w in waits if w != 0.0)
        assert a.fallbacks == b.fallbacks == 0
        assert a.takes + b.takes == 80


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "unshared"])
async def test_two_edges_keep_the_venue_under_its_limit(nats_server, shared):
    venue = Venue()
    async with asyncio.timeout(30), serve(venue.app) as base, edges(nats_server.url) as budgets, \
            aiohttp.ClientSession() as http:
        limiters = [VenueLimiter("SIM", rate=RATE, capacity=CAPACITY, scope="public",
                                 budget=budget if shared else None) for budget in budgets]
        if not shared:
            assert all(lim.budget is None for lim in limiters) and shared_budget() is None
        start = time.monotonic()
        done = await asyncio.gather(*(hammer(lim, http, f"{base}/ok", start + 2.5)
                                      for lim in limiters))
        elapsed = time.monotonic() - start
    bound = RATE * elapsed + CAPACITY + 1
    assert len(venue.hits) == sum(done)
    if shared:
        assert len(venue.hits) <= bound
        assert len(venue.hits) >= 0.7 * RATE * 2.5  # the budget is used, not starved
        assert min(done) >= 0.2 * sum(done)  # neither edge is shut out
        assert all(b.takes >= d for b, d in zip(budgets, done, strict=True))
    else:  # the control: two local buckets allow twice the venue's rate
        assert len(venue.hits) > bound


async def test_a_429_on_one_node_closes_the_gate_on_the_other(nats_server):
    venue = Venue()
    async with asyncio.timeout(30), serve(venue.app) as base, \
            edges(nats_server.url) as (a, b), aiohttp.ClientSession() as http:
        lim_a, lim_b = (VenueLimiter("SIM", rate=RATE, capacity=CAPACITY, scope="public",
                                     budget=budget) for budget in (a, b))
        other_b = VenueLimiter("SIM", rate=RATE, capacity=CAPACITY, scope="trading", budget=b)
        async with lim_b.slot(), http.get(f"{base}/ok") as resp:  # b has a revision cached
            assert resp.status == 200
        async with lim_a.slot(), http.get(f"{base}/limited") as resp:
            assert lim_a.observe_response(resp.status, resp.headers) == pytest.approx(30, abs=1)
        await a.flush()
        assert len(venue.hits) == 2
        with pytest.raises(RateLimited) as refused:
            async with lim_b.slot(), http.get(f"{base}/ok"):
                pass
        assert len(venue.hits) == 2  # the venue never saw it
        assert 25 < refused.value.retry_after <= 30
        assert lim_b.closed and 25 < lim_b.retry_after() <= 30
        with pytest.raises(RateLimited):  # now refused before any round trip
            await lim_b.acquire()
        assert lim_b.blocked == 2 and lim_b.signals == 0  # b met no 429 of its own
        await other_b.acquire()  # another kind of limit is not closed
        assert not other_b.closed
        # A node that starts later learns the gate at its first request.
        async with edges(nats_server.url, 1) as (c,):
            lim_c = VenueLimiter("SIM", rate=RATE, capacity=CAPACITY, scope="public", budget=c)
            with pytest.raises(RateLimited):
                await lim_c.acquire()
        assert len(venue.hits) == 2


async def test_nats_outage_falls_back_to_a_share_then_shares_again(nats_server):
    venue = Venue()
    async with asyncio.timeout(60), serve(venue.app) as base, \
            edges(nats_server.url, retry_seconds=0.3) as budgets, \
            aiohttp.ClientSession() as http:
        limiters = [VenueLimiter("SIM", rate=RATE, capacity=CAPACITY, scope="public",
                                 budget=budget) for budget in budgets]
        stop = time.monotonic() + 3600
        runs = [asyncio.ensure_future(hammer(lim, http, f"{base}/ok", stop))
                for lim in limiters]
        try:
            await asyncio.sleep(1.0)
            assert all(b.takes > 0 and b.fallbacks == 0 for b in budgets)
            nats_server.stop()
            down = time.monotonic()
            await asyncio.sleep(2.0)
            up = time.monotonic()
            fallbacks = [b.fallbacks for b in budgets]
            assert all(f > 0 for f in fallbacks) and all(b.degraded for b in budgets)
            nats_server.start()
            takes = [b.takes for b in budgets]
            for _ in range(300):  # reconnected, bucket re-created: both take from it again
                if all(b.takes > t for b, t in zip(budgets, takes, strict=True)):
                    break
                await asyncio.sleep(0.05)
            assert not any(b.degraded for b in budgets)
            assert all(b.outages == 1 for b in budgets)
        finally:
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
    during = [t for t in venue.hits if down <= t < up]
    # Each node paced at rate/2 (expected_nodes=2): the venue saw no more than its limit,
    # plus what was reserved from the shared bucket just before the cut (3 workers a node).
    assert 0.5 * RATE * (up - down) <= len(during) <= RATE * (up - down) + CAPACITY + 6 + 1


async def test_share_limits_installs_the_process_budget(nats_server):
    async with asyncio.timeout(20):
        nc = await _connect(nats_server.url)
        try:
            before = VenueLimiter("SIM", rate=RATE, capacity=CAPACITY, scope="public")
            budget = await share_limits(nc, node="edge-x")
            assert shared_budget() is budget
            later = VenueLimiter("SIM", rate=RATE, capacity=CAPACITY, scope="public")
            await before.acquire()
            await later.acquire()
            assert budget.takes == 2
            await budget.close()
            assert shared_budget() is None
            await later.acquire()
            assert budget.takes == 2  # no longer shared
        finally:
            set_shared_budget(None)
            await nc.close()


_CHILD = textwrap.dedent("""
    import asyncio, sys, time
    import aiohttp, nats
    from astra.cluster.limits import share_limits
    from astra.core import RateLimited
    from astra.venues.limiter import VenueLimiter

    async def main(url, target, seconds):
        nc = await nats.connect(url)
        budget = await share_limits(nc, node="child")
        limiter = VenueLimiter("SIM", rate=%r, capacity=%r, scope="public")
        done = 0
        print("ready", flush=True)
        sys.stdin.readline()
        until = time.monotonic() + seconds
        async with aiohttp.ClientSession() as http:
            async def worker():
                nonlocal done
                while time.monotonic() < until:
                    try:
                        async with limiter.slot(), http.get(target) as resp:
                            await resp.read()
                            done += 1
                    except RateLimited:
                        await asyncio.sleep(0.01)
            await asyncio.gather(*(worker() for _ in range(3)))
        print(done, budget.takes, budget.fallbacks, flush=True)
        await budget.close()
        await nc.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
""") % (RATE, CAPACITY)


async def test_two_processes_share_one_budget(nats_server):
    venue = Venue()
    async with asyncio.timeout(60), serve(venue.app) as base, \
            edges(nats_server.url, 1) as (budget,), aiohttp.ClientSession() as http:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, nats_server.url, f"{base}/ok", "2.5",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            assert (await child.stdout.readline()).strip() == b"ready"
            limiter = VenueLimiter("SIM", rate=RATE, capacity=CAPACITY, scope="public",
                                   budget=budget)
            start = time.monotonic()
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            mine = await hammer(limiter, http, f"{base}/ok", start + 2.5)
            theirs, takes, fallbacks = map(int, (await child.stdout.readline()).split())
            await child.wait()
            elapsed = time.monotonic() - start
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    assert child.returncode == 0 and fallbacks == 0 and takes >= theirs > 0 and mine > 0
    assert len(venue.hits) == mine + theirs
    assert len(venue.hits) <= RATE * elapsed + CAPACITY + 1
