"""The recorder over a real gateway and simulator: what it writes is what live clients got.

Each test records into a temporary folder with a long ``flush_seconds`` and calls ``flush()``
itself, then reads the tape back with ``astra.tape.read_table``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pyarrow.parquet as pq
import pytest
from tests.server.test_resync import Proxy, _venue

from astra.history.book import RecordedBook, decode_message
from astra.history.config import HistoryConfig
from astra.history.recorder import Recorder
from astra.server.gateway import Gateway
from astra.tape import BOOK, TRADE, TapeLock, read_table, recorded

MARKET = "SIM-SPOT-BTC-USDT"
SRC = Path(__file__).resolve().parents[2] / "src"


def _config(tmp_path, markets=(MARKET,), **kw) -> HistoryConfig:
    values = {"flush_seconds": 3600.0, "snapshot_every": 10**8, "snapshot_seconds": 86_400.0}
    values.update(kw)
    return HistoryConfig(markets=tuple(markets), dir=tmp_path / "history", **values)


def _rows(root, market=MARKET, kind=BOOK) -> list[dict]:
    return read_table(root, market, kind).to_pylist()


async def _until(predicate, limit: float = 30.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - the feed (another task) makes it true
            await asyncio.sleep(0.02)


async def _collect(gw, token, market, data_type, until) -> list[str]:
    url = (f"{gw.base_url.replace('http', 'ws')}/ws?market={market}&dataType={data_type}"
           f"&apiKey={token}")
    out: list[str] = []
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws, asyncio.timeout(60):
        while not until(out):
            out.append((await ws.receive(timeout=20)).data)
    return out


async def test_the_record_equals_what_a_live_client_received(gateway, tmp_path):
    gw, token = gateway
    rec = await Recorder(gw.engine, _config(tmp_path)).start()
    try:
        assert rec.markets == [MARKET]
        books, trades = await asyncio.gather(
            _collect(gw, token, MARKET, "ORDERBOOK", lambda m: len(m) >= 40),
            _collect(gw, token, MARKET, "TRADE",
                     lambda m: sum(len(json.loads(x).get("trades", [])) for x in m) >= 5))
        await asyncio.sleep(0.2)  # the recorder got them too (it is a client of the same feed)
        await rec.flush()
    finally:
        await rec.close()
    rows = _rows(rec.root)
    assert rows[0]["type"] == "snapshot" and rows[0]["reason"] == "start"
    assert [r["local_ts"] for r in rows] == sorted(r["local_ts"] for r in rows)
    live = [r for r in rows if r["reason"] != "periodic"]
    first = json.loads(books[0])
    assert first["type"] == "snapshot"
    # The client joined later: its snapshot is the record rebuilt up to that update ...
    k = max(i for i, r in enumerate(live) if r["update_id"] == first["updateId"])
    rebuilt = RecordedBook().apply_frames(r["frame"] for r in live[: k + 1])
    assert rebuilt.snapshot_frame() == books[0].encode()
    # ... and everything after it is the record, byte for byte.
    assert [r["frame"] for r in live[k + 1 : k + len(books)]] == [b.encode() for b in books[1:]]
    assert all(r["type"] == "update" and r["reason"] is None for r in live[1 : k + len(books)])
    assert live[-1]["type"] == "resync" and live[-1]["reason"] == "recorder stopped"

    got = [(t["tradeId"], t["price"], t["quantity"], t["side"], t["time"])
           for m in trades for t in json.loads(m).get("trades", [])]
    trade_rows = [r for r in _rows(rec.root, kind=TRADE) if r["type"] == "trade"]
    kept = [(r["trade_id"], r["price"], r["quantity"], r["side"], r["time"]) for r in trade_rows]
    start = kept.index(got[0])
    assert kept[start : start + len(got)] == got
    assert rec.stats["rows_recorded"] == len(rows) + len(_rows(rec.root, kind=TRADE))
    assert rec.stats["rows_dropped"] == 0 and rec.stats["write_errors"] == 0


async def test_a_gap_is_a_resync_row_with_its_reason_then_a_resync_snapshot(
    sim, key_store, tmp_path
):
    proxy = Proxy(f"ws://127.0.0.1:{sim.port}/sstream", drop_at=8)
    runner, port = await proxy.start()
    try:
        async with Gateway({"SIM": _venue(sim, port)}, key_store, port=0, metrics_port=0) as gw:
            rec = await Recorder(gw.engine, _config(tmp_path, ["SIM-SPOT-ETH-USDT"])).start()
            try:
                await _until(lambda: gw.engine.stats["resyncs"] >= 1
                             and gw.engine.stats["snapshots"] >= 2)
                await asyncio.sleep(0.3)  # a few updates after the fresh snapshot
                await rec.flush()
            finally:
                await rec.close()
    finally:
        await runner.cleanup()
    rows = _rows(rec.root, "SIM-SPOT-ETH-USDT")
    kinds = [(r["type"], r["reason"]) for r in rows]
    assert kinds[0] == ("snapshot", "start")
    i = next(i for i, r in enumerate(rows) if r["type"] == "resync")
    assert rows[i]["reason"].startswith("U=")  # the gap as the feed saw it, as clients got it
    assert json.loads(rows[i]["frame"])["state"] == "resyncing"
    assert kinds[i + 1] == ("snapshot", "resync")
    assert {t for t, _ in kinds[1:i]} == {"update"}
    # The book after the gap rebuilt from the record equals the fresh snapshot's.
    book = RecordedBook().apply_frames(r["frame"] for r in rows[: i + 1])
    assert not book.synced and book.resync.reason == rows[i]["reason"]


async def _periodic_rebuilds(root, market: str) -> int:
    rows = _rows(root, market)
    book, checked = RecordedBook(), 0
    for row in rows:
        if row["reason"] == "periodic":
            assert book.synced
            assert decode_message(row["frame"]) == decode_message(book.snapshot_frame())
            assert row["frame"] == book.snapshot_frame()
            checked += 1
        book.apply(decode_message(row["frame"]))
    return checked


async def test_periodic_snapshots_every_n_updates_equal_the_rebuilt_record(gateway, tmp_path):
    gw, _ = gateway
    rec = await Recorder(gw.engine, _config(tmp_path, snapshot_every=5)).start()
    try:
        await _until(lambda: gw.engine.stats["book_updates"] >= 40)
        await rec.flush()
    finally:
        await rec.close()
    rows = [r for r in _rows(rec.root) if r["type"] != "resync"]
    run = 0
    for row in rows[1:]:  # never more than 5 updates without a snapshot after them
        run = 0 if row["type"] == "snapshot" else run + 1
        assert run <= 5
    assert await _periodic_rebuilds(rec.root, MARKET) >= 5


async def test_a_smart_market_is_recorded_book_only_and_its_checkpoints_rebuild(
    sor_desk, tmp_path
):
    gw = await sor_desk.start()
    config = _config(tmp_path, ["SMART-SPOT-BTC-*"], snapshot_every=4)
    rec = await Recorder(gw.engine, config).start()
    try:
        assert rec.markets == ["SMART-SPOT-BTC-USDT"]
        await _until(lambda: len(rec._streams[("SMART-SPOT-BTC-USDT", BOOK)].items) >= 30)
        await rec.flush()
    finally:
        await rec.close()
    assert set(recorded(rec.root)) == {("SMART-SPOT-BTC-USDT", BOOK)}
    rows = _rows(rec.root, "SMART-SPOT-BTC-USDT")
    first = json.loads(rows[0]["frame"])
    assert rows[0]["reason"] == "start" and first["type"] == "snapshot"
    assert {m["venue"] for m in first["members"]} == {"SIM", "SIM2", "SIM3"}
    ids = [r["update_id"] for r in rows if r["type"] == "update"]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # the gateway's own sequence
    assert await _periodic_rebuilds(rec.root, "SMART-SPOT-BTC-USDT") >= 3


async def test_overflow_drops_rows_then_records_the_gap_and_a_fresh_snapshot(gateway, tmp_path):
    gw, _ = gateway
    rec = await Recorder(gw.engine, _config(tmp_path, max_pending=3)).start()
    try:
        await _until(lambda: rec.stats["rows_dropped"] >= 10)
        await rec.flush()  # written: the gap is marked and a snapshot taken
        await rec.flush()
    finally:
        await rec.close()
    rows = _rows(rec.root)
    i = next(i for i, r in enumerate(rows) if r["reason"] == "recorder overflow")
    assert rows[i]["type"] == "resync" and i <= 3
    assert (rows[i + 1]["type"], rows[i + 1]["reason"]) == ("snapshot", "resync")
    assert rows[i]["local_ts"] < rows[i + 1]["local_ts"]
    # The snapshot after the gap is the live book then: the record rebuilds from it.
    book = RecordedBook().apply_frames(r["frame"] for r in rows[: i + 2])
    assert book.synced and book.update_id == rows[i + 1]["update_id"]
    trade_marks = [r for r in _rows(rec.root, kind=TRADE) if r["type"] == "resync"]
    assert trade_marks and trade_marks[-1]["reason"] == "recorder stopped"
    assert rec.pending == 0


async def test_one_recorder_per_folder_and_a_restart_shows_the_gap(gateway, tmp_path):
    gw, _ = gateway
    first = await Recorder(gw.engine, _config(tmp_path)).start()
    try:
        with pytest.raises(RuntimeError, match="another recorder is writing"):
            await Recorder(gw.engine, _config(tmp_path)).start()
        await _until(lambda: len(first._streams[(MARKET, BOOK)].items) >= 3)
    finally:
        await first.close()
    second = await Recorder(gw.engine, _config(tmp_path)).start()  # the folder is free again
    try:
        await _until(lambda: len(second._streams[(MARKET, BOOK)].items) >= 3)
    finally:
        await second.close()
    rows = _rows(first.root)
    marks = [i for i, r in enumerate(rows) if r["reason"] == "recorder stopped"]
    assert len(marks) == 2 and marks[1] == len(rows) - 1
    after = rows[marks[0] + 1]
    assert (after["type"], after["reason"]) == ("snapshot", "start")
    assert json.loads(rows[marks[0]]["frame"])["state"] == "disconnected"


async def test_a_write_error_keeps_the_rows_for_the_next_flush(gateway, tmp_path):
    gw, _ = gateway
    config = _config(tmp_path)
    config.dir.mkdir(parents=True)
    blocker = config.dir / "exchange=SIM"
    blocker.write_text("not a folder")  # every write of a SIM partition fails
    rec = await Recorder(gw.engine, config).start()
    try:
        await _until(lambda: len(rec._streams[(MARKET, BOOK)].items) >= 5)
        await rec.flush()
        assert rec.stats["write_errors"] >= 1 and rec.stats["rows_recorded"] == 0
        kept = rec.pending
        assert kept >= 5
        blocker.unlink()
        await rec.flush()
        assert rec.stats["rows_recorded"] >= kept and rec.stats["rows_dropped"] == 0
    finally:
        await rec.close()
    rows = _rows(rec.root)
    assert rows[0]["reason"] == "start"  # classified once, written on the second try
    assert [r["local_ts"] for r in rows] == sorted(r["local_ts"] for r in rows)


_CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from astra.history.config import HistoryConfig
    from astra.history.recorder import Recorder
    from astra.server.gateway import venues_from_config
    from astra.marketdata.engine import MarketDataEngine

    async def main():
        engine = MarketDataEngine(venues_from_config({}, sys.argv[1]))
        config = HistoryConfig(markets=("SIM-SPOT-*",), dir=Path(sys.argv[2]),
                               flush_seconds=3600, compact_seconds=0.05)
        rec = await Recorder(engine, config).start()
        print("recording", flush=True)
        while True:  # write (and compact) as fast as it can: the kill lands mid-write
            await rec.flush()
            await asyncio.sleep(0)

    asyncio.run(main())
""")


async def _kill_mid_write(sim, root: Path, rows: int) -> None:
    """A child process records ``sim`` into ``root``, flushing and compacting in a loop, and
    is SIGKILLed once the BTC book record holds ``rows`` rows."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, sim.base_url, str(root), stdout=subprocess.PIPE, env=env)
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line == b"recording\n"
        await _until(lambda: read_table(root, MARKET, BOOK).num_rows >= rows, 60)
        child.send_signal(signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def test_a_recorder_killed_mid_write_leaves_only_readable_files(sim, tmp_path):
    root = tmp_path / "history"
    await _kill_mid_write(sim, root, 10)
    await _kill_mid_write(sim, root, 30)  # its TapeLock removed the first one's .tmp- files
    named = [p for p in root.rglob("*.parquet") if not p.name.startswith(".tmp-")]
    assert len(named) >= 2
    for path in named:
        assert pq.read_table(path).num_rows > 0
    for market, kind in recorded(root):
        rows = read_table(root, market, kind).to_pylist()
        assert [r["local_ts"] for r in rows] == sorted(r["local_ts"] for r in rows)
        if kind == BOOK:  # every update once (no compaction leftover read twice), in order
            ids = [r["update_id"] for r in rows if r["type"] == "update"]
            assert ids == sorted(set(ids)) and (ids or market != MARKET)
            assert rows[0]["reason"] == "start"
            assert [r["reason"] for r in rows if r["type"] == "snapshot"].count("start") <= 2
    # Whatever a kill leaves half-written is never read, and the next writer removes it.
    stale = root / "exchange=SIM/type=book/symbol=SIM-SPOT-BTC-USDT/date=2026-01-01/.tmp-x.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"PAR1 half a file")
    assert read_table(root, MARKET, BOOK).num_rows > 0
    TapeLock(root).release()
    assert not list(root.rglob(".tmp-*"))


async def test_timed_checkpoints_while_the_book_moves(gateway, tmp_path):
    gw, _ = gateway
    rec = await Recorder(gw.engine, _config(tmp_path, snapshot_seconds=0.3)).start()
    try:
        await _until(lambda: sum(len(i) > 2 for i in rec._streams[(MARKET, BOOK)].items) >= 2)
        await rec.flush()
    finally:
        await rec.close()
    assert await _periodic_rebuilds(rec.root, MARKET) >= 2


async def test_a_venue_down_at_start_is_recorded_once_it_answers(key_store, tmp_path):
    import socket

    from astra.server.gateway import venues_from_config
    from astra.sim import SimExchange, SimServer

    with socket.socket() as probe:  # a free port, where the simulator starts later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    venues = venues_from_config({}, f"http://127.0.0.1:{port}")
    async with Gateway(venues, key_store, port=0, metrics_port=0, linger=1.0) as gw:
        rec = Recorder(gw.engine, _config(tmp_path), retry_seconds=0.2)
        await rec.start()  # not an error: tried again in the background
        try:
            assert rec.markets == []
            async with SimServer(SimExchange(seed=1), port=port):
                await _until(lambda: rec.markets == [MARKET])
                await _until(lambda: len(rec._streams[(MARKET, BOOK)].items) >= 2)
                await rec.flush()
        finally:
            await rec.close()
    assert _rows(rec.root)[0]["reason"] == "start"


async def test_no_patterns_records_nothing_and_leaves_the_folder_free(gateway, tmp_path):
    gw, _ = gateway
    idle = await Recorder(gw.engine, _config(tmp_path, markets=())).start()
    try:
        assert idle.markets == []
        TapeLock(idle.root).release()  # not held
        await idle.flush()
        assert idle.stats["rows_recorded"] == 0
    finally:
        await idle.close()
    assert recorded(idle.root) == {}


async def test_a_restart_after_a_crash_marks_the_rows_the_crash_lost(sim, gateway, tmp_path):
    """A killed recorder leaves no ``recorder stopped`` row: the next one on the folder marks
    the gap from just after the last row on disk, so neither the book at a time in it nor a
    replay from it is the stale book of before the crash (and the trades show the gap)."""
    from astra.core import BookNotInSync
    from astra.history.query import HistoryReader
    from astra.history.replay import replay_events

    gw, _ = gateway
    root = tmp_path / "history"
    await _kill_mid_write(sim, root, 10)
    before = read_table(root, MARKET, BOOK).to_pylist()
    last = before[-1]["local_ts"]
    assert before[-1]["type"] != "resync"  # killed: nothing marked the end
    rec = await Recorder(gw.engine, _config(tmp_path, markets=("SIM-SPOT-*",))).start()
    try:
        await _until(lambda: len(rec._streams[(MARKET, BOOK)].items) >= 3)
    finally:
        await rec.close()
    rows = _rows(root)
    after = rows[len(before)]
    assert (after["type"], after["reason"], after["local_ts"]) == (
        "resync", "recorder stopped", last + 1)
    assert (rows[len(before) + 1]["type"], rows[len(before) + 1]["reason"]) == (
        "snapshot", "start")
    with pytest.raises(BookNotInSync, match="recorder stopped"):
        HistoryReader(root).book_at(MARKET, last + 1)
    first = next(iter(replay_events(root, [MARKET], "ORDERBOOK", last + 1, last + 1)))
    assert json.loads(first[1])["type"] == "resync"
    trades = read_table(root, MARKET, TRADE).to_pylist()
    marks = [r for r in trades if r["type"] == "resync"]
    assert marks[0]["reason"] == "recorder stopped" and marks[-1]["reason"] == "recorder stopped"


async def test_rows_a_failed_write_kept_then_dropped_are_inside_the_overflow_gap(
        gateway, tmp_path):
    """Writes fail while the market already drops rows (overflow): the rows the failed write
    kept are dropped too, so the gap the record marks starts at the first of them, not at
    the first row ``deliver`` dropped (later): no book is served from before the lost rows."""
    from astra.core import BookNotInSync
    from astra.history.query import HistoryReader

    gw, _ = gateway
    rec = await Recorder(gw.engine, _config(tmp_path, max_pending=6)).start()
    stream = rec._streams[(MARKET, BOOK)]
    sim_dir = rec.root / "exchange=SIM"
    try:
        await _until(lambda: len(stream.items) >= 2)
        await rec.flush()  # the start snapshot and a few updates are on disk
        sim_dir.rename(rec.root / "moved")
        sim_dir.write_text("not a folder")  # every write of a SIM partition fails now
        await _until(lambda: stream.items and stream.dropping)
        first_kept = stream.items[0][0]  # the oldest row the next (failing) write keeps
        await rec.flush()
        assert rec.stats["write_errors"] >= 1
        sim_dir.unlink()
        (rec.root / "moved").rename(sim_dir)
        await rec.flush()
        await rec.flush()
    finally:
        await rec.close()
    rows = _rows(rec.root)
    mark = next(r for r in rows if r["reason"] == "recorder overflow")
    assert mark["local_ts"] <= first_kept
    assert all(r["local_ts"] < first_kept for r in rows[:rows.index(mark)])
    with pytest.raises(BookNotInSync, match="recorder overflow"):
        HistoryReader(rec.root).book_at(MARKET, first_kept)
