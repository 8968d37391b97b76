"""One silence watchdog per venue connection, instead of a timeout per received message.

``ws.receive(timeout=silence)`` builds, schedules and cancels an asyncio timeout for every
message: at tens of thousands of updates a second that is a measurable share of a feed's CPU
(about 15% of the gateway's per-update cost on the ingest path). Here a connection's receive
loop only counts what it hears (``watch.heard += 1``, an attribute increment); one timer per
connection looks at the count every ``silence / 2`` seconds.

    async with session.ws_connect(url, timeout=WS_TIMEOUT) as ws:  # no receive timeout
        with SilenceWatchdog(silence) as watch:
            while True:
                msg = await ws.receive()
                watch.heard += 1
                ...

Invariants:
- A silent connection is detected within 1.5 x ``silence``: when two checks in a row
  (``silence / 2`` apart) see the count unchanged, the task running the ``with`` block is
  cancelled and the block raises ``TimeoutError`` (as ``asyncio.timeout`` does: the
  cancellation is taken back, an outside cancellation still wins). The receive loop's own
  ``async with ws_connect`` then closes the socket, and the feed reconnects/resyncs as it did
  on a receive timeout. It is never detected before ``silence`` has passed with nothing heard.
- A busy connection pays no timer per message: one ``call_at`` every ``silence / 2`` however
  many messages arrive, and one attribute increment per message.
- What counts as heard is what the loop counts: frames handed to it by aiohttp (aiohttp answers
  protocol pings itself; venues' application-level pings and heartbeats are messages).
- Leaving the block (normally, by an error, or cancelled) cancels the timer.
"""

from __future__ import annotations

import asyncio

__all__ = ["SilenceWatchdog"]


class SilenceWatchdog:
    """Cancels the current task with ``TimeoutError`` once nothing was heard for ``silence``
    seconds (see the module's invariants). Increment ``heard`` for every message received."""

    __slots__ = (
        "_cancelling",
        "_handle",
        "_loop",
        "_quiet",
        "_seen",
        "_task",
        "heard",
        "silence",
        "tripped",
    )

    def __init__(self, silence: float) -> None:
        if not silence > 0:
            raise ValueError(f"silence must be positive, not {silence!r}")
        self.heard = 0
        self.silence = silence
        self.tripped = False
        self._seen = 0
        self._quiet = 0  # checks in a row that saw nothing new
        self._task: asyncio.Task | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> SilenceWatchdog:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("SilenceWatchdog must be used inside a task")
        self._task, self._loop = task, task.get_loop()
        self._cancelling = task.cancelling()
        self._seen, self._quiet, self.tripped = self.heard, 0, False
        self._handle = self._loop.call_later(self.silence / 2, self._check)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        task, self._task = self._task, None
        # As asyncio.timeout: our cancellation is always taken back; it becomes TimeoutError
        # unless someone else cancelled the task too (theirs wins).
        if (self.tripped and task is not None and task.uncancel() <= self._cancelling
                and exc_type is asyncio.CancelledError):
            raise TimeoutError(f"silent for {self.silence:g} s") from exc

    def _check(self) -> None:
        heard = self.heard
        if heard != self._seen:
            self._seen, self._quiet = heard, 0
        else:
            self._quiet += 1
            if self._quiet >= 2:  # a whole ``silence`` with nothing heard
                self._handle = None
                if self._task is not None and not self._task.done():
                    self.tripped = True
                    self._task.cancel()
                return
        self._handle = self._loop.call_later(self.silence / 2, self._check)
