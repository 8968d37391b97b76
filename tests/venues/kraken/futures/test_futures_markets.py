"""Kraken Futures markets from a ``GET /derivatives/api/v3/instruments`` body written from
Kraken's docs (``data/futures_instruments.json``), parsed by ccxt's own ``krakenfutures``
with no network: Kraken's names in the symbol, AbstractTokens in the metadata."""

from __future__ import annotations

import copy

from astra.core import parse_market
from astra.venues.kraken import KrakenFuturesMarket, KrakenMarket, KrakenVenue
from astra.venues.kraken.futures_symbols import markets_from_instruments, parse_instruments


def test_seed_style_symbols(futures_instruments):
    markets = markets_from_instruments("KRAKEN", futures_instruments)
    assert {m.exchange_symbol: s for s, m in markets.items()} == {
        "PF_XBTUSD": "KRAKEN-PERP-XBT-USD",
        "PF_ETHUSD": "KRAKEN-PERP-ETH-USD",
        "PF_SOLUSD": "KRAKEN-PERP-SOL-USD",
        "PI_XBTUSD": "KRAKEN-PERP-XBT-USD-COINM",
        "PI_ETHUSD": "KRAKEN-PERP-ETH-USD-COINM",
        "FI_XBTUSD_220930": "KRAKEN-FUT-XBT-USD-220930-COINM",
        "FF_XBTUSD_220930": "KRAKEN-FUT-XBT-USD-220930",
    }  # the indices (in_xbtusd, rr_xbtusd) are not markets
    for symbol, m in markets.items():
        assert str(parse_market(symbol)) == symbol
        assert (m.kind, m.product_id) == ("futures", m.exchange_symbol.upper())
        assert m.metadata.symbol == symbol and m.metadata.exchange_symbol == m.exchange_symbol


def test_metadata_is_normalized(futures_instruments):
    markets = markets_from_instruments("KRAKEN", futures_instruments)

    def row(symbol):
        m = markets[symbol].metadata
        return (
            m.asset_type,
            m.base_asset,
            m.quote_asset,
            m.margin_asset,
            m.tick_size,
            m.lot_size,
            m.contract_size,
            m.expiry,
            m.status,
        )

    # type, base, quote, margin, tick, lot, contract size, expiry, status
    coinm = "KRAKEN-FUT-XBT-USD-220930-COINM"
    expected = {
        "KRAKEN-PERP-XBT-USD": ("PERP", "BTC", "USD", "USD", 1.0, 0.0001, 1.0, None, "TRADING"),
        # Inverse contracts (1 USD each) state no lot in base units: it moves with the price.
        "KRAKEN-PERP-XBT-USD-COINM": ("PERP", "BTC", "USD", "BTC", 0.5, None, 1, None, "TRADING"),
        "KRAKEN-PERP-ETH-USD-COINM":
            ("PERP", "ETH", "USD", "ETH", 0.05, None, 1, None, "POST_ONLY"),
        coinm: ("FUT", "BTC", "USD", "BTC", 0.5, None, 1, "220930", "TRADING"),
        "KRAKEN-FUT-XBT-USD-220930": ("FUT", "BTC", "USD", "USD", 1, 1e-4, 1, "220930", "TRADING"),
    }  # fmt: skip
    assert {symbol: row(symbol) for symbol in expected} == expected
    assert row("KRAKEN-PERP-SOL-USD")[-1] == "HALTED"  # tradeable: false


def test_types_follow_ccxts_parse(futures_instruments):
    by_id = {m["id"]: m for m in parse_instruments(futures_instruments)}
    markets = markets_from_instruments("KRAKEN", futures_instruments)
    for symbol, market in markets.items():
        m = by_id[market.exchange_symbol]
        assert symbol.startswith("KRAKEN-PERP-") == (m["type"] == "swap")
        assert symbol.endswith("-COINM") == bool(m["inverse"])
    assert {by_id[i]["type"] for i in ("in_xbtusd", "rr_xbtusd")} == {"index"}


def test_older_rows_without_base_and_quote_and_names_outside_the_grammar(futures_instruments):
    body = copy.deepcopy(futures_instruments)
    rows = body["instruments"]
    legacy = dict(rows[3], symbol="pi_ethusd")  # the lower-case ids of older responses
    del legacy["base"], legacy["quote"], legacy["pair"]
    odd = dict(rows[0], symbol="PF_ETH2.SUSD", base="ETH2.S", pair="ETH2.S:USD")
    twin = dict(rows[3], symbol="PI_XBTUSD")  # a repeat of a symbol already taken
    body["instruments"] = [rows[3], twin, legacy, odd]
    markets = markets_from_instruments("KRAKEN", body)
    assert sorted(markets) == ["KRAKEN-PERP-ETH-USD-COINM", "KRAKEN-PERP-XBT-USD-COINM"]
    eth = markets["KRAKEN-PERP-ETH-USD-COINM"]
    assert (eth.exchange_symbol, eth.product_id, eth.metadata.margin_asset) == (
        "pi_ethusd",
        "PI_ETHUSD",
        "ETH",
    )


async def test_the_venue_serves_spot_and_futures(doc_asset_pairs, futures_instruments):
    venue = KrakenVenue(
        markets_source=lambda: doc_asset_pairs, futures_markets_source=lambda: futures_instruments
    )
    try:
        markets = await venue.load_markets()
        assert sorted(markets) == [
            "KRAKEN-FUT-XBT-USD-220930",
            "KRAKEN-FUT-XBT-USD-220930-COINM",
            "KRAKEN-PERP-ETH-USD",
            "KRAKEN-PERP-ETH-USD-COINM",
            "KRAKEN-PERP-SOL-USD",
            "KRAKEN-PERP-XBT-USD",
            "KRAKEN-PERP-XBT-USD-COINM",
            "KRAKEN-SPOT-ETH-USD",
            "KRAKEN-SPOT-SOL-USD",
            "KRAKEN-SPOT-XBT-USD",
        ]
        assert isinstance(markets["KRAKEN-SPOT-XBT-USD"], KrakenMarket)
        assert isinstance(markets["KRAKEN-PERP-XBT-USD"], KrakenFuturesMarket)
        assert markets["KRAKEN-SPOT-XBT-USD"].metadata.base_asset == "BTC"
        assert set(venue.capabilities.asset_types) == {"SPOT", "PERP", "FUT"}
    finally:
        await venue.close()
