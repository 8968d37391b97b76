"""OKX markets: the recorded instrument lists (OKX.0, 2022) and samples in today's documented
shape, parsed through ccxt's ``okx.parse_market`` with no network, mapped to Astra symbols."""

from __future__ import annotations

import json

import ccxt
import pytest

from astra.core import parse_market
from astra.venues.okx import OkxVenue, from_config
from astra.venues.okx.symbols import instruments_from_raw, market_from_ccxt, markets_from_ccxt


async def _markets(raw) -> dict:
    venue = OkxVenue(markets=raw)
    try:
        return await venue.load_markets()
    finally:
        await venue.close()


def _parse(inst: dict):
    return market_from_ccxt("OKX", ccxt.okx().parse_market(inst))


# GET /api/v5/public/instruments?instType=FUTURES, element shape of the current v5 docs
# (instFamily, ruleType, ...): a USDT-margined quarterly.
FUTURE_USDT = {
    "alias": "quarter",
    "baseCcy": "",
    "category": "1",
    "ctMult": "1",
    "ctType": "linear",
    "ctVal": "0.01",
    "ctValCcy": "BTC",
    "expTime": "1782460800000",
    "instFamily": "BTC-USDT",
    "instId": "BTC-USDT-260626",
    "instType": "FUTURES",
    "lever": "100",
    "listTime": "1766736000000",
    "lotSz": "0.1",
    "maxLmtSz": "10000",
    "maxMktSz": "3000",
    "minSz": "0.1",
    "optType": "",
    "quoteCcy": "",
    "ruleType": "normal",
    "settleCcy": "USDT",
    "state": "live",
    "stk": "",
    "tickSz": "0.1",
    "uly": "BTC-USDT",
}


async def test_recorded_instruments_map_to_astra_symbols(okx_instruments):
    markets = await _markets(okx_instruments)
    raw = instruments_from_raw(okx_instruments)
    assert len(raw) == 513 + 166 + 104 + 346 + 350
    assert len(markets) == len(raw)  # every 2022 instrument fits the grammar
    expected = {
        "OKX-SPOT-BTC-USDT": ("BTC-USDT", "SPOT"),
        "OKX-PERP-BTC-USDT": ("BTC-USDT-SWAP", "SWAP"),
        "OKX-PERP-BTC-USD-COINM": ("BTC-USD-SWAP", "SWAP"),
        "OKX-PERP-UNI-USD-COINM": ("UNI-USD-SWAP", "SWAP"),
        "OKX-FUT-BTC-USDT-220527": ("BTC-USDT-220527", "FUTURES"),
        "OKX-FUT-BTC-USD-220527-COINM": ("BTC-USD-220527", "FUTURES"),
        "OKX-OPT-BTC-USD-220514-22000-C-COINM": ("BTC-USD-220514-22000-C", "OPTION"),
        "OKX-OPT-ETH-USD-220514-1300-P-COINM": ("ETH-USD-220514-1300-P", "OPTION"),
    }
    for symbol, (inst_id, kind) in expected.items():
        assert (markets[symbol].exchange_symbol, markets[symbol].kind) == (inst_id, kind)
    for symbol, market in markets.items():
        assert str(parse_market(symbol)) == symbol == market.metadata.symbol
    assert len({m.exchange_symbol for m in markets.values()}) == len(markets)


async def test_recorded_metadata(okx_instruments):
    markets = await _markets(okx_instruments)
    spot = markets["OKX-SPOT-BTC-USDT"].metadata
    assert (spot.base_asset, spot.quote_asset, spot.margin_asset) == ("BTC", "USDT", None)
    assert (spot.tick_size, spot.lot_size, spot.min_quantity) == (0.1, 1e-08, 1e-05)
    assert spot.contract_size is None and spot.status == "TRADING"

    inverse = markets["OKX-PERP-BTC-USD-COINM"].metadata
    assert (inverse.base_asset, inverse.quote_asset, inverse.margin_asset) == ("BTC", "USD", "BTC")
    assert inverse.contract_size == 100.0  # USD per contract

    future = markets["OKX-FUT-BTC-USDT-220527"].metadata
    assert (future.expiry, future.margin_asset, future.contract_size) == ("220527", "USDT", 0.01)

    option = markets["OKX-OPT-BTC-USD-220514-22000-C-COINM"].metadata
    assert (option.expiry, option.strike, option.option_type) == ("220514", 22000.0, "C")
    assert option.margin_asset == "BTC"
    assert option.contract_size == pytest.approx(0.1)  # ctVal 1 x ctMult 0.1 BTC
    assert option.tick_size == 0.0005


async def test_a_preloaded_ccxt_object_is_a_markets_source(okx_instruments):
    exchange = ccxt.okx()
    exchange.set_markets([exchange.parse_market(i) for i in instruments_from_raw(okx_instruments)])
    from_object = await _markets(exchange)
    from_text = await _markets(json.dumps(okx_instruments[0]))  # raw JSON text works too
    assert from_object.keys() >= from_text.keys()
    assert from_object["OKX-SPOT-BTC-USDT"] == from_text["OKX-SPOT-BTC-USDT"]
    with pytest.raises(ValueError, match="no markets loaded"):
        await _markets(ccxt.okx())


def test_documented_usdt_future_and_odd_instruments():
    future = _parse(FUTURE_USDT)
    assert future.symbol == "OKX-FUT-BTC-USDT-260626"
    assert future.metadata.expiry == "260626" and future.metadata.margin_asset == "USDT"
    inverse = {
        "instId": "BTC-USD-260626",
        "ctType": "inverse",
        "settleCcy": "BTC",
        "uly": "BTC-USD",
    }
    inverse = _parse({**FUTURE_USDT, **inverse, "instFamily": "BTC-USD"})
    assert inverse.symbol == "OKX-FUT-BTC-USD-260626-COINM"
    option = {"instType": "OPTION", "instId": "ETH-USD-260626-2.5-P", "uly": "ETH-USD"}
    option = _parse({**FUTURE_USDT, **option, "settleCcy": "ETH", "stk": "2.5", "optType": "P"})
    assert option.symbol == "OKX-OPT-ETH-USD-260626-2.5-P-COINM"
    # Pre-open swaps OKX lists with only an id, and families whose names break the grammar.
    assert _parse({"instId": "ETH-USD_UM-SWAP", "instType": "SWAP", "state": "preopen"}) is None
    assert _parse({**FUTURE_USDT, "instType": "SWAP", "uly": "BTC-USD_UM"}) is None
    suspended = _parse({**FUTURE_USDT, "state": "suspend"})
    assert suspended.metadata.status == "HALTED"


def test_a_repeated_symbol_keeps_the_first_instrument():
    ex = ccxt.okx()
    first = ex.parse_market(FUTURE_USDT)
    twin = ex.parse_market({**FUTURE_USDT, "instId": "BTC-USDT-260626-B"})
    markets = markets_from_ccxt("OKX", [first, twin])
    assert list(markets) == ["OKX-FUT-BTC-USDT-260626"]
    assert markets["OKX-FUT-BTC-USDT-260626"].exchange_symbol == "BTC-USDT-260626"


def test_raw_sources_and_config():
    assert instruments_from_raw(b'{"code":"0","data":[{"instId":"A-B"}]}') == [{"instId": "A-B"}]
    with pytest.raises(ValueError, match="error"):
        instruments_from_raw({"code": "50011", "msg": "Too Many Requests", "data": []})
    venue = from_config("OKX", {"public_ws": "ws://127.0.0.1:1/ws", "book_channel": "books"})
    assert venue.urls.public_ws == "ws://127.0.0.1:1/ws" and venue.urls.rest.startswith("https")
    with pytest.raises(ValueError, match="unknown options"):
        from_config("OKX", {"ws": "x"})
    with pytest.raises(ValueError, match="book_channel"):
        OkxVenue(book_channel="books5")  # full-book pushes: not the incremental rule
