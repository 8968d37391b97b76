"""How the feed harnesses time a side (CPU seconds, the best of several rounds, sides
alternated), and the engine's part of the work they all time (``EngineSink``).

Each run is a callable that sets up its own state (a fresh book from the snapshot) untimed and
returns the CPU seconds (``time.process_time``) of its message loop alone. A full collection
before each run starts every run from the same collector state; the collections a run's own
allocations cause count against it. CPU time, not wall time: on a shared machine wall time
mostly measures how often the process was preempted.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from astra.venues.book import L2Book

__all__ = ["EngineSink", "best_rates"]


class EngineSink:
    """The engine's part of a feed's work: keep the snapshot's book and apply every update to
    it (``L2Book.apply``, as the gateway's book channel does), minus the fan-out. A resync is
    an error: the recorded sessions have none."""

    __slots__ = ("book",)

    def __init__(self) -> None:
        self.book: L2Book | None = None

    def on_snapshot(self, book: L2Book) -> None:
        self.book = book

    def on_update(self, update_id: int, timestamp: int, bids, asks) -> None:
        self.book.apply(bids, asks, update_id, timestamp)

    def on_resync(self, reason: str) -> None:
        raise AssertionError(f"unexpected resync: {reason}")


def best_rates(runs: dict[str, tuple[int, Callable[[], float]]], rounds: int) -> dict[str, float]:
    """Messages per CPU second of each ``name: (messages, run)``, the best of ``rounds``, the
    runs alternated round by round so both sides see the same machine."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, (messages, run) in runs.items():
            gc.collect()
            best[name] = max(best[name], messages / run())
    return best
