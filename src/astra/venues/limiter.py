"""Client-side rate limiting of one venue's REST API, shared by every credential using it.

Venues limit per IP (Binance: a 429 warns, going on after it earns a 418 ban of minutes to
days), so there is one ``VenueLimiter`` per venue per process (the venue object's
``limiter`` where it has one, which ``TradingService`` then shares), and every request to the
venue, public or signed, whoever's keys sign it, goes through it::

    limiter = VenueLimiter("BINANCE")
    limiter.attach(exchange)                    # once per ccxt instance: sees 429/418 + headers
    try:
        async with limiter.slot(weight=1):      # paces, or raises RateLimited at once
            order = await exchange.create_order(...)
    except RateLimited:
        raise                                   # the gate is closed: the venue was not called
    except Exception as exc:
        raise map_venue_error(exc, "BINANCE", sent=True,
                              retry_after=limiter.retry_after()) from None

Two mechanisms:

- a token bucket (``rate`` tokens per second, default ccxt's ``rateLimit`` for the venue;
  ``capacity`` tokens of burst) so the gateway paces itself; a request costs its documented
  weight. A request that would wait longer than ``max_wait`` (the limiter's, or the one it
  passes) fails at once with ``RateLimited`` (``retry_after`` = that wait) instead of
  queueing without bound. Requests are served first come, first served, except
  ``low_priority`` ones (e.g. recent trades): they take tokens only when ``reserve`` tokens
  remain after them and never hold tokens while they wait, so they cannot delay a normal
  request (e.g. a book snapshot) that arrives after them;
- a gate: when the venue answers 429 or 418 (seen by ``attach``'s hook with the response
  headers, or fed with ``observe``), the gate closes for the answer's ``Retry-After`` (delta
  seconds or HTTP date; KuCoin's ``gw-ratelimit-reset`` ms; a Binance 418 body's "banned
  until <ms>"), or, when the venue said nothing, for an exponential backoff (``backoff_base``
  doubling per consecutive limit, at most ``backoff_cap``; ``ban_default`` for a 418). While
  it is closed every ``slot`` raises ``RateLimited`` with the seconds left as ``retry_after``
  and never reaches the venue: the only requests that can follow a 429 are those already in
  flight, which is what keeps a storm of 429s from turning into a 418.

Invariants:
- The gate only ever closes later, never earlier (``until = max(until, now + wait)``); it
  reopens by itself when the clock passes it.
- A 418 is logged at WARNING; a 429 at INFO. Logs name the venue, status, venue code and
  wait, never a URL or a body.
- ``slot`` feeds the exception its body raised to ``observe`` (once: not again when the
  attached hook already saw that response), and a body that succeeds resets the backoff.
  Whether a request met a rate limit is decided by that request alone, never by what
  concurrent requests met (``limiter_slot``: ``slot(...).limited``; ``attach_routed`` for a
  client calling several separately counted APIs).
- The bucket never holds more than ``capacity`` tokens; a request cancelled while waiting
  gives its tokens back.
- Account-scoped limits (Binance-style ``-1015`` "too many new orders", which the venue
  counts per account) close only that account's gate when the caller names the account
  (``slot(account=...)``/``attach(..., account=...)``), else the venue's.
- Single event loop: no awaits between checking and taking tokens, so no lock is needed.
- ``clock`` (monotonic seconds), ``wall_clock`` (epoch seconds, for HTTP dates and ban
  timestamps) and ``sleep`` are injectable for tests.

Sharing across processes (``SharedBudget``; ``astra.cluster.limits`` builds one on NATS): with
N processes calling one venue, N local buckets would each allow the venue's whole rate. A
limiter whose ``budget`` is given, or, when none is, the process-wide one (``set_shared_budget``:
it reaches every limiter, those made later too), draws every request from the budget under
its ``key`` (``VENUE.scope``: limiters of the same kind on every node share one budget, other
kinds do not) after its local checks:

- ``take`` reserves the weight in the shared bucket and answers the wait (the request then
  sleeps the longer of that and its local wait); a wait above ``max_wait`` reserves nothing
  and fails with ``RateLimited`` as a local one does. Shared tokens taken by a request that is
  then cancelled or refused are not given back (the error is on the side of fewer requests).
- a 429/418 closes the gate on every node: ``_close`` hands its end (epoch seconds) to
  ``close_gate``; ``retry_after``/``_check_gate`` read the budget's cached view (``gate``,
  synchronous, no round trip), and the gate is checked again after every ``take`` (which
  refreshes that view), so a request never reaches a venue another node saw limiting.
- without a budget nothing changes: no await, no extra work beyond one ``None`` check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp
from ccxt.base import errors as ccxt_errors

from astra.core import SIM_CODES, AstraError, RateLimited

from .limiter_slot import LIMIT_STATUSES, Slot, attach_routed
from .venue_answers import (
    COUNT_LIMITS,
    MAX_WAIT,
    banned_until,
    http_status_of,
    retry_after_from_headers,
    venue_details,
)

__all__ = [
    "CCXT_IDS",
    "SharedBudget",
    "VenueLimiter",
    "attach_routed",
    "ccxt_rate",
    "retry_after_from_headers",
    "set_shared_budget",
    "shared_budget",
]

log = logging.getLogger(__name__)

# Astra exchange code -> the ccxt class whose ``rateLimit`` is the default pace.
CCXT_IDS: Mapping[str, str] = {
    "BINANCE": "binance",
    "COINBASE": "coinbase",
    "OKX": "okx",
    "HUOBI": "htx",
    "KUCOIN": "kucoin",
    "KRAKEN": "kraken",
    "ASTER": "aster",
    **dict.fromkeys(SIM_CODES, "binance"),  # the simulator speaks Binance's API
}
# Venues whose documented limit is not ccxt's pace, in request weight per second: the
# simulator allows 6000 weight a minute per IP (its exchangeInfo), i.e. 100 weight-1 requests
# a second; Aster documents 2400 a minute (its perpetual exchangeInfo's REQUEST_WEIGHT).
_DOCUMENTED_RATES: Mapping[str, float] = {**dict.fromkeys(SIM_CODES, 100.0), "ASTER": 40.0}

# (venue, venue code) of limits the venue counts per account, not per IP.
_ACCOUNT_SCOPED = frozenset((v, "-1015") for v in ("BINANCE", "ASTER", *SIM_CODES))

_rates: dict[str, float] = {}


class SharedBudget(Protocol):
    """A rate-limit budget several processes draw from (``astra.cluster.limits.KvBudget``).
    ``key``: a limiter's ``key``; ``until``/the answer of ``gate``: epoch seconds."""

    async def take(self, key: str, weight: float, *, rate: float, capacity: float,
                   max_wait: float, reserve: float | None = None) -> float:
        """Normal request (``reserve`` None): reserve ``weight`` in the bucket of ``rate``
        tokens/s and ``capacity`` shared by all nodes when the wait for them is at most
        ``max_wait``, and answer that wait (0: now); a longer wait reserves nothing and is
        answered as is. Low priority (``reserve`` given): take ``weight`` only when
        ``reserve`` tokens remain after it (answer 0), else reserve nothing and answer the
        wait until they would."""
        ...

    def close_gate(self, key: str, until: float, account: str | None = None) -> None:
        """A 429/418 seen here: close ``key``'s gate (``account``'s only, when given) on every
        node until ``until``. Synchronous: the sharing happens in the background."""
        ...

    def gate(self, key: str, account: str | None = None) -> float:
        """When ``key``'s gate (or ``account``'s) reopens by the latest news, 0.0 when never
        closed. Synchronous and cheap: called before every request."""
        ...


_shared: SharedBudget | None = None


def set_shared_budget(budget: SharedBudget | None) -> SharedBudget | None:
    """Make ``budget`` the process-wide one every ``VenueLimiter`` without its own draws from
    (those made later too); None: stop sharing. Returns the previous one."""
    global _shared
    previous, _shared = _shared, budget
    return previous


def shared_budget() -> SharedBudget | None:
    """The process-wide budget, None when this process does not share its limits."""
    return _shared


def ccxt_rate(venue: str) -> float:
    """Requests per second ccxt allows itself on ``venue`` (1000 / its ``rateLimit`` ms)."""
    venue = str(venue).upper()
    if venue in _DOCUMENTED_RATES:
        return _DOCUMENTED_RATES[venue]
    if venue not in _rates:
        ccxt_id = CCXT_IDS.get(venue)
        if ccxt_id is None:
            raise ValueError(f"no default rate for venue {venue!r}: pass rate=")
        import ccxt  # the sync classes: describing one opens no session

        _rates[venue] = 1000.0 / float(getattr(ccxt, ccxt_id)().rateLimit)
    return _rates[venue]


class VenueLimiter:
    """Token bucket + 429/418 gate for one venue (see the module docstring)."""

    def __init__(
        self,
        venue: str,
        *,
        rate: float | None = None,
        capacity: float | None = None,
        max_wait: float = 2.0,
        reserve: float = 0.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        ban_default: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        scope: str | None = None,
        budget: SharedBudget | None = None,
    ) -> None:
        self.venue = str(venue)
        self.rate = ccxt_rate(self.venue) if rate is None else float(rate)
        if not self.rate > 0:
            raise ValueError("rate must be > 0 (math.inf: no pacing)")
        self.capacity = max(1.0, self.rate if capacity is None else float(capacity))
        if math.isinf(self.capacity):
            self.capacity = 1.0  # no pacing: the bucket is never consulted
        self.max_wait = float(max_wait)
        self.reserve = float(reserve)  # tokens low-priority requests leave to the others
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.ban_default = float(ban_default)
        self._clock, self._wall_clock, self._sleep = clock, wall_clock, sleep
        self._tokens = self.capacity
        self._updated = clock()
        self._gates: dict[str | None, float] = {}  # account (None: the venue) -> reopens at
        self._strikes = 0  # consecutive limits without a success: the backoff's exponent
        self.signals = 0  # 429/418 observed so far
        self.blocked = 0  # requests refused locally while a gate was closed
        # What the shared budget counts this limiter against: the same on every node for the
        # same kind of limiter (the venue's ``scope`` name, else its numbers), so nodes share
        # one budget per kind and kinds do not share.
        self.scope = scope or f"{self.rate:g}x{self.capacity:g}"
        self.key = f"{self.venue.upper()}.{self.scope}"
        self.budget = budget  # None: the process-wide one (``set_shared_budget``), if any

    def __repr__(self) -> str:
        wait = self.retry_after()
        gate = f", closed for {wait:.3g} s" if wait else ""
        return f"VenueLimiter({self.venue!r}, rate={self.rate:.4g}/s{gate})"

    # --- the gate --------------------------------------------------------------------------

    def retry_after(self, account: str | None = None) -> float | None:
        """Seconds until requests (for ``account``) may reach the venue again; None when the
        gate is open."""
        now = self._clock()
        until = max(self._gates.get(None, 0.0), self._gates.get(account, 0.0) if account else 0)
        wait = until - now if until > now else None
        budget = self.budget if self.budget is not None else _shared
        if budget is not None:  # another node's 429/418 (cached: no round trip)
            shared = budget.gate(self.key, account) - self._wall_clock()
            if shared > 0 and (wait is None or shared > wait):
                wait = shared
        return wait

    def succeeded(self) -> None:
        """A request got its answer: the backoff starts over."""
        self._strikes = 0

    @property
    def closed(self) -> bool:
        return self.retry_after() is not None

    def _check_gate(self, account: str | None) -> None:
        wait = self.retry_after(account)
        if wait is not None:
            self.blocked += 1
            raise RateLimited(
                f"venue {self.venue} is rate limiting: requests paused for {wait:.3g} s",
                venue=self.venue,
                retry_after=wait,
            )

    def _close(
        self,
        status: int,
        wait: float | None,
        *,
        text: str = "",
        code: str | None = None,
        account: str | None = None,
    ) -> float:
        if wait is None and text:
            # A ban already over by our clock (skew) says nothing: fall back to the default.
            wait = banned_until(text, now=self._wall_clock()) or None
        if wait is None:
            if status == 418:
                wait = self.ban_default
            else:
                wait = min(self.backoff_cap, self.backoff_base * 2**self._strikes)
        wait = min(MAX_WAIT, wait)  # whatever the venue said: never a gate closed for decades
        self._strikes += 1
        self.signals += 1
        scoped = (self.venue.upper(), code) in _ACCOUNT_SCOPED
        key = account if account is not None and scoped else None
        now = self._clock()
        if len(self._gates) > 64:  # account gates come and go: forget the ones reopened
            self._gates = {k: v for k, v in self._gates.items() if v > now}
        self._gates[key] = until = max(self._gates.get(key, 0.0), now + wait)
        budget = self.budget if self.budget is not None else _shared
        if budget is not None:  # every node stops, not this one alone
            budget.close_gate(self.key, self._wall_clock() + (until - now), key)
        level = logging.WARNING if status == 418 else logging.INFO
        log.log(
            level,
            "%s answered %s%s: %s requests paused for %.3g s",
            self.venue,
            status,
            f" (code {code})" if code else "",
            "the account's" if key is not None else "all",
            until - now,
        )
        return until - now

    def observe_response(
        self,
        status: int | None,
        headers: Mapping[str, Any] | None = None,
        body: str | bytes | None = None,
        *,
        account: str | None = None,
    ) -> float | None:
        """Feed one HTTP answer; a 429/418 closes the gate. Returns the seconds it is now
        closed for, or None when the answer was not a rate limit."""
        if status not in LIMIT_STATUSES:
            return None
        assert status is not None
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        text = body or ""
        code = venue_details(text, self.venue)[0] if text else None
        wait = retry_after_from_headers(headers, now=self._wall_clock())
        return self._close(status, wait, text=text, code=code, account=account)

    def observe(
        self,
        signal: object,
        *,
        account: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> float | None:
        """Feed what a request to the venue ended with: a ccxt exception (RateLimitExceeded,
        DDoSProtection, or any whose message quotes HTTP 429/418), or a response-like object
        with ``status`` (and ``headers``, or a ``retry_after`` in seconds) such as an
        ``aiohttp.ClientResponse``. ``headers`` are the response's when the caller has them
        (``exchange.last_response_headers``). Returns the seconds the gate is now closed for,
        or None when ``signal`` was not a rate limit. ``AstraError``s are ignored (a
        ``RateLimited`` from this limiter is not the venue's answer); an exception already
        observed (by ``slot``) is not counted twice."""
        if isinstance(signal, AstraError):
            return None
        if isinstance(signal, BaseException):
            # Once per exception: ``slot`` already fed it when it ended the block. Whether it
            # was a limit is its own answer, not whether the gate is closed now.
            seen = getattr(signal, "_astra_observed", None)
            if seen is not None and seen[0] is self:
                return self.retry_after(account) if seen[1] else None
            wait = self._observe(signal, account, headers)
            with contextlib.suppress(AttributeError, TypeError):
                signal._astra_observed = (self, wait is not None)  # type: ignore[attr-defined]
            return wait
        return self._observe(signal, account, headers)

    def _observe(
        self, signal: object, account: str | None, headers: Mapping[str, Any] | None
    ) -> float | None:
        if isinstance(signal, ccxt_errors.BaseError):
            status = http_status_of(signal)
            limit = isinstance(signal, ccxt_errors.RateLimitExceeded | ccxt_errors.DDoSProtection)
            if not limit and status not in LIMIT_STATUSES:
                return None
            code = venue_details(signal, self.venue)[0]
            if limit and (self.venue.upper(), code) in COUNT_LIMITS:
                return None  # ccxt's RateLimitExceeded for a count, not a rate (max orders)
            wait = retry_after_from_headers(headers, now=self._wall_clock())
            return self._close(
                status if status in LIMIT_STATUSES else 429,  # type: ignore[arg-type]
                wait,
                text=str(signal),
                code=code,
                account=account,
            )
        status = getattr(signal, "status", None)
        if isinstance(status, int) and status in LIMIT_STATUSES:
            wait = retry_after_from_headers(
                headers if headers is not None else getattr(signal, "headers", None),
                now=self._wall_clock(),
            )
            if wait is None:
                given = getattr(signal, "retry_after", None)
                wait = float(given) if isinstance(given, int | float) else None
            # aiohttp's ``code`` is a deprecated alias of the status, not a venue code.
            code = None if isinstance(signal, aiohttp.ClientResponseError) else (
                getattr(signal, "code", None) or None)
            return self._close(status, wait, code=code, account=account)
        return None

    def attach(self, exchange: Any, *, account: str | None = None) -> Any:
        """Let this limiter see every HTTP answer of a ccxt ``exchange`` (status and headers,
        before ccxt turns it into an exception); idempotent. Returns ``exchange``."""
        return attach_routed(exchange, lambda url: self, account=account, key=self)

    # --- the bucket ------------------------------------------------------------------------

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = now

    def _queued(self, wait: float) -> RateLimited:
        return RateLimited(
            f"venue {self.venue}: too many requests queued locally",
            venue=self.venue,
            retry_after=wait,
        )

    async def acquire(
        self,
        weight: float = 1.0,
        *,
        account: str | None = None,
        max_wait: float | None = None,
        low_priority: bool = False,
    ) -> None:
        """Wait for ``weight`` tokens; raise ``RateLimited`` at once when the gate is closed
        or the wait would exceed ``max_wait`` (default: the limiter's)."""
        if not weight > 0:
            raise ValueError("weight must be > 0")
        self._check_gate(account)
        if math.isinf(self.rate):
            return
        max_wait = self.max_wait if max_wait is None else max_wait
        if low_priority:
            return await self._acquire_low(weight, account, max_wait)
        self._refill(self._clock())
        deficit = weight - self._tokens
        wait = deficit / self.rate if deficit > 0 else 0.0
        if wait > max_wait:
            raise self._queued(wait)
        self._tokens -= weight  # reserved now: later callers queue behind
        budget = self.budget if self.budget is not None else _shared
        if wait <= 0 and budget is None:
            return
        try:
            if budget is not None:
                wait = max(wait, await self._take_shared(budget, weight, account, max_wait))
            if wait > 0:
                await self._sleep(wait)
                self._check_gate(account)  # a 429 may have arrived meanwhile
        except BaseException:
            self._give_back(weight)
            raise

    def _give_back(self, weight: float) -> None:
        self._refill(self._clock())
        self._tokens = min(self.capacity, self._tokens + weight)

    async def _take_shared(
        self,
        budget: SharedBudget,
        weight: float,
        account: str | None,
        max_wait: float,
        reserve: float | None = None,
    ) -> float:
        """The cluster's share: the wait ``budget`` reserved for ``weight`` (raises
        ``RateLimited`` when it would exceed ``max_wait`` or when the take learnt that another
        node's gate is closed)."""
        wait = await budget.take(self.key, weight, rate=self.rate, capacity=self.capacity,
                                 max_wait=max_wait, reserve=reserve)
        if reserve is None and wait > max_wait:
            raise self._queued(wait)
        self._check_gate(account)  # the take refreshed the budget's view of the gate
        return wait

    async def _acquire_low(self, weight: float, account: str | None, max_wait: float) -> None:
        """Tokens only when ``reserve`` remain after them; nothing held while waiting (the
        others' reservations go first), so the wait is polled, bounded by ``max_wait``."""
        reserve = max(0.0, min(self.reserve, self.capacity - weight))
        deadline = self._clock() + max_wait
        while True:
            now = self._clock()
            self._refill(now)
            deficit = weight + reserve - self._tokens
            if deficit <= 0:
                self._tokens -= weight
                budget = self.budget if self.budget is not None else _shared
                if budget is None:
                    return
                try:  # the cluster's reserve too: taken only when it is left after us
                    wait = await self._take_shared(budget, weight, account, max_wait, reserve)
                except BaseException:
                    self._give_back(weight)
                    raise
                if wait <= 0:
                    return
                self._give_back(weight)  # nothing held while waiting
                now = self._clock()
            else:
                wait = deficit / self.rate
            if now + wait > deadline:
                raise self._queued(wait)
            await self._sleep(wait)
            self._check_gate(account)

    def slot(
        self,
        weight: float = 1.0,
        *,
        account: str | None = None,
        max_wait: float | None = None,
        low_priority: bool = False,
    ) -> Slot:
        """``async with limiter.slot(weight):`` around one request to the venue: waits for the
        bucket (bounded by ``max_wait``), raises ``RateLimited`` while the gate is closed, and
        feeds the request's exception, if any, to ``observe``. ``low_priority``: see the
        module docstring."""
        return Slot(self, weight, account, max_wait, low_priority)

