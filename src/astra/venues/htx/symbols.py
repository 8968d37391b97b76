"""HTX instruments <-> Astra market symbols.

Spot ``btcusdt`` (base ``btc``, quote ``usdt``) -> ``HUOBI-SPOT-BTC-USDT``; coin-margined
(inverse) swap ``BTC-USD`` -> ``HUOBI-PERP-BTC-USD-COINM``; USDT-margined (linear) swap
``BTC-USDT`` -> ``HUOBI-PERP-BTC-USDT``. The symbol keeps the venue's asset names upper-cased;
``baseAsset``/``quoteAsset``/``marginAsset`` are AbstractTokens. Dated futures are left out
(their feed ids differ from their market ids), as is anything whose names do not fit the
grammar: skipped, never mangled.

Markets are parsed by ccxt's own ``htx`` code, fed the venue's raw REST responses with no
network (``ccxt_markets``): the responses come from wherever the caller got them (the live
REST API, a recording, a test).
"""

from __future__ import annotations

import ccxt

from astra.core import AssetType
from astra.venues.base import VenueMarket
from astra.venues.ccxt_markets import astra_symbol, metadata_from_ccxt

__all__ = ["SECTIONS", "ccxt_markets", "market_from_ccxt"]

# Raw response sections -> (ccxt implicit-API method answering it, ccxt (type, subType)).
SECTIONS = {
    "spot": ("spotPublicGetV1CommonSymbols", ("spot", None)),  # GET /v1/common/symbols
    "inverse_swap": ("contractPublicGetSwapApiV1SwapContractInfo", ("swap", "inverse")),
    "linear_swap": ("contractPublicGetLinearSwapApiV1SwapContractInfo", (None, "linear")),
}


def ccxt_markets(raw: dict[str, dict]) -> list[dict]:
    """ccxt unified markets from raw responses keyed by ``SECTIONS`` name (missing sections
    are skipped). ccxt's parser is reached through its public fetch method with the REST
    call answered from ``raw``, so nothing leaves the process."""
    exchange = ccxt.htx()  # sync client: constructing it does no I/O
    markets: list[dict] = []
    for section, response in raw.items():
        method, (kind, sub_type) = SECTIONS[section]
        setattr(exchange, method, lambda params=None, response=response: response)
        markets.extend(exchange.fetch_markets_by_type_and_sub_type(kind, sub_type))
    return markets


def market_from_ccxt(code: str, m: dict) -> VenueMarket | None:
    """Map one ccxt ``htx`` market to a VenueMarket, or None when it is not a spot market or
    a perpetual swap (or its names do not fit the symbol grammar)."""
    if m.get("spot"):
        asset_type, kind, disambiguator = AssetType.SPOT, "spot", None
    elif m.get("swap"):
        asset_type = AssetType.PERP
        if m.get("inverse"):
            kind, disambiguator = "inverse_swap", "COINM"
        else:
            kind, disambiguator = "linear_swap", None
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
    )
    return VenueMarket(symbol=symbol, exchange_symbol=m["id"], kind=kind, metadata=metadata)
