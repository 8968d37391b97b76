"""Binance instruments <-> Astra market symbols.

Each Binance product answers its own ``exchangeInfo``; every entry goes through ccxt's
``binance.parse_market`` (the same parse ccxt's ``fetch_markets`` uses) and then here:

=========  ==============================  ===========================================
section    venue id                        Astra symbol
=========  ==============================  ===========================================
spot       ``BTCUSDT``                     ``BINANCE-SPOT-BTC-USDT``
usdm       ``BTCUSDT`` (PERPETUAL)         ``BINANCE-PERP-BTC-USDT``
usdm       ``BTCUSDT_210924``              ``BINANCE-FUT-BTC-USDT-210924``
coinm      ``BTCUSD_PERP``                 ``BINANCE-PERP-BTC-USD-COINM``
coinm      ``BTCUSD_211231``               ``BINANCE-FUT-BTC-USD-211231-COINM``
option     ``BTC-251123-126000-C``         ``BINANCE-OPT-BTC-USDT-251123-126000-C``
=========  ==============================  ===========================================

Invariants:
- Base and quote in the symbol are the venue's own asset names (``BCHABC`` stays
  ``BCHABC``); ``baseAsset``/``quoteAsset``/``marginAsset`` are
  ``normalize_token(name, "BINANCE")`` (``BCHABC`` -> ``BCH``).
- The expiry is the contract's delivery date in UTC (Binance delivers at 08:00 UTC, so it
  is also the date in the venue's own id); the strike is the venue's decimal text.
- ``-COINM`` marks exactly the contracts ccxt calls inverse (settled in the base asset).
  A contract settled in neither its base nor its quote asset is skipped: the grammar has
  no place for it.
- Instruments whose names do not fit the grammar are skipped, never mangled; two
  instruments that would share a symbol are both dropped (logged), so symbols are unique.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from astra.core import AssetType
from astra.venues.base import VenueMarket
from astra.venues.ccxt_markets import astra_symbol, metadata_from_ccxt

__all__ = ["SECTIONS", "STATUS", "market_from_ccxt", "markets_from_exchange_info"]

log = logging.getLogger(__name__)

# Binance products, as ``VenueMarket.kind``: each has its own REST host and WS endpoint.
SECTIONS = ("spot", "usdm", "coinm", "option")

# Venue statuses (spot ``status``, futures ``contractStatus``, options ``status``) -> ours.
STATUS = {
    "TRADING": "TRADING",
    "PRE_TRADING": "PRE_TRADING",
    "PENDING_TRADING": "PRE_TRADING",
    "BREAK": "HALTED",  # spot: delisted or suspended
    "HALT": "HALTED",
    "AUCTION_MATCH": "HALTED",
    "END_OF_DAY": "HALTED",
    "POST_TRADING": "HALTED",
    "PRE_DELIVERING": "CLOSING",
    "DELIVERING": "CLOSING",
    "PRE_SETTLE": "CLOSING",
    "SETTLING": "CLOSING",
    "DELIVERED": "CLOSED",
    "CLOSE": "CLOSED",
}


def _section(m: dict) -> str | None:
    if m.get("spot"):
        return "spot"
    if m.get("option"):
        return "option"
    if m.get("inverse"):
        return "coinm"
    if m.get("linear"):
        return "usdm"
    return None


def _yymmdd(expiry_ms: int) -> str:
    return datetime.fromtimestamp(expiry_ms / 1000, UTC).strftime("%y%m%d")


def market_from_ccxt(code: str, m: dict) -> VenueMarket | None:
    """One ccxt unified market of the ``binance`` client (``m['info']`` is the venue's
    exchangeInfo entry) as a VenueMarket, or None when it has no Astra symbol."""
    kind = _section(m)
    if kind is None:
        return None
    info = m.get("info") or {}
    base_id, quote_id = str(m["baseId"]), str(m["quoteId"])
    expiry = strike = option_type = None
    disambiguator = "COINM" if kind == "coinm" else None
    if kind == "spot":
        asset_type = AssetType.SPOT
    elif m.get("swap"):
        asset_type = AssetType.PERP
    elif m.get("future"):
        asset_type, expiry = AssetType.FUT, _yymmdd(m["expiry"])
    elif m.get("option") and m.get("expiry") and m.get("optionType") in ("call", "put"):
        asset_type, expiry = AssetType.OPT, _yymmdd(m["expiry"])
        option_type = "C" if m["optionType"] == "call" else "P"
        try:  # the venue's decimal text: a float would turn 0.1 into 0.1000000000000000055
            strike = Decimal(str(info.get("strikePrice")))
        except InvalidOperation:
            return None
    else:
        return None
    symbol = astra_symbol(
        code,
        asset_type,
        base_id,
        quote_id,
        expiry=expiry,
        strike=strike,
        option_type=option_type,
        disambiguator=disambiguator,
    )
    if symbol is None:
        return None
    status = info.get("status") or info.get("contractStatus")
    metadata = metadata_from_ccxt(
        code,
        m,
        symbol,
        asset_type,
        base_asset=base_id,
        quote_asset=quote_id,
        status=STATUS.get(status, str(status)) if status else None,
        expiry=expiry,
        strike=strike,
        option_type=option_type,
    )
    return VenueMarket(symbol=symbol, exchange_symbol=m["id"], kind=kind, metadata=metadata)


def markets_from_exchange_info(
    exchange, code: str, responses: Mapping[str, dict], parsed: dict[str, dict] | None = None
) -> dict[str, VenueMarket]:
    """Every mappable instrument of the raw ``exchangeInfo`` ``responses`` (by section),
    parsed by ``exchange`` (a ccxt binance client; no network is used). ``parsed``, when
    given, receives the ccxt unified market of every instrument returned, by Astra symbol
    (what a ccxt client trading these markets is given, see ``BinanceVenue.private_client``)."""
    # parse_market reads the margin pair lists fetch_markets would have loaded (keys only).
    exchange.options.setdefault("crossMarginPairsData", [])
    exchange.options.setdefault("isolatedMarginPairsData", [])
    found: list[tuple[VenueMarket, dict]] = []
    for section, response in responses.items():
        if section not in SECTIONS:
            raise ValueError(f"unknown Binance section {section!r}; expected one of {SECTIONS}")
        entries: Iterable[dict] = response.get("symbols") or response.get("optionSymbols") or []
        for entry in entries:
            unified = exchange.parse_market(entry)
            market = market_from_ccxt(code, unified) if unified is not None else None
            if market is not None and market.kind == section:
                found.append((market, unified))
    by_symbol: dict[str, VenueMarket] = {}
    ccxt_markets: dict[str, dict] = {}
    clashes: set[str] = set()
    for market, unified in found:
        if market.symbol in by_symbol:
            clashes.add(market.symbol)
        by_symbol[market.symbol] = market
        ccxt_markets[market.symbol] = unified
    for symbol in clashes:  # neither reading is safe to serve
        log.warning("%s: several Binance instruments map to %s; skipped", code, symbol)
        del by_symbol[symbol], ccxt_markets[symbol]
    if parsed is not None:
        parsed.update(ccxt_markets)
    return by_symbol
