"""msgspec models of the OTC desk's API (seed 001: "Request quote", "Accept quote").

Wire names are the reference's (camelCase); amounts are ``Decimal`` so that what a client sends
back is compared exactly, and they go out as JSON numbers (encode with
``decimal_format="number"``). ``fromAsset`` is the asset the client BUYS, ``toAsset`` the one
it SELLS; ``fromAmount`` is in units of ``fromAsset``, ``toAmount`` of ``toAsset``.
``expiryTime`` is Unix MICROseconds; every other time is Unix milliseconds.

Invariants: a ``Quote`` is exactly the seven fields the reference lists, and its ``signature``
(64 lowercase hex characters) covers the six others (``astra.otc.signing``). Request bodies
refuse unknown fields, so a misspelt ``fromAmmount`` is a 400, not a quote for another size.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

__all__ = [
    "ASSET_PRECISION",
    "DEFAULT_PRECISION",
    "AcceptQuote",
    "AcceptedQuote",
    "Convert",
    "ConvertsMessage",
    "OtcAccount",
    "OtcAccountsMessage",
    "Quote",
    "QuoteRequest",
    "QuoteResponse",
]

# Decimal places of each asset's amounts on the desk (quotes, ledger); any other asset has
# DEFAULT_PRECISION. The store fixes an asset's precision the first time it sees the asset.
ASSET_PRECISION: dict[str, int] = {"USD": 4, "USDT": 6, "USDC": 6}
DEFAULT_PRECISION = 8

_STRUCT = dict(kw_only=True, omit_defaults=True, rename="camel")


class QuoteRequest(msgspec.Struct, forbid_unknown_fields=True, **_STRUCT):
    """``POST /request-quote`` body (``GET``: the same names as query parameters)."""

    account_id: str
    from_asset: str  # what the client buys
    to_asset: str  # what the client sells
    from_amount: Decimal | None = None  # exactly one of the two amounts
    to_amount: Decimal | None = None


class Quote(msgspec.Struct, forbid_unknown_fields=True, **_STRUCT):
    account_id: str
    from_asset: str
    to_asset: str
    from_asset_quantity: Decimal  # the client receives this much fromAsset
    to_asset_quantity: Decimal  # and pays this much toAsset
    expiry_time: int  # Unix microseconds
    signature: str  # HMAC-SHA256, 64 hex characters


class QuoteResponse(msgspec.Struct, **_STRUCT):
    quote: Quote
    quote_id: str


class AcceptQuote(msgspec.Struct, forbid_unknown_fields=True, **_STRUCT):
    """``POST /accept-quote`` body: the quote as it was received (``quoteId`` optional: a
    client may send the whole ``request-quote`` answer back)."""

    quote: Quote
    quote_id: str | None = None


class Convert(msgspec.Struct, **_STRUCT):
    """One OTC trade (a "convert") as the client sees it."""

    trade_id: str
    quote_id: str
    account_id: str
    from_asset: str
    to_asset: str
    from_asset_quantity: Decimal
    to_asset_quantity: Decimal
    price: Decimal  # toAsset paid per unit of fromAsset
    time: int  # accepted at, Unix ms


class AcceptedQuote(msgspec.Struct, **_STRUCT):
    """``POST /accept-quote`` answer (the reference shows ``{}``; the booked trade is added)."""

    trade: Convert


class ConvertsMessage(msgspec.Struct, **_STRUCT):
    converts: list[Convert]  # newest first


class OtcAccount(msgspec.Struct, **_STRUCT):
    account_id: str
    name: str | None = None
    spread_bps: Decimal  # the account's spread over the desk's hedge cost
    max_notional: Decimal | None = None  # per trade, in the desk's home asset (USDT)
    daily_volume: Decimal | None = None  # per UTC day, home asset
    volume_today: Decimal = Decimal(0)
    balances: dict[str, Decimal] = {}
    created_at: int | None = None


class OtcAccountsMessage(msgspec.Struct, **_STRUCT):
    accounts: list[OtcAccount]
