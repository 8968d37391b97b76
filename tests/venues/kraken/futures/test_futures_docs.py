"""Kraken Futures WebSocket v1 samples written from Kraken's docs (``futures-websocket/book``,
``.../trade``, ``.../heartbeat``, the subscriptions guide): decoding, routing per product, the
book rebuilt from a snapshot and ``seq``-numbered deltas equal to an independent rebuild, and
a dropped delta caught by its ``seq`` and resynced (that product only)."""

from __future__ import annotations

import json

import msgspec
import pytest

from astra.core import Side
from astra.venues.kraken.futures_feed import FuturesBook, FuturesDialect, FuturesPool, FuturesTrades
from astra.venues.kraken.futures_schemas import (
    BookDelta,
    BookSnapshot,
    Event,
    FeedMessage,
    Heartbeat,
    HistoryTrade,
    Trade,
    TradeSnapshot,
)
from astra.venues.kraken.futures_symbols import KrakenFuturesMarket
from astra.venues.kraken.stream import KrakenStream

decode = msgspec.json.Decoder(FeedMessage).decode

# The docs' book snapshot (PI_XBTUSD; "tickSize": always null), as printed there.
SNAPSHOT = """{"feed": "book_snapshot", "product_id": "PI_XBTUSD", "timestamp": 1612269825817,
 "seq": 326072249, "tickSize": null,
 "bids": [{"price": 34892.5, "qty": 6385}, {"price": 34892, "qty": 10924}],
 "asks": [{"price": 34911.5, "qty": 20598}, {"price": 34912, "qty": 2300}]}"""


def delta(seq: int, side: str, price: float, qty: float, product: str = "PI_XBTUSD") -> str:
    """A ``book`` delta in the docs' shape (their example: sell 34981 x 0, seq 326094134)."""
    return json.dumps(
        {
            "feed": "book",
            "product_id": product,
            "side": side,
            "seq": seq,
            "price": price,
            "qty": qty,
            "timestamp": 1612269953629 + seq % 1000,
        }
    )


# Deltas continuing the snapshot: a new bid, a changed ask, deletes on both sides, a bid
# replacing the best one.
DELTAS = [
    delta(326072250, "buy", 34893.0, 1200.0),
    delta(326072251, "sell", 34911.5, 18000.0),
    delta(326072252, "sell", 34912.0, 0.0),
    delta(326072253, "buy", 34892.5, 0.0),
    delta(326072254, "sell", 34914.5, 500.0),
    delta(326072255, "buy", 34893.0, 1500.0),
]

TRADE_SNAPSHOT = """{"feed": "trade_snapshot", "product_id": "PI_XBTUSD", "trades": [
 {"feed": "trade", "product_id": "PI_XBTUSD", "uid": "caa9c653-420b-4c24-a9f1-462a054d86f1",
  "side": "sell", "type": "fill", "seq": 655508, "time": 1612269657781, "qty": 440,
  "price": 34893},
 {"feed": "trade", "product_id": "PI_XBTUSD", "uid": "45ee9737-1877-4682-bc68-e4ef818ef88a",
  "side": "sell", "type": "fill", "seq": 655507, "time": 1612269656839, "qty": 9643,
  "price": 34891}]}"""

TRADE = """{"feed": "trade", "product_id": "PI_XBTUSD",
 "uid": "05af78ac-a774-478c-a50c-8b9c234e071e", "side": "buy", "type": "fill", "seq": 655509,
 "time": 1612269670119, "qty": 15000, "price": 34969.5}"""

MARKET = KrakenFuturesMarket(
    symbol="KRAKEN-PERP-XBT-USD-COINM",
    exchange_symbol="PI_XBTUSD",
    kind="futures",
    metadata=None,  # type: ignore[arg-type]  (not used by the feed)
    product_id="PI_XBTUSD",
)


class _Stream(KrakenStream):
    """A stream that never connects: it records what its consumers ask of it."""

    def __init__(self) -> None:
        super().__init__(lambda: None, "ws://127.0.0.1:9/unused", FuturesDialect())
        self.asked: list[tuple[str, tuple]] = []

    def resubscribe(self, key) -> None:
        self.asked.append(("resubscribe", key))

    def subscribe_again(self, key) -> None:
        self.asked.append(("subscribe_again", key))


def _book(sink) -> tuple[FuturesBook, _Stream]:
    stream = _Stream()
    book = FuturesBook(
        FuturesPool(lambda: None, "ws://127.0.0.1:9/unused", silence=5), MARKET, sink
    )
    book.stream = stream
    stream.consumers[book.key] = (book,)
    book.on_subscribing()  # as the stream does when the subscribe goes out
    return book, stream


def test_docs_messages_decode():
    snap = decode(SNAPSHOT)
    assert type(snap) is BookSnapshot
    assert (snap.product_id, snap.seq, snap.timestamp) == ("PI_XBTUSD", 326072249, 1612269825817)
    bids, asks = snap.to_changes()
    assert bids == [(34892.5, 6385.0), (34892.0, 10924.0)]
    assert asks == [(34911.5, 20598.0), (34912.0, 2300.0)]
    d = decode(delta(326094134, "sell", 34981, 0))
    assert type(d) is BookDelta and d.to_changes() == ([], [(34981.0, 0.0)])
    assert decode(delta(7, "buy", 1.5, 2)).to_changes() == ([(1.5, 2.0)], [])

    trades = decode(TRADE_SNAPSHOT)
    assert type(trades) is TradeSnapshot and [t.seq for t in trades.trades] == [655508, 655507]
    first = trades.trades[0].to_trade()
    assert (first.price, first.quantity, first.side, first.time, first.trade_id) == (
        34893.0,
        440.0,
        Side.SELL,
        1612269657781,
        "caa9c653-420b-4c24-a9f1-462a054d86f1",
    )
    trade = decode(TRADE)
    assert type(trade) is Trade and trade.to_trade().side is Side.BUY

    beat = decode(b'{"feed": "heartbeat", "time": 1534262350627}')
    assert type(beat) is Heartbeat and beat.time == 1534262350627


@pytest.mark.parametrize(
    "text",
    [
        '{"event": "info", "version": 1}',
        '{"event": "subscribed", "feed": "book", "product_ids": ["PI_XBTUSD"]}',
        '{"event": "subscribed", "feed": "heartbeat"}',
        '{"event": "subscribed_failed", "feed": "book", "product_ids": ["PI_XBTUSD"]}',
        '{"event": "error", "message": "Invalid product id"}',
        '{"event": "alert", "message": "Failed to subscribe to authenticated feed"}',
    ],
)
def test_events_are_not_data(text):
    with pytest.raises(msgspec.ValidationError):
        decode(text)
    event = msgspec.json.decode(text, type=Event)
    assert event.event == json.loads(text)["event"]


def test_history_rows_to_trades():
    rows = msgspec.convert(
        [
            {
                "time": "2019-02-14T09:25:33.920Z",
                "trade_id": 100,
                "price": 3574,
                "size": 100,
                "side": "buy",
                "type": "fill",
                "uid": "a1",
            },
            {
                "time": "2019-02-14T09:25:34Z",
                "trade_id": 101,
                "price": 3574.5,
                "size": 7,
                "side": "sell",
                "type": "liquidation",
            },
        ],
        list[HistoryTrade],
    )
    assert [
        (t.price, t.quantity, t.side, t.time, t.trade_id) for t in map(HistoryTrade.to_trade, rows)
    ] == [
        (3574.0, 100.0, Side.BUY, 1550136333920, "a1"),
        (3574.5, 7.0, Side.SELL, 1550136334000, "101"),
    ]


async def test_snapshot_and_deltas_rebuild_the_book(recording_sink, seq_book):
    sink = recording_sink()
    book, stream = _book(sink)
    dialect = stream.dialect
    for frame in [SNAPSHOT, *DELTAS]:
        dialect.route(frame, stream)

    snap = json.loads(SNAPSHOT)
    ref = seq_book(
        [(str(lv["price"]), str(lv["qty"])) for lv in snap["bids"]],
        [(str(lv["price"]), str(lv["qty"])) for lv in snap["asks"]],
    )
    for frame in DELTAS:
        d = json.loads(frame)
        ref.apply(d["side"], str(d["price"]), str(d["qty"]))
    assert sink.book == ref.floats()
    assert sink.book == {
        "bids": {34893.0: 1500.0, 34892.0: 10924.0},
        "asks": {34911.5: 18000.0, 34914.5: 500.0},
    }
    # update ids are Kraken's seq: the snapshot's, then one more per delta
    assert sink.events == [("snapshot", 326072249)] + [
        ("update", 326072250 + i) for i in range(len(DELTAS))
    ]
    assert stream.asked == [] and book.synced


async def test_a_dropped_delta_is_a_gap_that_resyncs_this_product(recording_sink, seq_book):
    sink = recording_sink()
    book, stream = _book(sink)
    dialect = stream.dialect
    for frame in [SNAPSHOT, DELTAS[0], DELTAS[2], DELTAS[3]]:  # DELTAS[1] lost
        dialect.route(frame, stream)
    assert sink.kinds() == ["snapshot", "update", "resync"]  # nothing past the gap
    assert "book seq 326072252 after 326072250" in sink.resyncs()[0]
    assert stream.asked == [("resubscribe", ("book", "PI_XBTUSD"))]
    assert not book.synced

    # Kraken answers the resubscription with a fresh snapshot; deltas continue from it
    fresh = json.loads(SNAPSHOT) | {"seq": 326072253, "bids": [{"price": 34892, "qty": 1}]}
    book.on_subscribing()
    for frame in [json.dumps(fresh), DELTAS[4], DELTAS[5]]:
        dialect.route(frame, stream)
    assert sink.kinds()[3:] == ["snapshot", "update", "update"]
    assert sink.book == {
        "bids": {34893.0: 1500.0, 34892.0: 1.0},
        "asks": {34911.5: 20598.0, 34912.0: 2300.0, 34914.5: 500.0},
    }

    # a repeated delta is out of sequence too; updates flowed since the last failure, so
    # it resubscribes at once
    resubscribe = ("resubscribe", ("book", "PI_XBTUSD"))
    dialect.route(DELTAS[5], stream)
    assert sink.kinds()[-1] == "resync" and stream.asked == [resubscribe] * 2
    # a fresh snapshot then straight away another gap: failures in a row back off
    book.on_subscribing()
    dialect.route(json.dumps(fresh | {"seq": 10}), stream)
    dialect.route(delta(12, "buy", 34890.0, 1.0), stream)
    assert sink.kinds()[-2:] == ["snapshot", "resync"]
    assert stream.asked == [resubscribe] * 2
    assert book._retry is not None  # the resubscription waits for the backoff
    book._cancel_timers()


async def test_other_products_on_the_connection_are_untouched(recording_sink):
    sink, other = recording_sink(), recording_sink()
    book, stream = _book(sink)
    eth = KrakenFuturesMarket("KRAKEN-PERP-ETH-USD", "PF_ETHUSD", "futures", None, "PF_ETHUSD")  # type: ignore[arg-type]
    pool = FuturesPool(lambda: None, "ws://127.0.0.1:9/unused", silence=5)
    eth_book = FuturesBook(pool, eth, other)
    eth_book.stream = stream
    stream.consumers[eth_book.key] = (eth_book,)
    eth_book.on_subscribing()
    eth_snap = json.loads(SNAPSHOT) | {"product_id": "PF_ETHUSD", "seq": 5}
    frames = [
        SNAPSHOT,
        json.dumps(eth_snap),
        DELTAS[0],
        delta(6, "buy", 34000.0, 2.0, "PF_ETHUSD"),
        DELTAS[2],  # PI_XBTUSD gap
        delta(7, "buy", 34000.5, 3.0, "PF_ETHUSD"),
    ]
    for frame in frames:
        stream.dialect.route(frame, stream)
    assert sink.kinds() == ["snapshot", "update", "resync"]
    assert other.kinds() == ["snapshot", "update", "update"] and other.resyncs() == []
    assert stream.asked == [("resubscribe", ("book", "PI_XBTUSD"))]
    book._cancel_timers()
    eth_book._cancel_timers()


async def test_trades_snapshot_is_history_then_each_trade_once(recording_sink):
    sink = recording_sink()
    pool = FuturesPool(lambda: None, "ws://127.0.0.1:9/unused", silence=5)
    trades = FuturesTrades(pool, MARKET, sink)
    stream = _Stream()
    trades.stream = stream
    stream.consumers[trades.key] = (trades,)
    for frame in [TRADE_SNAPSHOT, TRADE, TRADE]:  # the repeat is dropped
        stream.dialect.route(frame, stream)
    assert [t.trade_id for t in sink.trades] == ["05af78ac-a774-478c-a50c-8b9c234e071e"]
    # after a reconnect the snapshot fills the gap, oldest first, without repeats
    later = json.loads(TRADE_SNAPSHOT)
    later["trades"] = [
        json.loads(TRADE) | {"seq": 655511, "uid": "c"},
        json.loads(TRADE) | {"seq": 655510, "uid": "b"},
        json.loads(TRADE),
    ]
    stream.dialect.route(json.dumps(later), stream)
    assert [t.trade_id for t in sink.trades][1:] == ["b", "c"]


async def test_a_refused_subscription_resyncs_and_retries(recording_sink):
    sink = recording_sink()
    book, stream = _book(sink)
    stream.dialect.route(
        '{"event": "subscribed_failed", "feed": "book", "product_ids": ["PI_XBTUSD"]}', stream
    )
    assert "subscription rejected" in sink.resyncs()[0]
    assert stream.asked == [("subscribe_again", ("book", "PI_XBTUSD"))]
    stream.dialect.route('{"event": "error", "message": "Invalid product id"}', stream)
    assert len(sink.events) == 1  # names no product: logged only
    book._cancel_timers()


def test_undecodable_data_reconnects():
    stream = _Stream()
    with pytest.raises(ValueError, match="undecodable book"):
        stream.dialect.route('{"feed": "book", "product_id": "PI_XBTUSD", "seq": "x"}', stream)
    stream.dialect.route('{"feed": "ticker", "product_id": "PI_XBTUSD"}', stream)  # not ours
