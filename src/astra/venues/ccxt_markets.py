"""Shared mapping from ccxt's unified markets to Astra symbols and MarketMetadata.

Each venue's ``symbols.py`` decides what a market *is* (type, expiry, strike, the names its
symbol keeps); this module does the parts that are the same everywhere: building the symbol
(None when the venue's names do not fit the grammar: skipped, never mangled) and reading
tick, lot, minimums, margin asset and contract size from ccxt's ``precision``/``limits``.
Lots and minimums become base units on contracts (``ContractUnits``); on inverse contracts,
whose base size moves with the price, they are left out (``contract_size`` states the unit).
Fees (``maker_fee``/``taker_fee``) are ccxt's ``maker``/``taker``: the venue's published
base-tier rates as fractions, unless the venue package knows better (``fees=``).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from astra.core import (
    AssetType,
    ContractUnits,
    InvalidMarket,
    MarketMetadata,
    MarketSymbol,
    normalize_token,
)

__all__ = ["astra_symbol", "fee_rate", "metadata_from_ccxt"]

_FROM_MARKET = object()  # contract_size not given: ccxt's contractSize for derivatives


def astra_symbol(
    code: str,
    asset_type: AssetType,
    base: str,
    quote: str,
    *,
    expiry: str | None = None,
    strike: Decimal | str | None = None,
    option_type: str | None = None,
    disambiguator: str | None = None,
) -> str | None:
    """The Astra symbol, or None when the parts do not fit the symbol grammar."""
    try:
        return str(
            MarketSymbol(
                exchange=code,
                asset_type=asset_type,
                base=base,
                quote=quote,
                expiry=expiry,
                strike=strike,
                option_type=option_type,
                disambiguator=disambiguator,
            )
        )
    except InvalidMarket:
        return None


def fee_rate(value: object) -> float | None:
    """A fee rate as a float, or None when absent, not a number, not finite or not a
    fraction in (-1, 1) (a rate of 1 or more would make a fee-adjusted bid 0 or negative; NaN
    would unsort a fee-adjusted book)."""
    try:
        rate = None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return rate if rate is not None and -1.0 < rate < 1.0 else None  # (NaN fails both)


def metadata_from_ccxt(
    code: str,
    m: dict,
    symbol: str,
    asset_type: AssetType,
    *,
    base_asset: str,
    quote_asset: str,
    status: str | None,
    expiry: str | None = None,
    strike: Decimal | str | float | None = None,
    option_type: str | None = None,
    contract_size: float | object | None = _FROM_MARKET,
    fees: tuple[float | None, float | None] | None = None,
) -> MarketMetadata:
    """MarketMetadata of ccxt market ``m``; ``base_asset``/``quote_asset`` are the venue's
    names (normalized here to AbstractTokens)."""
    precision, limits = m.get("precision") or {}, m.get("limits") or {}
    derivative = asset_type is not AssetType.SPOT
    settle = m.get("settleId") if derivative else None
    if contract_size is _FROM_MARKET:
        contract_size = m.get("contractSize") if derivative else None
    if fees is None:
        fees = fee_rate(m.get("maker")), fee_rate(m.get("taker"))
    maker, taker = fees
    meta = MarketMetadata(
        symbol=symbol,
        asset_type=asset_type,
        base_asset=normalize_token(base_asset, code),
        quote_asset=normalize_token(quote_asset, code),
        margin_asset=normalize_token(str(settle), code) if settle else None,
        tick_size=precision.get("price"),
        lot_size=precision.get("amount"),
        min_quantity=(limits.get("amount") or {}).get("min"),
        min_notional=(limits.get("cost") or {}).get("min"),
        contract_size=contract_size,
        expiry=expiry,
        strike=float(strike) if strike is not None else None,
        option_type=option_type,
        status=status,
        exchange_symbol=m["id"],
        maker_fee=maker,
        taker_fee=taker,
    )
    units = ContractUnits.of(meta)
    if units is None:
        return meta
    # ccxt states lots and minimums in contracts; Astra's quantities are base units.
    return msgspec.structs.replace(
        meta, lot_size=units.lot(meta.lot_size), min_quantity=units.lot(meta.min_quantity)
    )
