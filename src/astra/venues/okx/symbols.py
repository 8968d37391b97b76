"""OKX instruments <-> Astra market symbols (pure functions).

Mapping (``instType`` -> Astra type), base/quote from ccxt's ``baseId``/``quoteId`` (the
instrument family ``uly`` for derivatives), kept as OKX names them:

    SPOT     BTC-USDT                -> OKX-SPOT-BTC-USDT
    SWAP     BTC-USDT-SWAP (linear)  -> OKX-PERP-BTC-USDT
    SWAP     BTC-USD-SWAP (inverse)  -> OKX-PERP-BTC-USD-COINM
    FUTURES  BTC-USDT-220527         -> OKX-FUT-BTC-USDT-220527
    FUTURES  BTC-USD-220527          -> OKX-FUT-BTC-USD-220527-COINM
    OPTION   BTC-USD-220514-22000-C  -> OKX-OPT-BTC-USD-220514-22000-C-COINM

``-COINM`` marks contracts settled in their base coin (ccxt's ``inverse``; OKX's coin-margined
options included). The expiry is the UTC date of ``expTime`` (OKX's own instId carries the same
date); the strike is OKX's ``stk`` text, so ``0.5`` stays exact. Instruments that do not fit
the symbol grammar (e.g. pre-open ``BTC-USD_UM-SWAP``) or that would repeat a symbol already
taken are skipped, never mangled. Markets come from ccxt's ``okx.parse_market``, so a recorded
or injected instruments response maps exactly as a live ``load_markets`` would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from astra.core import (
    AssetType,
    OptionType,
)
from astra.venues.base import VenueMarket
from astra.venues.ccxt_markets import astra_symbol, metadata_from_ccxt

__all__ = ["instruments_from_raw", "market_from_ccxt", "markets_from_ccxt"]

log = logging.getLogger(__name__)

# ccxt market type -> (Astra type, VenueMarket.kind = OKX's instType)
_TYPES = {
    "spot": (AssetType.SPOT, "SPOT"),
    "swap": (AssetType.PERP, "SWAP"),
    "future": (AssetType.FUT, "FUTURES"),
    "option": (AssetType.OPT, "OPTION"),
}
# OKX ``state`` -> MarketMetadata.status
_STATUS = {"live": "TRADING", "suspend": "HALTED", "preopen": "PREOPEN", "test": "TEST"}


def _expiry(ms: object) -> str | None:
    if not isinstance(ms, int | float) or ms <= 0:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%y%m%d")


def _number(text: object) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def market_from_ccxt(code: str, m: dict) -> VenueMarket | None:
    """One ccxt unified market of the ``okx`` client (``m['info']`` is OKX's instrument) as
    a VenueMarket, or None when it does not fit the symbol grammar."""
    kind_of = _TYPES.get(m.get("type") or "")
    if kind_of is None:
        return None
    asset_type, kind = kind_of
    info = m.get("info") or {}
    base_id, quote_id = str(m.get("baseId") or "").upper(), str(m.get("quoteId") or "").upper()
    coinm = "COINM" if m.get("contract") and m.get("inverse") else None
    expiry = strike = option_type = None
    if asset_type in (AssetType.FUT, AssetType.OPT):
        expiry = _expiry(m.get("expiry"))
    if asset_type is AssetType.OPT:
        option_type = {"C": OptionType.CALL, "P": OptionType.PUT}.get(info.get("optType"))
        try:
            strike = Decimal(str(info.get("stk")))
        except InvalidOperation:
            return None
    symbol = astra_symbol(
        code,
        asset_type,
        base_id,
        quote_id,
        expiry=expiry,
        strike=strike,
        option_type=option_type,
        disambiguator=coinm,
    )
    if symbol is None:
        return None
    contract_size = None
    if m.get("contract"):
        # ccxt reports ctVal only; an OKX contract is ctVal * ctMult (BTC options: 1 * 0.1 BTC).
        ct_val, ct_mult = _number(info.get("ctVal")), _number(info.get("ctMult")) or 1.0
        contract_size = ct_val * ct_mult if ct_val is not None else m.get("contractSize")
    state = str(info.get("state") or "")
    metadata = metadata_from_ccxt(
        code,
        m,
        symbol,
        asset_type,
        base_asset=base_id,
        quote_asset=quote_id,
        status=_STATUS.get(state, state.upper() or None),
        expiry=expiry,
        strike=strike,
        option_type=option_type,
        contract_size=contract_size,
    )
    return VenueMarket(symbol=symbol, exchange_symbol=m["id"], kind=kind, metadata=metadata)


def markets_from_ccxt(code: str, markets: Iterable[dict]) -> dict[str, VenueMarket]:
    """``{astra_symbol: VenueMarket}``; a second instrument claiming a symbol is dropped."""
    found: dict[str, VenueMarket] = {}
    for m in markets:
        vm = market_from_ccxt(code, m)
        if vm is None:
            continue
        taken = found.get(vm.symbol)
        if taken is not None and taken.exchange_symbol != vm.exchange_symbol:
            log.warning(
                "%s: %s and %s both map to %s; keeping the first",
                *(code, taken.exchange_symbol, vm.exchange_symbol, vm.symbol),
            )
            continue
        found[vm.symbol] = vm
    return found


def instruments_from_raw(raw: object) -> list[dict]:
    """OKX instrument dicts from raw ``GET /api/v5/public/instruments`` material: one
    response ``{"code": "0", "data": [...]}``, a list of responses, a list of instruments,
    or any of these as JSON text/bytes."""
    if isinstance(raw, str | bytes | bytearray):
        raw = json.loads(raw)
    if isinstance(raw, dict):
        if "instId" in raw:
            return [raw]
        if raw.get("code", "0") != "0":
            raise ValueError(f"OKX instruments response is an error: {raw.get('msg')!r}")
        return instruments_from_raw(raw.get("data") or [])
    if isinstance(raw, list):
        return [inst for item in raw for inst in instruments_from_raw(item)]
    raise TypeError(f"not an OKX instruments response: {type(raw).__name__}")
