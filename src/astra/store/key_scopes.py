"""What an API key may do: its scopes, expiry and IP allow-list, and when it was last used.

These live in their own table, ``api_key_scopes`` (``key_id`` primary key), beside
``api_keys``, so databases made before scopes existed keep working with no migration:
``create_all`` adds the new table and leaves ``api_keys`` as it was.

Invariants:
- A key with no row here has every scope, no expiry and no allow-list: keys issued before
  scopes existed keep full access. A row never narrows a key after the fact except through
  this module's writers (``create`` in ``keys.py`` and ``touch``).
- Scopes are a subset of ``SCOPES``; the allow-list holds canonical CIDRs (``ip_network``,
  strict); an expiry is epoch ms. Anything else is a ``ValueError`` naming the parameter
  (``scopes``, ``allowIps``, ``expiresAt``) before a row is written.
- ``last_used_at`` is advisory (written at most every ``TOUCH_EVERY`` seconds per key, off the
  event loop): it never decides access.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from datetime import UTC, date, datetime

import sqlalchemy as sa

from ._db import METADATA

__all__ = [
    "ALL_SCOPES",
    "API_KEY_SCOPES",
    "SCOPES",
    "TOUCH_EVERY",
    "ScopeError",
    "ip_allowed",
    "parse_allow_ips",
    "parse_expiry",
    "parse_scopes",
]

# read: public market data (and history); trade: orders, fills, balances, positions and the
# private streams; otc: the OTC desk; admin: managing API keys.
SCOPES = ("read", "trade", "otc", "admin")
ALL_SCOPES = frozenset(SCOPES)
TOUCH_EVERY = 60.0  # seconds between two last-used writes of one key
MAX_ALLOW_IPS = 64

API_KEY_SCOPES = sa.Table(
    "api_key_scopes",
    METADATA,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("scopes", sa.String(200), nullable=False),  # comma-separated, sorted
    sa.Column("expires_at", sa.BigInteger, nullable=True),  # ms since the epoch
    sa.Column("allow_ips", sa.Text, nullable=True),  # comma-separated CIDRs
    sa.Column("last_used_at", sa.BigInteger, nullable=True),  # ms since the epoch
)


class ScopeError(ValueError):
    """A bad scope, CIDR or expiry; ``parameter`` is the API's name for the field."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def parse_scopes(value: Iterable[str] | str) -> frozenset[str]:
    """A set of known scopes from a list or a comma-separated string (not empty)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(s, str) for s in items):
        raise ScopeError("scopes", "scopes must be strings")
    scopes = frozenset(s.strip().lower() for s in items if s.strip())
    unknown = sorted(scopes - ALL_SCOPES)
    if unknown:
        raise ScopeError("scopes", f"unknown scope {unknown[0]!r}: expected {', '.join(SCOPES)}")
    if not scopes:
        raise ScopeError("scopes", f"at least one scope is needed: {', '.join(SCOPES)}")
    return scopes


def parse_allow_ips(value: Iterable[str] | str | None) -> tuple[str, ...]:
    """Canonical CIDRs (``10.0.0.0/8``; a bare address is its /32 or /128); () for none."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    if len(items) > MAX_ALLOW_IPS:
        raise ScopeError("allowIps", f"at most {MAX_ALLOW_IPS} networks")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ScopeError("allowIps", "networks must be strings such as '10.0.0.0/8'")
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=True)))
        except ValueError:
            raise ScopeError("allowIps", f"not a network in CIDR form: {item[:60]!r}") from None
    return tuple(out)


def parse_expiry(value: object, now_ms: int) -> int | None:
    """Epoch ms from ms (int) or an ISO date/time (UTC when no zone); must be in the future."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ScopeError("expiresAt", "expected epoch milliseconds or an ISO 8601 date")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            try:
                dt = datetime.combine(date.fromisoformat(value.strip()), datetime.min.time())
            except ValueError:
                raise ScopeError("expiresAt",
                                 "expected epoch milliseconds or an ISO 8601 date") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = int(dt.timestamp() * 1000)
    else:
        raise ScopeError("expiresAt", "expected epoch milliseconds or an ISO 8601 date")
    if ms <= now_ms:
        raise ScopeError("expiresAt", "the expiry is in the past")
    if ms > 253402300799000:  # 9999-12-31: beyond, not a time anyone means
        raise ScopeError("expiresAt", "the expiry is too far in the future")
    return ms


@functools.lru_cache(maxsize=1024)
def _networks(allow_ips: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(n) for n in allow_ips)


def ip_allowed(allow_ips: tuple[str, ...], remote: str | None) -> bool:
    """True when there is no allow-list, or ``remote`` is in one of its networks."""
    if not allow_ips:
        return True
    if not remote:
        return False
    try:
        addr = ipaddress.ip_address(remote)
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:  # ::ffff:10.1.2.3 is 10.1.2.3
        addr = addr.ipv4_mapped
    return any(addr.version == n.version and addr in n for n in _networks(allow_ips))
