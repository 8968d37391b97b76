"""History records and the query windows over them, shared by every endpoint that serves a
record: ``allOrders``, ``userTrades``, ``income``, ``forceOrders``, ``transactionHistory``,
``positionMargin/history``, ``fundingRate``, klines and index / mark price klines.

Invariants:
- A history record (``history()``) keeps its newest ``HISTORY_ROWS`` rows (per account; the
  funding rates ``FUNDING_ROWS`` per symbol), in memory and therefore on disk: none grows
  without bound. Every query the docs allow reaches at most 1000 rows, well inside that.
- ``limit``: absent means the endpoint's default; 0, or more than the endpoint's maximum, is
  -1130 (as the public endpoints' ``int_param`` answers); otherwise at most that many rows.
- ``startTime`` after ``endTime`` is -1023, on every endpoint (``query_window``).
- A window's rows are oldest first: from a start (``startTime``, ``fromId``, ``orderId``) the
  first ``limit`` of them, otherwise the latest ``limit``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Protocol, TypeVar

from .orders import OrderError

__all__ = [
    "FUNDING_ROWS", "HISTORY_ROWS", "SEVEN_DAYS_MS", "check_limit", "history", "query_window",
    "window",
]  # fmt: skip

HISTORY_ROWS = 10_000
FUNDING_ROWS = 1000  # per symbol: fundingRate's largest limit
SEVEN_DAYS_MS = 7 * 86_400_000  # the default look-back of income and transactionHistory

T = TypeVar("T")


def history(rows: Iterable[dict] = (), maxlen: int = HISTORY_ROWS) -> deque[dict]:
    """A record that keeps its newest ``maxlen`` rows (oldest first)."""
    return deque(rows, maxlen=maxlen)


def check_limit(value: int | None, default: int, most: int) -> int:
    """The ``limit`` of a query: ``default`` when absent, else within ``1..most``."""
    if value is None:
        return default
    if not 0 < value <= most:
        raise OrderError(-1130, "Data sent for parameter 'limit' is not valid.")
    return value


class Params(Protocol):
    """What ``query_window`` reads of a signed request (``private.SignedRequest``; not
    imported: ``private`` imports this module)."""

    def int(self, name: str) -> int | None: ...


def query_window(r: Params, default: int, most: int) -> tuple[int | None, int | None, int]:
    """A history query's ``(startTime, endTime, limit)``: the limit as ``check_limit``, and
    -1023 when the start is after the end."""
    limit = check_limit(r.int("limit"), default, most)
    start, end = r.int("startTime"), r.int("endTime")
    if start is not None and end is not None and start > end:
        raise OrderError(-1023, "Start time is greater than end time.")
    return start, end, limit


def window(rows: list[T], limit: int, from_start: bool) -> list[T]:
    """The first ``limit`` rows from a start, otherwise the latest ``limit``."""
    return rows[:limit] if from_start else rows[-limit:]
