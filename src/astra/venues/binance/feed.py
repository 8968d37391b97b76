"""Binance market-data plumbing: stream URLs per product, connection lifetime and
keep-alive, and REST rate-limit back-off. Sequencing is Aster's (``astra.venues.aster.feed``:
``DiffSync`` and ``run_book_feed``), because Binance's streams are the family Aster copied.

Integrity rule (Binance's documented "manage a local order book" procedure), per market:
- Open ``<symbol>@depth@100ms`` and buffer it; fetch ``GET depth?limit=1000``
  (``lastUpdateId``). Spot bridges at ``lastUpdateId + 1``, USD-M, COIN-M and options at
  ``lastUpdateId``: drop events with ``u`` below the bridge, the first kept event must have
  ``U <= bridge <= u``, else the snapshot is too old and another one is fetched.
- Then spot events chain by ``U == previous u + 1``; USD-M, COIN-M and options by
  ``pu == previous u``. A break is a gap: that market resyncs (fresh snapshot, same
  connection) and its clients get a new snapshot. Nothing is applied out of sequence.
- Connections: pings from Binance are answered (aiohttp autoping), ours go out after
  ``heartbeat`` seconds of quiet, so a half-open link fails within ~1.5 heartbeats; no data
  for ``silence`` seconds also counts as dead. Binance closes every connection at 24 h: the
  feed reconnects on its own schedule first (``max_age``), telling the sink to resync.
- REST: a 429 or 418 (IP ban) pauses every REST call of the venue for ``Retry-After``
  seconds (Binance's limits are per IP, so one refusal speaks for all markets).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
import msgspec

from astra.venues.base import BookSink, TradeSink
from astra.venues.retry import backoff as _backoff

from .schemas import OptionTrade

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "RateGate",
    "SessionWithHeartbeat",
    "retry_after_seconds",
    "run_option_trade_feed",
    "run_with_max_age",
]

log = logging.getLogger(__name__)
DEFAULT_RETRY_AFTER = 30.0  # when a 429/418 comes without a usable Retry-After header
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
_TRADE_ERRORS = (
    aiohttp.ClientError,
    ConnectionError,
    TimeoutError,
    msgspec.DecodeError,
    ValueError,
)


def retry_after_seconds(headers: Mapping[str, str] | None, default: float = DEFAULT_RETRY_AFTER):
    """Seconds to wait from a ``Retry-After`` header (Binance sends whole seconds)."""
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return default
            return seconds if seconds >= 0 else default
    return default


class RateGate:
    """The venue's REST pause after a 429/418: ``block`` extends it, ``wait`` sits it out."""

    def __init__(self) -> None:
        self.until = 0.0  # time.monotonic() at which requests may resume

    def remaining(self) -> float:
        return max(0.0, self.until - time.monotonic())

    def block(self, seconds: float) -> None:
        self.until = max(self.until, time.monotonic() + seconds)

    async def wait(self) -> None:
        # A deadline that may move (another refusal extends it), not an event: re-check.
        while (left := self.remaining()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)


class SessionWithHeartbeat:
    """The ``ws_connect`` of an aiohttp session with WebSocket pings after ``interval``
    seconds of quiet (aiohttp's heartbeat): the Aster handlers, which take a session, then
    detect a half-open connection without waiting for market silence."""

    def __init__(self, session: aiohttp.ClientSession, interval: float | None) -> None:
        self.session, self.interval = session, interval

    def ws_connect(self, url: str, **kwargs: object):
        if self.interval:
            kwargs.setdefault("heartbeat", self.interval)
        return self.session.ws_connect(url, **kwargs)


async def run_with_max_age(
    run: Callable[[], Awaitable[None]], max_age: float | None, sink: BookSink
) -> None:
    """Run the feed ``run()`` opens, replacing it every ``max_age`` seconds: a new
    connection, a new snapshot, and ``sink.on_resync`` in between."""
    while True:
        deadline = asyncio.timeout(max_age)
        try:
            async with deadline:
                await run()
            return
        except TimeoutError:
            if not deadline.expired():
                raise
        sink.on_resync("scheduled reconnect (Binance closes connections after 24 h)")


async def run_option_trade_feed(session: SessionWithHeartbeat, url: str, sink: TradeSink) -> None:
    """Forward options ``<symbol>@optionTrade`` events at ``url`` to ``sink``, reconnecting
    with backoff (Aster's trade loop decodes ``aggTrade``, which options do not have)."""
    decode = msgspec.json.Decoder(OptionTrade).decode
    attempt = 0
    while True:
        try:
            async with session.ws_connect(url, timeout=_WS_TIMEOUT) as ws:
                async for msg in ws:
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        break
                    attempt = 0
                    sink.on_trades([decode(msg.data).to_trade()])
        except _TRADE_ERRORS as exc:
            log.warning("option trade feed %s: %r; reconnecting", url, exc)
        await asyncio.sleep(_backoff(attempt))
        attempt += 1
