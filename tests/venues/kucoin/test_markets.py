"""KuCoin markets through ccxt's own parsing: the recorded spot instrument list
(``KUCOIN.0``) and a futures ``/api/v1/contracts/active`` sample written from the docs."""

from __future__ import annotations

import pytest

from astra.core import AssetType, parse_market
from astra.venues.kucoin import KucoinCredentials, KucoinUrls, KucoinVenue
from astra.venues.kucoin.symbols import market_from_ccxt, markets_from_ccxt, parse_ccxt_markets


def test_recorded_spot_instruments_map_to_astra_symbols(kucoin_recording):
    raw = kucoin_recording.spot_symbols["data"]
    markets = markets_from_ccxt("KUCOIN", parse_ccxt_markets(kucoin_recording.spot_symbols))
    assert len(markets) == len(raw) == 634  # every recorded instrument fits the grammar
    assert {m.exchange_symbol for m in markets.values()} == {r["symbol"] for r in raw}
    for symbol, m in markets.items():
        assert str(parse_market(symbol)) == symbol and m.kind == "spot"

    btc = markets["KUCOIN-SPOT-BTC-USDT"]
    assert btc.exchange_symbol == "BTC-USDT"
    md = btc.metadata
    assert (md.asset_type, md.base_asset, md.quote_asset) == (AssetType.SPOT, "BTC", "USDT")
    info = next(r for r in raw if r["symbol"] == "BTC-USDT")
    assert md.tick_size == float(info["priceIncrement"])
    assert md.lot_size == float(info["baseIncrement"])
    assert md.min_quantity == float(info["baseMinSize"])
    assert md.min_notional == float(info["quoteMinSize"])
    assert md.status == "TRADING" and md.contract_size is None and md.margin_asset is None


def test_renamed_spot_instruments_keep_the_id_in_the_symbol_and_the_asset_in_metadata(
    kucoin_recording,
):
    markets = markets_from_ccxt("KUCOIN", parse_ccxt_markets(kucoin_recording.spot_symbols))
    bsv = markets["KUCOIN-SPOT-BCHSV-USDT"]  # the WebSocket topic and REST use BCHSV-USDT
    assert bsv.exchange_symbol == "BCHSV-USDT" and bsv.metadata.base_asset == "BSV"
    assert markets["KUCOIN-SPOT-R-BTC"].metadata.base_asset == "REV"
    assert markets["KUCOIN-SPOT-LYXE-ETH"].metadata.base_asset == "LYXE"  # venue says "LYXe"
    halted = [m for m in markets.values() if m.metadata.status == "HALTED"]
    disabled = [
        r["symbol"] for r in kucoin_recording.spot_symbols["data"] if not r["enableTrading"]
    ]
    assert [m.exchange_symbol for m in halted] == disabled


def test_futures_contracts_map_to_perp_fut_and_coinm(contracts_active):
    markets = markets_from_ccxt("KUCOIN", parse_ccxt_markets(contracts=contracts_active))
    assert sorted(markets) == [
        "KUCOIN-FUT-XBT-USD-260327-COINM",
        "KUCOIN-PERP-1000PEPE-USDT",
        "KUCOIN-PERP-ETH-USDC",
        "KUCOIN-PERP-XBT-USD-COINM",
        "KUCOIN-PERP-XBT-USDT",
    ]
    linear = markets["KUCOIN-PERP-XBT-USDT"]
    assert (linear.exchange_symbol, linear.kind) == ("XBTUSDTM", "perp")
    md = linear.metadata
    assert (md.base_asset, md.quote_asset, md.margin_asset) == ("BTC", "USDT", "USDT")
    assert (md.contract_size, md.tick_size, md.lot_size) == (0.001, 0.1, 0.001)  # 1 lot, in BTC

    inverse = markets["KUCOIN-PERP-XBT-USD-COINM"].metadata
    assert inverse.exchange_symbol == "XBTUSDM"
    assert (inverse.margin_asset, inverse.contract_size) == ("BTC", 1.0)  # 1 USD per lot

    dated = markets["KUCOIN-FUT-XBT-USD-260327-COINM"]
    assert dated.kind == "future" and dated.metadata.expiry == "260327"
    assert dated.metadata.asset_type == AssetType.FUT
    assert markets["KUCOIN-PERP-ETH-USDC"].metadata.status == "HALTED"  # status "Paused"


def test_instruments_that_do_not_fit_are_skipped_and_symbols_stay_unique():
    base = {"id": "X", "spot": True, "baseId": "ABC", "quoteId": "USDT", "active": True}
    assert market_from_ccxt("KUCOIN", dict(base, baseId="abc")) is None  # not mangled
    assert market_from_ccxt("KUCOIN", dict(base, spot=False, option=True)) is None
    first, second = dict(base, id="ABC-USDT"), dict(base, id="ABC2-USDT")
    markets = markets_from_ccxt("KUCOIN", [first, second])
    assert [m.exchange_symbol for m in markets.values()] == ["ABC-USDT"]


async def test_venue_uses_an_injected_markets_source(kucoin_recording, contracts_active):
    calls = 0

    async def source():
        nonlocal calls
        calls += 1
        return parse_ccxt_markets(kucoin_recording.spot_symbols, contracts_active)

    venue = KucoinVenue(urls=KucoinUrls.for_server("http://127.0.0.1:9"), markets_source=source)
    try:
        markets = await venue.load_markets()
        assert await venue.load_markets() is markets and calls == 1
        assert len(markets) == 634 + 5
    finally:
        await venue.close()


def test_from_config():
    venue = KucoinVenue.from_config(
        {"spot_rest": "http://127.0.0.1:1", "spot_ws": "ws://127.0.0.1:2/x", "silence": 5.0}
    )
    assert venue.urls.spot_rest == "http://127.0.0.1:1"
    assert venue.urls.futures_rest == "https://api-futures.kucoin.com"
    assert venue.urls.spot_ws == "ws://127.0.0.1:2/x" and venue.silence == 5.0
    assert venue.credentials is None
    keyed = KucoinVenue.from_config(
        {"api_key": "k", "api_secret": "SECRET-1", "api_passphrase": "PHRASE-2"}
    )
    assert keyed.credentials == KucoinCredentials("k", "SECRET-1", "PHRASE-2")
    assert "SECRET" not in repr(keyed.credentials) and "PHRASE" not in repr(keyed.credentials)
    with pytest.raises(ValueError, match="unknown options"):
        KucoinVenue.from_config({"spot_url": "x"})
    with pytest.raises(ValueError, match="go together"):
        KucoinVenue.from_config({"api_key": "k"})
