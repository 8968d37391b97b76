"""Coinbase Advanced Trade products <-> Astra market symbols.

Products come from ``GET /api/v3/brokerage/market/products`` (spot) and the same endpoint with
``product_type=FUTURE`` (US derivatives and, where listed, INTX perpetuals), parsed by ccxt's
own ``parse_spot_market`` / ``parse_contract_market``:

- spot ``BTC-USD`` -> ``COINBASE-SPOT-BTC-USD`` (``base_currency_id``/``quote_currency_id``);
- perpetuals (``contract_expiry_type`` PERPETUAL, e.g. ``BTC-PERP-INTX``, and the US
  perpetual-style futures ccxt recognises as swaps) -> ``COINBASE-PERP-BTC-USDC``: base is
  ``contract_root_unit``, quote the product's quote, margined in the quote;
- expiring futures ``BIT-26APR24-CDE`` -> ``COINBASE-FUT-BTC-USD-240426``.

Invariants:
- Symbols are unique: when several contracts would share one symbol (two contract sizes on
  one root and expiry), each gets its ``contract_code`` as disambiguator
  (``COINBASE-FUT-BTC-USD-240426-BIT``); a spot clash keeps neither. Nothing is mangled:
  names outside the symbol grammar are skipped.
- ``exchange_symbol`` is the product id. The WebSocket id can differ: ``-USDC`` spot products
  that alias a ``-USD`` one (``alias`` in the product) stream as that ``-USD`` product on
  public channels, so ``feed_product_id`` returns the alias.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from astra.core import AssetType
from astra.venues.base import VenueMarket
from astra.venues.ccxt_markets import astra_symbol, metadata_from_ccxt

__all__ = ["feed_product_id", "market_from_ccxt", "markets_from_ccxt", "status_of"]

log = logging.getLogger(__name__)


def status_of(m: dict) -> str:
    """TRADING, HALTED (disabled, offline, cancel-only) or DELISTED."""
    info = m.get("info") or {}
    if str(info.get("status") or "").lower() == "delisted":
        return "DELISTED"
    if not m.get("active") or info.get("is_disabled") or info.get("cancel_only"):
        return "HALTED"
    if str(info.get("status") or "online").lower() not in ("online", ""):
        return "HALTED"  # spot says "online"; futures send ""
    return "TRADING"


def feed_product_id(m: dict) -> str:
    """The product id to subscribe on public WebSocket channels."""
    info = m.get("info") or {}
    return str(info.get("alias") or m["id"])


def _yymmdd(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%y%m%d")


def market_from_ccxt(code: str, m: dict, disambiguator: str | None = None) -> VenueMarket | None:
    """Map one ccxt unified ``coinbase`` market (``m['info']`` is the venue's product) to a
    VenueMarket, or None when it is not spot/perpetual/future or does not fit the grammar."""
    expiry = None
    if m.get("spot"):
        asset_type, kind = AssetType.SPOT, "spot"
    elif m.get("swap"):
        asset_type, kind = AssetType.PERP, "perp"
    elif m.get("future") and m.get("expiry"):
        asset_type, kind, expiry = AssetType.FUT, "future", _yymmdd(int(m["expiry"]))
    else:
        return None
    if m.get("inverse"):  # Coinbase lists none; never present one as linear
        return None
    base_id, quote_id = str(m.get("baseId") or "").upper(), str(m.get("quoteId") or "").upper()
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
        base_asset=base_id,
        quote_asset=quote_id,
        status=status_of(m),
        expiry=expiry,
    )
    return VenueMarket(symbol=symbol, exchange_symbol=m["id"], kind=kind, metadata=metadata)


def _contract_code(m: dict) -> str | None:
    details = (m.get("info") or {}).get("future_product_details") or {}
    code = str(details.get("contract_code") or "").upper()
    return code or None


def markets_from_ccxt(code: str, markets: Iterable[dict]) -> dict[str, tuple[VenueMarket, str]]:
    """``{symbol: (VenueMarket, feed product id)}`` for all mappable markets, symbols unique."""
    by_symbol: dict[str, list[tuple[VenueMarket, dict]]] = defaultdict(list)
    for m in markets:
        vm = market_from_ccxt(code, m)
        if vm is not None:
            by_symbol[vm.symbol].append((vm, m))
    result: dict[str, tuple[VenueMarket, str]] = {}
    for symbol, found in by_symbol.items():
        if len(found) == 1:
            vm, m = found[0]
            result[symbol] = (vm, feed_product_id(m))
            continue
        ids = [m["id"] for _, m in found]
        if found[0][0].kind == "spot":
            log.warning("%s: products %s all map to %s; skipped", code, ids, symbol)
            continue
        # Several contracts on one root: each is named by its contract code, when unique.
        codes = [_contract_code(m) for _, m in found]
        for (_, m), contract in zip(found, codes, strict=True):
            vm = market_from_ccxt(code, m, contract) if codes.count(contract) == 1 else None
            if vm is None:
                log.warning("%s: product %s clashes on %s; skipped", code, m["id"], symbol)
            elif vm.symbol in result:  # a contract code equal to another symbol's suffix
                log.warning("%s: product %s clashes on %s; skipped", code, m["id"], vm.symbol)
            else:
                result[vm.symbol] = (vm, feed_product_id(m))
    return result
