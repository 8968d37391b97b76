"""Binance markets: the recorded exchangeInfo of spot, USD-M and COIN-M (and an options
sample written from the ``/eapi/v1/exchangeInfo`` docs) through ccxt's ``parse_market`` and
our mapping, with no network."""

from __future__ import annotations

import copy
from collections import Counter

import ccxt
import pytest

from astra.core import AssetType, parse_market
from astra.venues.binance import BinanceUrls, BinanceVenue
from astra.venues.binance.symbols import markets_from_exchange_info

_parsed: dict[int, dict] = {}


@pytest.fixture
def markets(exchange_info):
    """The mapping of every section, parsed once per session (the responses are cached)."""
    key = id(exchange_info["spot"])
    if key not in _parsed:
        _parsed[key] = markets_from_exchange_info(ccxt.binance(), "BINANCE", exchange_info)
    return _parsed[key]


async def test_venue_loads_injected_markets_without_network(exchange_info, markets):
    venue = BinanceVenue(exchange_info=exchange_info)  # URLs left at the live venue's
    try:
        loaded = await venue.load_markets()
        assert loaded == markets
        assert await venue.load_markets() is loaded  # cached
    finally:
        await venue.close()


def _raw_count(exchange_info) -> int:
    return sum(
        len(body.get("symbols") or body.get("optionSymbols")) for body in exchange_info.values()
    )


def test_counts_per_section_and_type(markets, exchange_info):
    counts = Counter((m.kind, m.metadata.asset_type) for m in markets.values())
    assert counts == {
        ("spot", AssetType.SPOT): len(exchange_info["spot"]["symbols"]),  # 1695
        ("usdm", AssetType.PERP): 120,  # incl. BTCSTUSDT, whose contractType is ""
        ("usdm", AssetType.FUT): 2,  # BTCUSDT_210924, ETHUSDT_210924
        ("coinm", AssetType.PERP): 18,
        ("coinm", AssetType.FUT): 18,  # current and next quarter of 9 pairs
        ("option", AssetType.OPT): 4,
    }
    assert len(markets) == _raw_count(exchange_info)  # every instrument maps, none collide


def test_seed_examples_come_out_of_the_mapping(markets):
    perp = markets["BINANCE-PERP-BTC-USD-COINM"]
    assert (perp.exchange_symbol, perp.kind) == ("BTCUSD_PERP", "coinm")
    assert perp.metadata.margin_asset == "BTC" and perp.metadata.contract_size == 100.0

    fut = markets["BINANCE-FUT-BTC-USDT-210924"]
    assert (fut.exchange_symbol, fut.kind) == ("BTCUSDT_210924", "usdm")
    assert fut.metadata.expiry == "210924"
    assert fut.metadata.margin_asset == "USDT"

    opt = markets["BINANCE-OPT-BTC-USDT-260327-100000-C"]
    assert (opt.exchange_symbol, opt.kind) == ("BTC-260327-100000-C", "option")
    meta = opt.metadata
    assert (meta.expiry, meta.strike, meta.option_type) == ("260327", 100000.0, "C")
    assert (meta.base_asset, meta.quote_asset, meta.margin_asset) == ("BTC", "USDT", "USDT")
    assert (meta.tick_size, meta.lot_size) == (5.0, 0.01)

    assert markets["BINANCE-FUT-BTC-USD-211231-COINM"].exchange_symbol == "BTCUSD_211231"
    assert markets["BINANCE-PERP-BTC-USDT"].exchange_symbol == "BTCUSDT"
    assert markets["BINANCE-SPOT-NKN-USDT"].exchange_symbol == "NKNUSDT"


def test_option_strikes_and_types_keep_the_venues_text(markets):
    by_id = {m.exchange_symbol: m for m in markets.values() if m.kind == "option"}
    assert {m.symbol for m in by_id.values()} == {
        "BINANCE-OPT-BTC-USDT-260327-100000-C",
        "BINANCE-OPT-BTC-USDT-260327-100000-P",
        "BINANCE-OPT-ETH-USDT-260130-3500-P",
        "BINANCE-OPT-DOGE-USDT-260130-0.18-C",
    }
    for venue_id, market in by_id.items():
        base, expiry, strike, kind = venue_id.split("-")
        parsed = parse_market(market.symbol)
        assert (parsed.base, parsed.expiry, str(parsed.strike), parsed.option_type) == (
            base,
            expiry,
            strike,
            kind,
        )


def test_symbols_are_canonical_unique_and_keep_venue_ids(markets, exchange_info):
    for symbol, market in markets.items():
        assert str(parse_market(symbol)) == symbol == market.metadata.symbol
        assert market.metadata.exchange_symbol == market.exchange_symbol
    ids = Counter((m.kind, m.exchange_symbol) for m in markets.values())
    assert max(ids.values()) == 1
    coinm = [m for m in markets.values() if m.kind == "coinm"]
    assert all(m.symbol.endswith("-COINM") for m in coinm)
    assert not any(m.symbol.endswith("-COINM") for m in markets.values() if m.kind != "coinm")


def test_tokens_are_normalized_but_symbols_keep_venue_names(markets):
    # Binance's historical Bitcoin Cash tickers, all in the 2021 spot list.
    for venue_name, token in (("BCC", "BCH"), ("BCHABC", "BCH"), ("BCHSV", "BSV")):
        market = markets[f"BINANCE-SPOT-{venue_name}-USDT"]
        assert market.metadata.base_asset == token
    assert markets["BINANCE-SPOT-BTC-USDT"].metadata.base_asset == "BTC"
    statuses = Counter(m.metadata.status for m in markets.values() if m.kind == "spot")
    assert statuses == {"TRADING": 1262, "HALTED": 433}  # BREAK: delisted
    assert markets["BINANCE-PERP-BTCST-USDT"].metadata.status == "PRE_TRADING"


def test_names_outside_the_grammar_are_skipped_and_clashes_dropped(exchange_info):
    spot = exchange_info["spot"]
    nkn = next(s for s in spot["symbols"] if s["symbol"] == "NKNUSDT")
    odd = copy.deepcopy(nkn) | {"symbol": "币安人生USDT", "baseAsset": "币安人生"}
    twin = copy.deepcopy(nkn) | {"symbol": "NKN_USDT"}  # would also be BINANCE-SPOT-NKN-USDT
    exchange = ccxt.binance()
    found = markets_from_exchange_info(
        exchange, "BINANCE", {"spot": {"symbols": [nkn, odd, twin, spot["symbols"][0]]}}
    )
    assert list(found) == [f"BINANCE-SPOT-{spot['symbols'][0]['baseAsset']}-BTC"]


def test_from_config_takes_url_overrides_and_rejects_unknown_keys():
    venue = BinanceVenue.from_config(
        {"spot_ws": "ws://127.0.0.1:1/stream", "silence": 5.0, "sections": ["spot", "usdm"]}
    )
    assert venue.urls.spot_ws == "ws://127.0.0.1:1/stream"
    assert venue.urls.usdm_ws == BinanceUrls().usdm_ws
    assert (venue.silence, venue.sections) == (5.0, ("spot", "usdm"))
    with pytest.raises(ValueError, match="spot_wss"):
        BinanceVenue.from_config({"spot_wss": "x"})
    with pytest.raises(ValueError, match="margin"):
        BinanceVenue(sections=("spot", "margin"))


async def test_stream_addresses_and_limits_per_product(markets):
    venue = BinanceVenue()
    try:
        address = venue.stream_address
        assert address(markets["BINANCE-SPOT-NKN-USDT"], "depth") == (
            "wss://stream.binance.com:9443/stream",
            "nknusdt@depth@100ms",
        )
        assert address(markets["BINANCE-PERP-BTC-USDT"], "depth") == (
            "wss://fstream.binance.com/public/stream",
            "btcusdt@depth@100ms",
        )
        assert address(markets["BINANCE-PERP-BTC-USDT"], "trades") == (
            "wss://fstream.binance.com/market/stream",
            "btcusdt@aggTrade",
        )
        assert address(markets["BINANCE-PERP-BTC-USD-COINM"], "depth") == (
            "wss://dstream.binance.com/stream",
            "btcusd_perp@depth@100ms",
        )
        opt = markets["BINANCE-OPT-BTC-USDT-260327-100000-C"]
        assert address(opt, "depth") == (
            "wss://fstream.binance.com/public/stream",
            "btc-260327-100000-c@depth@100ms",
        )
        assert address(opt, "trades") == (
            "wss://fstream.binance.com/public/stream",
            "btc-260327-100000-c@optionTrade",
        )
        # Binance's documented caps: streams per connection, incoming messages per second.
        limits = {k: (v.max_streams, v.messages_per_second) for k, v in venue.limits.items()}
        assert limits == {
            "spot": (1024, 5), "usdm": (1024, 10), "coinm": (1024, 10), "option": (200, 10)
        }  # fmt: skip
    finally:
        await venue.close()
    capped = BinanceVenue.from_config({"streams_per_connection": 300})
    assert {v.max_streams for v in capped.limits.values()} == {300, 200}
