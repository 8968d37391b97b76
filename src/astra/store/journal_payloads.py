"""The order journal's client order ids and payloads: what is stored, and what never is.

Invariants:
- Generated client order ids are valid on every venue they are generated for (``journal.py``'s
  docstring has each venue's rule and the resulting forms).
- No credentials are stored: payloads whose keys look like credentials are refused with
  ``ValueError``; stored errors keep only ``code``/``message``/``venue``/``venueCode``, with
  ``key=value`` credential-looking pairs redacted and the message truncated.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import sqlalchemy as sa

from astra.core import SIM_CODES, AstraError

from .journal_schema import (
    CLIENT_ORDER_ID_MAX_LENGTH,
    MAX_ERROR_MESSAGE_LENGTH,
    MAX_REQUEST_BYTES,
    JournalEntry,
    JournalState,
)

__all__ = [
    "CLIENT_ORDER_ID_PATTERN",
    "CLIENT_ORDER_ID_PREFIX",
    "generate_client_order_id",
    "is_valid_client_order_id",
]

CLIENT_ORDER_ID_PREFIX = "astra"
# ---------------------------------------------------------------------------- client order ids

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Any venue's client order id at most: the OpenAPI document publishes this same pattern.
CLIENT_ORDER_ID_PATTERN = rf"[A-Za-z0-9._:/-]{{1,{CLIENT_ORDER_ID_MAX_LENGTH}}}"
_GENERIC_ID = re.compile(CLIENT_ORDER_ID_PATTERN)
_BINANCE_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_HEX = "[0-9a-fA-F]"
_VENUE_IDS: dict[str, re.Pattern[str]] = {
    "BINANCE": _BINANCE_ID,
    "ASTER": _BINANCE_ID,
    **dict.fromkeys(SIM_CODES, _BINANCE_ID),
    "OKX": re.compile(r"[A-Za-z0-9]{1,32}"),
    "KUCOIN": re.compile(r"[A-Za-z0-9_-]{1,40}"),
    "KRAKEN": re.compile(
        rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}|{_HEX}{{32}}"
        r"|[A-Za-z0-9_-]{1,18}"
    ),
}
_SHORT_ID_VENUES = frozenset({"KRAKEN"})


_SHORT_SPACE = 62**13  # 77 random bits
_LONG_SPACE = 62**20  # 119 random bits


# Two digits at a time (half the divisions: ids are made on every order's path).
_BASE62_PAIRS = [a + b for a in _BASE62 for b in _BASE62]


def _base62(n: int, width: int) -> str:
    """``n`` in ``width`` base-62 digits, most significant first (``n < 62**width``)."""
    out = []
    for _ in range(width >> 1):
        n, r = divmod(n, 3844)  # 62**2
        out.append(_BASE62_PAIRS[r])
    if width & 1:
        out.append(_BASE62[n % 62])
    out.reverse()
    return "".join(out)


# One 128-bit draw covers the 62**20 suffixes 482 times over: a draw below the largest
# multiple of 62**20 taken modulo 62**20 is uniform (the rest, < 1 in 480, is drawn again).
_LONG_DRAW_LIMIT = (1 << 128) // _LONG_SPACE * _LONG_SPACE
_urandom = os.urandom


def _long_suffix() -> int:
    """A uniform draw below ``62**20``: one 16-byte read of the OS's generator nearly always
    (``secrets.randbelow`` reads 15 bytes per try and keeps about half of them)."""
    while True:
        n = int.from_bytes(_urandom(16), "big")
        if n < _LONG_DRAW_LIMIT:
            return n % _LONG_SPACE


_stamp_cache: tuple[int, str] = (-1, "")


def generate_client_order_id(exchange: str | None = None) -> str:
    """A fresh client order id the venue accepts: ``astra`` + base62 (see the module docstring).

    32 characters (a millisecond timestamp, then 119 random bits) for venues that allow it;
    18 characters (77 random bits) for Kraken and when ``exchange`` is None (valid everywhere).
    """
    if exchange is None or str(exchange) in _SHORT_ID_VENUES:
        return CLIENT_ORDER_ID_PREFIX + _base62(secrets.randbelow(_SHORT_SPACE), 13)
    global _stamp_cache
    ms = time.time_ns() // 1_000_000
    cached_ms, stamp = _stamp_cache
    if ms != cached_ms:  # (a tuple swapped whole: a thread reads a matching pair)
        stamp = _base62(ms, 7)  # 62**7 ms lasts until the year 2081
        _stamp_cache = (ms, stamp)
    # one draw over the 62**20 suffixes: the same uniform suffix as 20 draws of a digit
    return CLIENT_ORDER_ID_PREFIX + stamp + _base62(_long_suffix(), 20)


def is_valid_client_order_id(value: object, exchange: str | None = None) -> bool:
    """Whether the journal stores ``value`` and, given ``exchange``, that venue accepts it.

    Without a known venue rule only the journal's own bound applies: 1 to 64 characters of
    ``[A-Za-z0-9._:/-]``.
    """
    if not isinstance(value, str) or _GENERIC_ID.fullmatch(value) is None:
        return False
    rule = _VENUE_IDS.get(str(exchange)) if exchange is not None else None
    return rule is None or rule.fullmatch(value) is not None


# ------------------------------------------------------------------- payloads, no credentials

_CREDENTIAL_WORDS = (
    "secret",
    "apikey",
    "privatekey",
    "privkey",
    "passphrase",
    "password",
    "mnemonic",
    "seedphrase",
    "credential",
    "accesskey",
    "authorization",
)
_REDACT = re.compile(
    r"(?i)\b(signature|sign|api[_-]?key|api[_-]?secret|secret|passphrase|password"
    r"|private[_-]?key|access[_-]?key|token)(\"?\s*[:=]\s*\"?)([^&\s\"',}]+)"
)


def _normalized_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


@functools.lru_cache(maxsize=4096)  # the same few field names, order after order
def _credential_like(key: str) -> bool:
    norm = _normalized_key(key)
    return any(word in norm for word in _CREDENTIAL_WORDS)


_NESTED = (Mapping, list, tuple)
_SCALARS = frozenset({str, int, float, bool, type(None)})  # (an ABC check costs ~1 us each)


def _check_no_credentials(value: Any, what: str, depth: int = 0) -> None:
    if depth > 32:
        raise ValueError(f"{what} is nested too deeply")
    if type(value) is dict or isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{what} keys must be strings")
            if _credential_like(k):
                # Name the key, never its value.
                raise ValueError(
                    f"{what} must not carry credentials: refusing the field '{k[:64]}'"
                )
            if type(v) not in _SCALARS and isinstance(v, _NESTED):  # (scalars: no names)
                _check_no_credentials(v, what, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            if type(v) not in _SCALARS and isinstance(v, _NESTED):
                _check_no_credentials(v, what, depth + 1)


def _to_builtins(payload: Any, what: str) -> dict[str, Any]:
    if isinstance(payload, msgspec.Struct):
        payload = msgspec.to_builtins(payload)
    if not isinstance(payload, Mapping):
        raise TypeError(f"{what} must be a mapping or a msgspec Struct, not {type(payload)!r}")
    _check_no_credentials(payload, what)
    return dict(payload)


def _encode(payload: Any, what: str) -> str:
    data = msgspec.json.encode(_to_builtins(payload, what), order="sorted")
    if len(data) > MAX_REQUEST_BYTES:
        raise ValueError(f"{what} is too large ({len(data)} bytes > {MAX_REQUEST_BYTES})")
    return data.decode()


def _decode(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def _redact(message: str) -> str:
    message = _REDACT.sub(lambda m: f"{m[1]}{m[2]}<redacted>", message)
    if len(message) > MAX_ERROR_MESSAGE_LENGTH:
        message = message[: MAX_ERROR_MESSAGE_LENGTH - 3] + "..."
    return message


def _encode_error(error: AstraError | BaseException | Mapping[str, Any]) -> str:
    """The error as ``{code, message, venue?, venueCode?}``: nothing else is kept."""
    if isinstance(error, AstraError):
        fields: dict[str, Any] = {
            "code": error.code,
            "message": error.message,
            "venue": error.venue,
            "venueCode": error.venue_code,
        }
    elif isinstance(error, Mapping):
        fields = {
            "code": error.get("code"),
            "message": error.get("message"),
            "venue": error.get("venue"),
            "venueCode": error.get("venueCode", error.get("venue_code")),
        }
    elif isinstance(error, BaseException):
        fields = {"code": AstraError.code, "message": f"{type(error).__name__}: {error}"}
    else:
        raise TypeError(f"error must be an exception or a mapping, not {type(error)!r}")
    code = str(fields.get("code") or AstraError.code)[:64]
    out: dict[str, str] = {"code": code, "message": _redact(str(fields.get("message") or code))}
    for k in ("venue", "venueCode"):
        if fields.get(k) is not None:
            out[k] = _redact(str(fields[k]))[:64]
    return msgspec.json.encode(out).decode()



def _check_str(value: object, name: str, max_len: int) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ValueError(f"{name} must be a non-empty string of at most {max_len} characters")
    if not value.isprintable() or value.strip() != value:
        raise ValueError(f"{name} must not contain control characters or surrounding spaces")
    return value


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _entry(row: sa.Row) -> JournalEntry:
    return JournalEntry(
        id=row.id,
        key_id=row.key_id,
        exchange=row.exchange,
        market=row.market,
        client_order_id=row.client_order_id,
        request=_decode(row.request),
        state=JournalState(row.state),
        created_at=row.created_at,
        updated_at=row.updated_at,
        venue_order_id=row.venue_order_id,
        last_order=_decode(row.last_order),
        error=_decode(row.error),
        sent_at=row.sent_at,
        reconciled_at=row.reconciled_at,
        reconcile_attempts=row.reconcile_attempts,
    )
