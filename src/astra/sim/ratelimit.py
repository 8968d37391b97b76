"""The venue's documented rate limits: REQUEST_WEIGHT per IP, ORDERS per account.

Windows are fixed and aligned to multiples of their length on the limiter's clock (Binance's
scheme: a minute window resets at the minute boundary, not a minute after the first request).

Invariants:
- Within a window an IP's used weight is the sum of the weights of the requests it sent there
  (rejected ones included, as the venue counts what it receives); it resets at the boundary.
- A request that finds its IP over the limit gets 429 with ``Retry-After`` = whole seconds
  until the window resets. The docs ban an IP (418) for "repeatedly violating rate limits
  and/or failing to back off after receiving 429s"; the rule here: an IP answered
  ``ban_after`` 429s within one window (it kept sending inside the Retry-After it was given) is
  banned by its next request over the limit in that window, which gets 418 with
  ``Retry-After`` = whole seconds until the ban ends. So a client that backs off at its first
  429 is never banned, even with a few requests already in flight, and one that ignores 429s
  is. A new window forgets the 429s. Bans last ``ban_base_s`` doubled for each earlier ban of
  that IP, capped at ``ban_max_s`` (docs: "from 2 minutes to 3 days"); the ban count is never
  forgotten. A ban clears the IP's window, so when it ends the IP starts fresh.
- An account's order count only grows by orders admitted; over any order limit the answer is
  429 -1015 *without* ``Retry-After`` (docs) and nothing is counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from aiohttp import web

__all__ = [
    "RateLimitError",
    "RateLimiter",
    "RateLimits",
    "rate_limit_middleware",
]

_INTERVALS = {60: ("MINUTE", 1, "1M"), 10: ("SECOND", 10, "10S")}  # window s -> enum, num, tag
_encode = msgspec.json.Encoder().encode


@dataclass
class RateLimits:
    """Limits per window. Presets follow the live venue's recorded ``exchangeInfo`` (what the
    simulator's exchangeInfo serves); the docs' enum examples (spot 1200/100) are older."""

    weight_per_minute: int
    orders_per_minute: int
    orders_per_10s: int | None = None
    ban_base_s: float = 120.0
    ban_max_s: float = 3 * 86400.0
    ban_after: int = 10  # 429s answered to an IP in one window before the next one bans it

    @classmethod
    def spot(cls) -> RateLimits:
        return cls(weight_per_minute=6000, orders_per_minute=6000, orders_per_10s=1000)

    @classmethod
    def perp(cls) -> RateLimits:
        return cls(weight_per_minute=2400, orders_per_minute=1200, orders_per_10s=300)

    def order_windows(self) -> list[tuple[int, int]]:
        """(window seconds, limit) of each ORDERS limiter."""
        windows = [(60, self.orders_per_minute)]
        if self.orders_per_10s is not None:
            windows.append((10, self.orders_per_10s))
        return windows

    def rate_limits_json(self) -> list[dict]:
        """The ``rateLimits`` array of ``exchangeInfo``."""
        out = [_limit_json("REQUEST_WEIGHT", 60, self.weight_per_minute)]
        out += [_limit_json("ORDERS", w, limit) for w, limit in self.order_windows()]
        return out


def _limit_json(kind: str, window: int, limit: int) -> dict:
    interval, num, _ = _INTERVALS[window]
    return {"rateLimitType": kind, "interval": interval, "intervalNum": num, "limit": limit}


class RateLimitError(Exception):
    """A request refused by a limit; ``retry_after_s`` is None when no Retry-After is sent."""

    def __init__(
        self,
        status: int,
        code: int,
        msg: str,
        retry_after_s: int | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {msg}")
        self.status, self.code, self.msg = status, code, msg
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


@dataclass
class _Window:
    index: int = -1
    used: int = 0
    refused: int = 0  # 429s answered in this window (weight windows only)


@dataclass
class _Ip:
    window: _Window = field(default_factory=_Window)
    ban_until: float = 0.0
    bans: int = 0


class RateLimiter:
    """Counts request weight per IP and orders per account on an injectable clock (seconds)."""

    def __init__(
        self,
        limits: RateLimits,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.limits, self._clock, self._wall = limits, clock, wall
        self._ips: dict[str, _Ip] = {}
        self._orders: dict[object, dict[int, _Window]] = {}

    def request(self, ip: str, weight: int) -> dict[str, str]:
        """Charge ``weight`` to ``ip``; the headers to add, or ``RateLimitError`` 429/418."""
        now = self._clock()
        st = self._ips.setdefault(ip, _Ip())
        if now < st.ban_until:
            raise self._banned(st, now)
        win = _roll(st.window, now, 60)
        win.used += weight
        headers = {"X-MBX-USED-WEIGHT-1M": str(win.used)}
        over = win.used > self.limits.weight_per_minute
        if over and win.refused >= self.limits.ban_after:  # kept sending after its 429s
            st.bans += 1
            span = min(self.limits.ban_base_s * 2 ** (st.bans - 1), self.limits.ban_max_s)
            st.ban_until = now + span
            st.window = _Window()  # the ban replaces the window: the IP starts fresh after it
            raise self._banned(st, now, headers)
        if over:
            win.refused += 1
            raise RateLimitError(
                429,
                -1003,
                f"Too many requests; current limit is {self.limits.weight_per_minute} requests"
                " per minute. Please use the websocket for live updates to avoid polling the API.",
                _ceil_s((win.index + 1) * 60 - now),
                headers,
            )
        return headers

    def _banned(self, st: _Ip, now: float, headers: dict[str, str] | None = None) -> RateLimitError:
        until_ms = int((self._wall() + st.ban_until - now) * 1000)
        return RateLimitError(
            418,
            -1003,
            f"Way too many requests; IP banned until {until_ms}. Please use the websocket for"
            " live updates to avoid bans.",
            _ceil_s(st.ban_until - now),
            headers,
        )

    def banned_for(self, ip: str) -> float:
        """Seconds left of ``ip``'s ban (0 when not banned)."""
        st = self._ips.get(ip)
        return max(0.0, st.ban_until - self._clock()) if st else 0.0

    def order(self, account_id: object) -> dict[str, str]:
        """Count one new order for ``account_id``; the headers, or ``RateLimitError`` 429."""
        now = self._clock()
        windows = self._orders.setdefault(account_id, {})
        rolled = [
            (_roll(windows.setdefault(span, _Window()), now, span), span, limit)
            for span, limit in self.limits.order_windows()
        ]
        for win, span, limit in rolled:  # check every limit before counting in any
            if win.used + 1 > limit:
                interval, num, _ = _INTERVALS[span]
                raise RateLimitError(
                    429,
                    -1015,
                    f"Too many new orders; current limit is {limit} orders per {num} {interval}.",
                    None,
                )
        headers = {}
        for win, span, _ in rolled:
            win.used += 1
            headers[f"X-MBX-ORDER-COUNT-{_INTERVALS[span][2]}"] = str(win.used)
        return headers


def _roll(win: _Window, now: float, span: int) -> _Window:
    index = math.floor(now / span)
    if index != win.index:
        win.index, win.used, win.refused = index, 0, 0
    return win


def _ceil_s(seconds: float) -> int:
    return max(1, math.ceil(seconds))  # whole seconds, never 0: "retry now" would be wrong


def _limit_response(exc: RateLimitError) -> web.Response:
    resp = web.Response(
        body=_encode({"code": exc.code, "msg": exc.msg}),
        status=exc.status,
        content_type="application/json",
    )
    resp.headers.update(exc.headers)
    if exc.retry_after_s is not None:
        resp.headers["Retry-After"] = str(exc.retry_after_s)
    return resp


def rate_limit_middleware(
    limiter: RateLimiter,
    weight_of: Callable[[web.Request], int | None],
    ip_of: Callable[[web.Request], str] | None = None,
) -> Callable:
    """aiohttp middleware charging each counted request's weight before its handler runs.

    ``weight_of`` returns None for routes that are not counted (e.g. WebSocket upgrades);
    ``ip_of`` defaults to the peer address. Place it *outside* the app's error middleware
    (first in ``middlewares``) so the error responses that middleware builds get the weight
    header too. A ``RateLimitError`` reaching it (from ``limiter.order`` in a handler) is
    answered like its own; an inner catch-all error middleware must let it through or
    translate it (same ``code``/``msg``/``status``), or it would become a 500.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
        weight = weight_of(request)
        if weight is None:
            return await handler(request)
        ip = ip_of(request) if ip_of else request.remote or ""
        try:
            headers = limiter.request(ip, weight)
        except RateLimitError as exc:
            return _limit_response(exc)
        try:
            resp = await handler(request)
        except RateLimitError as exc:
            exc.headers = {**headers, **exc.headers}
            return _limit_response(exc)
        except web.HTTPException as exc:  # errors raised as exceptions carry the headers too
            exc.headers.update(headers)
            raise
        if not resp.prepared:  # a streamed response has already sent its headers
            resp.headers.update(headers)
        return resp

    return middleware
