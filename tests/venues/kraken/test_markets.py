"""Kraken markets from the recorded ``GET /0/public/AssetPairs``, parsed by ccxt's own kraken
parser with no network: Kraken's names in the symbol, AbstractTokens in the metadata."""

from __future__ import annotations

import pytest

from astra.core import normalize_token, parse_market
from astra.venues.kraken import KrakenUrls, KrakenVenue, from_config
from astra.venues.kraken.symbols import decimals_of, markets_from_asset_pairs, v2_symbol


def test_symbols_keep_krakens_names_and_metadata_is_normalized(asset_pairs):
    markets = markets_from_asset_pairs("KRAKEN", asset_pairs)
    xbt = markets["KRAKEN-SPOT-XBT-USD"]
    assert (xbt.exchange_symbol, xbt.kind, xbt.ws_symbol) == ("XXBTZUSD", "spot", "BTC/USD")
    assert (xbt.price_decimals, xbt.qty_decimals) == (1, 8)
    meta = xbt.metadata
    assert (meta.base_asset, meta.quote_asset, meta.asset_type) == ("BTC", "USD", "SPOT")
    assert (meta.tick_size, meta.lot_size, meta.min_quantity) == (0.1, 1e-08, 0.0002)
    assert (meta.exchange_symbol, meta.status, meta.margin_asset) == ("XXBTZUSD", "TRADING", None)

    doge = markets["KRAKEN-SPOT-XDG-USD"]
    assert (doge.metadata.base_asset, doge.ws_symbol, doge.exchange_symbol) == (
        "DOGE",
        "DOGE/USD",
        "XDGUSD",
    )
    eth_xbt = markets["KRAKEN-SPOT-ETH-XBT"]
    assert (eth_xbt.exchange_symbol, eth_xbt.ws_symbol) == ("XETHXXBT", "ETH/BTC")
    assert (eth_xbt.metadata.base_asset, eth_xbt.metadata.quote_asset) == ("ETH", "BTC")
    assert "KRAKEN-SPOT-BTC-USD" not in markets  # Kraken says XBT


def test_every_pair_with_a_ws_name_is_mapped_and_the_rest_skipped(asset_pairs):
    pairs = asset_pairs["result"]
    markets = markets_from_asset_pairs("KRAKEN", asset_pairs)
    by_id = {m.exchange_symbol: m for m in markets.values()}
    skipped = sorted(set(pairs) - set(by_id))
    # dark-pool pairs (no public book, no wsname) and a name outside the grammar (ETH2.S)
    assert skipped == sorted([k for k in pairs if k.endswith(".d")] + ["ETH2.SETH"])
    assert len(markets) == len(pairs) - len(skipped) == 292
    for pair_id, m in by_id.items():
        info = pairs[pair_id]
        base, quote = info["wsname"].split("/")
        assert m.symbol == f"KRAKEN-SPOT-{base}-{quote}"
        assert str(parse_market(m.symbol)) == m.symbol
        assert m.metadata.base_asset == normalize_token(base, "KRAKEN") != "XBT"
        assert m.metadata.quote_asset == normalize_token(quote, "KRAKEN") != "XBT"
        # ccxt's precision is the checksum precision: pair_decimals / lot_decimals
        assert (m.price_decimals, m.qty_decimals) == (info["pair_decimals"], info["lot_decimals"])
        assert m.ws_symbol == v2_symbol(info["wsname"])
        assert "XBT" not in m.ws_symbol and "XDG" not in m.ws_symbol


@pytest.mark.parametrize(
    ("tick", "places"), [(0.1, 1), (1e-08, 8), (1.0, 0), (10.0, 0), (0.25, None), (None, None)]
)
def test_decimals_of_a_tick(tick, places):
    assert decimals_of(tick) == places


async def test_venue_loads_markets_from_an_injected_source_sync_or_async(
    asset_pairs, futures_instruments
):
    async def source():
        return asset_pairs

    async def futures_source():
        return futures_instruments

    injections = [(lambda: asset_pairs, futures_source), (source, lambda: futures_instruments)]
    for injected, futures in injections:
        venue = KrakenVenue(markets_source=injected, futures_markets_source=futures)
        try:
            markets = await venue.load_markets()
            assert markets["KRAKEN-SPOT-XBT-CHF"].ws_symbol == "BTC/CHF"
            assert markets["KRAKEN-PERP-XBT-USD"].product_id == "PF_XBTUSD"  # both APIs
            assert len(markets) == 292 + 7
            assert await venue.load_markets() is markets  # cached
        finally:
            await venue.close()
    spot_only = KrakenVenue(markets_source=lambda: asset_pairs, futures=False)
    try:
        assert {m.kind for m in (await spot_only.load_markets()).values()} == {"spot"}
    finally:
        await spot_only.close()


async def test_from_config_overrides_urls_and_refuses_unknown_keys():
    venue = from_config("KRAKEN", {"ws": "ws://127.0.0.1:1/v2", "depth": 100, "silence": 5})
    try:
        assert venue.urls == KrakenUrls(
            rest="https://api.kraken.com",
            ws="ws://127.0.0.1:1/v2",
            futures_rest="https://futures.kraken.com",
            futures_ws="wss://futures.kraken.com/ws/v1",
        )
        assert (venue.depth, venue.silence, venue.code, venue.futures) == (100, 5, "KRAKEN", True)
        assert venue._ccxt.urls["api"]["public"] == "https://api.kraken.com"
    finally:
        await venue.close()
    venue = from_config(
        "KRAKEN",
        {"futures_rest": "http://127.0.0.1:2", "futures_ws": "ws://127.0.0.1:2/ws/v1"},
    )
    try:
        assert (venue.urls.futures_rest, venue.urls.futures_ws, venue.urls.ws) == (
            "http://127.0.0.1:2",
            "ws://127.0.0.1:2/ws/v1",
            "wss://ws.kraken.com/v2",
        )
        assert venue._ccxt_futures.urls["api"]["public"] == "http://127.0.0.1:2/derivatives/api/"
        assert venue.futures_pool.url == "ws://127.0.0.1:2/ws/v1"
    finally:
        await venue.close()
    spot_only = from_config("KRAKEN", {"futures": False})
    try:
        assert spot_only.futures is False
    finally:
        await spot_only.close()
    with pytest.raises(ValueError, match="unknown options"):
        KrakenVenue.from_config("KRAKEN", {"wss": "ws://x"})
    with pytest.raises(ValueError, match="depth"):
        KrakenVenue(depth=50)
