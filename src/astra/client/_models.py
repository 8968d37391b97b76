"""msgspec models of answers the server builds outside ``astra.core`` (plain dicts there),
mirroring their wire JSON: API keys (``server/api_keys.py``), ``GET /exchanges``, a cancel of
every open order.

Invariant: field names and types follow what the server sends (camelCase on the wire,
``None`` for null); ``tests/client`` decodes real answers with them.
"""

from __future__ import annotations

import msgspec

__all__ = ["ApiKey", "CanceledOrders", "CreatedApiKey", "ExchangeCapabilities", "ExchangeInfo"]

_STRUCT = dict(kw_only=True, rename="camel")


class ApiKey(msgspec.Struct, **_STRUCT):
    """An API key as ``GET /api-keys`` lists it: never its secret. Times: epoch ms."""

    key_id: str
    label: str
    scopes: list[str]
    created_at: int
    expires_at: int | None = None
    allow_ips: list[str] = []
    last_used_at: int | None = None
    revoked_at: int | None = None


class CreatedApiKey(ApiKey, **_STRUCT):
    """``POST /api-keys``: the new key and its ``token`` (``<keyId>.<secret>``), shown once."""

    token: str


class ExchangeCapabilities(msgspec.Struct, **_STRUCT):
    asset_types: list[str]
    orderbook: str  # the upstream book channel and its integrity rule
    trades: str
    rest: str


class ExchangeInfo(msgspec.Struct, **_STRUCT):
    """One venue of ``GET /exchanges``."""

    exchange: str
    capabilities: ExchangeCapabilities


class CanceledOrders(msgspec.Struct, **_STRUCT):
    """``DELETE /orders?market=`` without an id: how many open orders were canceled."""

    market: str
    canceled: int
