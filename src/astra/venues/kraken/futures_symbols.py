"""Kraken Futures instruments <-> Astra market symbols.

Kraken Futures (``futures.kraken.com``, ccxt ``krakenfutures``) names an instrument
``<prefix>_<BASE><QUOTE>[_<YYMMDD>]``; the exchange code stays ``KRAKEN``:

    PF_XBTUSD          linear perpetual (multi-collateral)  -> KRAKEN-PERP-XBT-USD
    PI_XBTUSD          inverse perpetual                     -> KRAKEN-PERP-XBT-USD-COINM
    FF_XBTUSD_220930   linear fixed maturity                 -> KRAKEN-FUT-XBT-USD-220930
    FI_XBTUSD_220930   inverse fixed maturity                -> KRAKEN-FUT-XBT-USD-220930-COINM

Invariants:
- Markets come from ccxt's own parse of ``GET /derivatives/api/v3/instruments``
  (``krakenfutures.fetch_markets`` fed the response, so no network is touched here); its
  ``swap``/``future``, ``inverse`` and ``expiry`` decide the type, ``-COINM`` and the expiry.
  Indices (``in_``/``rr_``) and anything else that is neither are skipped.
- Base and quote keep Kraken's names (``XBT``): the instrument's ``base``/``quote`` fields
  when the response has them, else the id's pair split as ccxt does (quote = last 3 letters).
  ``baseAsset``/``quoteAsset``/``marginAsset`` are ``normalize_token(name, "KRAKEN")``: an
  inverse contract is margined in its base coin, a linear one in USD.
- The expiry is the UTC date of ``lastTradingTime``. Names outside the symbol grammar, or a
  symbol already taken, are skipped, never mangled.
- ``product_id`` (the WebSocket name) is the id upper-cased: Kraken's WebSocket product ids
  are the upper-case REST symbols.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import ccxt

from astra.core import AssetType
from astra.venues.base import VenueMarket
from astra.venues.ccxt_markets import astra_symbol, metadata_from_ccxt

__all__ = [
    "KrakenFuturesMarket",
    "futures_market_from_ccxt",
    "futures_markets_from_ccxt",
    "markets_from_instruments",
    "parse_instruments",
]

log = logging.getLogger(__name__)

FUTURES_KIND = "futures"  # VenueMarket.kind of every Kraken Futures market


@dataclass(frozen=True, slots=True)
class KrakenFuturesMarket(VenueMarket):
    """A VenueMarket plus its name on the futures WebSocket (``PF_XBTUSD``)."""

    product_id: str = ""


def parse_instruments(response: dict) -> list[dict]:
    """ccxt's unified markets for an instruments response (``{"result", "instruments"}``)."""
    exchange = ccxt.krakenfutures()
    exchange.publicGetInstruments = lambda params=None: response  # no network: the given body
    return exchange.fetch_markets()


def _expiry(ms: object) -> str | None:
    if not isinstance(ms, int | float) or ms <= 0:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%y%m%d")


def _names(m: dict) -> tuple[str, str] | None:
    """Kraken's own base and quote names for ccxt market ``m``."""
    info = m.get("info") or {}
    base, quote = info.get("base"), info.get("quote")
    if base and quote:
        return str(base).upper(), str(quote).upper()
    parts = str(m.get("id") or "").upper().split("_")
    if len(parts) < 2 or len(parts[1]) <= 3:
        return None
    return parts[1][:-3], parts[1][-3:]


def _status(info: dict) -> str:
    if not info.get("tradeable", True):
        return "HALTED"
    return "POST_ONLY" if info.get("postOnly") else "TRADING"


def futures_market_from_ccxt(code: str, m: dict) -> KrakenFuturesMarket | None:
    """One ccxt ``krakenfutures`` market -> KrakenFuturesMarket, or None when it is not a
    tradeable contract type or its names do not fit the symbol grammar."""
    if m.get("index") or m.get("type") not in ("swap", "future"):
        return None
    names = _names(m)
    if names is None:
        return None
    base, quote = names
    asset_type = AssetType.PERP if m["type"] == "swap" else AssetType.FUT
    expiry = _expiry(m.get("expiry")) if asset_type is AssetType.FUT else None
    if asset_type is AssetType.FUT and expiry is None:
        return None
    coinm = "COINM" if m.get("inverse") else None
    symbol = astra_symbol(code, asset_type, base, quote, expiry=expiry, disambiguator=coinm)
    if symbol is None:
        return None
    info = m.get("info") or {}
    metadata = metadata_from_ccxt(
        code,
        m,
        symbol,
        asset_type,
        base_asset=base,
        quote_asset=quote,
        status=_status(info),
        expiry=expiry,
    )
    return KrakenFuturesMarket(
        symbol=symbol,
        exchange_symbol=m["id"],
        kind=FUTURES_KIND,
        metadata=metadata,
        product_id=str(m["id"]).upper(),
    )


def markets_from_instruments(code: str, response: dict) -> dict[str, KrakenFuturesMarket]:
    """``{astra_symbol: KrakenFuturesMarket}`` for an instruments response."""
    return futures_markets_from_ccxt(code, parse_instruments(response))


def futures_markets_from_ccxt(
    code: str, parsed: Iterable[dict]
) -> dict[str, KrakenFuturesMarket]:
    """``{astra_symbol: KrakenFuturesMarket}`` for ccxt's parse of an instruments response."""
    markets: dict[str, KrakenFuturesMarket] = {}
    for m in parsed:
        market = futures_market_from_ccxt(code, m)
        if market is None:
            continue
        if market.symbol in markets:
            log.warning(
                "kraken futures: %s and %s both map to %s; keeping the first",
                markets[market.symbol].exchange_symbol,
                market.exchange_symbol,
                market.symbol,
            )
            continue
        markets[market.symbol] = market
    return markets
