import json

import msgspec
import pytest

from astra.core import (
    AssetType,
    BookUpdate,
    DataType,
    Error,
    Level,
    MarketMetadata,
    OptionType,
    OrderBook,
    Side,
    Trade,
    TradesMessage,
)

encode = msgspec.json.encode


def test_market_metadata_matches_seed_sample_exactly():
    meta = MarketMetadata(
        symbol="BINANCE-PERP-BTC-USD-COINM",
        asset_type=AssetType.PERP,
        base_asset="BTC",
        quote_asset="USD",
        margin_asset="BTC",
    )
    assert encode(meta) == (
        b'{"symbol":"BINANCE-PERP-BTC-USD-COINM","assetType":"PERP","baseAsset":"BTC",'
        b'"quoteAsset":"USD","marginAsset":"BTC"}'
    )


def test_market_metadata_spot_omits_margin_and_decodes_seed_list():
    seed = b"""[
        {"symbol": "BINANCE-SPOT-ETH-USDT", "assetType": "SPOT",
         "baseAsset": "ETH", "quoteAsset": "USDT"},
        {"symbol": "BINANCE-PERP-BTC-USDT", "assetType": "PERP",
         "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT"}
    ]"""
    markets = msgspec.json.decode(seed, type=list[MarketMetadata])
    assert markets[0].base_asset == "ETH" and markets[0].margin_asset is None
    assert markets[1].asset_type is AssetType.PERP and markets[1].margin_asset == "USDT"
    assert json.loads(encode(markets)) == json.loads(seed)


def test_market_metadata_all_fields_camel_case():
    meta = MarketMetadata(
        symbol="BINANCE-OPT-BTC-USDT-210625-50000-C",
        asset_type=AssetType.OPT,
        base_asset="BTC",
        quote_asset="USDT",
        margin_asset="USDT",
        tick_size=5.0,
        lot_size=0.01,
        min_quantity=0.01,
        min_notional=10.0,
        contract_size=1.0,
        expiry="210625",
        strike=50000.0,
        option_type=OptionType.CALL,
        status="TRADING",
        exchange_symbol="BTC-210625-50000-C",
    )
    data = json.loads(encode(meta))
    assert list(data) == [
        "symbol",
        "assetType",
        "baseAsset",
        "quoteAsset",
        "marginAsset",
        "tickSize",
        "lotSize",
        "minQuantity",
        "minNotional",
        "contractSize",
        "expiry",
        "strike",
        "optionType",
        "status",
        "exchangeSymbol",
    ]
    assert data["optionType"] == "C" and data["expiry"] == "210625"
    assert msgspec.json.decode(encode(meta), type=MarketMetadata) == meta


def test_market_metadata_requires_asset_type():
    # The seed's FUT example omits assetType; Astra always sends it, so decoding rejects it.
    with pytest.raises(msgspec.ValidationError, match="assetType"):
        msgspec.json.decode(
            b'{"symbol":"BINANCE-FUT-BTC-USDT-210625","baseAsset":"BTC","quoteAsset":"USDT"}',
            type=MarketMetadata,
        )


def test_level_is_an_object_with_price_and_quantity():
    assert encode(Level(27879.5, 1.5)) == b'{"price":27879.5,"quantity":1.5}'
    assert msgspec.json.decode(b'{"price": 27500.00, "quantity": 1}', type=Level) == Level(
        27500.0, 1.0
    )
    assert hash(Level(1.0, 2.0)) == hash(Level(1.0, 2.0))


def test_orderbook_seed_sample_round_trip():
    # The seed's GET /orderbook sample (trailing commas removed).
    seed = b"""{
        "bids": [{"price": 1798.00, "quantity": 1.5}, {"price": 1797.01, "quantity": 5.0}],
        "asks": [{"price": 1798.00, "quantity": 1}, {"price": 1797.00, "quantity": 10.0}]
    }"""
    book = msgspec.json.decode(seed, type=OrderBook)
    assert book.bids == [Level(1798.0, 1.5), Level(1797.01, 5.0)]
    assert book.asks[1] == Level(1797.0, 10.0)
    assert book.market is None and book.update_id is None
    assert json.loads(encode(book)) == json.loads(seed)


def test_orderbook_full_shape():
    book = OrderBook(
        market="BINANCE-SPOT-BTC-USDT",
        bids=[Level(51485.41, 4.10646)],
        asks=[],
        update_id=42,
        timestamp=1707527023484,
    )
    assert encode(book) == (
        b'{"market":"BINANCE-SPOT-BTC-USDT","bids":[{"price":51485.41,"quantity":4.10646}],'
        b'"asks":[],"updateId":42,"timestamp":1707527023484}'
    )
    assert msgspec.json.decode(encode(book), type=OrderBook) == book


def test_book_update_round_trip():
    # The seed's ORDERBOOK channel sample, with the Astra additions (type, market) and
    # levels named price/quantity as everywhere else in the API.
    sample = {
        "type": "update",
        "market": "BINANCE-PERP-BTC-USDT",
        "updateId": 37828320367,
        "bids": [{"price": 30708.01, "quantity": 1.26141}, {"price": 30707.97, "quantity": 0}],
        "asks": [{"price": 30708.02, "quantity": 12.005}, {"price": 30708.1, "quantity": 0.08388}],
    }
    update = msgspec.json.decode(json.dumps(sample), type=BookUpdate)
    assert update.type == "update"
    assert update.update_id == 37828320367
    assert update.bids[1].quantity == 0.0
    assert update.timestamp is None
    assert json.loads(encode(update)) == sample

    snapshot = BookUpdate(
        type="snapshot", market="SIM-SPOT-BTC-USDT", update_id=1, bids=[], asks=[], timestamp=5
    )
    assert encode(snapshot) == (
        b'{"type":"snapshot","market":"SIM-SPOT-BTC-USDT","updateId":1,"bids":[],"asks":[],'
        b'"timestamp":5}'
    )
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(encode(snapshot).replace(b"snapshot", b"delta"), type=BookUpdate)


def test_trades_message_seed_sample_round_trip():
    seed = {
        "trades": [
            {"price": 47104.0, "quantity": 0.003, "side": "SELL", "time": 1707527023484},
            {"price": 47100.1, "quantity": 0.0015, "side": "BUY", "time": 1707527025010},
        ]
    }
    message = msgspec.json.decode(json.dumps(seed), type=TradesMessage)
    assert message.trades[0] == Trade(
        price=47104.0, quantity=0.003, side=Side.SELL, time=1707527023484
    )
    assert message.trades[1].side is Side.BUY
    assert json.loads(encode(message)) == seed
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(
            b'{"trades":[{"price":1,"quantity":1,"side":"buy","time":1}]}', type=TradesMessage
        )


def test_trade_id_is_optional_and_camel_case():
    trade = Trade(price=1.0, quantity=2.0, side=Side.BUY, time=3, trade_id="abc")
    assert encode(trade) == b'{"price":1.0,"quantity":2.0,"side":"BUY","time":3,"tradeId":"abc"}'


def test_error_model_omits_absent_fields():
    assert encode(Error(code="INVALID_MARKET", message="bad")) == (
        b'{"code":"INVALID_MARKET","message":"bad"}'
    )
    err = Error(code="VENUE_ERROR", message="x", venue="BINANCE", venue_code="-1121")
    assert encode(err) == (
        b'{"code":"VENUE_ERROR","message":"x","venue":"BINANCE","venueCode":"-1121"}'
    )


def test_enums_are_their_wire_strings():
    assert Side.BUY == "BUY" and DataType("ORDERBOOK") is DataType.ORDERBOOK
    assert [t.value for t in AssetType] == ["SPOT", "PERP", "FUT", "OPT"]
    assert encode([Side.SELL, DataType.TRADE, OptionType.PUT]) == b'["SELL","TRADE","P"]'
