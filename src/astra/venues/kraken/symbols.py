"""Kraken spot pairs <-> Astra market symbols.

Kraken names one pair three ways: the REST id (``XXBTZUSD``, legacy X/Z-prefixed asset ids),
the v1 WebSocket name ``wsname`` (``XBT/USD``, the assets' altnames, also what Kraken shows
users) and the v2 WebSocket symbol (``BTC/USD``). The Astra symbol keeps Kraken's own
asset names from ``wsname``: ``XBT/USD`` -> ``KRAKEN-SPOT-XBT-USD``, ``XDG/USD`` ->
``KRAKEN-SPOT-XDG-USD``. ``baseAsset``/``quoteAsset`` are AbstractTokens
(``normalize_token(name, "KRAKEN")``: ``BTC``, ``DOGE``). ``exchangeSymbol`` is the REST id.

Invariants:
- Markets come from ccxt's own parse of ``GET /0/public/AssetPairs`` (``kraken.fetch_markets``
  fed the response, so no network is touched here).
- Pairs with no ``wsname`` (the ``.d`` dark-pool pairs: no public book) and pairs whose names
  do not fit the symbol grammar (``ETH2.S/ETH``) are skipped, never mangled.
- The v2 symbol is the wsname with Kraken's two v2 renames (``XBT`` -> ``BTC``, ``XDG`` ->
  ``DOGE``); every other asset keeps its altname on v2.
- ``price_decimals``/``qty_decimals`` come from ccxt's market precision (tick sizes
  ``10**-pair_decimals`` and ``10**-lot_decimals``); the v2 book checksum is computed from
  them, so a market whose precision is not a power of ten is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import ccxt

from astra.core import AssetType
from astra.venues.base import VenueMarket
from astra.venues.ccxt_markets import astra_symbol, metadata_from_ccxt

__all__ = [
    "V2_RENAMES",
    "KrakenMarket",
    "decimals_of",
    "markets_from_asset_pairs",
    "markets_from_ccxt",
    "parse_asset_pairs",
    "v2_symbol",
]

# Assets whose v2 WebSocket name differs from their altname (Kraken's v1 -> v2 change).
V2_RENAMES = {"XBT": "BTC", "XDG": "DOGE"}

# Kraken pair statuses (AssetPairs ``status``); older responses carry none (all were tradable).
_STATUS = {
    None: "TRADING",
    "online": "TRADING",
    "cancel_only": "CANCEL_ONLY",
    "post_only": "POST_ONLY",
    "limit_only": "LIMIT_ONLY",
    "reduce_only": "REDUCE_ONLY",
    "delisted": "DELISTED",
}


@dataclass(frozen=True, slots=True)
class KrakenMarket(VenueMarket):
    """A VenueMarket plus what the v2 feed needs: its symbol there and the checksum precision."""

    ws_symbol: str = ""  # v2 WebSocket symbol, e.g. BTC/USD
    price_decimals: int = 0
    qty_decimals: int = 0


def v2_symbol(wsname: str) -> str:
    """``XBT/USD`` -> ``BTC/USD``; names Kraken did not rename pass through."""
    base, quote = wsname.split("/")
    return f"{V2_RENAMES.get(base, base)}/{V2_RENAMES.get(quote, quote)}"


def decimals_of(tick: float | None) -> int | None:
    """Decimal places of a power-of-ten tick (``0.001`` -> 3, ``1`` -> 0), else None."""
    if tick is None or tick <= 0:
        return None
    d = Decimal(repr(tick)).normalize()
    if d.as_tuple().digits != (1,):
        return None
    return max(0, -d.as_tuple().exponent)


def parse_asset_pairs(response: dict) -> list[dict]:
    """ccxt's unified markets for an AssetPairs response (``{"error": [], "result": {...}}``)."""
    exchange = ccxt.kraken()
    exchange.publicGetAssetPairs = lambda params=None: response  # no network: the given body
    return exchange.fetch_markets()


def market_from_ccxt(code: str, m: dict) -> KrakenMarket | None:
    """One ccxt ``kraken`` market -> KrakenMarket, or None when it has no public WS book or
    its names do not fit the symbol grammar."""
    info = m.get("info") or {}
    wsname = info.get("wsname")
    if not m.get("spot") or not wsname or wsname.count("/") != 1:
        return None
    base, quote = wsname.split("/")
    symbol = astra_symbol(code, AssetType.SPOT, base, quote)
    if symbol is None:
        return None
    precision = m.get("precision") or {}
    price_dp, qty_dp = decimals_of(precision.get("price")), decimals_of(precision.get("amount"))
    if price_dp is None or qty_dp is None:
        return None
    metadata = metadata_from_ccxt(
        code,
        m,
        symbol,
        AssetType.SPOT,
        base_asset=base,
        quote_asset=quote,
        status=_STATUS.get(info.get("status"), str(info.get("status")).upper()),
    )
    return KrakenMarket(
        symbol=symbol,
        exchange_symbol=m["id"],
        kind="spot",
        metadata=metadata,
        ws_symbol=v2_symbol(wsname),
        price_decimals=price_dp,
        qty_decimals=qty_dp,
    )


def markets_from_asset_pairs(code: str, response: dict) -> dict[str, KrakenMarket]:
    """``{astra_symbol: KrakenMarket}`` for an AssetPairs response."""
    return markets_from_ccxt(code, parse_asset_pairs(response))


def markets_from_ccxt(code: str, parsed: Iterable[dict]) -> dict[str, KrakenMarket]:
    """``{astra_symbol: KrakenMarket}`` for ccxt's parse of an AssetPairs response."""
    found = (market_from_ccxt(code, m) for m in parsed)
    return {m.symbol: m for m in found if m is not None}
