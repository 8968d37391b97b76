"""Kraken WebSocket v2 samples written from Kraken's docs (``/api/docs/websocket-v2/book``,
``.../trade``, the v2 book-checksum guide): decoding, and checksums the docs publish,
reproduced from numbers at the pair's precision; one computed by hand."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import msgspec
import pytest

from astra.core import Side
from astra.venues.kraken.feed import ChecksumMismatch, KrakenBook, checksum_of
from astra.venues.kraken.schemas import (
    BookData,
    BookMessage,
    ChannelMessage,
    Heartbeat,
    MethodResponse,
    StatusMessage,
    TradeMessage,
    rfc3339_ms,
)

decode = msgspec.json.Decoder(ChannelMessage).decode

# The docs' book snapshot (MATIC/USD: price 4 places, qty 8), numbers as the docs print them.
SNAPSHOT = b"""{"channel": "book", "type": "snapshot", "data": [{"symbol": "MATIC/USD",
 "bids": [{"price": 0.5666, "qty": 4831.75496356}, {"price": 0.5665, "qty": 6658.22734739},
  {"price": 0.5664, "qty": 18724.91513344}, {"price": 0.5663, "qty": 11563.92544914},
  {"price": 0.5662, "qty": 14006.65365711}, {"price": 0.5661, "qty": 17454.85679807},
  {"price": 0.566, "qty": 18097.1547}, {"price": 0.5659, "qty": 33644.89175666},
  {"price": 0.5658, "qty": 148.3464}, {"price": 0.5657, "qty": 606.70854372}],
 "asks": [{"price": 0.5668, "qty": 4410.79769741}, {"price": 0.5669, "qty": 4655.40412487},
  {"price": 0.567, "qty": 49844.89424998}, {"price": 0.5671, "qty": 24306.41678},
  {"price": 0.5672, "qty": 29783.25223475}, {"price": 0.5673, "qty": 57234.71239278},
  {"price": 0.5674, "qty": 45065.04744}, {"price": 0.5675, "qty": 5912.76380354},
  {"price": 0.5676, "qty": 42514.92434778}, {"price": 0.5677, "qty": 36304.0847022}],
 "checksum": 2439117997, "timestamp": "2023-10-06T17:35:55.440295Z"}]}"""

UPDATE = b"""{"channel": "book", "type": "update", "data": [{"symbol": "MATIC/USD",
 "bids": [{"price": 0.5657, "qty": 1098.3947558}], "asks": [],
 "checksum": 2114181697, "timestamp": "2023-10-06T17:35:55.440295Z"}]}"""

# The checksum guide's BTC/USD example (price 1 place, qty 8), published checksum 3310070434.
GUIDE_ASKS = [
    (45285.2, 0.001), (45286.4, 1.54571953), (45286.6, 1.54571109), (45289.6, 1.54560911),
    (45290.2, 0.1589066), (45291.8, 1.54553491), (45294.7, 0.04454749), (45296.1, 0.3538),
    (45297.5, 0.09945542), (45299.5, 0.18772827),
]  # fmt: skip
GUIDE_BIDS = [
    (45283.5, 0.1), (45283.4, 1.54582015), (45282.1, 0.1), (45281.0, 0.1),
    (45280.3, 1.54592586), (45279.0, 0.0799), (45277.6, 0.03310103), (45277.5, 0.3),
    (45277.3, 1.54602737), (45276.6, 0.15445238),
]  # fmt: skip


def test_docs_snapshot_and_update_checksums_are_reproduced():
    snap = decode(SNAPSHOT)
    assert type(snap) is BookMessage and snap.type == "snapshot"
    data = snap.data[0]
    assert (data.symbol, data.checksum, len(data.bids), len(data.asks)) == (
        "MATIC/USD",
        2439117997,
        10,
        10,
    )
    book = KrakenBook(10, price_decimals=4, qty_decimals=8)
    book.reset(*data.to_changes())
    book.verify(2439117997)
    assert data.timestamp_ms(0) == 1696613755440

    update = decode(UPDATE).data[0]
    bids, asks = book.apply(*update.to_changes())
    assert (bids, asks) == ([(0.5657, 1098.3947558)], [])
    book.verify(2114181697)
    assert book.top(1) == ([(0.5666, 4831.75496356)], [(0.5668, 4410.79769741)])


def test_the_checksum_needs_the_pairs_precision_not_the_json_text():
    """18097.1547 must be written 1809715470000 (8 places): the numbers' own shortest text,
    as a JSON number parser gives it, hashes to something else."""
    data = decode(SNAPSHOT).data[0]
    bids, asks = data.to_changes()
    naive = "".join(
        (repr(p) + repr(q)).replace(".", "").lstrip("0") for p, q in asks[:10] + bids[:10]
    )
    assert zlib.crc32(naive.encode()) != 2439117997
    assert checksum_of(asks, bids, 4, 8) == 2439117997
    assert checksum_of(asks, bids, 4, 7) != 2439117997


def test_guide_example_checksum():
    assert checksum_of(GUIDE_ASKS, GUIDE_BIDS, 1, 8) == 3310070434
    # the guide's first ask: "45285.2" -> "452852", "0.00100000" -> "100000"
    book = KrakenBook(1000, 1, 8)
    book.reset(GUIDE_BIDS, GUIDE_ASKS)
    assert book.checksum() == 3310070434


def test_a_checksum_computed_by_hand():
    # asks 0.05005 x 0.000005 then 0.0501 x 2, bids 0.05 x 1.5 (price 5 places, qty 8):
    #   "0.05005"->"5005" "0.00000500"->"500"  "0.05010"->"5010" "2.00000000"->"200000000"
    #   "0.05000"->"5000" "1.50000000"->"150000000"
    text = "5005" + "500" + "5010" + "200000000" + "5000" + "150000000"
    expected = zlib.crc32(text.encode())
    assert expected == 1179831647
    book = KrakenBook(10, 5, 8)
    book.reset([(0.05, 1.5)], [(0.0501, 2.0), (0.05005, 0.000005)])
    assert book.checksum() == expected
    with pytest.raises(ChecksumMismatch):
        book.verify(expected ^ 1)


def test_truncation_to_the_subscribed_depth_is_forwarded_as_deletes():
    """Docs: subscribed at depth 10, an insert that makes 11 bids removes the worst bid
    (Kraken sends no delete for it)."""
    book = KrakenBook(10, 1, 8)
    book.reset([(100.0 - i, 1.0) for i in range(10)], [(101.0 + i, 1.0) for i in range(10)])
    bids, asks = book.apply([(99.5, 2.0)], [(100.5, 3.0), (101.0, 0.0)])
    assert bids == [(99.5, 2.0), (91.0, 0.0)]  # 91 fell out of the top 10
    assert asks == [(100.5, 3.0), (101.0, 0.0)]  # a delete kept it at 10: nothing dropped
    assert len(book.bids) == len(book.asks) == 10 and 91.0 not in book.bids
    assert book.top(2) == ([(100.0, 1.0), (99.5, 2.0)], [(100.5, 3.0), (102.0, 1.0)])
    book.apply([(42.0, 0.0)], [])  # deleting an absent level is not an error
    assert len(book.bids) == 10


def test_control_messages_decode():
    assert type(decode(b'{"channel":"heartbeat"}')) is Heartbeat
    status = decode(
        b'{"channel":"status","type":"update","data":[{"api_version":"v2",'
        b'"connection_id":12393906104898154338,"system":"online","version":"2.0.0"}]}'
    )
    assert type(status) is StatusMessage and status.data[0].system == "online"
    ack = b"""{"method": "subscribe", "result": {"channel": "book", "depth": 10,
     "snapshot": true, "symbol": "ALGO/USD"}, "success": true,
     "time_in": "2023-10-06T17:35:55.219022Z", "time_out": "2023-10-06T17:35:55.219067Z"}"""
    with pytest.raises(msgspec.ValidationError):  # no "channel": not a data message
        decode(ack)
    reply = msgspec.json.decode(ack, type=MethodResponse)
    assert (reply.method, reply.success, reply.result["symbol"]) == ("subscribe", True, "ALGO/USD")
    error = msgspec.json.decode(
        b'{"error":"Currency pair not supported XBT/XYZ","method":"subscribe","req_id":7,'
        b'"success":false,"time_in":"2023-10-06T17:35:55.219022Z",'
        b'"time_out":"2023-10-06T17:35:55.219067Z"}',
        type=MethodResponse,
    )
    assert (error.success, error.req_id) == (False, 7)
    pong = msgspec.json.decode(b'{"method":"pong","req_id":101}', type=MethodResponse)
    assert pong.method == "pong"


def test_trade_message_to_trades():
    msg = decode(
        b"""{"channel": "trade", "type": "update", "data": [
        {"symbol": "MATIC/USD", "side": "sell", "price": 0.5117, "qty": 40.0,
         "ord_type": "market", "trade_id": 4665906, "timestamp": "2023-09-25T07:49:37.708706Z"},
        {"symbol": "MATIC/USD", "side": "buy", "price": 0.5118, "qty": 12.5,
         "ord_type": "limit", "trade_id": 4665907, "timestamp": "2023-09-25T07:49:38Z"}]}"""
    )
    assert type(msg) is TradeMessage
    first, second = (t.to_trade() for t in msg.data)
    assert (first.price, first.quantity, first.side, first.trade_id) == (
        0.5117,
        40.0,
        Side.SELL,
        "4665906",
    )
    assert first.time == 1695628177708
    assert (second.side, second.time) == (Side.BUY, 1695628178000)


@pytest.mark.parametrize(
    "ts",
    [
        "2023-10-06T17:35:55.440295Z",
        "2023-10-06T17:35:55.4Z",
        "2023-10-06T17:35:55Z",
        "2024-02-29T23:59:59.999999Z",
        "2023-10-06T19:35:55.440295+02:00",
    ],
)
def test_rfc3339_ms(ts):
    expected = int(datetime.fromisoformat(ts).astimezone(UTC).timestamp() * 1000)
    assert rfc3339_ms(ts) == expected


@pytest.mark.parametrize(
    "ts",
    ["2023-10-06T17:35:55.440295Z", "2023-10-06T17:35:55.000001Z", "2024-02-29T23:59:59.999999Z"],
)
def test_the_inlined_v2_timestamp_equals_the_general_parse(ts):
    data = BookData(symbol="BTC/USD", checksum=0, timestamp=ts)
    general = int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
    assert data.timestamp_ms(0) == rfc3339_ms(ts) == general


def test_a_malformed_v2_timestamp_is_not_read_as_a_time():
    with pytest.raises(ValueError):
        bad = BookData(symbol="BTC/USD", checksum=0, timestamp="2023-10-06T17:35:55.4x0295Z")
        bad.timestamp_ms(0)
