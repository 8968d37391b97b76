"""The documented rate limits on a fake clock: per-IP weight with 429s, then a 418 ban for an IP
that keeps sending through ``ban_after`` of them, bans that double for repeat offenders,
per-account order counts, and the aiohttp middleware over a real socket."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from astra.sim.ratelimit import RateLimiter, RateLimitError, RateLimits, rate_limit_middleware


class Clock:
    def __init__(self, now: float = 1000.0) -> None:  # 1000 s: a minute boundary is at 1020
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **kwargs) -> RateLimiter:
    limits = {"weight_per_minute": 10, "orders_per_minute": 5, "ban_base_s": 120.0}
    return RateLimiter(RateLimits(**(limits | kwargs)), clock=clock, wall=lambda: 1_700_000_000.0)


def refused(call, *args) -> RateLimitError:
    with pytest.raises(RateLimitError) as info:
        call(*args)
    return info.value


def test_presets_and_exchange_info_json():
    assert RateLimits.perp().rate_limits_json() == [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
    ]
    spot = RateLimits.spot()
    assert (spot.weight_per_minute, spot.orders_per_minute, spot.orders_per_10s) == (
        6000, 6000, 1000
    )  # fmt: skip
    assert RateLimits(1200, 100).rate_limits_json()[1:] == [
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 100}
    ]
    assert (spot.ban_base_s, spot.ban_max_s, spot.ban_after) == (120.0, 3 * 86400.0, 10)
    assert RateLimits.perp().ban_after == 10


def test_a_429_is_a_warning_and_only_repeated_429s_ban():
    """Before: the first request after a 429 was a 418. Now the IP gets ``ban_after`` 429s in
    the window, each with the time left; its next request over the limit is the ban."""
    clock = Clock()
    rl = limiter(clock, ban_after=3)
    rl.request("ip", 10)
    retry = []
    for t in (1001.0, 1002.0, 1010.5):  # three requests over the limit: three warnings
        clock.now = t
        err = refused(rl.request, "ip", 1)
        retry.append((err.status, err.retry_after_s))
    assert retry == [(429, 19), (429, 18), (429, 10)]
    assert rl.banned_for("ip") == 0.0
    clock.now = 1011.0  # the fourth: kept sending through three 429s -> banned
    err = refused(rl.request, "ip", 1)
    assert (err.status, err.retry_after_s) == (418, 120)
    assert rl.banned_for("ip") == 120.0


def test_a_client_that_backs_off_after_its_429s_is_never_banned():
    clock = Clock()
    rl = limiter(clock, ban_after=2)
    for window in range(5):  # every minute: up to the limit, then two 429s, then it waits
        clock.now = 1020.0 + 60 * window
        rl.request("ip", 10)
        assert refused(rl.request, "ip", 1).status == 429
        assert refused(rl.request, "ip", 1).status == 429
    clock.now = 1020.0 + 60 * 5  # a new window forgets the 429s of the last one
    assert rl.request("ip", 1) == {"X-MBX-USED-WEIGHT-1M": "1"}
    assert rl.banned_for("ip") == 0.0


def test_weight_header_counts_per_ip_and_resets_on_the_minute():
    clock = Clock()
    rl = limiter(clock)
    assert rl.request("1.1.1.1", 1) == {"X-MBX-USED-WEIGHT-1M": "1"}
    assert rl.request("1.1.1.1", 5) == {"X-MBX-USED-WEIGHT-1M": "6"}
    assert rl.request("2.2.2.2", 2) == {"X-MBX-USED-WEIGHT-1M": "2"}  # per IP
    clock.now = 1019.9
    assert rl.request("1.1.1.1", 4) == {"X-MBX-USED-WEIGHT-1M": "10"}  # exactly the limit
    clock.now = 1020.0  # aligned window: resets at the boundary, not 60 s after the first
    assert rl.request("1.1.1.1", 1) == {"X-MBX-USED-WEIGHT-1M": "1"}


def test_429_then_418_ban_then_recovery_and_doubling():
    clock = Clock()
    rl = limiter(clock, ban_after=1)
    rl.request("ip", 10)
    clock.now = 1005.5
    err = refused(rl.request, "ip", 1)
    assert (err.status, err.code, err.retry_after_s) == (429, -1003, 15)  # 1020 - 1005.5, ceil
    assert err.msg == (
        "Too many requests; current limit is 10 requests per minute. Please use the websocket"
        " for live updates to avoid polling the API."
    )
    assert err.headers == {"X-MBX-USED-WEIGHT-1M": "11"}
    clock.now = 1010.0  # kept sending after its (one allowed) 429: banned for ban_base_s
    err = refused(rl.request, "ip", 1)
    assert (err.status, err.code, err.retry_after_s) == (418, -1003, 120)
    assert err.msg.startswith(f"Way too many requests; IP banned until {1_700_000_120_000}.")
    assert rl.request("other", 1) == {"X-MBX-USED-WEIGHT-1M": "1"}  # other IPs unaffected
    clock.now = 1100.25  # every request while banned: 418 with the time left
    err = refused(rl.request, "ip", 1)
    assert (err.status, err.retry_after_s) == (418, 30)  # 1130 - 1100.25, ceil
    assert rl.banned_for("ip") == pytest.approx(29.75)
    clock.now = 1130.0  # the ban is over: a fresh window
    assert rl.request("ip", 1) == {"X-MBX-USED-WEIGHT-1M": "1"}
    # Second offence (window 1140-1200): the ban is twice as long.
    clock.now = 1140.0
    rl.request("ip", 10)
    assert refused(rl.request, "ip", 1).status == 429
    err = refused(rl.request, "ip", 1)
    assert (err.status, err.retry_after_s) == (418, 240)
    clock.now = 1140.0 + 239.5
    assert refused(rl.request, "ip", 1).retry_after_s == 1
    clock.now = 1140.0 + 240.0
    assert rl.request("ip", 1) == {"X-MBX-USED-WEIGHT-1M": "1"}


def test_ban_is_capped():
    clock = Clock(0.0)
    rl = limiter(clock, ban_base_s=100.0, ban_max_s=250.0, ban_after=2)
    spans = []
    for _ in range(4):
        rl.request("ip", 10)
        refused(rl.request, "ip", 1)
        refused(rl.request, "ip", 1)
        spans.append(refused(rl.request, "ip", 1).retry_after_s)
        clock.now += spans[-1]
        clock.now = (clock.now // 60 + 1) * 60  # start the next offence in a new window
    assert spans == [100, 200, 250, 250]


def test_order_limits_per_account_independent_of_ip():
    clock = Clock()
    rl = limiter(clock, orders_per_minute=5, orders_per_10s=3)
    rl.request("ip", 10)
    refused(rl.request, "ip", 1)  # the IP is at 429: orders are counted per account regardless
    assert rl.order(7) == {"X-MBX-ORDER-COUNT-1M": "1", "X-MBX-ORDER-COUNT-10S": "1"}
    rl.order(7)
    assert rl.order(7) == {"X-MBX-ORDER-COUNT-1M": "3", "X-MBX-ORDER-COUNT-10S": "3"}
    err = refused(rl.order, 7)
    assert (err.status, err.code, err.retry_after_s) == (429, -1015, None)  # no Retry-After
    assert err.msg == "Too many new orders; current limit is 3 orders per 10 SECOND."
    assert rl.order(8) == {"X-MBX-ORDER-COUNT-1M": "1", "X-MBX-ORDER-COUNT-10S": "1"}
    clock.now = 1010.0  # a new 10 s window; the rejected order was not counted
    assert rl.order(7) == {"X-MBX-ORDER-COUNT-1M": "4", "X-MBX-ORDER-COUNT-10S": "1"}
    rl.order(7)
    err = refused(rl.order, 7)
    assert err.msg == "Too many new orders; current limit is 5 orders per 1 MINUTE."
    clock.now = 1020.0
    assert rl.order(7) == {"X-MBX-ORDER-COUNT-1M": "1", "X-MBX-ORDER-COUNT-10S": "1"}
    minute_only = limiter(clock)
    assert minute_only.order("a") == {"X-MBX-ORDER-COUNT-1M": "1"}


async def test_middleware_over_a_socket():
    clock = Clock()
    rl = limiter(clock, weight_per_minute=3, orders_per_10s=1, ban_after=1)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    async def order(request: web.Request) -> web.Response:
        resp = web.json_response({"orderId": 1})
        resp.headers.update(rl.order("account"))
        return resp

    async def bad(request: web.Request) -> web.Response:
        raise ValueError("-1121")

    @web.middleware
    async def errors(request: web.Request, handler) -> web.StreamResponse:  # like rest.py's
        try:
            return await handler(request)
        except ValueError:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)

    weights = {"/ok": 1, "/order": 1, "/bad": 1, "/free": None}
    limits = rate_limit_middleware(rl, lambda r: weights[r.path])
    app = web.Application(middlewares=[limits, errors])
    app.router.add_get("/ok", ok)
    app.router.add_get("/free", ok)
    app.router.add_get("/bad", bad)
    app.router.add_post("/order", order)

    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:

        async def call(path: str, method: str = "GET"):
            async with client.request(method, path) as resp:
                return resp.status, resp.headers, json.loads(await resp.text())

        status, headers, _ = await call("/ok")
        assert (status, headers["X-MBX-USED-WEIGHT-1M"]) == (200, "1")
        status, headers, _ = await call("/order", "POST")
        assert (status, headers["X-MBX-USED-WEIGHT-1M"]) == (200, "2")
        assert headers["X-MBX-ORDER-COUNT-1M"] == "1"
        status, headers, body = await call("/bad")  # error responses carry the header too
        assert (status, headers["X-MBX-USED-WEIGHT-1M"], body["code"]) == (400, "3", -1121)
        status, headers, _ = await call("/free")  # not counted
        assert status == 200 and "X-MBX-USED-WEIGHT-1M" not in headers
        clock.now = 1001.5
        status, headers, body = await call("/ok")
        assert (status, headers["Retry-After"], body["code"]) == (429, "19", -1003)
        assert body["msg"].startswith("Too many requests; current limit is 3 requests per minute")
        status, headers, body = await call("/ok")
        assert (status, headers["Retry-After"], body["code"]) == (418, "120", -1003)
        clock.now = 1061.5
        status, headers, body = await call("/order", "POST")
        assert (status, headers["Retry-After"]) == (418, "60")
        clock.now = 1121.5  # the ban is over
        status, headers, _ = await call("/ok")
        assert (status, headers["X-MBX-USED-WEIGHT-1M"]) == (200, "1")
        status, headers, _ = await call("/order", "POST")
        assert (headers["X-MBX-ORDER-COUNT-1M"], headers["X-MBX-ORDER-COUNT-10S"]) == ("1", "1")
        status, headers, body = await call("/order", "POST")  # 1 order per 10 s
        assert (status, body["code"]) == (429, -1015)
        assert body["msg"] == "Too many new orders; current limit is 1 orders per 10 SECOND."
        assert "Retry-After" not in headers  # docs: order limits answer 429 without it
        assert headers["X-MBX-USED-WEIGHT-1M"] == "3"
