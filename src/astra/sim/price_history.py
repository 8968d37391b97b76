"""The index and mark price record of the perpetual markets, behind ``indexPriceKlines`` and
``markPriceKlines``.

Invariants:
- Every sample is the pair ``premiumIndex`` would publish at that moment (``views.mark_price``
  with the flow's index), exactly in 10**-8 units (``views.mark_index_e8``, from the numbers);
  one sample per simulated second, and one more whenever a kline request is served, so the
  newest candle closes at the figures ``premiumIndex`` shows at the same time.
- Candles are one minute, ``[open, open + 60 s)``; longer intervals merge them exactly as the
  trade klines do (``state.bucket_open``); a minute without a sample has no candle. The
  ``Number of Data Points`` column counts the samples a candle merges.
- At most ``MINUTES`` one-minute candles are kept per market and price (two weeks).
"""

from __future__ import annotations

from collections import deque

from .records import window
from .state import MINUTE, bucket_close, bucket_open, merge_buckets, since

__all__ = ["PriceCandle", "PriceHistory", "kline_rows"]

MINUTES = 2 * 10080


class PriceCandle:
    __slots__ = ("close", "high", "low", "open", "open_time", "points")

    def __init__(self, open_time: int, price: int) -> None:
        self.open_time = open_time
        self.open = self.high = self.low = self.close = price
        self.points = 0

    def add(self, price: int, points: int = 1) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.points += points

    def merge(self, other: PriceCandle) -> None:
        """Take in a later candle of the same bucket (``state.merge_buckets``)."""
        self.high = max(self.high, other.high)
        self.low = min(self.low, other.low)
        self.close = other.close
        self.points += other.points


def _fmt(e8: int) -> str:
    sign = "-" if e8 < 0 else ""
    whole, frac = divmod(abs(e8), 10**8)
    return f"{sign}{whole}.{frac:08d}"


class PriceHistory:
    """One-minute candles of the index and the mark price of each market."""

    def __init__(self) -> None:
        self._candles: dict[tuple[str, str], deque[PriceCandle]] = {}

    def sample(self, symbol: str, ts: int, mark: int, index: int) -> None:
        """Record the mark and index (``premiumIndex``'s, in 10**-8) of ``symbol`` at ``ts``."""
        for kind, price in (("mark", mark), ("index", index)):
            candles = self._candles.setdefault((symbol, kind), deque(maxlen=MINUTES))
            open_time = ts - ts % MINUTE
            if not candles or candles[-1].open_time < open_time:
                candles.append(PriceCandle(open_time, price))
            candles[-1].add(price)

    def klines(
        self, symbol: str, kind: str, interval: str, start: int | None, end: int | None,
        limit: int,
    ) -> list[PriceCandle]:
        """Candles of ``interval``: the first ``limit`` from ``start``, else the latest."""
        source = self._candles.get((symbol, kind), deque())
        if start is not None:  # walks back from the newest, not over the whole record
            source = since(source, bucket_open(interval, start))
        out = merge_buckets(source, interval, end, lambda t, c: PriceCandle(t, c.open))
        return window(out, limit, start is not None)


def kline_rows(candles: list[PriceCandle], interval: str) -> list[list]:
    """The docs' 12-column rows (volume columns are "0": a price index has no volume)."""
    return [
        [c.open_time, _fmt(c.open), _fmt(c.high), _fmt(c.low), _fmt(c.close), "0",
         bucket_close(interval, c.open_time), "0", c.points, "0", "0", "0"]
        for c in candles
    ]
