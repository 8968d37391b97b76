"""The integrity rule on documented messages, without sockets: the connection-wide
``sequence_num`` chain, resync of every book on a connection after a gap, updates dropped
until the new snapshot, and trade backfill from the snapshot after a gap."""

from __future__ import annotations

import copy
import json

import pytest

from astra.venues.coinbase.feed import (
    BookRouter,
    SequenceCheck,
    SequenceRegression,
    SnapshotTimeout,
    TradeRouter,
)


def _msg(samples, name: str, seq: int, product: str | None = None) -> bytes:
    msg = copy.deepcopy(samples("ws-messages.json")[name])
    msg["sequence_num"] = seq
    for event in msg.get("events", []):
        if product and "product_id" in event:
            event["product_id"] = product
    return json.dumps(msg).encode()


def test_sequence_check():
    check = SequenceCheck()
    assert check.check(5) and check.check(6)  # the first number is the baseline
    assert not check.check(8)  # 7 was lost
    assert check.check(9)  # the chain continues from 8
    with pytest.raises(SequenceRegression):
        check.check(9)
    check.reset()
    assert check.check(0)


def test_book_session_with_a_gap_resyncs_every_product(samples, recording_sink):
    router = BookRouter()
    btc, eth = recording_sink(), recording_sink()
    assert router.add("BTC-USD", btc, 0.0, "COINBASE-SPOT-BTC-USD")
    assert router.add("ETH-USD", eth, 0.0, "COINBASE-SPOT-ETH-USD")
    router.connected(0.0)
    session = [
        _msg(samples, "subscriptions", 0),
        _msg(samples, "level2_snapshot", 1, "BTC-USD"),
        _msg(samples, "level2_snapshot", 2, "ETH-USD"),
        _msg(samples, "heartbeats", 3),
        _msg(samples, "level2_update", 4, "BTC-USD"),
    ]
    for raw in session:
        assert router.on_message(raw, 1.0) == []
    router.check_timeouts(100.0)  # both snapshots came: nothing pending
    assert btc.kinds() == ["snapshot", "update"] and eth.kinds() == ["snapshot"]
    assert btc.book.market == "COINBASE-SPOT-BTC-USD"
    assert (btc.book.update_id, btc.book.timestamp) == (4, 1675974771020)
    assert btc.book.bids == {21921.73: 0.06317902, 21921.5: 0.25, 21920.01: 1.5}
    assert btc.book.asks == {21921.74: 0.1, 21922.05: 0.4}

    # message 5 (a heartbeat, an update: nobody knows) is lost
    resubscribe = router.on_message(_msg(samples, "level2_update", 6, "ETH-USD"), 2.0)
    assert sorted(resubscribe) == ["BTC-USD", "ETH-USD"]
    assert btc.kinds()[-1] == eth.kinds()[-1] == "resync"
    assert "sequence gap: sequence_num 6 after 4" in btc.calls[-1][1]
    # in flight before the unsubscribe took effect: dropped, not applied
    router.on_message(_msg(samples, "level2_update", 7, "BTC-USD"), 2.0)
    router.on_message(_msg(samples, "heartbeats", 8), 2.0)
    assert btc.kinds() == ["snapshot", "update", "resync"]
    with pytest.raises(SnapshotTimeout, match="no level2 snapshot"):
        router.check_timeouts(2.0 + router.snapshot_timeout + 1)
    router.on_message(_msg(samples, "level2_snapshot", 9, "BTC-USD"), 2.5)
    router.on_message(_msg(samples, "level2_update", 10, "BTC-USD"), 2.5)
    assert btc.kinds()[3:] == ["snapshot", "update"] and btc.book.update_id == 10
    assert eth.kinds() == ["snapshot", "resync"]  # still waiting for its snapshot
    assert router.stats["gaps"] == 1


def test_sequence_regression_and_a_new_connection(samples, recording_sink):
    router = BookRouter()
    sink = recording_sink()
    router.add("BTC-USD", sink, 0.0, "M")
    router.connected(0.0)
    router.on_message(_msg(samples, "level2_snapshot", 7, "BTC-USD"), 0.0)
    with pytest.raises(SequenceRegression):
        router.on_message(_msg(samples, "heartbeats", 3), 0.0)
    router.disconnected("reconnecting: test")
    assert sink.kinds() == ["snapshot", "resync"]
    # Every failed attempt is told, synced or not (the engine ignores a repeated state).
    router.disconnected("reconnecting: again")
    assert sink.kinds() == ["snapshot", "resync", "resync"]
    router.connected(1.0)  # a new connection restarts the chain at any number
    assert router.on_message(_msg(samples, "level2_snapshot", 0, "BTC-USD"), 1.0) == []
    assert sink.kinds() == ["snapshot", "resync", "resync", "snapshot"]


def test_a_book_that_never_synced_hears_of_a_failed_connection(recording_sink):
    """The venue is down from the start: no snapshot ever came, yet every subscriber is told
    the connection failed (else its readers wait for a snapshot that cannot come)."""
    router = BookRouter()
    btc, eth = recording_sink(), recording_sink()
    router.add("BTC-USD", btc, 0.0, "M")
    router.add("ETH-USD", eth, 0.0, "N")
    router.disconnected("reconnecting: ConnectionRefusedError(111)")
    assert btc.calls == eth.calls == [("resync", "reconnecting: ConnectionRefusedError(111)")]


def test_markets_sharing_a_product_get_their_own_books(samples, recording_sink):
    """BTC-USDC streams as BTC-USD: both markets subscribe the one product."""
    router = BookRouter()
    usd, usdc = recording_sink(), recording_sink()
    assert router.add("BTC-USD", usd, 0.0, "COINBASE-SPOT-BTC-USD")
    router.connected(0.0)
    router.on_message(_msg(samples, "level2_snapshot", 0, "BTC-USD"), 0.0)
    assert not router.add("BTC-USD", usdc, 0.5, "COINBASE-SPOT-BTC-USDC")  # not a new product
    router.on_message(_msg(samples, "level2_update", 1, "BTC-USD"), 0.5)
    assert usdc.calls == []  # no snapshot yet for the newcomer: nothing to apply updates to
    router.on_message(_msg(samples, "level2_snapshot", 2, "BTC-USD"), 0.6)
    router.on_message(_msg(samples, "level2_update", 3, "BTC-USD"), 0.6)
    assert usd.kinds() == ["snapshot", "update", "snapshot", "update"]
    assert usdc.kinds() == ["snapshot", "update"]
    assert usd.book is not usdc.book and usdc.book.market == "COINBASE-SPOT-BTC-USDC"
    assert usd.book.bids == usdc.book.bids and usd.book.asks == usdc.book.asks
    assert not router.remove("BTC-USD", usd) and router.remove("BTC-USD", usdc)
    assert router.products == {}


def test_updates_after_a_snapshot_in_one_message_are_folded_in(samples, recording_sink):
    router = BookRouter()
    sink = recording_sink()
    router.add("BTC-USD", sink, 0.0, "M")
    router.connected(0.0)
    msg = samples("ws-messages.json")["level2_snapshot"]
    msg["events"] += samples("ws-messages.json")["level2_update"]["events"]
    router.on_message(json.dumps(msg), 0.0)
    assert sink.kinds() == ["snapshot"] and sink.book.update_id == 0
    assert 21921.3 not in sink.book.bids and sink.book.bids[21921.5] == 0.25


def test_trades_first_snapshot_is_history_and_a_gap_is_backfilled(samples, recording_sink):
    router = TradeRouter()
    sink = recording_sink()
    router.add("ETH-USD", sink, 0.0)
    router.connected(0.0)
    router.on_message(_msg(samples, "market_trades_snapshot", 0), 0.0)
    assert sink.trades == []
    router.on_message(_msg(samples, "market_trades_update", 1), 0.0)
    assert [t.trade_id for t in sink.trades] == ["000000003", "000000004"]  # oldest first
    # a gap: the venue's next snapshot holds trade 5, which the lost message carried
    assert router.on_message(_msg(samples, "heartbeats", 3), 0.0) == ["ETH-USD"]
    snap = samples("ws-messages.json")["market_trades_snapshot"]
    snap["sequence_num"] = 4
    newer = dict(snap["events"][0]["trades"][0], trade_id="000000005")
    snap["events"][0]["trades"] = [
        newer,
        *samples("ws-messages.json")["market_trades_update"]["events"][0]["trades"],
    ]
    router.on_message(json.dumps(snap), 0.0)
    assert [t.trade_id for t in sink.trades] == ["000000003", "000000004", "000000005"]
    router.check_timeouts(1e9)  # trades never wait for a snapshot


def _trades_msg(seq: int, kind: str, trades: list[tuple[str, str]]) -> str:
    """A ``market_trades`` message of ETH-USD trades ``(trade_id, time)``, newest first."""
    trade = {"product_id": "ETH-USD", "price": "1260.5", "size": "0.1", "side": "BUY"}
    rows = [{"trade_id": tid, "time": time, **trade} for tid, time in trades]
    msg = {"channel": "market_trades", "client_id": "", "timestamp": "2024-10-08T09:10:52Z"}
    return json.dumps({**msg, "sequence_num": seq, "events": [{"type": kind, "trades": rows}]})


def test_trades_are_not_ordered_by_id_or_time(recording_sink):
    # Coinbase documents trade_id as a string, not as increasing, and trades share a
    # millisecond: neither may be what decides whether a trade is new.
    router = TradeRouter()
    sink = recording_sink()
    router.add("ETH-USD", sink, 0.0)
    router.connected(0.0)
    ms = "2024-10-08T09:10:52.425Z"
    router.on_message(_trades_msg(0, "snapshot", [("b2f0", "2024-10-08T09:10:51.000Z")]), 0.0)
    router.on_message(_trades_msg(1, "update", [("f3c1", ms)]), 0.0)
    router.on_message(_trades_msg(2, "update", [("0a9e", ms), ("9d4b", ms)]), 0.0)  # same ms
    router.on_message(_trades_msg(3, "update", [("000000009", ms)]), 0.0)  # id lower than...
    router.on_message(_trades_msg(4, "update", [("000000008", ms)]), 0.0)  # ...then lower still
    assert [t.trade_id for t in sink.trades] == ["f3c1", "9d4b", "0a9e", "000000009", "000000008"]
    # A gap (5 lost); the next snapshot holds the lost trade, in the same millisecond as the
    # last one forwarded, beside trades already forwarded and older history.
    assert router.on_message(_trades_msg(6, "update", []), 0.0) == ["ETH-USD"]
    snapshot = [("77aa", ms), ("000000008", ms), ("f3c1", ms), ("0001", "2024-10-08T09:10:50Z")]
    router.on_message(_trades_msg(7, "snapshot", snapshot), 0.0)
    assert [t.trade_id for t in sink.trades][5:] == ["77aa"]  # only the lost one
    router.on_message(_trades_msg(8, "update", [("77aa", ms)]), 0.0)  # never twice
    assert len(sink.trades) == 6


def test_trade_ids_remembered_are_the_last_thousand_in_arrival_order(recording_sink):
    """Past 1,000 ids the oldest goes first (one O(1) eviction per trade): a repeat of a
    remembered id is dropped, an id forgotten long ago is new again."""
    router = TradeRouter()
    sink = recording_sink()
    router.add("ETH-USD", sink, 0.0)
    router.connected(0.0)
    ms = "2024-10-08T09:10:52.425Z"
    router.on_message(_trades_msg(0, "snapshot", []), 0.0)
    for n in range(1, 1501):
        router.on_message(_trades_msg(n, "update", [(f"t{n}", ms)]), 0.0)
    (sub,) = router.products["ETH-USD"]
    assert list(sub.seen) == [f"t{n}" for n in range(501, 1501)]
    router.on_message(_trades_msg(1501, "update", [("t501", ms), ("t1", ms)]), 0.0)
    assert [t.trade_id for t in sink.trades[-2:]] == ["t1500", "t1"]
    assert list(sub.seen)[-1] == "t1" and len(sub.seen) == 1000
