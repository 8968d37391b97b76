"""Samples written from OKX's current v5 docs ("Order book channel", "Trades channel"):
seqId/prevSeqId continuity (snapshot prevSeqId -1, the no-change message, the maintenance
reset), the checksum (its documented example, 0 = deprecated/not sent), and trades."""

from __future__ import annotations

import msgspec
import pytest

from astra.core import Side
from astra.venues.okx.feed import BookSync, ChecksumMismatch, SequenceGap, book_checksum
from astra.venues.okx.schemas import BookData, Push, TradeData

decode_book = msgspec.json.Decoder(Push[BookData]).decode
decode_trades = msgspec.json.Decoder(Push[TradeData]).decode


def test_the_documented_checksum_string():
    # Docs: bids 3366.1/7, 3366/6; asks 3366.8/9, 3368/8 -> "3366.1:7:3366.8:9:3366:6:3368:8";
    # with fewer bids than asks, the remaining asks follow: "3366.1:7:3366.8:9:3368:8:3372:8".
    assert book_checksum(["3366.1:7", "3366:6"], ["3366.8:9", "3368:8"]) == -1881014294
    assert book_checksum(["3366.1:7"], ["3366.8:9", "3368:8", "3372:8"]) == 831078360


def _msg(action, bids, asks, seq, prev, checksum=None, sync_for_checksum=None) -> BookData:
    data = {"asks": asks, "bids": bids, "ts": "1597026383085", "seqId": seq, "prevSeqId": prev}
    data["checksum"] = checksum if checksum is not None else 0
    arg = {"channel": "books", "instId": "BTC-USDT"}
    text = msgspec.json.encode({"arg": arg, "action": action, "data": [data]})
    return decode_book(text).data[0]


def _expected_checksum(bids: dict[str, str], asks: dict[str, str]) -> int:
    """Independent: sort the text levels by decimal price, interleave the top 25."""
    top_b = sorted(bids.items(), key=lambda kv: -float(kv[0]))[:25]
    top_a = sorted(asks.items(), key=lambda kv: float(kv[0]))[:25]
    return book_checksum([f"{p}:{q}" for p, q in top_b], [f"{p}:{q}" for p, q in top_a])


SNAP_BIDS = [["8476.97", "256", "0", "13"], ["8475.55", "101", "0", "1"], ["8475", "1", "0", "1"]]
SNAP_ASKS = [["8476.98", "415", "0", "13"], ["8477", "7", "0", "2"], ["8477.34", "85", "0", "1"]]


def _synced() -> BookSync:
    sync = BookSync("OKX-SPOT-BTC-USDT")
    expected = _expected_checksum(
        {p: q for p, q, *_ in SNAP_BIDS}, {p: q for p, q, *_ in SNAP_ASKS}
    )
    book = sync.snapshot(_msg("snapshot", SNAP_BIDS, SNAP_ASKS, 123, -1, expected))
    assert book.update_id == 123 and book.timestamp == 1597026383085
    assert book.top(1) == ([(8476.97, 256.0)], [(8476.98, 415.0)])
    return sync


def test_updates_continue_the_chain_and_match_checksums():
    sync = _synced()
    bids = {"8476.97": "256", "8475.55": "101", "8475": "1"}
    asks = {"8476.98": "415", "8477": "7", "8477.34": "85"}
    steps = [  # (seqId, bid changes, ask changes)
        (130, [["8476.97", "0", "0", "0"], ["8476.5", "3", "0", "1"]], []),
        (131, [], [["8476.98", "400", "0", "12"]]),
        (145, [["8475", "0", "0", "0"]], [["8476.99", "0.5", "0", "1"]]),
    ]
    prev = 123
    for seq, bid_changes, ask_changes in steps:
        for side, changes in ((bids, bid_changes), (asks, ask_changes)):
            for p, q, *_ in changes:
                if q == "0":
                    side.pop(p)
                else:
                    side[p] = q
        result = sync.update(
            _msg("update", bid_changes, ask_changes, seq, prev, _expected_checksum(bids, asks))
        )
        assert result is not None and result[0] == seq
        assert result[1] == [(float(p), float(q)) for p, q, *_ in bid_changes]
        prev = seq
    assert sync.seq == 145


def test_the_no_change_message_keeps_the_chain_and_emits_nothing():
    sync = _synced()
    assert sync.update(_msg("update", [], [], 123, 123)) is None
    assert sync.update(_msg("update", [], [["8477", "8", "0", "2"]], 124, 123)) is not None


@pytest.mark.parametrize(
    ("seq", "prev", "match"),
    [
        (140, 130, "prevSeqId=130 but previous seqId=123"),  # lost messages
        (3, 123, "sequence reset"),  # maintenance reset: continuity holds, book resynced
    ],
)
def test_a_broken_or_reset_chain_is_a_gap(seq, prev, match):
    with pytest.raises(SequenceGap, match=match):
        _synced().update(_msg("update", [["8476.5", "3", "0", "1"]], [], seq, prev))


def test_a_change_without_a_new_seq_id_is_refused():
    with pytest.raises(SequenceGap, match="did not advance"):
        _synced().update(_msg("update", [["8476.5", "3", "0", "1"]], [], 123, 123))


def test_checksum_zero_is_not_checked_and_a_wrong_one_is():
    sync = _synced()
    assert sync.update(_msg("update", [["8476.5", "3", "0", "1"]], [], 124, 123, 0)) is not None
    with pytest.raises(ChecksumMismatch):
        sync.update(_msg("update", [["8476.4", "3", "0", "1"]], [], 125, 124, 12345))
    lenient = BookSync("X", verify_checksum=False)
    lenient.snapshot(_msg("snapshot", SNAP_BIDS, SNAP_ASKS, 1, -1, 12345))
    assert lenient.synced


def test_a_snapshot_with_a_wrong_checksum_is_refused():
    with pytest.raises(ChecksumMismatch):
        BookSync("X").snapshot(_msg("snapshot", SNAP_BIDS, SNAP_ASKS, 1, -1, 42))


def test_trades_push_and_rest_rows():
    push = decode_trades(
        b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
        b'"tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy",'
        b'"ts":"1630048897897","count":"3","source":"0","seqId":1234}]}'
    )
    trade = push.data[0].to_trade()
    assert (trade.price, trade.quantity, trade.side, trade.time, trade.trade_id) == (
        42219.9,
        0.12060306,
        Side.BUY,
        1630048897897,
        "130639474",
    )
    row = {"instId": "BTC-USDT", "side": "sell", "sz": "1", "px": "1", "tradeId": "9", "ts": "5"}
    assert msgspec.convert(row, TradeData).to_trade().side is Side.SELL


def test_control_events_decode():
    ack = decode_book(
        b'{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a4d3ae55"}'
    )
    assert (ack.event, ack.arg.instId, ack.data) == ("subscribe", "BTC-USDT", [])
    err = decode_book(b'{"event":"error","code":"60012","msg":"Invalid request","connId":"x"}')
    assert (err.event, err.code, err.arg) == ("error", "60012", None)
