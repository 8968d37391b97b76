"""KuCoin instruments <-> Astra market symbols.

- Spot ``BTC-USDT`` -> ``KUCOIN-SPOT-BTC-USDT``: base and quote are the two halves of the
  venue's market id (ccxt's ``baseId``/``quoteId``), which is what the venue's REST and
  WebSocket topics use; ``baseAsset``/``quoteAsset`` are the venue's currency names
  (``baseCurrency``: ``BCHSV-USDT`` trades ``BSV``) as AbstractTokens.
- Futures (``api-futures``): a perpetual ``XBTUSDTM`` -> ``KUCOIN-PERP-XBT-USDT``; an inverse
  (coin-margined) perpetual ``XBTUSDM`` -> ``KUCOIN-PERP-XBT-USD-COINM``; a dated contract
  ``XBTMH26`` -> ``KUCOIN-FUT-XBT-USD-260327-COINM``. ``marginAsset`` is the settle currency
  and ``contractSize`` the lot multiplier (base units, or USD for inverse contracts).
- Instruments whose names do not fit the symbol grammar are left out rather than mangled;
  a second instrument mapping to an already-taken symbol is left out too (logged), so
  symbols are unique.

Parsing goes through ccxt's own KuCoin code (``kucoin`` for spot, ``kucoinfutures`` for
contracts) with its transport replaced by the raw responses: no network, same markets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

import ccxt

from astra.core import AssetType
from astra.venues.base import VenueMarket
from astra.venues.ccxt_markets import astra_symbol, metadata_from_ccxt

__all__ = ["market_from_ccxt", "markets_from_ccxt", "parse_ccxt_markets"]

log = logging.getLogger(__name__)


def parse_ccxt_markets(symbols: dict | None = None, contracts: dict | None = None) -> list[dict]:
    """ccxt unified markets from raw KuCoin responses: ``symbols`` is the body of spot
    ``GET /api/v2/symbols`` (or v1), ``contracts`` that of futures ``/api/v1/contracts/active``.
    Runs ccxt's ``fetch_markets`` with the two endpoints answering from memory."""
    markets: list[dict] = []
    if symbols is not None:
        spot = ccxt.kucoin({"options": {"fetchMarkets": {"types": ["spot"]}}})
        spot.publicGetSymbols = lambda params=None: symbols
        markets += spot.fetch_markets({"fetchTickersFees": False})
    if contracts is not None:
        futures = ccxt.kucoinfutures()
        futures.futuresPublicGetContractsActive = lambda params=None: contracts
        markets += futures.fetch_markets()
    return markets


def _expiry(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%y%m%d")


def market_from_ccxt(code: str, m: dict) -> VenueMarket | None:
    """One ccxt unified KuCoin market as a VenueMarket, or None when it does not fit."""
    info = m.get("info") or {}
    expiry = None
    if m.get("spot"):
        asset_type, kind, disambiguator = AssetType.SPOT, "spot", None
    elif m.get("swap") or m.get("future"):
        if m.get("swap"):
            asset_type, kind = AssetType.PERP, "perp"
        else:
            asset_type, kind = AssetType.FUT, "future"
            expiry = _expiry(m.get("expiry"))
            if expiry is None:
                return None
        disambiguator = "COINM" if m.get("inverse") else None
    else:
        return None
    base_id, quote_id = str(m.get("baseId")), str(m.get("quoteId"))
    symbol = astra_symbol(
        code, asset_type, base_id, quote_id, expiry=expiry, disambiguator=disambiguator
    )
    if symbol is None:
        return None
    metadata = metadata_from_ccxt(
        code,
        m,
        symbol,
        asset_type,
        base_asset=str(info.get("baseCurrency") or base_id),
        quote_asset=str(info.get("quoteCurrency") or quote_id),
        status="TRADING" if m.get("active") else "HALTED",
        expiry=expiry,
    )
    return VenueMarket(symbol=symbol, exchange_symbol=m["id"], kind=kind, metadata=metadata)


def markets_from_ccxt(code: str, markets: Iterable[dict]) -> dict[str, VenueMarket]:
    """``{astra_symbol: VenueMarket}``; the first instrument to claim a symbol keeps it."""
    out: dict[str, VenueMarket] = {}
    for m in markets:
        vm = market_from_ccxt(code, m)
        if vm is None:
            continue
        taken = out.get(vm.symbol)
        if taken is not None:
            log.warning(
                "%s: %s and %s both map to %s; keeping the first",
                code,
                taken.exchange_symbol,
                vm.exchange_symbol,
                vm.symbol,
            )
            continue
        out[vm.symbol] = vm
    return out
