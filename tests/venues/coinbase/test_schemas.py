"""The documented Advanced Trade messages decode into our Structs and convert exactly."""

from __future__ import annotations

import json
from datetime import datetime

import msgspec
import pytest

from astra.core import Side
from astra.venues.coinbase.schemas import (
    Envelope,
    Heartbeats,
    L2Data,
    MarketTrades,
    SubscribeRequest,
    Subscriptions,
    VenueErrorMessage,
    decode_message,
    iso_ms,
)


def _raw(samples, name: str) -> bytes:
    return json.dumps(samples("ws-messages.json")[name]).encode()


def test_level2_snapshot_and_update(samples):
    snap = decode_message(_raw(samples, "level2_snapshot"))
    assert type(snap) is L2Data and snap.sequence_num == 0
    (event,) = snap.events
    assert (event.type, event.product_id) == ("snapshot", "BTC-USD")
    bids, asks = event.to_changes()
    assert bids == [(21921.73, 0.06317902), (21921.3, 0.02), (21920.01, 1.5)]
    assert asks == [(21921.74, 0.14215), (21922.05, 0.4)]
    update = decode_message(_raw(samples, "level2_update"))
    bids, asks = update.events[0].to_changes()
    assert (update.sequence_num, update.events[0].type) == (1, "update")
    assert bids == [(21921.3, 0.0), (21921.5, 0.25)] and asks == [(21921.74, 0.1)]


def test_heartbeats_subscriptions_and_other_channels(samples):
    hb = decode_message(_raw(samples, "heartbeats"))
    assert type(hb) is Heartbeats and hb.events[0].heartbeat_counter == 3049
    subs = decode_message(_raw(samples, "subscriptions"))
    assert type(subs) is Subscriptions
    assert subs.events[0].subscriptions["level2"] == ["BTC-USD"]
    # a channel we do not parse still yields its sequence number
    other = decode_message(b'{"channel":"ticker","sequence_num":12,"events":[]}')
    assert other == Envelope(channel="ticker", sequence_num=12)


def test_market_trades_convert_to_taker_trades(samples):
    msg = decode_message(_raw(samples, "market_trades_update"))
    assert type(msg) is MarketTrades
    trades = [t.to_trade() for t in msg.events[0].trades]
    assert [(t.trade_id, t.side, t.price, t.quantity) for t in trades] == [
        ("000000004", Side.BUY, 1260.5, 0.00005535),
        ("000000003", Side.SELL, 1260.4, 2.0),
    ]
    assert trades[0].time == 1565815348378


def test_error_message_and_garbage_raise(samples):
    with pytest.raises(VenueErrorMessage, match="failure to subscribe"):
        decode_message(_raw(samples, "error"))
    with pytest.raises(msgspec.DecodeError):
        decode_message(b"not json")
    with pytest.raises(ValueError):  # neither a channel message nor an error
        decode_message(b'{"type":"something"}')


def test_an_unknown_level_side_is_refused(samples):
    raw = samples("ws-messages.json")["level2_update"]
    raw["events"][0]["updates"][0]["side"] = "buy"
    with pytest.raises(ValueError, match="unknown level2 side"):
        decode_message(json.dumps(raw)).events[0].to_changes()


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-09T20:32:50.714964855Z",
        "2019-08-14T20:42:27.265Z",
        "2023-02-09T20:32:50.7Z",
        "1970-01-01T00:00:00Z",
        "2024-02-29T23:59:59Z",
        "2023-02-09T20:32:50.123+00:00",
    ],
)
def test_iso_ms_matches_the_standard_parser(text):
    expected = int(datetime.fromisoformat(text).timestamp() * 1000)
    assert iso_ms(text) == expected
    assert iso_ms(text) == expected  # again, from the per-second cache


def test_subscribe_request_shape():
    encode = msgspec.json.encode
    assert json.loads(encode(SubscribeRequest(type="subscribe", channel="heartbeats"))) == {
        "type": "subscribe",
        "channel": "heartbeats",
    }
    req = SubscribeRequest(type="unsubscribe", channel="level2", product_ids=["BTC-USD"], jwt="x")
    assert json.loads(encode(req)) == {
        "type": "unsubscribe",
        "channel": "level2",
        "product_ids": ["BTC-USD"],
        "jwt": "x",
    }
