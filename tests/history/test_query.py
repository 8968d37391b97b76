"""History queries (``astra.history.query.HistoryReader``) over real tape files.

A live session (a WebSocket client on the real simulator behind the real gateway, its
messages stamped with the client's own clock) is written with ``astra.tape.write_rows`` as
the recorder would; the book at any moment must equal the client's own book after the last
message it had received by then. Synthetic tapes cover the edges: a resync in the middle, a
recorder restart, a day boundary, sparse updates, compacted files, trades whose venue order
differs from their receive order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import aiohttp
import msgspec
import pyarrow as pa
import pytest

from astra.core import (
    BookNotInSync,
    InvalidMarket,
    InvalidParameter,
    MarketNotFound,
    NoHistory,
)
from astra.history.book import RecordedBook
from astra.history.query import MAX_CANDLES, HistoryReader
from astra.tape import BOOK, BOOK_SCHEMA, TRADE, TRADE_SCHEMA, compact, write_rows

SPOT = "SIM-SPOT-BTC-USDT"
SMART = "SMART-SPOT-BTC-USDT"
T0 = 1_796_580_000_000_000  # 2026-12-06T18:00:00Z, µs
S = 1_000_000  # one second in µs


# --- writing tapes as the recorder does -----------------------------------------------------


class Stamp:
    """The client's clock: wall time in µs, strictly increasing."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self) -> int:
        self.last = max(self.last + 1, time.time_ns() // 1000)
        return self.last


def book_rows(messages: list[tuple[int, bytes]], periodic_every: int = 0) -> list[tuple]:
    """Recorder book rows for (local_us, frame) messages as a live client got them: the
    first snapshot ``start``, later ones ``resync``; with ``periodic_every``, a ``periodic``
    snapshot (the book so far) after every that many updates, at the same local time."""
    rows, seen_snapshot, updates = [], False, 0
    book = RecordedBook()
    for local, frame in messages:
        msg = json.loads(frame)
        book.apply_frames([frame])
        if msg["type"] == "resync":
            rows.append((local, "resync", msg["reason"], None, None, frame))
            continue
        reason = None
        if msg["type"] == "snapshot":
            reason = "resync" if seen_snapshot else "start"
            seen_snapshot = True
        rows.append((local, msg["type"], reason, msg["updateId"], msg.get("timestamp"), frame))
        if msg["type"] == "update":
            updates += 1
            if periodic_every and updates % periodic_every == 0:
                rows.append((local, "snapshot", "periodic", msg["updateId"],
                             msg.get("timestamp"), book.snapshot_frame()))
    return rows


def trade_rows(messages: list[tuple[int, bytes]]) -> list[tuple]:
    rows = []
    for local, frame in messages:
        msg = json.loads(frame)
        if msg.get("type") == "resync":
            rows.append((local, "resync", msg["reason"], None, None, None, None, None))
            continue
        for t in msg["trades"]:
            rows.append((local, "trade", None, t["time"], t["price"], t["quantity"], t["side"],
                         t.get("tradeId")))
    return rows


def write(root: Path, market: str, kind: str, rows: list[tuple], flush: int = 25) -> None:
    """``rows`` as parts of ``flush`` rows each, as successive flushes write them."""
    schema = BOOK_SCHEMA if kind == BOOK else TRADE_SCHEMA
    for seq, i in enumerate(range(0, len(rows), flush)):
        chunk = rows[i:i + flush]
        table = pa.table({f.name: [r[j] for r in chunk] for j, f in enumerate(schema)},
                         schema=schema)
        write_rows(root, market, kind, table, seq)


def frame(kind: str, uid: int, bids=(), asks=(), market: str = SPOT) -> bytes:
    return json.dumps({"type": kind, "market": market, "updateId": uid,
                       "bids": [{"price": p, "quantity": q} for p, q in bids],
                       "asks": [{"price": p, "quantity": q} for p, q in asks],
                       "timestamp": 1_796_580_000_000 + uid}).encode()


def resync(reason: str, market: str = SPOT) -> bytes:
    return json.dumps({"type": "resync", "market": market, "reason": reason,
                       "state": "resyncing", "since": 1_796_580_000_000}).encode()


def levels(book: dict) -> dict:
    """A book answer's sides as {price: quantity} plus their order."""
    return {side: [(lv["price"], lv["quantity"]) for lv in book[side]] for side in ("bids", "asks")}


class LiveBook:
    """The test's own rebuild, as a live client keeps it: whole level objects by price."""

    def __init__(self) -> None:
        self.sides: dict[str, dict[float, dict]] = {"bids": {}, "asks": {}}

    def apply(self, msg: dict) -> None:
        if msg["type"] in ("snapshot", "resync"):
            self.sides = {"bids": {}, "asks": {}}
        if msg["type"] == "resync":
            return
        for side in ("bids", "asks"):
            for lv in msg[side]:
                if lv["quantity"] == 0:
                    self.sides[side].pop(lv["price"], None)
                else:
                    self.sides[side][lv["price"]] = lv

    def view(self, depth: int | None = None) -> dict:
        bids = sorted(self.sides["bids"].values(), key=lambda lv: -lv["price"])[:depth]
        asks = sorted(self.sides["asks"].values(), key=lambda lv: lv["price"])[:depth]
        return {"bids": bids, "asks": asks}


async def capture(gw, token: str, streams: dict[str, tuple[str, str]], seconds: float
                  ) -> dict[str, list[tuple[int, bytes]]]:
    """Every message of each WebSocket stream (name -> (market, dataType)) for ``seconds``,
    stamped on receipt with one shared client clock."""
    base = gw.base_url.replace("http", "ws")
    stamp = Stamp()
    got: dict[str, list[tuple[int, bytes]]] = {name: [] for name in streams}

    async def read(name: str, ws) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                got[name].append((stamp(), msg.data.encode()))

    async with aiohttp.ClientSession() as s:
        sockets = {name: await s.ws_connect(
            f"{base}/ws?market={m}&dataType={d}&apiKey={token}") for name, (m, d) in
            streams.items()}
        tasks = [asyncio.create_task(read(n, ws)) for n, ws in sockets.items()]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for ws in sockets.values():
            await ws.close()
    return got


def error_of(call) -> Exception:
    with pytest.raises(Exception) as info:
        call()
    return info.value


# --- a live session read back ---------------------------------------------------------------


async def test_the_book_at_any_moment_equals_the_live_clients_own_book(gateway, tmp_path,
                                                                      client_book):
    gw, token = gateway
    got = await capture(gw, token, {"book": (SPOT, "ORDERBOOK"), "smart": (SMART, "ORDERBOOK"),
                                    "trades": (SPOT, "TRADE")}, 6.0)
    assert len(got["book"]) > 30 and len(got["smart"]) > 30 and len(got["trades"]) > 10
    rows = {SPOT: book_rows(got["book"], periodic_every=9),
            SMART: book_rows(got["smart"], periodic_every=7)}
    assert {r[2] for r in rows[SPOT]} >= {"start", "periodic", None}
    for market, market_rows in rows.items():
        write(tmp_path, market, BOOK, market_rows)
    write(tmp_path, SPOT, TRADE, trade_rows(got["trades"]))
    reader = HistoryReader(tmp_path)

    def check(market: str) -> int:
        """The book after each message and between two, against the client's own."""
        mine, live = client_book(), LiveBook()
        messages = [(local, frame) for local, _, reason, *_, frame in rows[market]
                    if reason != "periodic"]  # what the live client got
        checked, snapshot = 0, None
        for n, (local, raw) in enumerate(messages):
            msg = json.loads(raw)
            mine.apply(msg)
            live.apply(msg)
            # The snapshot the reader starts from: the last row of type snapshot by then.
            snapshot = max((r for r in rows[market] if r[1] == "snapshot" and r[0] <= local),
                           key=lambda r: r[0], default=None)
            nxt = messages[n + 1][0] if n + 1 < len(messages) else local + 1
            for at in {local, (local + nxt) // 2}:  # at the message, and between two
                if at > messages[-1][0]:
                    continue
                book = json.loads(reader.book_at(market, at, None))
                assert {s: dict(v) for s, v in levels(book).items()} == mine.levels
                assert book["bids"] == live.view()["bids"]  # order, and SMART's venues
                assert book["asks"] == live.view()["asks"]
                assert book["updateId"] == msg["updateId"]
                assert book["localTimestamp"] == local and book["time"] == at // 1000
                assert (book["snapshotLocalTimestamp"], book["snapshotReason"]) == (
                    snapshot[0], [r[2] for r in rows[market] if r[0] == snapshot[0]
                                  and r[1] == "snapshot"][-1])
                top = json.loads(reader.book_at(market, at, 3))
                assert top["bids"] == live.view(3)["bids"] and top["asks"] == live.view(3)["asks"]
                checked += 1
        return checked

    assert check(SPOT) > 60
    smart = json.loads(reader.book_at(SMART, got["smart"][-1][0], None))
    assert smart["bids"][0]["venues"] == {"SIM": smart["bids"][0]["quantity"]}
    assert [m["venue"] for m in smart["members"]] == ["SIM"]
    assert check(SMART) > 60

    # Every trade exactly once, by venue time then receipt, whatever the page size.
    expected = [(r[3], r[0], r[7]) for r in trade_rows(got["trades"])]
    expected.sort(key=lambda t: (t[0], t[1]))
    start, end = expected[0][0] * 1000, expected[-1][0] * 1000
    for limit in (1, 4, 1000):
        page = reader.trades(SPOT, start, end, limit)
        seen = [(t.time, t.local_timestamp, t.trade_id) for t in page.trades]
        for _ in range(len(expected) + 1):  # (a cursor that fails to advance: no hang)
            if page.next_cursor is None:
                break
            assert len(page.trades) == limit
            page = reader.trades(SPOT, start, end, limit, page.next_cursor)
            seen += [(t.time, t.local_timestamp, t.trade_id) for t in page.trades]
        assert seen == expected

    # Candles equal a plain computation over the same trades.
    candles = reader.candles(SPOT, "1s", start, end)
    plain: dict[int, list] = {}
    for r in sorted(trade_rows(got["trades"]), key=lambda r: r[3]):  # stable: receipt order
        c = plain.setdefault(r[3] // 1000 * 1000, [r[4], r[4], r[4], r[4], 0.0, 0])
        c[1], c[2], c[3] = max(c[1], r[4]), min(c[2], r[4]), r[4]
        c[4] += r[5]
        c[5] += 1
    assert [(c.time, c.open, c.high, c.low, c.close, c.trades) for c in candles] == [
        (b, *v[:4], v[5]) for b, v in sorted(plain.items())]
    assert [c.volume for c in candles] == pytest.approx([v[4] for _, v in sorted(plain.items())])

    # Compacted, the answers are the same.
    before = reader.book_at(SPOT, got["book"][len(got["book"]) // 2][0], None)
    assert compact(tmp_path, SPOT, BOOK, got["book"][-1][0] + 1) > 1
    assert reader.book_at(SPOT, got["book"][len(got["book"]) // 2][0], None) == before

    markets = {m.market: m for m in HistoryReader(tmp_path).markets()}
    assert markets[SPOT].data_types == ["ORDERBOOK", "TRADE"]
    assert markets[SMART].data_types == ["ORDERBOOK"]
    assert markets[SPOT].start == min(got["book"][0][0], got["trades"][0][0]) // 1000
    assert markets[SPOT].end == max(got["book"][-1][0], got["trades"][-1][0]) // 1000
    assert markets[SPOT].bytes == sum(
        p.stat().st_size for p in tmp_path.glob(f"exchange=SIM/type=*/symbol={SPOT}/*/*"))


# --- synthetic tapes: the edges --------------------------------------------------------------


def test_a_resync_in_the_record_is_a_409_naming_it_until_the_next_snapshot(tmp_path):
    write(tmp_path, SPOT, BOOK, book_rows([
        (T0, frame("snapshot", 1, [(100, 1)], [(101, 1)])),
        (T0 + S, frame("update", 2, [(100, 2)])),
        (T0 + 2 * S, resync("sequence gap: expected 3, got 5")),
        (T0 + 3 * S, frame("update", 6, [(99, 9)])),  # a live client ignores it
        (T0 + 4 * S, frame("snapshot", 7, [(98, 1)], [(102, 1)])),
        (T0 + 5 * S, frame("update", 8, asks=[(102, 0), (103, 4)])),
    ]), flush=2)
    reader = HistoryReader(tmp_path)
    assert levels(json.loads(reader.book_at(SPOT, T0 + 2 * S - 1, None))) == {
        "bids": [(100, 2)], "asks": [(101, 1)]}
    for at in (T0 + 2 * S, T0 + 3 * S, T0 + 4 * S - 1):
        err = error_of(lambda at=at: reader.book_at(SPOT, at, None))
        assert isinstance(err, BookNotInSync) and err.status == 409
        assert err.code == "BOOK_NOT_IN_SYNC" and err.parameter == "time"
        assert "resync at 2026-12-06T18:00:02.000Z (sequence gap: expected 3, got 5)" in str(err)
        assert "the next snapshot came at 2026-12-06T18:00:04.000Z" in str(err)
    after = json.loads(reader.book_at(SPOT, T0 + 5 * S, None))
    assert levels(after) == {"bids": [(98, 1)], "asks": [(103, 4)]}
    assert after["snapshotReason"] == "resync" and after["snapshotLocalTimestamp"] == T0 + 4 * S


def test_a_recorder_restart_leaves_a_gap_and_a_missing_first_snapshot_is_one(tmp_path):
    write(tmp_path, SPOT, BOOK, [
        (T0, "update", None, 1, None, frame("update", 1, [(1, 1)])),  # before any snapshot
        (T0 + S, "snapshot", "start", 2, None, frame("snapshot", 2, [(100, 1)], [(101, 1)])),
        (T0 + 2 * S, "update", None, 3, None, frame("update", 3, [(100, 3)])),
        # the recorder stopped here and started again a minute later
        (T0 + 62 * S, "snapshot", "start", 90, None, frame("snapshot", 90, [(90, 1)], [(91, 1)])),
    ])
    reader = HistoryReader(tmp_path)
    err = error_of(lambda: reader.book_at(SPOT, T0 + S // 2, None))
    assert isinstance(err, BookNotInSync)
    assert "no snapshot before it" in str(err) and "18:00:01.000Z" in str(err)
    assert levels(json.loads(reader.book_at(SPOT, T0 + 2 * S, None)))["bids"] == [(100, 3)]
    err = error_of(lambda: reader.book_at(SPOT, T0 + 30 * S, None))
    assert isinstance(err, BookNotInSync)
    assert "not running between 2026-12-06T18:00:02.000Z and its restart at " \
           "2026-12-06T18:01:02.000Z" in str(err)
    assert levels(json.loads(reader.book_at(SPOT, T0 + 62 * S, None)))["bids"] == [(90, 1)]
    for at in (T0 - 1, T0 + 62 * S + 1000):  # (the last row's millisecond is in)
        err = error_of(lambda at=at: reader.book_at(SPOT, at, None))
        assert isinstance(err, NoHistory) and err.status == 404 and err.parameter == "time"
        assert "recorded from 2026-12-06T18:00:00.000Z to 2026-12-06T18:01:02.000Z" in str(err)


def test_sparse_updates_across_midnight_reach_back_to_the_snapshot(tmp_path):
    midnight = 1_796_601_600_000_000  # 2026-12-07T00:00:00Z
    start = midnight - 1500 * S  # 25 min before; one update every 100 s after it
    messages = [(start, frame("snapshot", 1, [(100, 1)], [(200, 1)]))]
    mine = LiveBook()
    mine.apply(json.loads(messages[0][1]))
    states = []
    for i in range(1, 31):
        messages.append((start + i * 100 * S, frame("update", 1 + i, [(100 + i, i)],
                                                     [(200, 0)] if i == 3 else [])))
    for local, raw in messages:
        mine.apply(json.loads(raw))
        states.append((local, mine.view()))
    write(tmp_path, SPOT, BOOK, book_rows(messages), flush=4)
    assert {p.parent.name for p in tmp_path.rglob("*.parquet")} == {
        "date=2026-12-06", "date=2026-12-07"}
    reader = HistoryReader(tmp_path)
    for local, view in states:
        book = json.loads(reader.book_at(SPOT, local + 50 * S if local < messages[-1][0]
                                         else local, None))
        assert book["bids"] == view["bids"] and book["asks"] == view["asks"]
        assert book["snapshotLocalTimestamp"] == start and book["snapshotReason"] == "start"
    compact(tmp_path, SPOT, BOOK, messages[-1][0] + 1)
    assert len(list(tmp_path.rglob("*.parquet"))) == 2  # one compacted file a day
    book = json.loads(reader.book_at(SPOT, midnight + 10 * S, None))
    assert book["bids"] == [v for t, v in states if t <= midnight + 10 * S][-1]["bids"]


def test_trades_page_by_venue_time_with_gaps_and_every_trade_once(tmp_path):
    # Received in one order, traded in another (within the 60 s slack); ties on one ms.
    rows = [
        (T0, "trade", None, T0 // 1000 + 500, 10.0, 1.0, "BUY", "a"),
        (T0, "trade", None, T0 // 1000 + 100, 11.0, 2.0, "SELL", "b"),
        (T0 + 1, "trade", None, T0 // 1000 + 100, 12.0, 3.0, "BUY", "c"),
        (T0 + 2 * S, "resync", "trade feed disconnected", None, None, None, None, None),
        (T0 + 3 * S, "trade", None, T0 // 1000 + 3000, 13.0, 1.0, "BUY", "d"),
        (T0 + 3 * S, "trade", None, T0 // 1000 + 3000, 14.0, 1.0, "SELL", "e"),
        (T0 + 3 * S, "trade", None, T0 // 1000 + 3000, 9.0, 1.0, "SELL", "f"),
        (T0 + 50 * S, "trade", None, T0 // 1000 - 20_000, 15.0, 1.0, "BUY", "early"),
        (T0 + 70 * S, "trade", None, T0 // 1000 + 70_000, 16.0, 1.0, "BUY", "late"),
    ]
    write(tmp_path, SPOT, TRADE, rows, flush=3)
    reader = HistoryReader(tmp_path)
    everything = ["b", "c", "a", "d", "e", "f"]
    for limit in (1, 2, 3, 4, 5, 100):
        page = reader.trades(SPOT, T0, T0 + 60 * S, limit)
        ids, gaps = [t.trade_id for t in page.trades], list(page.gaps)
        for _ in range(8):
            if page.next_cursor is None:
                break
            page = reader.trades(SPOT, T0, T0 + 60 * S, limit, page.next_cursor)
            ids += [t.trade_id for t in page.trades]
            gaps += page.gaps
        assert ids == everything, limit
        assert [(g.time, g.reason) for g in gaps] == [
            (T0 // 1000 + 2000, "trade feed disconnected")]
    first = reader.trades(SPOT, T0, T0 + 60 * S, 2)
    assert msgspec.json.decode(msgspec.json.encode(first)) == {
        "market": SPOT,
        "trades": [{"price": 11.0, "quantity": 2.0, "side": "SELL", "time": T0 // 1000 + 100,
                    "tradeId": "b", "localTimestamp": T0},
                   {"price": 12.0, "quantity": 3.0, "side": "BUY", "time": T0 // 1000 + 100,
                    "tradeId": "c", "localTimestamp": T0 + 1}],
        "nextCursor": first.next_cursor}
    # Venue time decides, not receipt: "early" was received inside the range, traded before.
    wide = reader.trades(SPOT, T0 - 30 * S, T0 + 100 * S, 100)
    assert [t.trade_id for t in wide.trades] == ["early", *everything, "late"]
    assert reader.trades(SPOT, T0 + 4 * S, T0 + 10 * S, 10).trades == []
    err = error_of(lambda: reader.trades(SPOT, T0, T0 + S, 10, "bm90IGEgY3Vyc29y"))
    assert isinstance(err, InvalidParameter) and err.parameter == "cursor"


def late_trades() -> list[tuple]:
    """10 minutes of trades, one a second, received 0..39 s late: the record (in receipt
    order) is far from venue-time order."""
    rows, price = [], 100.0
    for i in range(600):
        when = T0 // 1000 + i * 1000 + (i * 37) % 1000
        price += ((i * 7919) % 13 - 6) / 10
        rows.append((when * 1000 + (i * 13 % 40) * S, "trade", None, when, price, 0.5 + i % 3,
                     "BUY" if i % 2 else "SELL", str(i)))
    rows.sort(key=lambda r: r[0])
    return rows


def test_paging_a_long_late_record_returns_each_trade_once_in_venue_order(tmp_path):
    rows = late_trades()
    write(tmp_path, SPOT, TRADE, rows, flush=20)
    reader = HistoryReader(tmp_path)
    start, end = T0 + 100 * S, T0 + 500 * S  # (the 60 s slack reaches past both ends)
    expected = [r[7] for r in sorted(rows, key=lambda r: r[3]) if start <= r[3] * 1000 <= end]
    assert len(expected) == 400
    for limit in (7, 100, 1000):
        page = reader.trades(SPOT, start, end, limit)
        ids = [t.trade_id for t in page.trades]
        for _ in range(len(expected)):
            if page.next_cursor is None:
                break
            page = reader.trades(SPOT, start, end, limit, page.next_cursor)
            ids += [t.trade_id for t in page.trades]
        assert ids == expected, limit


def test_candles_are_ohlcv_of_trades_by_venue_time(tmp_path):
    rows, plain = late_trades(), {}
    for r in sorted(rows, key=lambda r: r[3]):
        c = plain.setdefault(r[3] // 60_000 * 60_000, [r[4], r[4], r[4], r[4], 0.0, 0])
        c[1], c[2], c[3] = max(c[1], r[4]), min(c[2], r[4]), r[4]
        c[4] += r[5]
        c[5] += 1
    write(tmp_path, SPOT, TRADE, rows, flush=50)
    reader = HistoryReader(tmp_path)
    got = reader.candles(SPOT, "1m", T0 + 30 * S, T0 + 600 * S)  # start aligns down
    assert [(c.time, c.open, c.high, c.low, c.close, c.volume, c.trades) for c in got] == [
        (b, *v) for b, v in sorted(plain.items())]
    assert len(got) == 10 and sum(c.trades for c in got) == 600
    # Aggregated a few trades at a time (late ones landing in later chunks), then merged:
    # the same candles.
    chunked = HistoryReader(tmp_path, chunk_rows=7).candles(SPOT, "1m", T0 + 30 * S,
                                                            T0 + 600 * S)
    assert [(c.time, c.open, c.high, c.low, c.close, c.trades) for c in chunked] == [
        (c.time, c.open, c.high, c.low, c.close, c.trades) for c in got]
    assert [c.volume for c in chunked] == pytest.approx([c.volume for c in got])
    # Ten trades in one millisecond, over four chunks: record order makes open and close.
    tie = tmp_path / "tie"
    write(tie, SPOT, TRADE, [(T0 + i, "trade", None, T0 // 1000, float(p), 1.0, "BUY", str(i))
                             for i, p in enumerate([5, 1, 9, 2, 8, 3, 7, 4, 6, 0])], flush=3)
    for one in (HistoryReader(tie), HistoryReader(tie, chunk_rows=3)):
        (c,) = one.candles(SPOT, "1s", T0, T0 + S)
        assert (c.open, c.high, c.low, c.close, c.trades) == (5.0, 9.0, 0.0, 0.0, 10)
    five = reader.candles(SPOT, "5m", T0, T0 + 599 * S)
    assert [c.trades for c in five] == [300, 300]
    assert five[0].open == got[0].open and five[1].close == got[-1].close
    assert reader.candles(SPOT, "1m", T0 + 3600 * S, T0 + 7200 * S) == []  # no trade: none
    err = error_of(lambda: reader.candles(SPOT, "1s", T0, T0 + MAX_CANDLES * S))
    assert isinstance(err, InvalidParameter) and err.parameter == "end"
    assert "1501 1s candles" in str(err)
    err = error_of(lambda: reader.candles(SPOT, "2m", T0, T0 + S))
    assert isinstance(err, InvalidParameter) and err.parameter == "interval"


def test_bad_input_is_a_4xx_naming_what_is_wrong(tmp_path):
    write(tmp_path, SPOT, TRADE, [(T0, "trade", None, T0 // 1000, 1.0, 1.0, "BUY", "1")])
    write(tmp_path, SPOT, BOOK, [(T0, "snapshot", "start", 1, None, frame("snapshot", 1))])
    write(tmp_path, "SIM-SPOT-ETH-USDT", TRADE,
          [(T0, "trade", None, T0 // 1000, 1.0, 1.0, "BUY", "1")])
    now = [T0 / S + 3 * 86400]  # three days after the record
    reader = HistoryReader(tmp_path, retention_days=2, clock=lambda: now[0])
    cases = [
        (lambda: reader.trades("SIM-SPOT-SOL-USDT", T0, T0 + S), MarketNotFound, "market",
         "market SIM-SPOT-SOL-USDT is not recorded"),
        (lambda: reader.book_at("SIM-SPOT-ETH-USDT", T0 + 3 * 86400 * S, None),
         MarketNotFound, "market", "no recorded order book (only its trades)"),
        (lambda: reader.trades("../etc", T0, T0 + S), InvalidMarket, "market", "not a market"),
        (lambda: reader.trades(SPOT, T0 + S, T0), InvalidParameter, "end", "is before start"),
        (lambda: reader.trades(SPOT, T0, T0 + S), InvalidParameter, "start",
         "before the retention window: history is kept 2 days, from 2026-12-07T00:00:00.000Z"),
        (lambda: reader.book_at(SPOT, T0, None), InvalidParameter, "time", "retention window"),
        (lambda: reader.trades(SPOT, T0 + 3 * 86400 * S - 32 * 86400 * S,
                               T0 + 3 * 86400 * S), InvalidParameter, "end", "31 days"),
        (lambda: reader.trades(SPOT, T0, T0 + S, 1001), InvalidParameter, "limit", "1 to 1000"),
        (lambda: reader.trades(SPOT, T0, T0 + S, 0), InvalidParameter, "limit", "1 to 1000"),
    ]
    for call, kind, parameter, words in cases:
        err = error_of(call)
        assert isinstance(err, kind), (words, err)
        assert err.parameter == parameter and words in str(err), str(err)
        assert 400 <= err.status < 500
    assert HistoryReader(tmp_path).trades(SPOT, T0, T0 + S).trades[0].trade_id == "1"


def test_markets_lists_what_is_on_disk_and_is_cached_for_a_second(tmp_path):
    now = [1000.0]
    reader = HistoryReader(tmp_path, clock=lambda: now[0])
    assert reader.markets() == []
    write(tmp_path, SPOT, BOOK, [(T0, "snapshot", "start", 1, None, frame("snapshot", 1))])
    write(tmp_path, SPOT, TRADE, [(T0 + 5 * S, "trade", None, T0 // 1000, 1.0, 1.0, "BUY", "1")])
    assert reader.markets() == []  # cached
    now[0] += 1.0
    (m,) = reader.markets()
    assert (m.market, m.exchange, m.data_types, m.start, m.end, m.files) == (
        SPOT, "SIM", ["ORDERBOOK", "TRADE"], T0 // 1000, T0 // 1000 + 5000, 2)
    assert m.bytes == sum(p.stat().st_size for p in tmp_path.rglob("*.parquet"))
