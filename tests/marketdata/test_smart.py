"""SMART market membership (pure): what merges, what never does, and the ``[smart]`` config;
the catalog's loading of member venues' markets (``SmartCatalog``: a venue down or hanging)."""

from __future__ import annotations

import asyncio
import json

import pytest
from tests.marketdata.test_consolidated import SMART, Collector, Late, Scripted, engine_of

from astra.core import (
    AssetType,
    DataType,
    MarketMetadata,
    MarketNotFound,
    VenueUnavailable,
    normalize_token,
    parse_market,
)
from astra.marketdata.smart import SmartConfig, build_smart_markets
from astra.venues.base import VenueMarket


def market(symbol: str, margin: str | None = None, expiry: str | None = None) -> VenueMarket:
    parsed = parse_market(symbol)
    meta = MarketMetadata(
        symbol=symbol, asset_type=parsed.asset_type,
        base_asset=normalize_token(parsed.base, parsed.exchange),
        quote_asset=normalize_token(parsed.quote, parsed.exchange),
        margin_asset=margin, expiry=expiry or parsed.expiry)
    return VenueMarket(symbol, symbol, "x", meta)


def venues(*symbols: str, **margins: str) -> dict[str, dict[str, VenueMarket]]:
    out: dict[str, dict[str, VenueMarket]] = {}
    for s in symbols:
        code = s.split("-")[0]
        out.setdefault(code, {})[s] = market(s, margins.get(s.replace("-", "_")))
    return out


def members(smart) -> dict[str, list[str]]:
    return {sym: list(m.members) for sym, m in smart.items()}


def test_same_instrument_on_several_venues_merges_in_configured_order():
    mk = venues("SIM-SPOT-BTC-USDT", "SIM2-SPOT-BTC-USDT", "SIM3-SPOT-ETH-USDT",
                "KRAKEN-SPOT-XBT-USDT")
    smart = build_smart_markets(mk, SmartConfig(), ["SIM3", "SIM2", "SIM", "KRAKEN"])
    assert members(smart) == {
        "SMART-SPOT-BTC-USDT": ["SIM2", "SIM", "KRAKEN"],  # XBT is BTC
        "SMART-SPOT-ETH-USDT": ["SIM3"],  # a single member is still a SMART market
    }
    meta = smart["SMART-SPOT-BTC-USDT"].metadata
    assert meta.members == ("SIM2-SPOT-BTC-USDT", "SIM-SPOT-BTC-USDT", "KRAKEN-SPOT-XBT-USDT")
    assert (meta.asset_type, meta.base_asset, meta.quote_asset) == (AssetType.SPOT, "BTC", "USDT")
    assert meta.margin_asset is None and meta.taker_fee is None


def test_linear_and_inverse_never_merge():
    mk = venues("SIM-PERP-BTC-USDT", "BINANCE-PERP-BTC-USD-COINM", "OKX-PERP-BTC-USD-COINM",
                "KRAKEN-PERP-BTC-USD", "SIM2-PERP-BTC-USDT")
    mk["BINANCE"]["BINANCE-PERP-BTC-USD-COINM"] = market("BINANCE-PERP-BTC-USD-COINM", "BTC")
    mk["OKX"]["OKX-PERP-BTC-USD-COINM"] = market("OKX-PERP-BTC-USD-COINM", "BTC")
    mk["KRAKEN"]["KRAKEN-PERP-BTC-USD"] = market("KRAKEN-PERP-BTC-USD", "USD")
    mk["SIM"]["SIM-PERP-BTC-USDT"] = market("SIM-PERP-BTC-USDT", "USDT")
    smart = build_smart_markets(mk, SmartConfig())
    assert members(smart) == {
        "SMART-PERP-BTC-USDT": ["SIM", "SIM2"],
        "SMART-PERP-BTC-USD-COINM": ["BINANCE", "OKX"],
        "SMART-PERP-BTC-USD": ["KRAKEN"],  # linear USD: not the inverse market
    }
    assert smart["SMART-PERP-BTC-USDT"].metadata.margin_asset == "USDT"
    assert smart["SMART-PERP-BTC-USD-COINM"].metadata.margin_asset == "BTC"


def test_equivalent_assets_merge_only_when_configured():
    mk = venues("COINBASE-SPOT-BTC-USD", "SIM-SPOT-BTC-USDT", "OKX-SPOT-BTC-USDC")
    assert sorted(build_smart_markets(mk, SmartConfig())) == [
        "SMART-SPOT-BTC-USD", "SMART-SPOT-BTC-USDC", "SMART-SPOT-BTC-USDT"]
    config = SmartConfig.from_config({"equivalent": [["USDT", "usdc", "USD"]]})
    smart = build_smart_markets(mk, config, ["SIM", "OKX", "COINBASE"])
    assert members(smart) == {"SMART-SPOT-BTC-USDT": ["SIM", "OKX", "COINBASE"]}
    assert smart["SMART-SPOT-BTC-USDT"].metadata.quote_asset == "USDT"
    # A pair of two equivalent assets is no market of one asset against itself.
    assert build_smart_markets(venues("SIM-SPOT-USDC-USDT"), config) == {}


def test_a_ticker_that_means_different_tokens_does_not_merge():
    # BCC is BCH on Binance (its table says so) and an unrelated coin on KuCoin.
    mk = venues("BINANCE-SPOT-BCC-USDT", "OKX-SPOT-BCH-USDT", "KUCOIN-SPOT-BCC-USDT")
    assert members(build_smart_markets(mk, SmartConfig())) == {
        "SMART-SPOT-BCH-USDT": ["BINANCE", "OKX"]}


def test_expiries_and_margins_split_markets_and_options_are_left_out():
    mk = {
        "OKX": {"a": market("OKX-FUT-BTC-USDT-260925", "USDT"),
                "b": market("OKX-OPT-BTC-USD-260925-100000-C", "BTC")},
        "BINANCE": {"c": market("BINANCE-FUT-BTC-USDT-260925", "USDT"),
                    "d": market("BINANCE-FUT-BTC-USDT-261225", "USDT"),
                    "e": market("BINANCE-PERP-BTC-USD", "USDC")},
    }
    assert members(build_smart_markets(mk, SmartConfig())) == {
        "SMART-FUT-BTC-USDT-260925": ["OKX", "BINANCE"],
        "SMART-FUT-BTC-USDT-261225": ["BINANCE"],
        "SMART-PERP-BTC-USD-USDC": ["BINANCE"],  # margined in another asset than its quote
    }


@pytest.mark.parametrize("section, word", [
    ({"venues": "SIM"}, "venues"),
    ({"equivalent": [["USDT"]]}, "equivalent"),
    ({"equivalent": [["USDT", "USD"], ["USD", "USDC"]]}, "USD"),
    ({"stale_after": 0}, "stale_after"),
    ({"stale_after": True}, "stale_after"),
    ({"stale": 3}, "stale"),
])
def test_config_errors_name_the_setting(section, word):
    with pytest.raises(ValueError, match=word):
        SmartConfig.from_config(section)


def test_config_defaults_and_values():
    assert SmartConfig.from_config(None) == SmartConfig(None, (), 30.0)
    config = SmartConfig.from_config({"venues": ["sim", "SIM2", "SIM"], "stale_after": 5})
    assert config.venues == ("SIM", "SIM2") and config.stale_after == 5.0


class Hanging(Scripted):
    """A venue that never answers for its markets (a blackholed host)."""

    loads = 0

    async def load_markets(self) -> dict[str, VenueMarket]:
        self.loads += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_member_that_never_answers_holds_up_neither_reads_nor_markets():
    a, b = Scripted("SIM"), Hanging("SIM2")
    engine = await engine_of(a, b)  # book_wait 2 s
    try:
        async with asyncio.timeout(10):  # without a bound on the load: never answered
            markets = await engine.markets("SMART")
            assert [(m.symbol, m.members) for m in markets] == [(SMART, ("SIM-PERP-BTC-USDT",))]
            add, remove = await engine.subscription(SMART, DataType.ORDERBOOK)
            client = Collector()
            add(client)
            await a.snapshot(1, [(100.0, 1.0)], [(101.0, 1.0)])
            for _ in range(3):
                body = json.loads(await engine.smart_order_book(SMART))
                assert body["bids"] == [{"price": 100.0, "quantity": 1.0, "venues": {"SIM": 1.0}}]
            remove(client)
        assert b.loads == 1  # one load in flight, not one per request
    finally:
        await engine.close()


async def test_markets_of_no_member_known_is_a_503_not_an_empty_list_or_a_404():
    a, b = Late("SIM"), Late("SIM2")
    engine = await engine_of(a, b)
    try:
        for read in (engine.markets("SMART"), engine.smart_order_book(SMART),
                     engine.bbo(SMART)):
            with pytest.raises(VenueUnavailable) as err:
                await read
            assert err.value.status == 503 and "SIM, SIM2" in str(err.value)
        b.up = True  # one member answers: its markets, and a 404 for what it does not list
        assert [m.members for m in await engine.markets("SMART")] == [("SIM2-PERP-BTC-USDT",)]
        with pytest.raises(VenueUnavailable):  # SIM may list it: still not a 404
            await engine.smart_market("SMART-SPOT-BTC-USDT")
        a.up = True
        with pytest.raises(MarketNotFound):
            await engine.smart_market("SMART-SPOT-BTC-USDT")
    finally:
        await engine.close()
