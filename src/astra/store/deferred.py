"""Writes that need not hold up their caller, run soon after, in submission order.

The order journal acknowledges an order after the venue has answered: a crash before that
write is committed leaves the entry ``SENT``, which reconciliation settles by client order id,
so the answer need not wait for it. ``DeferredWrites`` queues such writes and runs them:

- ``inline`` (an embedded database, a write of ~0.1 ms): on the submitting event loop,
  ``delay`` seconds later (0: its next turn), after the current handler has written its
  answer, with no thread hop (under CPU contention a thread's wake-up costs milliseconds,
  the write does not); a writer may instead ``claim`` them into its own transaction first
  (the journal's next intent carries the acknowledgements waiting: one commit for all);
- otherwise (a database across the network): on a thread of its own.

Invariants:
- Deferred writes run one at a time, in the order submitted; ``claim`` removes all of them
  (when all are of one kind) for its caller to run in one transaction, in that order, and
  puts them back if that fails.
- Read-your-writes within the process: ``settle()`` runs (or waits for) every write
  submitted before it was called. The journal calls it first in every public method, so no
  caller of this process sees the state from before a deferred write, whichever thread it
  calls from, and a caller on the loop never waits for a turn of the loop it is blocking.
  (Other processes sharing the database see the earlier state until the commit, as after a
  crash.) A deferred write calling the journal does not run the queue again (re-entrance).
- A deferred write that fails is logged (its exception type and message, which name no
  credential: the journal stores none) and does not stop later ones; ``fallback`` (when given)
  is tried first for a failure it accepts (e.g. the database busy for an inline write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["DeferredWrites"]

log = logging.getLogger(__name__)


class DeferredWrites:
    def __init__(self, *, inline: bool, name: str = "astra-deferred", delay: float = 0.0) -> None:
        self.inline = inline
        self.delay = delay
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._name = name
        self._queue: deque[tuple[Callable[..., Any], tuple]] = deque()
        self._lock = threading.RLock()
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pending(self) -> int:
        """Writes submitted and not run yet."""
        return len(self._queue)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.append((fn, args))
        if self.inline:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop in this thread: run it now
                self.settle()
                return
            if self.delay <= 0:
                loop.call_soon(self.settle)
            elif self._timer is None or self._timer_loop is not loop:
                # one timer for the writes waiting (per loop: a closed loop's never fires)
                self._timer_loop = loop
                self._timer = loop.call_later(self.delay, self._on_timer)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=self._name)
        self._pool.submit(self.settle)

    def _on_timer(self) -> None:
        self._timer = None
        self.settle()

    @contextlib.contextmanager
    def claim(self, fn: Callable[..., Any], limit: int = 64) -> Iterator[list[tuple] | None]:
        """The arguments of every queued write when all of them call ``fn`` (at most
        ``limit``), removed from the queue for the block to run, in this order; the queue's
        lock is held meanwhile (another thread's ``settle`` waits for the block, so it never
        reads around them) and they go back to the front of the queue if the block raises.
        None (nothing claimed, no lock held) when others are queued, the queue is running here
        or in another thread: then ``settle`` as usual."""
        if (not self._queue or len(self._queue) > limit or getattr(self._local, "running", False)
                or not self._lock.acquire(blocking=False)):
            yield [] if not self._queue else None
            return
        try:
            if any(item[0] != fn for item in self._queue):
                taken = None
            else:
                taken = [args for _, args in self._queue]
                self._queue.clear()
            try:
                yield taken
            except BaseException:
                if taken:
                    self._queue.extendleft((fn, args) for args in reversed(taken))
                raise
        finally:
            self._lock.release()

    def settle(self) -> None:
        """Run the queued writes (those of other callers too) in order, here and now."""
        if not self._queue or getattr(self._local, "running", False):
            return  # the hot path: nothing deferred (one length check, no lock)
        with self._lock:
            self._local.running = True
            try:
                while self._queue:
                    # Left in the queue while it runs: another thread's ``settle`` then sees
                    # it and waits for this lock, instead of reading around a write that has
                    # left the queue but not committed.
                    fn, args = self._queue[0]
                    try:
                        fn(*args)
                    except Exception as exc:
                        log.warning("a deferred journal write failed (%s: %s); the entry stays "
                                    "pending and is reconciled", type(exc).__name__,
                                    str(exc)[:200])
                    finally:
                        self._queue.popleft()
            finally:
                self._local.running = False
