"""Advanced Trade products (the documented ``/market/products`` shape) -> Astra markets,
parsed by ccxt's own coinbase ``parse_spot_market``/``parse_contract_market``, no network."""

from __future__ import annotations

import copy

import ccxt
import pytest

from astra.core import parse_market
from astra.venues.coinbase import CoinbaseUrls, CoinbaseVenue, parse_products
from astra.venues.coinbase.symbols import markets_from_ccxt


@pytest.fixture(scope="module")
def exchange():
    return ccxt.coinbase()


def _markets(exchange, products):
    return markets_from_ccxt("COINBASE", parse_products(exchange, products))


def test_products_map_to_symbols(exchange, products):
    found = _markets(exchange, products)
    assert {s: (vm.exchange_symbol, feed) for s, (vm, feed) in found.items()} == {
        "COINBASE-SPOT-BTC-USD": ("BTC-USD", "BTC-USD"),
        "COINBASE-SPOT-ETH-USD": ("ETH-USD", "ETH-USD"),
        "COINBASE-SPOT-BTC-USDC": ("BTC-USDC", "BTC-USD"),  # streams as its alias
        "COINBASE-SPOT-RNDR-USD": ("RNDR-USD", "RNDR-USD"),
        "COINBASE-SPOT-XYO-USD": ("XYO-USD", "XYO-USD"),
        "COINBASE-FUT-BTC-USD-240426": ("BIT-26APR24-CDE", "BIT-26APR24-CDE"),
        "COINBASE-PERP-BTC-USD": ("BIP-20DEC30-CDE", "BIP-20DEC30-CDE"),
        "COINBASE-PERP-BTC-USDC": ("BTC-PERP-INTX", "BTC-PERP-INTX"),
    }
    for symbol in found:
        assert str(parse_market(symbol)) == symbol


def test_metadata(exchange, products):
    found = {s: vm for s, (vm, _) in _markets(exchange, products).items()}
    btc = found["COINBASE-SPOT-BTC-USD"].metadata
    assert (btc.base_asset, btc.quote_asset, btc.margin_asset) == ("BTC", "USD", None)
    assert (btc.tick_size, btc.lot_size, btc.min_quantity, btc.min_notional) == (
        0.01,
        1e-08,
        1e-08,
        1.0,
    )
    assert btc.status == "TRADING" and btc.contract_size is None
    assert found["COINBASE-SPOT-RNDR-USD"].metadata.status == "DELISTED"
    assert found["COINBASE-SPOT-XYO-USD"].metadata.status == "HALTED"  # cancel-only
    fut = found["COINBASE-FUT-BTC-USD-240426"]
    assert fut.kind == "future"
    assert (fut.metadata.expiry, fut.metadata.contract_size, fut.metadata.margin_asset) == (
        "240426",
        0.01,
        "USD",
    )
    assert fut.metadata.tick_size == 5.0 and fut.metadata.status == "TRADING"  # status ""
    intx = found["COINBASE-PERP-BTC-USDC"]
    assert intx.kind == "perp" and intx.metadata.margin_asset == "USDC"
    assert (intx.metadata.contract_size, intx.metadata.expiry) == (1.0, None)
    # US perpetual-style future: dated 2030 on paper, a perpetual with funding in practice
    assert found["COINBASE-PERP-BTC-USD"].metadata.contract_size == 0.01


def test_contracts_sharing_a_symbol_are_named_by_contract_code(exchange, products):
    bit = next(p for p in products if p["product_id"] == "BIT-26APR24-CDE")
    other = copy.deepcopy(bit)
    other["product_id"] = "BTI-26APR24-CDE"
    other["future_product_details"].update(contract_code="BTI", contract_size="1")
    found = _markets(exchange, [bit, other])
    assert set(found) == {"COINBASE-FUT-BTC-USD-240426-BIT", "COINBASE-FUT-BTC-USD-240426-BTI"}
    assert found["COINBASE-FUT-BTC-USD-240426-BTI"][0].metadata.contract_size == 1.0


def test_unmappable_products_are_skipped(exchange, products):
    btc = next(p for p in products if p["product_id"] == "BTC-USD")
    odd = [
        dict(btc, product_id="B.T-USD", base_currency_id="B.T"),  # outside the grammar
        dict(btc, product_type="UNKNOWN_PRODUCT_TYPE"),
        dict(btc, product_id="X-USD", base_currency_id=None),  # ccxt returns None
    ]
    assert _markets(exchange, odd) == {}
    # two spot products claiming one symbol: neither is served
    assert _markets(exchange, [btc, dict(btc, product_id="BTC-USD-2")]) == {}


async def test_venue_loads_markets_from_an_injected_source(products):
    calls = 0

    async def source():
        nonlocal calls
        calls += 1
        return products

    venue = CoinbaseVenue(markets_source=source)
    try:
        markets = await venue.load_markets()
        assert await venue.load_markets() is markets and calls == 1  # cached
        assert markets["COINBASE-SPOT-ETH-USD"].metadata.exchange_symbol == "ETH-USD"
        assert await venue._feed_id(markets["COINBASE-SPOT-BTC-USDC"]) == "BTC-USD"
    finally:
        await venue.close()


async def test_venue_from_config():
    venue = CoinbaseVenue.from_config(
        "COINBASE", {"rest": "http://127.0.0.1:1", "ws": "ws://127.0.0.1:1/", "silence": 3.0}
    )
    try:
        assert venue.urls == CoinbaseUrls("http://127.0.0.1:1", "ws://127.0.0.1:1/")
        assert venue._ccxt.urls["api"]["rest"] == "http://127.0.0.1:1"
        assert venue._books.settings.silence == 3.0
    finally:
        await venue.close()
    with pytest.raises(ValueError, match="unknown options"):
        CoinbaseVenue.from_config("COINBASE", {"wss": "x"})
