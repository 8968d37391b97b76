"""VenueLimiter: token-bucket pacing and the 429/418 gate, on fake clocks."""

from __future__ import annotations

import asyncio
import json
import logging
import math

import ccxt
import ccxt.async_support as ccxt_async
import pytest
from aiohttp import web
from tests.venues.loopback import serve

from astra.core import RateLimited
from astra.trading.errors import map_venue_error
from astra.venues.limiter import (
    VenueLimiter,
    attach_routed,
    ccxt_rate,
    retry_after_from_headers,
)
from astra.venues.venue_answers import MAX_WAIT, banned_until, parse_retry_after


class FakeTime:
    """A monotonic clock, a wall clock and a sleep that only move when told to.

    ``sleep`` records the delay, then advances the clock by it (``advance=True``) or leaves
    time still (to pile up reservations), and yields to the loop once."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall - start
        self.sleeps: list[float] = []
        self.advance = True

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        if self.advance:
            self.now += delay
        await asyncio.sleep(0)


def make(t: FakeTime, **kw) -> VenueLimiter:
    kw.setdefault("rate", 10.0)
    kw.setdefault("capacity", 2.0)
    return VenueLimiter("BINANCE", clock=t, wall_clock=t.wall, sleep=t.sleep, **kw)


# --- the bucket -------------------------------------------------------------------------------


async def test_bucket_paces_at_the_rate():
    t = FakeTime()
    lim = make(t)  # 10/s, burst of 2
    for _ in range(6):
        async with lim.slot():
            pass
    assert t.sleeps == pytest.approx([0.1, 0.1, 0.1, 0.1])  # the burst, then one per 0.1 s
    t.now += 5.0  # idle: the bucket refills, but never beyond its capacity
    for _ in range(3):
        await lim.acquire()
    assert t.sleeps[4:] == pytest.approx([0.1])
    # Weights count: a weight-5 request on an empty bucket waits 0.5 s.
    await lim.acquire(5)
    assert t.sleeps[-1] == pytest.approx(0.5)


async def test_concurrent_requests_queue_in_order():
    t = FakeTime()
    lim = make(t, capacity=1.0)
    t.advance = False  # time stands still: each reservation waits behind the previous
    waits = []
    for _ in range(4):
        await lim.acquire()
        waits.append(t.sleeps[-1] if t.sleeps else 0.0)
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3])


async def test_bounded_wait_fails_fast():
    t = FakeTime()
    lim = make(t, rate=1.0, capacity=1.0, max_wait=2.0)
    t.advance = False
    await lim.acquire()  # the burst
    await lim.acquire()  # waits 1 s
    await lim.acquire()  # waits 2 s
    with pytest.raises(RateLimited) as info:
        await lim.acquire()  # would wait 3 s > max_wait: refused, not queued
    assert info.value.retry_after == pytest.approx(3.0)
    assert info.value.venue == "BINANCE" and info.value.status == 429
    assert t.sleeps == pytest.approx([1.0, 2.0])
    with pytest.raises(RateLimited):  # a refusal took nothing: still 3 s
        await lim.acquire()


async def test_low_priority_never_delays_a_normal_request():
    """Trades (low priority) keep ``reserve`` tokens for snapshots and hold none while they
    wait, so a snapshot that comes after them goes first; their wait is bounded by their own
    ``max_wait`` (a 429 with the wait as Retry-After, not a queue)."""
    t = FakeTime()
    lim = make(t, rate=10.0, capacity=40.0, reserve=20.0)
    await lim.acquire(20, low_priority=True)  # 40 -> 20 tokens: exactly the reserve left
    t.advance = False
    with pytest.raises(RateLimited) as info:  # would need 2 s, may wait 1 s
        await lim.acquire(20, low_priority=True, max_wait=1.0)
    assert info.value.retry_after == pytest.approx(2.0) and t.sleeps == []
    t.advance = True
    waiter = asyncio.create_task(lim.acquire(20, low_priority=True, max_wait=5.0))
    await asyncio.sleep(0)  # it polls: sleeping 2 s, holding nothing
    assert t.sleeps == pytest.approx([2.0])
    t.sleeps.clear()
    t.advance = False
    await lim.acquire(20)  # the snapshot: the 20 tokens are there, no wait at all
    assert t.sleeps == []
    t.advance = True
    await waiter  # the trades waited for the snapshot's tokens to come back, above reserve
    assert t.sleeps == pytest.approx([2.0]) and t.now == pytest.approx(1004.0)
    # Without the priority the same trades request would have queued ahead of the snapshot:
    # a normal request reserves tokens before its wait, the reserve does not apply to it.
    lim2 = make(t, rate=10.0, capacity=40.0, reserve=20.0)
    t.advance = False
    await lim2.acquire(20)
    await lim2.acquire(20)
    with pytest.raises(RateLimited):  # a per-call max_wait bounds a normal request too
        await lim2.acquire(20, max_wait=1.0)


async def test_cancelled_wait_gives_tokens_back():
    t = FakeTime()
    lim = make(t, rate=1.0, capacity=1.0, max_wait=10.0)
    await lim.acquire()
    waiting, never = asyncio.Event(), asyncio.Event()

    async def blocked_sleep(delay: float) -> None:
        t.sleeps.append(delay)
        waiting.set()
        await never.wait()

    lim._sleep = blocked_sleep
    task = asyncio.create_task(lim.acquire())
    await asyncio.wait_for(waiting.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lim._sleep = t.sleep
    t.advance = False
    await lim.acquire()  # waits 1 s, not 2: the cancelled reservation was returned
    assert t.sleeps == pytest.approx([1.0, 1.0])


async def test_no_pacing_and_bad_arguments():
    t = FakeTime()
    lim = make(t, rate=math.inf)
    for _ in range(1000):
        await lim.acquire(50)
    assert t.sleeps == []
    with pytest.raises(ValueError):
        await lim.acquire(0)
    with pytest.raises(ValueError):
        make(t, rate=0)


def test_default_rate_from_ccxt():
    assert ccxt_rate("BINANCE") == pytest.approx(1000 / ccxt.binance().rateLimit)
    assert ccxt_rate("HUOBI") == pytest.approx(1000 / ccxt.htx().rateLimit)
    assert VenueLimiter("KRAKEN").rate == pytest.approx(1000 / ccxt.kraken().rateLimit)
    with pytest.raises(ValueError, match="rate="):
        VenueLimiter("NOWHERE")
    assert VenueLimiter("NOWHERE", rate=5).rate == 5


# --- the gate ---------------------------------------------------------------------------------


async def test_429_retry_after_closes_the_gate_exactly_that_long():
    t = FakeTime()
    lim = make(t)
    assert lim.observe_response(429, {"Retry-After": "2"}) == 2.0
    assert lim.retry_after() == 2.0 and lim.closed
    t.now += 1.5
    with pytest.raises(RateLimited) as info:
        async with lim.slot():
            pytest.fail("the venue must not be called while the gate is closed")
    assert info.value.retry_after == pytest.approx(0.5)
    t.now += 0.5  # exactly Retry-After later: open again
    assert lim.retry_after() is None
    async with lim.slot():
        pass


async def test_requests_during_the_gate_never_reach_the_venue():
    t = FakeTime()
    lim = make(t, rate=1000.0, capacity=1000.0)
    calls = 0

    async def venue():  # answers 429 the first time, as binance's handle_errors raises it
        nonlocal calls
        calls += 1
        raise ccxt.DDoSProtection(
            'binance 429 Too Many Requests {"code":-1003,"msg":"Too much request weight used."}'
        )

    refused = 0
    for _ in range(50):
        try:
            async with lim.slot():
                await venue()
        except RateLimited as exc:
            refused += 1
            assert exc.retry_after == pytest.approx(1.0)  # backoff: the venue said nothing
        except ccxt.DDoSProtection as exc:
            assert map_venue_error(exc, "BINANCE", sent=True).code == "RATE_LIMITED"
    assert (calls, refused, lim.blocked, lim.signals) == (1, 49, 49, 1)
    assert t.sleeps == []  # refused at once, not queued


async def test_an_exception_is_observed_once():
    t = FakeTime()
    lim = make(t)
    exc = ccxt.RateLimitExceeded('okx {"code":"50011","msg":"Too Many Requests"}')
    with pytest.raises(ccxt.RateLimitExceeded):
        async with lim.slot():
            raise exc
    assert lim.observe(exc) == 1.0  # fed again by a caller: the same gate, no second strike
    assert (lim.signals, lim.retry_after()) == (1, 1.0)


async def test_backoff_grows_without_retry_after_and_success_resets_it():
    t = FakeTime()
    lim = make(t, backoff_base=1.0, backoff_cap=5.0)
    waits = []
    for _ in range(5):
        waits.append(lim.observe(ccxt.RateLimitExceeded('okx {"code":"50011","msg":"Too Many"}')))
        t.now += waits[-1]
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    async with lim.slot():  # a success
        pass
    assert lim.observe(ccxt.RateLimitExceeded("okx 50011")) == 1.0


async def test_418_closes_for_its_retry_after_and_warns(caplog):
    t = FakeTime()
    lim = make(t)
    with caplog.at_level(logging.INFO, logger="astra.venues.limiter"):
        assert lim.observe_response(418, {"retry-after": "120"}, b'{"code":-1003}') == 120.0
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "418" in record.getMessage() and "-1003" in record.getMessage()
    t.now += 119.9
    with pytest.raises(RateLimited):
        await lim.acquire()
    t.now += 0.1
    await lim.acquire()  # recovered


async def test_418_without_retry_after():
    t = FakeTime()
    lim = make(t, ban_default=300.0)
    # Binance's 418 body says until when the IP is banned.
    until_ms = int((t.wall() + 90) * 1000)
    body = f'{{"code":-1003,"msg":"Way too much request weight used; IP banned until {until_ms}."}}'
    assert lim.observe_response(418, {}, body) == pytest.approx(90.0)
    # Nothing at all: the configured ban length.
    t.now += 90
    assert lim.observe_response(418, None, "") == 300.0
    # The same through ccxt's exception (binance's own 418 message).
    t.now += 300
    exc = ccxt.DDoSProtection(f"binance 418 I'm a teapot {body}")
    assert lim.observe(exc) == 300.0  # the ban in that body is over by now: no help


def test_retry_after_forms():
    t = FakeTime(wall=1445412470.0)
    lim = make(t)
    assert lim.observe_response(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 10.0
    assert retry_after_from_headers({"gw-ratelimit-reset": "1500"}) == 1.5  # KuCoin, ms
    assert retry_after_from_headers({"RETRY-AFTER": "3"}) == 3.0
    assert retry_after_from_headers({"Retry-After": "later"}) is None
    assert retry_after_from_headers(None) is None
    # Binance's whole seconds, any header case; a negative delta is "now".
    assert retry_after_from_headers({"retry-after": "7"}) == 7.0
    assert retry_after_from_headers({"Retry-After": "0"}) == 0.0
    assert retry_after_from_headers({"Retry-After": "-3"}) == 0.0
    assert retry_after_from_headers({}) is None


async def test_a_venue_wait_is_at_most_three_days():
    """Binance bans last "from 2 minutes to 3 days": a larger wait, in whatever form, is
    clamped to 3 days instead of closing the gate for decades."""
    t = FakeTime()
    days3 = 3 * 24 * 3600.0
    assert MAX_WAIT == days3
    assert parse_retry_after("1e9") == days3
    assert retry_after_from_headers({"gw-ratelimit-reset": str(10**15)}) == days3
    far = int((t.wall() + 1e9) * 1000)
    assert banned_until(f"IP banned until {far}.", now=t.wall()) == days3
    assert parse_retry_after("Fri, 01 Jan 9999 00:00:00 GMT", now=t.wall()) == days3
    lim = make(t)
    assert lim.observe_response(429, {"Retry-After": "1e9"}) == days3
    assert lim.retry_after() == days3
    lim2 = make(t)  # a 418 whose body names a ban ending centuries from now
    body = json.dumps({"code": -1003, "msg": f"Way too much request weight used; IP banned "
                       f"until {far}."})  # fmt: skip
    assert lim2.observe_response(418, {}, body) == days3
    t.now += days3
    assert lim.retry_after() is None and lim2.retry_after() is None  # open again


async def test_the_gate_only_closes_later():
    t = FakeTime()
    lim = make(t)
    lim.observe_response(429, {"Retry-After": "10"})
    assert lim.observe_response(429, {"Retry-After": "1"}) == 10.0
    assert lim.retry_after() == 10.0


async def test_observe_other_signals():
    t = FakeTime()
    lim = make(t)
    # Not rate limits: nothing happens.
    assert lim.observe(ccxt.InsufficientFunds('aster {"code":-2018}')) is None
    assert lim.observe(ValueError("x")) is None
    assert lim.observe(RateLimited(retry_after=5)) is None  # ours, not the venue's
    # "Max open orders" is a count: ccxt's RateLimitExceeded, but waiting does not help.
    max_orders = ccxt.RateLimitExceeded('aster {"code":-2025,"msg":"Reach max open order limit."}')
    assert lim.observe(max_orders) is None
    assert not lim.closed

    class Response:  # aiohttp.ClientResponse-like
        def __init__(self) -> None:
            self.status, self.headers = 429, {"Retry-After": "4"}

    assert lim.observe(Response()) == 4.0

    class RestError(Exception):  # astra.venues.kucoin.rest.RestError-like
        status, code, retry_after = 429, "429000", 6.0

    assert lim.observe(RestError()) == 6.0
    # A ccxt error whose message quotes HTTP 429 (ccxt's default status handler).
    generic = ccxt.ExchangeError("htx GET https://api.huobi.pro/v1/x?Signature=s 429 Too Many")
    assert lim.observe(generic, headers={"Retry-After": "9"}) == 9.0


async def test_account_scoped_limits():
    t = FakeTime()
    lim = make(t)
    too_many_orders = '{"code":-1015,"msg":"Too many new orders; current limit is 100 per 10 S."}'
    assert lim.observe_response(429, {"Retry-After": "5"}, too_many_orders, account="alice") == 5
    with pytest.raises(RateLimited):
        await lim.acquire(account="alice")
    await lim.acquire(account="bob")  # another account of the same venue goes on
    await lim.acquire()
    # An IP limit closes the venue for everyone.
    lim.observe_response(429, {"Retry-After": "1"}, '{"code":-1003}', account="alice")
    with pytest.raises(RateLimited):
        await lim.acquire(account="bob")
    # Without an account, an account limit closes the venue (the safe side).
    t.now += 5
    lim.observe_response(429, {"Retry-After": "2"}, too_many_orders)
    assert lim.retry_after(account="bob") == 2.0


async def test_gate_closing_during_a_bucket_wait():
    t = FakeTime()
    lim = make(t, rate=1.0, capacity=1.0)
    await lim.acquire()

    async def sleep_then_429(delay: float) -> None:
        t.now += delay
        lim.observe_response(429, {"Retry-After": "30"})

    lim._sleep = sleep_then_429
    with pytest.raises(RateLimited):
        await lim.acquire()  # waited its turn, then found the gate closed: not sent


async def test_slot_observes_once_with_attached_hook():
    t = FakeTime()
    lim = make(t)
    ex = ccxt.binance()
    assert lim.attach(ex) is ex and lim.attach(ex) is ex  # idempotent
    body = '{"code":-1003,"msg":"Too much request weight used."}'
    with pytest.raises(ccxt.DDoSProtection):
        async with lim.slot():
            # What ccxt's fetch does with an answer: on_rest_response, then handle_errors.
            ex.on_rest_response(429, "Too Many Requests", "u", "GET", {"Retry-After": "3"}, body,
                                {}, None)  # fmt: skip
            ex.handle_errors(429, "Too Many Requests", "u", "GET", {}, body, json.loads(body),
                             {}, None)  # fmt: skip
    assert lim.signals == 1 and lim.retry_after() == 3.0  # the header's wait, counted once


# --- end to end: a 429 storm on loopback never turns into a 418 -------------------------------


class StrictVenue:
    """Binance-like: every ``burst``-th request is answered 429 with ``Retry-After: 2``; any
    request inside that window is answered 418 (a ban). Its clock is the test's fake clock."""

    def __init__(self, clock: FakeTime, burst: int = 4, window: float = 2.0) -> None:
        self.clock, self.burst, self.window = clock, burst, window
        self.calls = 0
        self.answers: list[int] = []
        self.window_until = -math.inf

    async def time(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.clock() < self.window_until:
            status, headers = 418, {"Retry-After": "120"}
            body = {"code": -1003, "msg": "Way too much request weight used; IP banned."}
        elif self.calls % self.burst == 0:
            self.window_until = self.clock() + self.window
            status, headers = 429, {"Retry-After": str(int(self.window))}
            body = {"code": -1003, "msg": "Too much request weight used."}
        else:
            status, headers, body = 200, {}, {"serverTime": 1_700_000_000_000 + self.calls}
        self.answers.append(status)
        return web.json_response(body, status=status, headers=headers)

    async def __aenter__(self) -> int:
        app = web.Application()
        app.router.add_get("/api/v3/time", self.time)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_429_storm_never_reaches_418_on_loopback():
    t = FakeTime()
    venue = StrictVenue(t)
    lim = make(t, rate=5.0, capacity=1.0, max_wait=1.0)
    async with venue as port:
        ex = ccxt_async.binance({"enableRateLimit": False, "timeout": 5000, "timeout_on_exit": 0})
        ex.urls["api"]["public"] = f"http://127.0.0.1:{port}/api/v3"
        lim.attach(ex)
        outcomes = {"ok": 0, "429": 0, "refused": 0}
        try:
            for _ in range(50):
                t.now += 0.25  # simulated time between client requests
                try:
                    async with lim.slot():
                        await ex.fetch_time()
                    outcomes["ok"] += 1
                except RateLimited as exc:  # refused locally: never sent
                    outcomes["refused"] += 1
                    assert exc.retry_after is not None and 0 < exc.retry_after <= 2.0
                except ccxt.DDoSProtection as exc:
                    outcomes["429"] += 1
                    err = map_venue_error(exc, "BINANCE", sent=False, retry_after=lim.retry_after())
                    assert err.code == "RATE_LIMITED" and err.retry_after == pytest.approx(2.0)
        finally:
            await ex.close()
    assert 418 not in venue.answers  # never called inside a Retry-After window
    assert venue.answers.count(429) == outcomes["429"] >= 3  # a storm of 429s it was
    assert venue.calls == outcomes["ok"] + outcomes["429"] == 50 - outcomes["refused"]
    assert outcomes["refused"] >= 3 * 7  # each 2 s window refused the requests inside it
    assert lim.signals == outcomes["429"]  # each 429 counted once (hook, not the exception)


# --- a request's own answer decides, whatever concurrent requests met -------------------------


async def test_each_slot_is_judged_by_its_own_answer():
    """While one request's 429 (seen by the attached hook) closes the gate, a concurrent
    request's 500 is no rate limit, and another's rate limit reported in a 200 body (ccxt's
    RateLimitExceeded, no hook signal) is still fed to the limiter."""
    t = FakeTime()
    lim = make(t, rate=100.0, capacity=10.0)
    ex = lim.attach(ccxt.binance())
    in_flight, answered = asyncio.Event(), asyncio.Event()
    slots = {}

    async def request(name: str) -> None:
        async with lim.slot() as slot:
            slots[name] = slot
            if name == "429":
                await in_flight.wait()
                ex.on_rest_response(429, "Too Many Requests", "u", "GET", {"Retry-After": "5"},
                                    '{"code":-1003}', {}, None)  # fmt: skip
                answered.set()
                raise ccxt.DDoSProtection('binance {"code":-1003}')
            in_flight.set()
            await answered.wait()  # answered after the 429 closed the gate
            if name == "500":
                raise ccxt.ExchangeNotAvailable("binance GET u 500 Internal Server Error")
            raise ccxt.RateLimitExceeded('binance {"code":-1003,"msg":"Too many requests."}')

    results = await asyncio.gather(request("429"), request("500"), request("200 body"),
                                   return_exceptions=True)  # fmt: skip
    assert [type(r) for r in results] == [
        ccxt.DDoSProtection, ccxt.ExchangeNotAvailable, ccxt.RateLimitExceeded]
    assert {n: s.limited for n, s in slots.items()} == {
        "429": True, "500": False, "200 body": True}
    assert lim.signals == 2  # the 429 once (hook, not again its exception), the 200 body's


async def test_ccxt_calls_the_attached_hook_on_loopback():
    """``attach`` relies on ccxt's undocumented ``on_rest_response``: a real ccxt call to a
    loopback venue answering 429 must reach it, with the request's URL and the response
    headers (else Retry-After would be unseen and the wait a 1 s backoff instead of 7 s).
    A 200 is not routed at all: the hook asks no limiter about an answer that is no limit."""
    t = FakeTime()
    lim = make(t)
    urls: list[str] = []

    async def limited(request: web.Request) -> web.Response:
        return web.json_response({"code": -1003, "msg": "Too much request weight used."},
                                 status=429, headers={"Retry-After": "7"})

    def route(url: str) -> VenueLimiter:
        urls.append(url)
        return lim

    app = web.Application()
    app.router.add_get("/api/v3/time", limited)
    async def pong(request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get("/api/v3/ping", pong)
    async with serve(app) as base:
        ex = ccxt_async.binance({"enableRateLimit": False, "timeout": 5000, "timeout_on_exit": 0})
        ex.urls["api"]["public"] = f"{base}/api/v3"
        attach_routed(ex, route)
        try:
            with pytest.raises(ccxt.DDoSProtection):
                async with asyncio.timeout(10):
                    async with lim.slot() as ok:
                        assert await ex.public_get_ping() == {}
                    async with lim.slot() as slot:
                        await ex.fetch_time()
        finally:
            await ex.close()
    assert urls == [f"{base}/api/v3/time"]
    assert (lim.retry_after(), lim.signals, slot.limited, ok.limited) == (7.0, 1, True, False)
