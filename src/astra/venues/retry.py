"""Retry pacing shared by every venue: reconnect backoff and background REST snapshots.

Invariants:
- ``backoff(n)`` doubles from 0.25 s and never exceeds ``cap`` (30 s by default).
- ``SnapshotRequest`` keeps at most one snapshot fetch in flight per market; a failure is
  retried after the backoff, or after the venue's own wait (an exception's ``retry_after``,
  e.g. a 429's Retry-After) when that is longer; the result reaches ``on_ready`` only if it
  is still the latest request (a cancelled or superseded fetch is dropped).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["SnapshotRequest", "backoff"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def backoff(attempt: int, cap: float = 30.0) -> float:
    return min(cap, 0.25 * 2**attempt)


class SnapshotRequest(Generic[T]):
    """Background fetches of one market's REST snapshot."""

    def __init__(
        self, market: str, fetch: Callable[[], Awaitable[T]], on_ready: Callable[[T], None]
    ) -> None:
        self.market, self._fetch, self._on_ready = market, fetch, on_ready
        self._task: asyncio.Task | None = None
        self.attempt = 0

    @property
    def pending(self) -> bool:
        """A fetch was requested on this connection and has not been cancelled."""
        return self._task is not None

    def request(self, delay: float = 0.0) -> None:
        async def fetch() -> T:
            if delay:
                await asyncio.sleep(delay)
            return await self._fetch()

        self._task = asyncio.create_task(fetch())
        self._task.add_done_callback(self._done)

    def retry_later(self, cap_attempts: int = 3) -> None:
        """Ask again after a short, bounded backoff (e.g. a snapshot older than the stream)."""
        self.attempt = min(self.attempt + 1, cap_attempts)
        self.request(backoff(self.attempt))

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _done(self, task: asyncio.Task) -> None:
        if task.cancelled() or task is not self._task:
            return
        exc = task.exception()
        if exc is not None:
            self.attempt += 1
            delay = max(backoff(self.attempt), getattr(exc, "retry_after", 0) or 0)
            log.warning("%s: snapshot failed (%r); retrying in %.2f s", self.market, exc, delay)
            return self.request(delay)
        self._on_ready(task.result())
