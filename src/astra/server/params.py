"""Query-parameter validation shared by the routes and the OpenAPI document.

Invariants:
- Every bound here is one constant used both by the validator and by ``openapi.py``, so the
  document states exactly what the server enforces (a property test checks both sides).
- A missing or malformed value raises ``MissingParameter``/``InvalidParameter`` naming it
  (400); a validator never raises anything else and never echoes more than 40 characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from multidict import MultiMapping

from astra.core import DataType, InvalidParameter, MissingParameter

__all__ = [
    "API_KEY_QUERY",
    "DEFAULT_TRADES_LIMIT",
    "MAX_DEPTH",
    "MAX_JSON_NESTING",
    "MAX_SINCE",
    "MAX_TRADES_LIMIT",
    "MAX_VENUES",
    "MAX_WS_MESSAGE_BYTES",
    "MAX_WS_SUBSCRIPTIONS",
    "PRIVATE_DATA_TYPES",
    "WS_DATA_TYPES",
    "bool_param",
    "check_json_nesting",
    "int_param",
    "only_params",
    "required",
    "venues_param",
]

MAX_DEPTH = 5000  # GET /orderbook?depth=: levels per side
MAX_TRADES_LIMIT = 1000  # GET /trades?limit=
DEFAULT_TRADES_LIMIT = 100
MAX_SINCE = 10**15 - 1  # GET /fills?since=: epoch ms, 15 digits (year 33658)
# WS /ws?dataType=: the market streams, then the account streams (with exchange=).
PRIVATE_DATA_TYPES = ("ORDERS", "FILLS", "BALANCES")
WS_DATA_TYPES = (*(d.value for d in DataType), *PRIVATE_DATA_TYPES)
MAX_WS_SUBSCRIPTIONS = 100  # WS /ws: market streams on one connection
MAX_WS_MESSAGE_BYTES = 4096  # WS /ws: a client message (larger: closed with 1009)


MAX_VENUES = 32  # GET /orderbook?venues=: codes in the list
# '[' and '{' in a JSON request body or WS message, checked before decoding (check_json_nesting)
MAX_JSON_NESTING = 256  # arrays and objects inside each other (check_json_nesting)
API_KEY_QUERY = "apiKey"  # a WebSocket handshake's key in its URL (auth.py judges it)


def only_params(query: MultiMapping[str], names: tuple[str, ...], where: str, *,
                repeatable: tuple[str, ...] = ()) -> MultiMapping[str]:
    """``query`` when each of its names is one of ``names`` (or the handshake's key), given
    once unless ``repeatable``: a misspelt or doubled parameter is a 400 naming it, never
    silently ignored (which of two was meant?)."""
    for name in query:
        if name == API_KEY_QUERY:
            continue
        if name not in names:
            takes = ", ".join(names) or "no parameter"
            raise InvalidParameter(name[:40], f"unknown parameter: {where} takes {takes}")
        if name not in repeatable and len(query.getall(name)) > 1:
            raise InvalidParameter(name, "given more than once")
    return query


def bool_param(query: Mapping[str, str], name: str) -> bool:
    """``true``/``false`` (any case; absent is false)."""
    text = query.get(name)
    if text is None:
        return False
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise InvalidParameter(name, f"expected true or false, got {text[:40]!r}")
    return lowered == "true"


def venues_param(query: Mapping[str, str], name: str = "venues") -> list[str] | None:
    """A comma-separated list of venue codes (None when absent; present but empty: 400)."""
    text = query.get(name)
    if text is None:
        return None
    codes = [c.upper() for c in text.split(",")]
    if not all(c.isascii() and c.isalnum() for c in codes) or len(codes) > MAX_VENUES:
        raise InvalidParameter(
            name, f"expected 1 to {MAX_VENUES} comma-separated venue codes, got {text[:40]!r}")
    return codes


def required(query: Mapping[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise MissingParameter(name)
    return value


def int_param(
    query: Mapping[str, str], name: str, default: int | None, maximum: int, minimum: int = 1
) -> int | None:
    """``name`` as an integer from ``minimum`` to ``maximum`` (``-?[0-9]+``: ASCII digits, no
    plus sign, exponent, spaces or other scripts' digits), or ``default`` when absent."""
    text = query.get(name)
    if text is None:
        return default
    expected = f"expected an integer from {minimum} to {maximum}"
    unsigned = text.removeprefix("-")
    digits = unsigned.lstrip("0") or "0"  # (leading zeros are the same integer)
    # The length bound keeps int() away from 4,300-digit strings (a ValueError, i.e. a 500).
    if not (unsigned.isascii() and unsigned.isdigit()) or len(digits) > len(str(maximum)):
        raise InvalidParameter(name, f"{expected}, got {text[:40]!r}")
    value = -int(digits) if text.startswith("-") else int(digits)
    if not minimum <= value <= maximum:
        raise InvalidParameter(name, f"{expected}, got {value}")
    return value


def check_json_nesting(raw: bytes | str, parameter: str = "body") -> None:
    """Refuse (400) JSON nested deeper than ``MAX_JSON_NESTING`` arrays and objects before it
    is decoded. msgspec's decoders recurse once per nesting level, bounded only by the
    interpreter's recursion limit: at the default limit a deep body raises ``RecursionError``
    (a 500), and a dependency may raise the limit (py_ecc, imported with eth_account for
    wallet keys, sets 100000), deep enough for ~60 KB of '[' to overflow the C stack and kill
    the process. Cost: two C-speed counts; only a text with more brackets than the bound is
    measured (its strings removed, then its brackets walked)."""
    data = raw.encode() if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_NESTING:
        return  # cannot nest deeper than it has brackets
    depth = 0
    for byte in _STRING.sub(b'""', data).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in _OPENERS else -1
        if depth > MAX_JSON_NESTING:  # at once: a deep body is refused after 257 brackets
            raise InvalidParameter(parameter,
                                   f"JSON nested deeper than {MAX_JSON_NESTING} levels")


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')  # a JSON string, escapes included
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")
