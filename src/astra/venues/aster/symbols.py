"""Aster instruments <-> Astra market symbols.

Spot ``BTCUSDT`` -> ``ASTER-SPOT-BTC-USDT``; USD-margined perpetual ``BTCUSDT`` ->
``ASTER-PERP-BTC-USDT``; a coin-margined perpetual would take ``-COINM``. The symbol keeps the
venue's asset names; ``baseAsset``/``quoteAsset``/``marginAsset`` are AbstractTokens.
Instruments whose names do not fit the symbol grammar are left out rather than mangled.

Fees: the exchangeInfo entry's ``makerCommissionRate``/``takerCommissionRate`` where it has
them (the simulator's documented extension: each SIM venue states its own rates), else
Aster's published base-tier rates as ccxt states them (``maker``/``taker``).
"""

from __future__ import annotations

from astra.core import AssetType
from astra.venues.base import VenueMarket
from astra.venues.ccxt_markets import astra_symbol, fee_rate, metadata_from_ccxt

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
    symbol = astra_symbol(code, asset_type, base_id, quote_id, disambiguator=disambiguator)
    if symbol is None:
        return None
    metadata = metadata_from_ccxt(
        code,
        m,
        symbol,
        asset_type,
        base_asset=base_id,
        quote_asset=quote_id,
        status="TRADING" if m.get("active") else "HALTED",
        fees=_fees(m),
    )
    return VenueMarket(symbol=symbol, exchange_symbol=m["id"], kind=kind, metadata=metadata)


def _fees(m: dict) -> tuple[float | None, float | None]:
    info = m.get("info") or {}
    maker = fee_rate(info.get("makerCommissionRate"))
    taker = fee_rate(info.get("takerCommissionRate"))
    return (
        maker if maker is not None else fee_rate(m.get("maker")),
        taker if taker is not None else fee_rate(m.get("taker")),
    )
