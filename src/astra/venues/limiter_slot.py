"""One request's passage through a ``VenueLimiter``: the ``slot`` around it and the ccxt
hook that sees its answer (``astra.venues.limiter`` describes the limiter itself).

Invariants:
- Whether a request met a rate limit is decided by that request alone: its own answer, seen
  by the attached hook (ccxt's ``on_rest_response``, which runs in the caller's task, so a
  context variable ties it to the ``slot`` the task is in), or its own exception. What
  concurrent requests met never relabels it; ``Slot.limited`` says so once the block is over.
- A 429/418 seen by the hook is not fed again from the exception ccxt then raises.
- ``attach_routed``: a client calling several separately counted APIs (Binance's spot,
  USD-M, COIN-M, options) feeds each answer to the limiter of the API its URL names.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = ["LIMIT_STATUSES", "Limiter", "Slot", "attach_routed"]

# The HTTP statuses of a rate limit: the hook asks a limiter about no other answer.
LIMIT_STATUSES = frozenset({429, 418})


class Limiter(Protocol):
    """What a slot and the hook need of a ``VenueLimiter`` (typed here, not imported: the
    limiter module builds on this one)."""

    async def acquire(self, weight: float = 1.0, *, account: str | None = None,
                      max_wait: float | None = None, low_priority: bool = False) -> None: ...

    def observe(self, signal: object, *, account: str | None = None,
                headers: Mapping[str, Any] | None = None) -> float | None: ...

    def observe_response(self, status: int | None, headers: Mapping[str, Any] | None = None,
                         body: str | bytes | None = None, *,
                         account: str | None = None) -> float | None: ...

    def succeeded(self) -> None: ...


# The ``slot`` the current task is in: the attached hook runs inside the caller's task
# (ccxt's fetch is awaited there), so it tells that slot, and no other, that its answer was a
# 429/418. Concurrent requests each have their own.
_current: contextvars.ContextVar[Slot | None] = contextvars.ContextVar(
    "astra_limiter_slot", default=None
)


class Slot:
    """``async with limiter.slot(weight):`` (see ``VenueLimiter.slot``). ``limited``, once
    the block is over: whether this request's own answer was a rate limit."""

    __slots__ = ("_account", "_limiter", "_low", "_max_wait", "_token", "_weight", "limited")

    def __init__(
        self,
        limiter: Limiter,
        weight: float,
        account: str | None,
        max_wait: float | None = None,
        low_priority: bool = False,
    ) -> None:
        self._limiter, self._weight, self._account = limiter, weight, account
        self._max_wait, self._low = max_wait, low_priority
        self._token: contextvars.Token | None = None
        self.limited = False

    async def __aenter__(self) -> Slot:
        await self._limiter.acquire(
            self._weight, account=self._account, max_wait=self._max_wait, low_priority=self._low
        )
        self.limited = False  # (set by the attached hook that sees this request's answer)
        self._token = _current.set(self)
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        limiter = self._limiter
        if exc is None:
            limiter.succeeded()
        elif isinstance(exc, Exception) and not self.limited:
            # This request's own failure, not seen by a hook (no hook, or a limit in a 200
            # body): classified by itself, whatever other requests met meanwhile.
            self.limited = limiter.observe(exc, account=self._account) is not None
        return False


def attach_routed(
    exchange: Any,
    route: Callable[[str], Limiter],
    *,
    account: str | None = None,
    key: object = None,
) -> Any:
    """Let ``route(url)``, the limiter of the API a request went to (a venue that counts
    products apart, e.g. Binance's spot, USD-M, COIN-M and options, routes by the URL), see
    every HTTP answer of a ccxt ``exchange`` through ccxt's ``on_rest_response`` hook (it
    runs before ccxt turns the answer into an exception, in the caller's task). A 429/418
    closes that limiter's gate and marks the ``slot`` the request runs in as limited.
    Idempotent per ``key`` (default: ``route``). Returns ``exchange``."""
    key = route if key is None else key
    if getattr(exchange, "_astra_limiter", None) is key:
        return exchange
    original = exchange.on_rest_response

    def on_rest_response(
        code: Any, reason: Any, url: Any, method: Any, headers: Any, body: Any, *rest: Any
    ) -> Any:
        if code in LIMIT_STATUSES and route(str(url)).observe_response(
                code, headers, body, account=account) is not None:
            slot = _current.get()
            if slot is not None:
                slot.limited = True
        return original(code, reason, url, method, headers, body, *rest)

    exchange.on_rest_response = on_rest_response
    exchange._astra_limiter = key
    return exchange
