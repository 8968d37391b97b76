"""``astra history export``: tardis.dev-format files from real tapes (a simulator session a
WebSocket client received, written with ``astra.tape.write_rows``) and synthetic ones with
resyncs. The exported incremental rows, replayed the tardis way, give the book a live client
held (``RecordedBook`` rebuilt from the whole record); exported trades are the recorded ones
in range; CSV and Parquet carry the same rows, and DuckDB reads the Parquet as pyarrow does."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path

import aiohttp
import duckdb
import msgspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from astra.cli import main
from astra.core import BookResync, BookUpdate, Level
from astra.history.book import RecordedBook, decode_message
from astra.history.export import (
    BOOK_COLUMNS,
    BOOK_SCHEMA_OUT,
    TRADE_COLUMNS,
    TRADE_SCHEMA_OUT,
    book_rows,
    export,
    export_name,
)
from astra.tape import BOOK, BOOK_SCHEMA, TRADE, TRADE_SCHEMA, compact, parse_time, write_rows

MARKET = "SIM-SPOT-BTC-USDT"
T0 = parse_time("2026-12-06T23:59:58Z", "t")  # the tape crosses midnight: two partitions
_encode = msgspec.json.encode


# -- building tapes ---------------------------------------------------------------------------

class Tape:
    """Book and trade rows in local-time order, as the recorder writes them."""

    def __init__(self, market: str = MARKET) -> None:
        self.market = market
        self.book: list[dict] = []
        self.trades: list[dict] = []

    def frame(self, local: int, kind: str, reason: str | None, frame: bytes) -> None:
        msg = decode_message(frame)
        self.book.append({"local_ts": local, "type": kind, "reason": reason,
                          "update_id": msg.update_id, "timestamp": msg.timestamp,
                          "frame": frame})

    def trade(self, local: int, time_ms: int | None, price: float, qty: float, side: str,
              trade_id: str | None, kind: str = "trade", reason: str | None = None) -> None:
        self.trades.append({"local_ts": local, "type": kind, "reason": reason, "time": time_ms,
                            "price": price, "quantity": qty, "side": side,
                            "trade_id": trade_id})

    def write(self, root: Path, parts: int = 3) -> None:
        for kind, rows, schema in ((BOOK, self.book, BOOK_SCHEMA),
                                   (TRADE, self.trades, TRADE_SCHEMA)):
            step = max(1, -(-len(rows) // parts))
            for seq, i in enumerate(range(0, len(rows), step)):
                write_rows(root, self.market, kind, pa.Table.from_pylist(rows[i:i + step],
                                                                         schema=schema), seq)

    def reference(self, t: int) -> RecordedBook:
        """The book a live client held at ``t``: every recorded message up to ``t`` applied
        (periodic checkpoints too: they equal the book, so applying them changes nothing)."""
        return RecordedBook(self.market).apply_frames(
            r["frame"] for r in self.book if r["local_ts"] <= t)


def book_frame(kind: str, uid: int, bids, asks, ts: int | None, market: str = MARKET) -> bytes:
    return _encode(BookUpdate(type=kind, market=market, update_id=uid,
                              bids=[Level(p, q) for p, q in bids],
                              asks=[Level(p, q) for p, q in asks], timestamp=ts))


def resync_frame(reason: str, since: int, market: str = MARKET) -> bytes:
    return _encode(BookResync(market=market, reason=reason, state="resyncing", since=since))


def synthetic_tape(seed: int = 7) -> Tape:
    """Updates around a mid of 100, a periodic checkpoint, a resync with its snapshot, two
    snapshots back to back (a resync right after a resync's snapshot), updates between a
    resync and its snapshot, an empty snapshot,
    updates missing their venue timestamp, and trades (a resync row, late venue times)."""
    rng = random.Random(seed)
    tape = Tape()
    t = T0
    uid = 100
    book = {"b": {}, "a": {}}

    def levels(n: int, mid: float):
        return ([(round(mid - 0.5 - i * 0.5, 1), float(rng.randint(1, 9))) for i in range(n)],
                [(round(mid + 0.5 + i * 0.5, 1), float(rng.randint(1, 9))) for i in range(n)])

    def snapshot(reason: str, n: int, mid: float) -> None:
        nonlocal t, uid
        t += 1000
        uid += 1
        bids, asks = levels(n, mid)
        book["b"], book["a"] = dict(bids), dict(asks)
        tape.frame(t, "snapshot", reason, book_frame("snapshot", uid, bids, asks, t // 1000 - 3))

    def updates(n: int, mid: float) -> None:
        nonlocal t, uid
        for _ in range(n):
            t += rng.choice((500, 1000, 7000))
            uid += 1
            changes = {"b": [], "a": []}
            for side, sign in (("b", -1), ("a", 1)):
                for _ in range(rng.randint(0, 3)):
                    price = round(mid + sign * (0.5 + rng.randint(0, 9) * 0.5), 1)
                    if price in book[side] and rng.random() < 0.4:
                        qty = 0.0
                        del book[side][price]
                    else:
                        qty = float(rng.randint(1, 20)) / 4
                        book[side][price] = qty
                    changes[side].append((price, qty))
            ts = None if rng.random() < 0.1 else t // 1000 - 2
            tape.frame(t, "update", None, book_frame("update", uid, changes["b"], changes["a"],
                                                     ts))
            if rng.random() < 0.3:
                price = round(mid + rng.uniform(-1, 1), 2)
                tape.trade(t + 10, t // 1000 - rng.choice((1, 30_000)), price, 0.25,
                           rng.choice(("BUY", "SELL")), f"t{uid}")

    def resync(reason: str) -> None:
        nonlocal t
        t += 1000
        tape.frame(t, "resync", reason, resync_frame(reason, t // 1000))

    snapshot("start", 5, 100.0)
    updates(60, 100.0)
    t += 1000  # the recorder's checkpoint: the current book, which no live client got
    cur = RecordedBook(MARKET).apply_frames(r["frame"] for r in tape.book)
    tape.frame(t, "snapshot", "periodic", cur.snapshot_frame())
    updates(60, 100.0)
    resync("gap: U 512 after u 498")
    snapshot("resync", 6, 103.0)
    resync("checksum mismatch")
    snapshot("resync", 4, 98.0)  # right after the previous snapshot: no update between
    updates(40, 98.0)
    resync("recorder overflow")
    updates(3, 98.0)  # after the resync, before its snapshot: no live client applies them
    snapshot("resync", 5, 98.5)
    updates(20, 98.5)
    resync("disconnected")
    snapshot("resync", 0, 98.0)  # an empty book
    updates(40, 98.0)
    tape.trade(t + 5, None, None, None, None, None, kind="resync", reason="trade feed dropped")
    updates(30, 98.0)
    return tape


def tardis_book(rows: list[dict], until: int) -> dict[str, dict[float, float]]:
    """What a tardis.dev consumer holds after the rows with local_timestamp <= ``until``: a
    snapshot row after update rows resets the book; amount 0 deletes a level."""
    book: dict[str, dict[float, float]] = {"bid": {}, "ask": {}}
    previous_snapshot = False
    for r in rows:
        if r["local_timestamp"] > until:
            break
        if r["is_snapshot"] and not previous_snapshot:
            book = {"bid": {}, "ask": {}}
        previous_snapshot = r["is_snapshot"]
        if r["amount"] == 0:
            book[r["side"]].pop(r["price"], None)
        else:
            book[r["side"]][r["price"]] = r["amount"]
    return book


def as_levels(book: RecordedBook) -> dict[str, dict[float, float]]:
    return {"bid": {p: lv.quantity for p, lv in book.bids.items()},
            "ask": {p: lv.quantity for p, lv in book.asks.items()}}


def read_csv(path: Path, schema: pa.Schema) -> pa.Table:
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types=schema, strings_can_be_null=False, quoted_strings_can_be_null=False))


# -- synthetic tapes --------------------------------------------------------------------------

@pytest.fixture
def tape_root(tmp_path):
    tape = synthetic_tape()
    root = tmp_path / "history"
    tape.write(root)
    return tape, root


def test_exported_book_replays_to_the_recorded_book_at_every_synced_moment(tape_root, tmp_path):
    tape, root = tape_root
    times = [r["local_ts"] for r in tape.book]
    start, end = times[20] + 1, times[-1]  # from between two messages, mid-record
    (book_file,) = export(root, [MARKET], start, end, "parquet", (BOOK,), tmp_path / "out")
    rows = pq.read_table(book_file.path).to_pylist()
    assert book_file.rows == len(rows) and tuple(rows[0]) == BOOK_COLUMNS
    assert {r["exchange"] for r in rows} == {"sim"} and {r["symbol"] for r in rows} == {MARKET}
    # It opens with the book at `from`, as snapshot rows stamped `from`.
    at_start = tape.reference(start)
    opening = [r for r in rows if r["local_timestamp"] == start]
    assert opening and all(r["is_snapshot"] for r in opening)
    assert tardis_book(rows, start) == as_levels(at_start)
    checked = 0
    for t in sorted({start, end, *times[21::7], *(x - 1 for x in times[21::11])}):
        if not start <= t <= end:
            continue
        ref = tape.reference(t)
        if not ref.synced:
            continue  # in a gap: a live client had no book either
        assert tardis_book(rows, t) == as_levels(ref), t
        checked += 1
    assert checked > 30
    # Every update row is one level of a recorded update (the periodic checkpoint is not).
    updates = [r for r in rows if not r["is_snapshot"] and r["price"] != 0]
    recorded = sum(len(m.bids) + len(m.asks) for r in tape.book
                   if r["type"] == "update" and start <= r["local_ts"] <= end
                   and tape.reference(r["local_ts"]).synced
                   for m in [decode_message(r["frame"])])
    assert len(updates) == recorded
    periodic = next(r["local_ts"] for r in tape.book if r["reason"] == "periodic")
    assert not [r for r in rows if r["local_timestamp"] == periodic]


def test_resyncs_become_snapshot_rows_with_separators_and_empty_books(tape_root, tmp_path):
    tape, root = tape_root
    start, end = tape.book[0]["local_ts"], tape.book[-1]["local_ts"]
    (book_file,) = export(root, [MARKET], start, end, "parquet", (BOOK,), tmp_path)
    rows = pq.read_table(book_file.path).to_pylist()
    snaps = [r for r in tape.book if r["type"] == "snapshot" and r["reason"] != "periodic"]
    runs = []  # (local_timestamp, rows) of each run of snapshot rows
    for i, r in enumerate(rows):
        if r["is_snapshot"] and (i == 0 or not rows[i - 1]["is_snapshot"]):
            runs.append(r["local_timestamp"])
    # Each non-periodic recorded snapshot starts a run of snapshot rows (the start, four
    # resyncs, the empty book) that a tardis consumer resets on.
    assert runs == [r["local_ts"] for r in snaps]
    # The two back-to-back snapshots: a separator row (a no-op deletion) between them.
    second, third = snaps[1]["local_ts"], snaps[2]["local_ts"]
    sep = [r for r in rows if r["local_timestamp"] == third and not r["is_snapshot"]]
    assert [(r["side"], r["price"], r["amount"]) for r in sep] == [("bid", 0.0, 0.0)]
    assert tardis_book(rows, second) == as_levels(tape.reference(second))
    assert tardis_book(rows, third) == as_levels(tape.reference(third))
    # The empty snapshot: one snapshot row deleting price 0, and the book is empty.
    empty = snaps[4]["local_ts"]
    marker = [r for r in rows if r["local_timestamp"] == empty]
    assert [(r["is_snapshot"], r["price"], r["amount"]) for r in marker] == [(True, 0.0, 0.0)]
    assert tardis_book(rows, empty) == {"bid": {}, "ask": {}}
    # Venue timestamps in µs, the local time where the message carried none.
    by_local = {r["local_ts"]: decode_message(r["frame"]).timestamp for r in tape.book}
    for r in rows:
        ms = by_local[r["local_timestamp"]]
        assert r["timestamp"] == (ms * 1000 if ms is not None else r["local_timestamp"])
    assert any(by_local[r["local_timestamp"]] is None for r in rows)


def test_an_export_from_inside_a_gap_starts_at_the_snapshot_that_ends_it(tape_root, tmp_path):
    tape, root = tape_root
    gap = next(r["local_ts"] for r in tape.book if r["type"] == "resync")
    after = next(r["local_ts"] for r in tape.book if r["reason"] == "resync")
    assert not tape.reference(gap + 1).synced
    rows = [r for b in book_rows(root, MARKET, gap + 1, tape.book[-1]["local_ts"])
            for r in b.to_pylist()]
    assert rows[0]["local_timestamp"] == after and rows[0]["is_snapshot"]
    # Before the record's first snapshot: the export starts at it.
    early = [r for b in book_rows(root, MARKET, T0 - 10_000_000, T0 + 5_000)
             for r in b.to_pylist()]
    assert early[0]["local_timestamp"] == tape.book[0]["local_ts"]


def test_exported_trades_are_the_recorded_trades_by_venue_time(tape_root, tmp_path):
    tape, root = tape_root
    trades = [r for r in tape.trades if r["type"] == "trade"]
    start = trades[5]["time"] * 1000
    end = trades[-6]["time"] * 1000
    (trade_file,) = export(root, [MARKET], start, end, "csv", (TRADE,), tmp_path)
    assert trade_file.path.name == export_name(MARKET, TRADE, start, end, "csv")
    got = read_csv(trade_file.path, TRADE_SCHEMA_OUT).to_pylist()
    in_range = [r for r in trades if start <= r["time"] * 1000 <= end]
    # Ordered as the trades query pages them: venue time, receive time (a stable sort).
    in_range.sort(key=lambda r: (r["time"], r["local_ts"]))
    want = [{"exchange": "sim", "symbol": MARKET, "timestamp": r["time"] * 1000,
             "local_timestamp": r["local_ts"], "id": r["trade_id"], "side": r["side"].lower(),
             "price": r["price"], "amount": r["quantity"]} for r in in_range]
    assert got == want and len(want) > 20
    # Some trades came late (venue time 30 s before receipt): selected and placed by venue time.
    late = [r for r in got if r["local_timestamp"] - r["timestamp"] > 20_000_000]
    assert late and [r["local_timestamp"] for r in got] != sorted(r["local_timestamp"]
                                                                   for r in got)


def test_exports_equal_the_history_queries(tape_root, tmp_path):
    """The trades file is every page of ``GET /history/trades`` (``HistoryReader.trades``) in
    order; the book file replayed at a moment is ``HistoryReader.book_at`` of that moment."""
    from astra.history.query import HistoryReader

    tape, root = tape_root
    reader = HistoryReader(root, None)
    start, end = T0, tape.book[-1]["local_ts"]
    book_file, trade_file = export(root, [MARKET], start, end, "parquet", out=tmp_path)
    paged, cursor = [], None
    while True:
        page = reader.trades(MARKET, start, end, limit=7, cursor=cursor)
        paged += [(t.time * 1000, t.local_timestamp, t.trade_id, t.side.value.lower(), t.price,
                   t.quantity) for t in page.trades]
        if (cursor := page.next_cursor) is None:
            break
    got = pq.read_table(trade_file.path).to_pylist()
    assert [(r["timestamp"], r["local_timestamp"], r["id"], r["side"], r["price"], r["amount"])
            for r in got] == paged and len(paged) > 20
    rows = pq.read_table(book_file.path).to_pylist()
    checked = 0
    for r in tape.book[::9]:
        t = r["local_ts"]
        if not tape.reference(t).synced:
            continue
        answer = msgspec.json.decode(reader.book_at(MARKET, t))
        held = tardis_book(rows, t)
        assert {lv["price"]: lv["quantity"] for lv in answer["bids"]} == held["bid"], t
        assert {lv["price"]: lv["quantity"] for lv in answer["asks"]} == held["ask"], t
        checked += 1
    assert checked > 10


def test_csv_and_parquet_carry_the_same_rows_and_duckdb_reads_them(tape_root, tmp_path):
    tape, root = tape_root
    start, end = T0, tape.book[-1]["local_ts"] + 60_000_000
    parquet = export(root, [MARKET], start, end, "parquet", out=tmp_path / "p")
    csv = export(root, [MARKET], start, end, "csv", out=tmp_path / "c")
    assert [(f.kind, f.rows) for f in parquet] == [(f.kind, f.rows) for f in csv]
    assert [f.kind for f in parquet] == [BOOK, TRADE]
    for p, c in zip(parquet, csv, strict=True):
        schema = BOOK_SCHEMA_OUT if p.kind == BOOK else TRADE_SCHEMA_OUT
        from_parquet = pq.read_table(p.path)
        assert from_parquet.schema == schema
        assert read_csv(c.path, schema).equals(from_parquet)
        header = c.path.read_text().splitlines()[0]
        assert header == ",".join(BOOK_COLUMNS if p.kind == BOOK else TRADE_COLUMNS)
        # DuckDB reads both files as they are; its figures equal pyarrow's.
        rows = from_parquet.to_pylist()
        want = (len(rows), sum(r["amount"] for r in rows),
                min(r["timestamp"] for r in rows), max(r["local_timestamp"] for r in rows),
                sum(1 for r in rows if r["side"] in ("bid", "buy")))
        for path in (p.path, c.path):
            got = duckdb.sql(
                f"select count(*), sum(amount), min(timestamp), max(local_timestamp), "
                f"count(*) filter (where side in ('bid', 'buy')) from '{path}'").fetchall()[0]
            assert got[0] == want[0] and got[2:] == want[2:]
            assert got[1] == pytest.approx(want[1], rel=1e-12)
    book = duckdb.sql(f"select is_snapshot, price from '{parquet[0].path}' "
                      "order by local_timestamp limit 1").fetchall()[0]
    assert book[0] is True and isinstance(book[1], float)


def test_a_compacted_day_exports_in_bounded_batches(tmp_path):
    """Many rows: the output is written as it is read, in row groups of 64 Ki rows at most,
    and the file equals the export of the same tape before compaction."""
    tape = Tape()
    t, uid = T0, 1
    tape.frame(t, "snapshot", "start", book_frame("snapshot", uid, [(99.0, 1.0)], [(101.0, 1.0)],
                                                  t // 1000))
    rng = random.Random(3)
    for _ in range(30_000):
        t += 100
        uid += 1
        bids = [(round(99 - rng.randint(0, 40) * 0.1, 1), float(rng.randint(0, 5)))
                for _ in range(3)]
        asks = [(round(101 + rng.randint(0, 40) * 0.1, 1), float(rng.randint(0, 5)))
                for _ in range(3)]
        tape.frame(t, "update", None, book_frame("update", uid, bids, asks, t // 1000))
    root = tmp_path / "h"
    tape.write(root, parts=12)
    before = export(root, [MARKET], T0, t, "parquet", (BOOK,), tmp_path / "a")[0]
    assert compact(root, MARKET, BOOK, t + 1) >= 10
    after = export(root, [MARKET], T0, t, "parquet", (BOOK,), tmp_path / "b")[0]
    meta = pq.ParquetFile(after.path).metadata
    assert after.rows == 2 + 6 * 30_000 and meta.num_row_groups > 2
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 65_536
    assert pq.read_table(after.path).equals(pq.read_table(before.path))
    rows = pq.read_table(after.path).to_pylist()
    assert tardis_book(rows, t) == as_levels(tape.reference(t))


# -- a real simulator session -----------------------------------------------------------------

class Clock:
    """The recorder's kind of clock: wall time at the start plus a monotonic clock, in µs."""

    def __init__(self) -> None:
        self.base = time.time_ns() // 1000 - time.monotonic_ns() // 1000

    def __call__(self) -> int:
        return self.base + time.monotonic_ns() // 1000


async def _record_session(gw, token: str, market: str, n_updates: int) -> tuple[Tape, list]:
    """A live WebSocket client's ORDERBOOK and TRADE messages, written to a tape as the
    recorder would (receive time, type, reason); returns it and the client's live books."""
    clock = Clock()
    base = gw.base_url.replace("http", "ws")
    headers = {"x-astra-api-key": f"Bearer {token}"}
    tape = Tape(market)
    live: list[tuple[int, dict]] = []  # (receive time, the client's book after the message)
    done, traded = asyncio.Event(), asyncio.Event()

    async def book(ws) -> None:
        levels: dict[str, dict[float, float]] = {"bid": {}, "ask": {}}
        first = True
        async for msg in ws:
            local = clock()
            body = msgspec.json.decode(msg.data)
            kind = body["type"]
            reason = ("start" if first else "resync") if kind == "snapshot" else None
            tape.frame(local, kind, body.get("reason", reason), msg.data.encode()
                       if isinstance(msg.data, str) else msg.data)
            first = False
            if kind in ("snapshot", "resync"):
                levels = {"bid": {}, "ask": {}}
            for side, key in (("bid", "bids"), ("ask", "asks")):
                for lv in body.get(key, ()):
                    if lv["quantity"] == 0:
                        levels[side].pop(lv["price"], None)
                    else:
                        levels[side][lv["price"]] = lv["quantity"]
            live.append((local, {s: dict(v) for s, v in levels.items()}))
            if len(live) > n_updates:
                done.set()

    async def trades(ws) -> None:
        async for msg in ws:
            local = clock()
            for tr in msgspec.json.decode(msg.data)["trades"]:
                tape.trade(local, tr["time"], tr["price"], tr["quantity"], tr["side"],
                           tr.get("tradeId"))
            if len(tape.trades) >= 3:
                traded.set()

    async with aiohttp.ClientSession(headers=headers) as s, \
            s.ws_connect(f"{base}/ws?market={market}&dataType=ORDERBOOK") as wb, \
            s.ws_connect(f"{base}/ws?market={market}&dataType=TRADE") as wt:
        tasks = [asyncio.create_task(book(wb)), asyncio.create_task(trades(wt))]
        try:
            async with asyncio.timeout(60):
                await done.wait()
                await traded.wait()
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return tape, live


async def test_a_recorded_simulator_session_exports_what_the_live_client_held(gateway, tmp_path):
    gw, token = gateway
    tape, live = await _record_session(gw, token, MARKET, 40)
    root = tmp_path / "history"
    tape.write(root, parts=4)
    first, last = live[0][0], live[-1][0]
    start, end = live[10][0], last
    files = await asyncio.to_thread(export, root, [MARKET], start, end, "parquet",
                                    (BOOK, TRADE), tmp_path / "out")
    assert [f.kind for f in files] == [BOOK, TRADE]
    rows = pq.read_table(files[0].path).to_pylist()
    for local, held in live[10:]:
        assert tardis_book(rows, local) == held, local
    assert rows[0]["local_timestamp"] == start and rows[0]["is_snapshot"]
    assert {r["local_timestamp"] for r in rows if not r["is_snapshot"]} <= {
        r["local_ts"] for r in tape.book}
    assert all(r["timestamp"] % 1000 == 0 and r["timestamp"] > first - 60_000_000
               for r in rows)
    # The trades: every one the client got with a venue time in range, by venue time.
    got = pq.read_table(files[1].path).to_pylist()
    want = sorted(((r["time"] * 1000, r["local_ts"], r["side"].lower(), r["price"],
                    r["quantity"]) for r in tape.trades if start <= r["time"] * 1000 <= end),
                  key=lambda x: x[:2])  # stable: record order among equal times
    assert [(r["timestamp"], r["local_timestamp"], r["side"], r["price"], r["amount"])
            for r in got] == want
    # From before the record: the start snapshot opens the file; the whole session replays.
    (whole,) = await asyncio.to_thread(export, root, [MARKET], first - 1_000_000, last,
                                       "csv", (BOOK,), tmp_path / "whole")
    rows = read_csv(whole.path, BOOK_SCHEMA_OUT).to_pylist()
    assert rows[0]["local_timestamp"] == first
    assert tardis_book(rows, last) == live[-1][1]


# -- the command line -------------------------------------------------------------------------

def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["history", "export", *argv])
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_cli_writes_the_files_and_prints_their_rows(tape_root, tmp_path, capsys):
    tape, root = tape_root
    start, end = "2026-12-06T23:59:58Z", str(tape.book[-1]["local_ts"] // 1000 + 1)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["--market", MARKET, "--from", start, "--to", end,
                                 "--format", "csv", "--dir", str(root), "--out", str(out)],
                                capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{MARKET}_incremental_book_L2_20261206T235958Z_{_stamp(end)}.csv",
                     f"{MARKET}_trades_20261206T235958Z_{_stamp(end)}.csv"]
    for line, name in zip(stdout.splitlines(), names, strict=True):
        rows = len((out / name).read_text().splitlines()) - 1
        assert line == f"{out / name} ({rows} rows)" and rows > 10
    # --config: its [history] dir is the record's.
    config = tmp_path / "astra.toml"
    config.write_text(f'[history]\ndir = "{root}"\n')
    code, stdout, err = run_cli(["--market", MARKET, "--from", start, "--to", end, "--format",
                                 "parquet", "--type", "trade", "--config", str(config),
                                 "--out", str(out)], capsys)
    assert code == 0, err
    (line,) = stdout.splitlines()
    assert line.startswith(str(out / f"{MARKET}_trades_")) and line.endswith(" rows)")


def _stamp(ms: str) -> str:
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(int(ms) / 1000, UTC)
    frac = int(ms) % 1000
    return moment.strftime("%Y%m%dT%H%M%S") + (f".{frac:03d}" if frac else "") + "Z"


@pytest.mark.parametrize(("argv", "names"), [
    (["--market", "SIM-SPOT-ETH-USDT"], ("--market", "SIM-SPOT-ETH-USDT", "no book or trade")),
    (["--market", "../etc"], ("--market", "not a market symbol")),
    (["--to", "2026-12-06T00:00:00Z"], ("--to", "before --from")),
    (["--from", "yesterday"], ("--from", "yesterday")),
    (["--to", "12/07/2026"], ("--to", "not a time")),
    (["--from", "99999999999999999"], ("--from", "out of range")),
])
def test_cli_bad_input_exits_2_naming_the_argument(tape_root, tmp_path, capsys, argv, names):
    _, root = tape_root
    base = {"--market": MARKET, "--from": "2026-12-06T23:59:58Z",
            "--to": "2026-12-07T00:10:00Z"}
    for i in range(0, len(argv), 2):
        base[argv[i]] = argv[i + 1]
    args = [x for kv in base.items() for x in kv]
    out = tmp_path / "out"
    code, stdout, err = run_cli([*args, "--format", "csv", "--dir", str(root), "--out",
                                 str(out)], capsys)
    assert code == 2 and stdout == ""
    assert err.startswith("astra history export: ") and all(n in err for n in names), err
    assert not out.exists() or not list(out.iterdir())  # nothing written


def test_cli_refuses_a_kind_not_recorded_a_missing_dir_and_a_bad_format(tmp_path, capsys):
    root = tmp_path / "history"
    smart = Tape("SMART-SPOT-BTC-USDT")  # SMART markets are recorded as books only
    smart.frame(T0, "snapshot", "start", book_frame("snapshot", 1, [(1.0, 2.0)], [(3.0, 4.0)],
                                                    None, market="SMART-SPOT-BTC-USDT"))
    smart.write(root, parts=1)
    common = ["--from", str(T0 // 1000), "--to", str(T0 // 1000 + 1000), "--out",
              str(tmp_path / "o")]
    code, _, err = run_cli(["--market", "SMART-SPOT-BTC-USDT", "--type", "trade", "--format",
                            "csv", "--dir", str(root), *common], capsys)
    assert code == 2 and "--market" in err and "no trade record" in err
    code, stdout, err = run_cli(["--market", "SMART-SPOT-BTC-USDT", "--format", "csv",
                                 "--dir", str(root), *common], capsys)
    assert code == 0 and "incremental_book_L2" in stdout and "_trades_" not in stdout
    line = (tmp_path / "o").glob("*.csv").__next__().read_text().splitlines()[1]
    assert line.startswith("smart,SMART-SPOT-BTC-USDT,") and ",true,bid,1,2" in line
    code, _, err = run_cli(["--market", MARKET, "--format", "csv", "--dir",
                            str(tmp_path / "nowhere"), *common], capsys)
    assert code == 2 and "--dir" in err and "nowhere" in err
    code, _, err = run_cli(["--market", MARKET, "--format", "xlsx", "--dir", str(root),
                            *common], capsys)
    assert code == 2 and "--format" in err
