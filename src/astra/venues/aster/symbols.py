"""Aster instruments <-> Astra market symbols.

Spot ``BTCUSDT`` -> ``ASTER-SPOT-BTC-USDT``; USD-margined perpetual ``BTCUSDT`` ->
``ASTER-PERP-BTC-USDT``; a coin-margined perpetual would take ``-COINM``. The symbol keeps the
venue's asset names; ``baseAsset``/``quoteAsset``/``marginAsset`` are AbstractTokens.
Instruments whose names do not fit the symbol grammar are left out rather than mangled.
"""

from __future__ import annotations

from astra.core import AssetType, InvalidMarket, MarketMetadata, MarketSymbol, normalize_token
from astra.venues.base import VenueMarket

__all__ = ["market_from_ccxt"]


def market_from_ccxt(code: str, m: dict) -> VenueMarket | None:
    """Map one ccxt unified market of the ``aster`` client (``m['info']`` is the venue's
    exchangeInfo entry) to a VenueMarket, or None when it is not a spot/perpetual market."""
    if m.get("spot"):
        asset_type, kind, disambiguator = AssetType.SPOT, "spot", None
    elif m.get("swap"):
        asset_type, kind = AssetType.PERP, "perp"
        disambiguator = "COINM" if m.get("inverse") else None
    else:
        return None
    base_id, quote_id = str(m["baseId"]).upper(), str(m["quoteId"]).upper()
    try:
        symbol = str(
            MarketSymbol(
                exchange=code,
                asset_type=asset_type,
                base=base_id,
                quote=quote_id,
                disambiguator=disambiguator,
            )
        )
    except InvalidMarket:
        return None
    precision, limits = m.get("precision") or {}, m.get("limits") or {}
    settle = m.get("settleId")
    metadata = MarketMetadata(
        symbol=symbol,
        asset_type=asset_type,
        base_asset=normalize_token(base_id, code),
        quote_asset=normalize_token(quote_id, code),
        margin_asset=normalize_token(str(settle), code) if settle else None,
        tick_size=precision.get("price"),
        lot_size=precision.get("amount"),
        min_quantity=(limits.get("amount") or {}).get("min"),
        min_notional=(limits.get("cost") or {}).get("min"),
        contract_size=m.get("contractSize") if kind == "perp" else None,
        status="TRADING" if m.get("active") else "HALTED",
        exchange_symbol=m["id"],
    )
    return VenueMarket(symbol=symbol, exchange_symbol=m["id"], kind=kind, metadata=metadata)
