"""Replay from the tape (``astra.history.replay``): real Parquet files in tmp_path, written
with ``astra.tape.write_rows``; the frames replayed are checked against the record itself and
against books rebuilt from it (``RecordedBook``)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading

import msgspec
import pyarrow as pa
import pytest

from astra.core import BookResync, BookUpdate, InvalidMarket, InvalidParameter, Level
from astra.history.book import RecordedBook
from astra.history.replay import ReplayStream, book_anchor, recorded_span, replay_events
from astra.tape import BOOK, BOOK_SCHEMA, TRADE, TRADE_SCHEMA, compact, write_rows

A, B = "SIM-SPOT-BTC-USDT", "SIM2-SPOT-BTC-USDT"
T0 = 1_796_580_000_000_000  # 2026-12-06T18:00:00Z, µs
MS = 1_000
_encode = msgspec.json.Encoder().encode


class Tape:
    """A scripted book record of one market: a live client's messages with local times."""

    def __init__(self, market: str, seed: int = 0) -> None:
        self.market = market
        self.rng = random.Random(seed)
        self.rows: list[dict] = []
        self.book = RecordedBook(market)  # what a live client holds after the rows so far
        self.update_id = 0

    def _row(self, ts: int, kind: str, reason: str | None, frame: bytes) -> None:
        msg = json.loads(frame)
        self.rows.append({"local_ts": ts, "type": kind, "reason": reason,
                          "update_id": msg.get("updateId"), "timestamp": msg.get("timestamp"),
                          "frame": frame})
        if reason != "periodic":
            self.book.apply_frames([frame])

    def _levels(self, n: int, lo: float) -> list[Level]:
        return [Level(round(lo + self.rng.randint(0, 40) * 0.5, 1),
                      self.rng.choice([0.0, 0.25, 1.5, 2.0])) for _ in range(n)]

    def snapshot(self, ts: int, reason: str) -> None:
        self.update_id += 1
        frame = _encode(BookUpdate(
            type="snapshot", market=self.market, update_id=self.update_id,
            bids=[lv for lv in self._levels(8, 100) if lv.quantity],
            asks=[lv for lv in self._levels(8, 121) if lv.quantity], timestamp=ts // 1000))
        self._row(ts, "snapshot", reason, frame)

    def update(self, ts: int) -> None:
        self.update_id += 1
        frame = _encode(BookUpdate(type="update", market=self.market, update_id=self.update_id,
                                   bids=self._levels(2, 100), asks=self._levels(2, 121),
                                   timestamp=ts // 1000))
        self._row(ts, "update", None, frame)

    def periodic(self, ts: int) -> None:
        """A recorder checkpoint: the live book at that moment, never sent live."""
        self._row(ts, "snapshot", "periodic", self.book.snapshot_frame())

    def resync(self, ts: int, reason: str = "sequence gap") -> bytes:
        frame = _encode(BookResync(market=self.market, reason=reason, state="resyncing",
                                   since=ts // 1000))
        self._row(ts, "resync", reason, frame)
        return frame

    def write(self, root, parts: int = 3) -> None:
        """As a recorder's flushes: ``parts`` files, in order."""
        n = len(self.rows)
        cuts = [round(i * n / parts) for i in range(parts + 1)]
        for seq, (lo, hi) in enumerate(itertools.pairwise(cuts)):
            if hi > lo:
                write_rows(root, self.market, BOOK,
                           pa.Table.from_pylist(self.rows[lo:hi], schema=BOOK_SCHEMA), seq)

    def book_at(self, t: int) -> RecordedBook:
        return RecordedBook(self.market).apply_frames(
            r["frame"] for r in self.rows if r["local_ts"] <= t and r["reason"] != "periodic")


def _levels(book: RecordedBook) -> tuple[dict, dict]:
    return ({p: lv.quantity for p, lv in book.bids.items()},
            {p: lv.quantity for p, lv in book.asks.items()})


def _script(market: str = A, seed: int = 0) -> Tape:
    """start snapshot, updates every ms, periodic checkpoints, a resync and its snapshot."""
    tape = Tape(market, seed)
    tape.snapshot(T0, "start")
    for i in range(1, 200):
        ts = T0 + i * MS
        if i == 120:
            tape.resync(ts)
        elif 120 < i < 125:
            continue  # out of sync: live clients got nothing until the new snapshot
        elif i == 125:
            tape.snapshot(ts, "resync")
        elif i % 50 == 0:
            tape.periodic(ts)
        else:
            tape.update(ts)
    return tape


def test_book_at_from_then_every_recorded_frame_but_checkpoints(tmp_path):
    tape = _script()
    tape.write(tmp_path, parts=4)
    start, end = T0 + 60 * MS + 400, T0 + 180 * MS
    events = list(replay_events(tmp_path, [A], "ORDERBOOK", start, end))
    first_ts, first = events[0]
    msg = json.loads(first)
    assert (first_ts, msg["type"], msg["market"]) == (start, "snapshot", A)
    rebuilt = RecordedBook(A).apply_frames([first])
    assert _levels(rebuilt) == _levels(tape.book_at(start))
    last = max((r for r in tape.rows if r["local_ts"] <= start), key=lambda r: r["local_ts"])
    assert msg["updateId"] == last["update_id"] and msg["timestamp"] == last["timestamp"]
    expected = [(r["local_ts"], r["frame"]) for r in tape.rows
                if start < r["local_ts"] <= end and r["reason"] != "periodic"]
    assert events[1:] == expected  # byte for byte, periodic ones (i=100, 150) left out
    kinds = [json.loads(f)["type"] for _, f in events]
    assert kinds.count("resync") == 1 and kinds.count("snapshot") == 2
    # A client applying the replay holds the live client's book at `to`.
    client = RecordedBook(A).apply_frames(f for _, f in events)
    assert client.synced and _levels(client) == _levels(tape.book_at(end))


def test_a_resync_just_before_from_is_sent_first_then_its_snapshot(tmp_path):
    tape = _script()
    tape.write(tmp_path)
    resync_row = next(r for r in tape.rows if r["type"] == "resync")
    start = resync_row["local_ts"] + 2 * MS  # after the resync, before its snapshot (i=125)
    events = list(replay_events(tmp_path, [A], "ORDERBOOK", start, T0 + 130 * MS))
    assert events[0] == (start, resync_row["frame"])
    second = json.loads(events[1][1])
    assert (events[1][0], second["type"]) == (T0 + 125 * MS, "snapshot")
    assert events[1][1] == next(r["frame"] for r in tape.rows if r["reason"] == "resync"
                                and r["type"] == "snapshot")


def test_a_record_starting_after_from_begins_at_its_first_snapshot(tmp_path):
    tape = _script()
    tape.write(tmp_path)
    events = list(replay_events(tmp_path, [A], "ORDERBOOK", T0 - 3_600_000_000, T0 + 3 * MS))
    assert events == [(r["local_ts"], r["frame"]) for r in tape.rows[:4]]


def test_from_equal_to_is_the_book_at_that_moment_only(tmp_path):
    tape = _script()
    tape.write(tmp_path)
    events = list(replay_events(tmp_path, [A], "ORDERBOOK", T0 + 10 * MS, T0 + 10 * MS))
    assert len(events) == 1
    assert _levels(RecordedBook(A).apply_frames([events[0][1]])) == _levels(
        tape.book_at(T0 + 10 * MS))


def test_the_snapshot_is_found_far_back_and_across_days_and_compaction(tmp_path):
    # One snapshot 30 minutes before `from`, an update every 10 s since (no checkpoint),
    # crossing midnight UTC: the look-back widens until it meets the snapshot.
    midnight = 1_796_601_600_000_000  # 2026-12-07T00:00:00Z
    tape = Tape(A, seed=3)
    first = midnight - 20 * 60_000_000
    tape.snapshot(first, "start")
    for i in range(1, 180):
        tape.update(first + i * 10_000_000)
    tape.write(tmp_path, parts=6)
    compact(tmp_path, A, BOOK, midnight)  # the first day's parts as one file
    start = first + 1795 * 1_000_000
    assert book_anchor(tmp_path, A, start) == first
    assert recorded_span(tmp_path, A, BOOK) == (first, first + 179 * 10_000_000)
    events = list(replay_events(tmp_path, [A], "ORDERBOOK", start, start))
    assert _levels(RecordedBook(A).apply_frames([events[0][1]])) == _levels(tape.book_at(start))


def test_two_markets_merge_in_local_time_each_frame_its_market(tmp_path):
    a, b = Tape(A, 1), Tape(B, 2)
    a.snapshot(T0, "start")
    b.snapshot(T0 + 500, "start")
    for i in range(1, 100):
        a.update(T0 + i * 700)
        b.update(T0 + i * 700 + (0 if i % 3 == 0 else 350))  # some equal local times
    a.write(tmp_path)
    b.write(tmp_path, parts=5)
    events = list(replay_events(tmp_path, [A, B], "ORDERBOOK", T0 + 1000, T0 + 60_000))
    times = [t for t, _ in events]
    assert times == sorted(times)
    markets = [json.loads(f)["market"] for _, f in events]
    assert markets[:2] == [A, B]  # each starts with its book at `from`, A first (as asked)
    for i in range(1, len(events)):  # ties: A before B
        if times[i] == times[i - 1]:
            assert (markets[i - 1], markets[i]) != (B, A)
    assert any(times[i] == times[i - 1] and markets[i] != markets[i - 1]
               for i in range(2, len(events)))
    for tape in (a, b):
        mine = [f for (t, f), m in zip(events, markets, strict=True) if m == tape.market]
        assert _levels(RecordedBook(tape.market).apply_frames(mine)) == _levels(
            tape.book_at(T0 + 60_000))


def _trade_rows():
    rows = []
    for i in range(12):
        ts = T0 + (i // 3) * 5 * MS  # batches of three trades sharing a local time
        rows.append({"local_ts": ts, "type": "trade", "reason": None, "time": ts // 1000 - 2,
                     "price": 100.0 + i, "quantity": 0.5 * (i + 1),
                     "side": "BUY" if i % 2 else "SELL", "trade_id": str(1000 + i)})
    rows.insert(6, {"local_ts": T0 + 10 * MS, "type": "resync", "reason": "feed dropped",
                    "time": None, "price": None, "quantity": None, "side": None,
                    "trade_id": None})
    return rows


def test_trades_one_message_per_recorded_batch_with_market_and_resyncs(tmp_path):
    rows = _trade_rows()
    write_rows(tmp_path, A, TRADE, pa.Table.from_pylist(rows[:5], schema=TRADE_SCHEMA), 0)
    write_rows(tmp_path, A, TRADE, pa.Table.from_pylist(rows[5:], schema=TRADE_SCHEMA), 1)
    events = list(replay_events(tmp_path, [A], "TRADE", T0 + 5 * MS, T0 + 15 * MS))
    messages = [(t, json.loads(f)) for t, f in events]
    assert [t for t, _ in messages] == [T0 + 5 * MS, T0 + 10 * MS, T0 + 10 * MS, T0 + 15 * MS]
    first = messages[0][1]  # one batch split across two files: still one message
    assert first == {"market": A, "trades": [
        {"price": 103.0 + i, "quantity": 0.5 * (4 + i), "side": "SELL" if i % 2 else "BUY",
         "time": (T0 + 5 * MS) // 1000 - 2, "tradeId": str(1003 + i)} for i in range(3)]}
    assert messages[1][1] == {"type": "resync", "market": A, "reason": "feed dropped",
                              "state": "disconnected", "since": (T0 + 10 * MS) // 1000}
    assert [len(m["trades"]) for _, m in (messages[2], messages[3])] == [3, 3]
    assert all(m.get("market") == A for _, m in messages)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(InvalidParameter) as err:
        replay_events(tmp_path, [A], "BBO", T0, T0 + 1)
    assert err.value.parameter == "dataType"
    with pytest.raises(InvalidParameter) as err:
        replay_events(tmp_path, [A], "TRADE", T0 + 1, T0)
    assert err.value.parameter == "to"
    with pytest.raises(InvalidMarket):
        replay_events(tmp_path, ["../etc"], "TRADE", T0, T0 + 1)
    assert list(replay_events(tmp_path, [A], "TRADE", T0, T0 + 1)) == []  # nothing recorded


def _replay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("astra-replay-")]


async def test_stream_hands_every_frame_in_chunks_on_its_own_thread(tmp_path):
    tape = _script()
    tape.write(tmp_path)
    expected = list(replay_events(tmp_path, [A], "ORDERBOOK", T0, T0 + 199 * MS))
    stream = ReplayStream(replay_events(tmp_path, [A], "ORDERBOOK", T0, T0 + 199 * MS),
                          chunk=16, max_chunks=2)
    got, sizes = [], []
    async with stream:
        async for chunk in stream:
            sizes.append(len(chunk))
            got.extend(chunk)
    assert got == expected and max(sizes) == 16
    assert not stream.thread.is_alive()


async def test_closing_a_stream_whose_hand_off_is_full_ends_its_thread(tmp_path):
    def endless():
        i = 0
        while True:  # a record that never ends: only close() stops it
            i += 1
            yield i, b"{}"

    stream = ReplayStream(endless(), chunk=8, max_chunks=2)
    async for chunk in stream:
        assert [t for t, _ in chunk] == list(range(1, 9))
        break
    async with asyncio.timeout(10):
        while True:  # until both chunks wait to be taken: the thread waits for room now
            if stream._queue.qsize() == 2:
                break
            await asyncio.sleep(0.01)
    assert stream.thread.is_alive()
    await stream.close()
    assert not stream.thread.is_alive()
    assert stream.thread not in _replay_threads()


async def test_a_failing_record_raises_in_the_consumer(tmp_path):
    def broken():
        yield 1, b"{}"
        raise OSError("disk gone")

    stream = ReplayStream(broken(), chunk=1)
    got = []
    with pytest.raises(OSError, match="disk gone"):
        async for chunk in stream:
            got.extend(chunk)
    await stream.close()
    assert got == [(1, b"{}")] and not stream.thread.is_alive()
