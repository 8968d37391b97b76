"""Times as users write them: ISO 8601 (``2026-12-06T10:00:00Z``, ``2026-12-06``; no zone
means UTC) or Unix milliseconds (``1796580000000``). Returned as µs since the epoch."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from astra.core import InvalidParameter

__all__ = ["MAX_TIME_US", "MIN_TIME_US", "format_time", "parse_time"]

MIN_TIME_US = 946_684_800_000_000  # 2000-01-01: nothing is recorded before
MAX_TIME_US = 4_102_444_800_000_000  # 2100-01-01
# ASCII digits only: str.isdigit() also takes '²' (which int() refuses) and other scripts'.
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]*\.[0-9]+|[0-9]+\.[0-9]*")


def parse_time(text: str, parameter: str) -> int:
    """``text`` as µs since the epoch; ``InvalidParameter`` naming ``parameter`` otherwise."""
    raw = str(text).strip()
    if not raw or len(raw) > 40:
        raise InvalidParameter(parameter, "expected a time: ISO 8601 or Unix milliseconds")
    if _DIGITS.fullmatch(raw):
        us = int(raw) * 1000
    else:
        value = float(raw) if _DECIMAL.fullmatch(raw) else None
        if value is not None and math.isfinite(value):
            us = int(value * 1000)
        else:
            try:
                moment = datetime.fromisoformat(raw.replace("z", "Z"))
            except ValueError:
                raise InvalidParameter(
                    parameter, f"{raw[:40]!r} is not a time: ISO 8601 "
                    "(2026-12-06T10:00:00Z) or Unix milliseconds") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            us = int(moment.timestamp() * 1_000_000)
    if not MIN_TIME_US <= us <= MAX_TIME_US:
        raise InvalidParameter(parameter, f"{raw[:40]!r} is out of range (years 2000 to 2100; "
                               "Unix times are in milliseconds)")
    return us


def format_time(us: int) -> str:
    """``us`` as ISO 8601 UTC with milliseconds: ``2026-12-06T10:00:00.123Z``."""
    moment = datetime.fromtimestamp(us / 1_000_000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
