"""HTX markets from the recorded instrument lists (spot ``GET /v1/common/symbols``, coin-
margined ``swap_contract_info``) and a documented linear sample, parsed by ccxt's ``htx``
code with no network, mapped to Astra symbols."""

from __future__ import annotations

import pytest

from astra.core import AssetType, parse_market
from astra.venues.htx import HtxUrls, HtxVenue, from_config


async def _markets(markets_source):
    venue = HtxVenue(markets_source=markets_source)
    try:
        return await venue.load_markets()
    finally:
        await venue.close()


async def test_spot_markets_map_to_upper_case_symbols(markets_source, instruments):
    markets = await _markets(markets_source)
    spot = {s: m for s, m in markets.items() if m.kind == "spot"}
    assert len(spot) == len(instruments["spot"]["data"]) == 938  # every pair fits the grammar
    btc = spot["HUOBI-SPOT-BTC-USDT"]
    assert btc.exchange_symbol == "btcusdt"  # the id used in WebSocket topics
    meta = btc.metadata
    assert (meta.base_asset, meta.quote_asset, meta.margin_asset) == ("BTC", "USDT", None)
    assert (meta.tick_size, meta.lot_size) == (0.01, 0.000001)  # price/amount-precision 2/6
    assert (meta.min_quantity, meta.min_notional) == (0.0001, 5.0)
    assert meta.status == "TRADING" and meta.contract_size is None
    # Leveraged tokens keep the venue's names; offline pairs are listed as halted.
    assert spot["HUOBI-SPOT-FIL3S-USDT"].exchange_symbol == "fil3susdt"
    offline = [r["symbol"] for r in instruments["spot"]["data"] if r["state"] == "offline"]
    halted = {m.exchange_symbol for m in spot.values() if m.metadata.status == "HALTED"}
    assert halted == set(offline) and halted


async def test_coin_margined_swaps_are_coinm_perpetuals(markets_source, instruments):
    markets = await _markets(markets_source)
    inverse = {s: m for s, m in markets.items() if m.kind == "inverse_swap"}
    assert len(inverse) == len(instruments["inverse_swap"]["data"]) == 50
    btc = inverse["HUOBI-PERP-BTC-USD-COINM"]
    assert btc.exchange_symbol == "BTC-USD"
    meta = btc.metadata
    assert meta.asset_type is AssetType.PERP
    assert (meta.base_asset, meta.quote_asset, meta.margin_asset) == ("BTC", "USD", "BTC")
    # 100 USD a contract: no lot in base units (it moves with the price)
    assert (meta.contract_size, meta.tick_size, meta.lot_size) == (100.0, 0.1, None)
    assert parse_market(btc.symbol).is_coin_margined


async def test_linear_swaps_are_perpetuals_and_dated_futures_are_left_out(markets_source):
    markets = await _markets(markets_source)
    linear = {s: m for s, m in markets.items() if m.kind == "linear_swap"}
    assert list(linear) == ["HUOBI-PERP-BTC-USDT"]  # BTC-USDT-211231 (futures) is skipped
    meta = linear["HUOBI-PERP-BTC-USDT"].metadata
    assert (meta.margin_asset, meta.contract_size, meta.tick_size) == ("USDT", 0.001, 0.1)


async def test_every_symbol_is_canonical_and_unique(markets_source):
    markets = await _markets(markets_source)
    assert len(markets) == 938 + 50 + 1
    for symbol, market in markets.items():
        assert str(parse_market(symbol)) == symbol == market.metadata.symbol
        assert market.metadata.exchange_symbol == market.exchange_symbol
    ids = [(m.kind, m.exchange_symbol) for m in markets.values()]
    assert len(set(ids)) == len(ids)


async def test_markets_are_loaded_once(instruments):
    calls = 0

    async def source():
        nonlocal calls
        calls += 1
        return {"spot": instruments["spot"]}

    venue = HtxVenue(markets_source=source)
    try:
        first = await venue.load_markets()
        assert await venue.load_markets() is first
        assert calls == 1
    finally:
        await venue.close()


def test_from_config_takes_url_overrides_and_refuses_unknown_keys():
    venue = from_config("HUOBI", {"spot_ws": "ws://127.0.0.1:1/ws", "spot_book": "depth"})
    assert venue.urls.spot_ws == "ws://127.0.0.1:1/ws"
    assert venue.urls.spot_mbp_ws == HtxUrls().spot_mbp_ws
    assert venue.spot_book == "depth" and venue.code == "HUOBI"
    with pytest.raises(ValueError, match="spot_wss"):
        from_config("HUOBI", {"spot_wss": "x"})
    with pytest.raises(ValueError, match="spot_book"):
        from_config("HUOBI", {"spot_book": "l3"})
