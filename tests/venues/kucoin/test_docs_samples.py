"""Samples written from KuCoin's current docs (kucoin.com/docs-new): the spot and futures
"local order book" walkthroughs, and the documented shapes of trades, tokens and control
frames."""

from __future__ import annotations

import msgspec
import pytest

from astra.core import Side, Trade
from astra.venues.book import L2Book
from astra.venues.kucoin.feed import SequenceGap, SequenceSync
from astra.venues.kucoin.schemas import (
    BulletResponse,
    ContractExecution,
    ContractLevel2,
    ContractSnapshot,
    Envelope,
    Level2,
    Match,
    Response,
    SpotSnapshot,
)


def _sync(snapshot, events):
    """The feed's path: snapshot, then each message through the sequencer."""
    sync, book = SequenceSync(), L2Book("X")
    for e in events:
        sync.push(e)
    book.reset(snapshot.bids, snapshot.asks, snapshot.sequence, 0)
    for e, after in sync.start(snapshot.sequence):
        book.apply(*e.to_changes(after), e.bounds()[1], e.timestamp)
    return book


def test_spot_walkthrough_applies_only_changes_newer_than_the_snapshot():
    snapshot = msgspec.json.decode(
        b"""{"sequence": "16",
        "asks": [["3988.62","8"],["3988.61","32"],["3988.60","47"],["3988.59","3"]],
        "bids": [["3988.51","56"],["3988.50","15"],["3988.49","100"],["3988.48","10"]]}""",
        type=SpotSnapshot,
        strict=False,
    )
    # The docs' message (its start/end read 19/15 there; the changes span 15..19).
    update = msgspec.json.decode(
        b"""{"sequenceStart": 15, "sequenceEnd": 19, "symbol": "BTC-USDT", "changes": {
        "asks": [["3988.59","3","16"], ["3988.61","0","19"], ["3988.62","8","15"]],
        "bids": [["3988.50","44","18"]]}}""",
        type=Level2,
    )
    book = _sync(snapshot, [update])
    assert book.update_id == 19
    assert book.sorted_asks() == [(3988.59, 3.0), (3988.60, 47.0), (3988.62, 8.0)]
    assert book.sorted_bids() == [
        (3988.51, 56.0),
        (3988.50, 44.0),
        (3988.49, 100.0),
        (3988.48, 10.0),
    ]


def test_spot_level2_frame_as_documented():
    frame = b"""{"topic": "/market/level2:BTC-USDT", "type": "message",
    "subject": "trade.l2update", "data": {"changes": {"asks": [["67993.3", "1.21427407",
    "14701689783"]], "bids": []}, "sequenceEnd": 14701689783, "sequenceStart": 14701689783,
    "symbol": "BTC-USDT", "time": 1729816425625}}"""
    env = msgspec.json.decode(frame, type=Envelope[Level2])
    assert (env.type, env.topic, env.subject) == (
        "message",
        "/market/level2:BTC-USDT",
        "trade.l2update",
    )
    data = env.data
    assert data.bounds() == (14701689783, 14701689783) and data.timestamp == 1729816425625
    assert data.to_changes(14701689782) == ([], [(67993.3, 1.21427407)])
    assert data.to_changes(14701689783) == ([], [])  # already in the book


def test_price_zero_is_a_sequence_only_entry_and_changes_apply_in_sequence_order():
    recorded = msgspec.json.decode(
        b'{"sequenceStart":7,"sequenceEnd":7,"symbol":"BCHSV-USDT",'
        b'"changes":{"asks":[["0","0","7"]],"bids":[]}}',
        type=Level2,
    )
    assert recorded.to_changes(6) == ([], [])
    shuffled = msgspec.json.decode(
        b'{"sequenceStart":11,"sequenceEnd":12,"symbol":"X",'
        b'"changes":{"asks":[],"bids":[["5","1","12"],["5","2","11"]]}}',
        type=Level2,
    )
    assert shuffled.to_changes(10) == ([(5.0, 2.0), (5.0, 1.0)], [])  # 12 lands last


def test_futures_walkthrough():
    snapshot = msgspec.json.decode(
        b"""{"code": "200000", "data": {"sequence": 16,
        "asks": [["3988.59", 3], ["3988.60", 47], ["3988.61", 32], ["3988.62", 8]],
        "bids": [["3988.51", 56], ["3988.50", 15], ["3988.49", 100], ["3988.48", 10]]}}""",
        type=Response[ContractSnapshot],
        strict=False,
    ).data
    frames = [
        b'{"topic":"/contractMarket/level2:XBTUSDTM","type":"message","subject":"level2",'
        b'"sn":17,"data":{"sequence":17,"change":"3988.50,buy,44","timestamp":1731897467182}}',
        b'{"topic":"/contractMarket/level2:XBTUSDTM","type":"message","subject":"level2",'
        b'"sn":18,"data":{"sequence":18,"change":"3988.61,sell,0","timestamp":1731897467183}}',
    ]
    decode = msgspec.json.Decoder(Envelope[ContractLevel2]).decode
    book = _sync(snapshot, [decode(f).data for f in frames])
    assert (book.update_id, book.timestamp) == (18, 1731897467183)
    assert book.sorted_asks() == [(3988.59, 3.0), (3988.60, 47.0), (3988.62, 8.0)]
    assert book.sorted_bids() == [
        (3988.51, 56.0),
        (3988.50, 44.0),
        (3988.49, 100.0),
        (3988.48, 10.0),
    ]


def test_futures_gap_is_detected():
    sync = SequenceSync()
    sync.start(16)
    assert sync.push(ContractLevel2(17, "1,buy,1")) == 16
    with pytest.raises(SequenceGap, match="starts at 19 but the book is at 17"):
        sync.push(ContractLevel2(19, "1,buy,2"))  # 18 is missing


def test_trades_as_documented():
    spot = msgspec.json.decode(
        b"""{"topic": "/market/match:BTC-USDT", "type": "message", "subject": "trade.l3match",
        "data": {"makerOrderId": "671b5007389355000701b1d3", "price": "67523",
        "sequence": "11067996711960577", "side": "buy", "size": "0.003", "symbol": "BTC-USDT",
        "takerOrderId": "671b50161777ff00074c168d", "time": "1729843222921000000",
        "tradeId": "11067996711960577", "type": "match"}}""",
        type=Envelope[Match],
    ).data
    assert spot.to_trade() == Trade(
        price=67523.0,
        quantity=0.003,
        side=Side.BUY,
        time=1729843222921,
        trade_id="11067996711960577",
    )
    futures = msgspec.json.decode(
        b"""{"topic": "/contractMarket/execution:XBTUSDTM", "type": "message", "subject": "match",
        "sn": 1794100537695, "data": {"symbol": "XBTUSDTM", "sequence": 1794100537695,
        "side": "sell", "size": 2, "price": "90503.9", "takerOrderId": "247822202957807616",
        "makerOrderId": "247822167163555840", "tradeId": "1794100537695",
        "ts": 1731898619520000000}}""",
        type=Envelope[ContractExecution],
    ).data
    assert futures.to_trade() == Trade(
        price=90503.9, quantity=2.0, side=Side.SELL, time=1731898619520, trade_id="1794100537695"
    )


def test_token_and_control_frames_as_documented():
    bullet = msgspec.json.decode(
        b"""{"code": "200000", "data": {
        "token": "2neAiuYvAU61ZDXANAGAsiL4-iAExhsBXZxftpOeh_55i3Ysy2q.28mIdGU0xg5pJ6TpPYIhjg==",
        "instanceServers": [{"endpoint": "wss://ws-api-spot.kucoin.com/", "encrypt": true,
        "protocol": "websocket", "pingInterval": 18000, "pingTimeout": 10000}]}}""",
        type=BulletResponse,
    ).data
    server = bullet.instanceServers[0]
    assert bullet.token.endswith("==") and server.endpoint == "wss://ws-api-spot.kucoin.com/"
    assert (server.pingInterval, server.pingTimeout) == (18000, 10000)
    decode = msgspec.json.Decoder(Envelope[Level2]).decode
    assert decode(b'{"id": "hQvf8jkno", "type": "welcome"}').type == "welcome"
    assert decode(b'{"id": "1545910590801", "type": "pong"}').id == "1545910590801"
    assert decode(b'{"id": 1545910660739, "type": "ack"}').id == 1545910660739
    error = decode(b'{"id": "1", "type": "error", "code": 404, "data": "topic is not found"}')
    assert (error.code, error.data) == (404, "topic is not found")
