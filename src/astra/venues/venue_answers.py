"""Reading what a venue answered, as ccxt reports it: the HTTP status quoted in a ccxt
message, the venue's own error code and message from the JSON body it quotes, ``Retry-After``
values and Binance-style ban ends.

Used by the per-venue limiter (``astra.venues.limiter``, which must see 429/418 answers below
the trading layer) and by ``astra.trading.errors`` (mapping failures to Astra errors).

Invariants:
- Pure functions of their arguments (plus the wall clock where a time is relative); nothing
  here sanitizes: callers that show a venue's text pass it through ``trading.errors.sanitize``.
- Every wait read here is at most ``MAX_WAIT`` (3 days, Binance's documented longest IP
  ban): a venue's (or a middlebox's) ``Retry-After: 1e9`` cannot close a gate for decades.
- ``COUNT_LIMITS``: venue codes ccxt reports as ``RateLimitExceeded`` that count open orders,
  not requests: waiting does not help, so they close no rate-limit gate.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from astra.core import SIM_CODES

__all__ = [
    "BINANCE_LIKE",
    "COUNT_LIMITS",
    "MAX_WAIT",
    "banned_until",
    "http_status_of",
    "json_in",
    "parse_retry_after",
    "retry_after_from_headers",
    "venue_details",
]

BINANCE_LIKE = ("BINANCE", "ASTER", *SIM_CODES)
# -2025 / -4045 "max open (stop) orders": ccxt says RateLimitExceeded, but it is a count.
COUNT_LIMITS = frozenset((v, c) for v in BINANCE_LIKE for c in ("-2025", "-4045"))

# ccxt's default HTTP-status error: "<id> <METHOD> <url> <status> <reason> <body>"; binance's
# own 418/429 one: "binance 429 <reason> <body>".
_HTTP_STATUS = re.compile(
    r"^[a-z0-9]+ (?:(?:GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS) \S+ )?([1-5]\d\d)(?: |$)"
)
MAX_WAIT = 3 * 24 * 3600.0  # seconds: Binance bans "scale from 2 minutes to 3 days"
_BANNED_UNTIL = re.compile(r"banned until (\d{12,14})")
_MAX_JSON_TRIES = 8


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status quoted in a ccxt message, when ccxt put one there."""
    m = _HTTP_STATUS.match(str(exc))
    return int(m[1]) if m else None


def json_in(text: str) -> dict[str, Any] | list[Any] | None:
    """The first JSON object (or array) embedded in ``text``."""
    decoder = json.JSONDecoder()
    start, tries = 0, 0
    while tries < _MAX_JSON_TRIES:
        i = min((j for j in (text.find("{", start), text.find("[", start)) if j >= 0), default=-1)
        if i < 0:
            return None
        tries += 1
        try:
            value, _ = decoder.raw_decode(text, i)
        except ValueError:
            start = i + 1
            continue
        if isinstance(value, dict | list):
            return value
        start = i + 1
    return None


def _text(value: object) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _first(d: object, *keys: str) -> str | None:
    if not isinstance(d, Mapping):
        return None
    for k in keys:
        v = _text(d.get(k))
        if v is not None:
            return v
    return None


def _binance(body: Any) -> tuple[str | None, str | None]:
    if isinstance(body, list) and body:  # batch answers: [{"code": -2011, "msg": ...}]
        body = body[0]
    return _first(body, "code"), _first(body, "msg")


def _okx(body: Any) -> tuple[str | None, str | None]:
    # {"code":"1","data":[{"sCode":"51008","sMsg":"..."}],"msg":"All operations failed"}
    data = body.get("data") if isinstance(body, Mapping) else None
    if isinstance(data, list):
        for item in data:
            code = _first(item, "sCode")
            if code is not None and code != "0":
                return code, _first(item, "sMsg")
    return _first(body, "code"), _first(body, "msg")


def _kucoin(body: Any) -> tuple[str | None, str | None]:
    return _first(body, "code"), _first(body, "msg")


def _htx(body: Any) -> tuple[str | None, str | None]:
    # {"status":"error","err-code":"...","err-msg":"..."}; futures: {"err_code":..,"err_msg":..}
    code = _first(body, "err-code", "err_code")
    if code is not None:
        return code, _first(body, "err-msg", "err_msg")
    data = body.get("data") if isinstance(body, Mapping) else None
    errors = data.get("errors") if isinstance(data, Mapping) else None
    if isinstance(errors, list) and errors:
        return _first(errors[0], "err_code"), _first(errors[0], "err_msg")
    return _first(body, "code"), _first(body, "message", "msg")


def _kraken(body: Any) -> tuple[str | None, str | None]:
    # {"error":["EOrder:Insufficient funds"]}: the string is both code and message
    errors = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(errors, list):
        first = next((e for e in errors if isinstance(e, str) and e), None)
        return first, first
    if isinstance(errors, str) and errors:
        return errors, errors
    return None, None


def _coinbase(body: Any) -> tuple[str | None, str | None]:
    if not isinstance(body, Mapping):
        return None, None
    # create_order: {"success":false,"failure_reason":..,"error_response":{"error":..,..}}
    inner = body.get("error_response")
    if isinstance(inner, Mapping):
        code = _first(inner, "error", "preview_failure_reason", "new_order_failure_reason")
        return code, _first(inner, "message", "error_details")
    code = _first(body, "error")
    if code is not None:
        return code, _first(body, "message", "error_details", "error_description")
    failure = _first(body, "failure_reason")
    if failure is not None and failure != "UNKNOWN_FAILURE_REASON":
        return failure, failure
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        return _first(errors[0], "id"), _first(errors[0], "message")
    return failure, None


def _generic(body: Any) -> tuple[str | None, str | None]:
    for parse in (_okx, _htx, _kraken, _coinbase, _binance):
        code, message = parse(body)
        if code is not None:
            return code, message
    return None, _first(body, "msg", "message")


_PARSERS = {
    "BINANCE": _binance,
    "ASTER": _binance,
    **dict.fromkeys(SIM_CODES, _binance),
    "OKX": _okx,
    "KUCOIN": _kucoin,
    "HUOBI": _htx,
    "KRAKEN": _kraken,
    "COINBASE": _coinbase,
}


def venue_details(exc: BaseException | str, venue: str) -> tuple[str | None, str | None]:
    """``(venue_code, venue_message)`` from the JSON body quoted in a ccxt message (either may
    be None). Neither is sanitized yet."""
    body = json_in(str(exc))
    if body is None:
        return None, None
    return _PARSERS.get(str(venue).upper(), _generic)(body)


def parse_retry_after(value: object, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date (relative
    to the wall clock ``now``, default ``time.time()``), at most ``MAX_WAIT``; None when
    absent or unreadable."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # nan, inf
        return None
    return min(MAX_WAIT, max(0.0, seconds))


def banned_until(text: str, *, now: float | None = None) -> float | None:
    """Seconds left of a Binance-style IP ban ("IP banned until 1593512132000") in ``text``."""
    m = _BANNED_UNTIL.search(text)
    if m is None:
        return None
    return min(MAX_WAIT, max(0.0, int(m[1]) / 1000 - (time.time() if now is None else now)))


def _header(headers: Mapping[str, Any] | None, name: str) -> Any:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == lower), None)
    return value


def retry_after_from_headers(
    headers: Mapping[str, Any] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait from a response's headers: ``Retry-After`` (seconds or HTTP date),
    else KuCoin's ``gw-ratelimit-reset`` (milliseconds); None when neither is usable."""
    wait = parse_retry_after(_header(headers, "Retry-After"), now=now)
    if wait is None:
        reset = _header(headers, "gw-ratelimit-reset")
        if reset is not None and str(reset).strip().isdigit():
            wait = min(MAX_WAIT, int(str(reset).strip()) / 1000)
    return wait
