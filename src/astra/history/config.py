"""``[history]``: which markets the gateway records, where, and how often it writes.

Configuration (all optional)::

    [history]
    markets = ["SIM-SPOT-*", "SMART-SPOT-BTC-USDT"]  # fnmatch patterns on market symbols
    dir = "~/astra-history"      # default: <data dir>/history
    flush_seconds = 2.0          # pending rows are written this often (a crash loses at most this)
    snapshot_every = 1000        # a checkpoint snapshot after this many book updates ...
    snapshot_seconds = 60.0      # ... or this many seconds, whichever comes first
    retention_days = 7           # date partitions older than this are deleted (daily)
    compact_seconds = 600        # parts of a partition are merged this often
    max_pending = 1000000        # rows waiting to be written; beyond, a "recorder overflow" gap

Invariants: every value is checked here, once, and a bad one is a ``ValueError`` that names
``[history] <setting>``; a market pattern has the market-symbol shape (``EXCHANGE-…``, letters,
digits, ``-_.`` and the wildcards ``*?``), so a pattern can never name a path. No markets: the
gateway records nothing (the queries still serve what ``dir`` holds).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SIMULATOR_MARKETS", "HistoryConfig"]

SIMULATOR_MARKETS = ("SIM-SPOT-BTC-USDT", "SMART-SPOT-BTC-USDT")
_PATTERN = re.compile(r"[A-Za-z0-9*?]+-[A-Za-z0-9_.*?-]*")
_KEYS = {"markets", "dir", "flush_seconds", "snapshot_every", "snapshot_seconds",
         "retention_days", "compact_seconds", "max_pending"}


def _number(section: Mapping, key: str, default: float, low: float, high: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
        raise ValueError(f"[history] {key} must be seconds in ({low:g}, {high:g}], got {value!r}")
    return float(value)


def _integer(section: Mapping, key: str, default: int, low: int, high: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"[history] {key} must be a whole number in [{low}, {high}], "
                         f"got {value!r}")
    return value


def _patterns(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError("[history] markets must be a list of market patterns "
                         '(e.g. ["BINANCE-SPOT-*", "SMART-SPOT-BTC-USDT"])')
    out = []
    for pattern in value:
        text = pattern.strip().upper()
        if len(text) > 100 or not _PATTERN.fullmatch(text):
            raise ValueError(f"[history] markets: {pattern[:40]!r} is not a market pattern "
                             "(EXCHANGE-TYPE-BASE-QUOTE, with * and ? as wildcards)")
        out.append(text)
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    markets: tuple[str, ...] = ()
    dir: Path = Path("history")
    flush_seconds: float = 2.0
    snapshot_every: int = 1000
    snapshot_seconds: float = 60.0
    retention_days: int = 7
    compact_seconds: float = 600.0
    max_pending: int = 1_000_000

    @classmethod
    def from_config(cls, section: Mapping | None, data_dir: Path) -> HistoryConfig:
        """The ``[history]`` section (None: absent), checked; ``ValueError`` names the bad
        setting."""
        if section is not None and not isinstance(section, Mapping):
            raise ValueError("[history] must be a table")
        section = dict(section or {})
        unknown = set(section) - _KEYS
        if unknown:
            raise ValueError(f"[history]: unknown setting {sorted(unknown)[0]!r}")
        raw_dir = section.get("dir")
        if raw_dir is None:
            folder = Path(data_dir) / "history"
        elif isinstance(raw_dir, str) and raw_dir.strip() and "\0" not in raw_dir:
            folder = Path(raw_dir.strip()).expanduser()
        else:
            raise ValueError(f"[history] dir must be a folder path, got {raw_dir!r}")
        return cls(
            markets=_patterns(section.get("markets")),
            dir=folder,
            flush_seconds=_number(section, "flush_seconds", 2.0, 0, 3600),
            snapshot_every=_integer(section, "snapshot_every", 1000, 1, 100_000_000),
            snapshot_seconds=_number(section, "snapshot_seconds", 60.0, 0, 86_400),
            retention_days=_integer(section, "retention_days", 7, 1, 36_500),
            compact_seconds=_number(section, "compact_seconds", 600.0, 0, 86_400),
            max_pending=_integer(section, "max_pending", 1_000_000, 1, 1_000_000_000),
        )

    @classmethod
    def default_for_simulator(cls, data_dir: Path) -> HistoryConfig:
        """What ``astra serve`` with no configuration records: the simulator's BTC/USDT and
        its SMART book, kept two days."""
        return cls(markets=SIMULATOR_MARKETS, dir=Path(data_dir) / "history", retention_days=2)
