"""Historical market data, measured side by side in one run.

1. Recorder (``astra.history.recorder``) over a real engine and simulator, fed synthetic
   ``BookUpdate`` frames of the simulator's real size (12 levels, ~530 bytes): the cost of its
   client's ``deliver`` (the only work on the live path), the frames/s ``deliver`` plus one
   ``flush`` (decode headers, Arrow, Parquet, fsync) absorb; and the live path's cost: a loop
   fanning N frames out to K ``BoundedSender`` clients with and without the recorder attached
   (its flushes running in their thread meanwhile, as in the gateway): the process's CPU per
   frame (the writer thread's included) and the loop's frames/s, ratios.
2. Queries on a day of one market at 100 updates/s (8.64 M book rows with a checkpoint every
   1000 updates, and ~10 trades/s), generated once per run (``--cache DIR`` keeps it) and
   written with ``astra.tape.write_rows`` in hourly files: ``HistoryReader.book_at`` at random
   times (p50/p99) and one hour of trades through ``HistoryReader.trades`` pages (1000 per
   page) and in one read, next to the same reads done with DuckDB over the same files (the
   frames then rebuilt and encoded the same way, the trades made the same objects): ratios,
   to pick the engine by measuring. ``--row-group N`` writes the tape with N-row row groups
   instead of ``astra.tape``'s (book_at reads whole row groups). Then ``astra history
   export`` of a stretch of the day to Parquet: rows/s.
3. Replay at ``speed=max`` through a ``Gateway`` (``history`` set: ``WS /ws?from=``) in a
   child process, one client here: messages/s, next to the same frames sent from memory over
   the same kind of socket (the live path's writes: ``send_frame`` per frame): ratio.

Usage: python benchmarks/bench_history.py [--quick] [--hours 24] [--rate 100] [--cache DIR]
       [--samples 200] [--frames 200000] [--clients 100] [--replay-minutes 20]
       [--export-minutes 10] [--row-group N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARKET = "SIM-SPOT-BTC-USDT"
DAY = "2026-12-01"  # the generated day (a fixed date: a cached tape stays valid)
LEVELS = 6  # per side per update: the simulator's BTC/USDT update has ~12 levels, ~530 bytes
SNAPSHOT_LEVELS = 26
TRADES_PER_SECOND = 10
TOKEN = "benchhist23." + "b" * 10 + "ENCH" + "c" * 20 + "-_xyz0123"


def _pct(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# -- synthetic frames ----------------------------------------------------------------------------

class Frames:
    """``BookUpdate`` JSON of the simulator's shape, from pools of level lists (cheap to make
    by the million; a 1 MB Parquet page still holds few repeats, so compression stays real)."""

    def __init__(self, seed: int = 1, pool: int = 4096) -> None:
        rng = random.Random(seed)

        def side(sign: int, n: int) -> bytes:
            levels = sorted({round(97000 + sign * rng.uniform(0.5, 80), 2) for _ in range(n)},
                            reverse=sign < 0)
            return ("[" + ",".join(
                f'{{"price":{p},"quantity":{round(rng.choice((0, rng.uniform(0.0001, 1.5))), 5)}}}'
                for p in levels) + "]").encode()

        self.bids = [side(-1, LEVELS) for _ in range(pool)]
        self.asks = [side(1, LEVELS) for _ in range(pool)]
        self.snap_bids = [side(-1, SNAPSHOT_LEVELS) for _ in range(64)]
        self.snap_asks = [side(1, SNAPSHOT_LEVELS) for _ in range(64)]
        self.rng = rng
        self.prefix = b'{"type":"update","market":"' + MARKET.encode() + b'","updateId":'

    def update(self, uid: int, ts_ms: int) -> bytes:
        r = self.rng.getrandbits(24)
        return b'%s%d,"bids":%s,"asks":%s,"timestamp":%d}' % (
            self.prefix, uid, self.bids[r & 4095], self.asks[r >> 12], ts_ms)

    def snapshot(self, uid: int, ts_ms: int) -> bytes:
        r = self.rng.getrandbits(12)
        return b'{"type":"snapshot","market":"%s","updateId":%d,"bids":%s,"asks":%s,' \
               b'"timestamp":%d}' % (MARKET.encode(), uid, self.snap_bids[r & 63],
                                     self.snap_asks[r >> 6], ts_ms)


# -- 2. a day of one market ----------------------------------------------------------------------

def day_start_us() -> int:
    from astra.tape import parse_time

    return parse_time(DAY, "day")


def generate_day(root: Path, hours: int, rate: int) -> tuple[int, int]:
    """Write ``hours`` hours at ``rate`` updates/s (a checkpoint every 1000 updates, as the
    recorder's default) and ~10 trades/s, one file per hour per kind; returns (book rows,
    trade rows)."""
    import pyarrow as pa

    from astra.tape import BOOK, BOOK_SCHEMA, TRADE, TRADE_SCHEMA, write_rows

    frames = Frames()
    rng = random.Random(2)
    start = day_start_us()
    step = 1_000_000 // rate
    uid = 1_000_000
    book_rows = trade_rows = 0
    for hour in range(hours):
        base = start + hour * 3_600_000_000
        n = rate * 3600
        local = [base + i * step + rng.randrange(step) for i in range(n)]
        types, reasons, uids, stamps, data = [], [], [], [], []
        for i, ts in enumerate(local):
            uid += 1
            ms = ts // 1000 - 5
            if i % 1000 == 0:
                types.append("snapshot")
                reasons.append("start" if hour == 0 and i == 0 else "periodic")
                data.append(frames.snapshot(uid, ms))
            else:
                types.append("update")
                reasons.append(None)
                data.append(frames.update(uid, ms))
            uids.append(uid)
            stamps.append(ms)
        table = pa.table([local, types, reasons, uids, stamps, data], schema=BOOK_SCHEMA)
        write_rows(root, MARKET, BOOK, table, hour)
        book_rows += n
        del table, data, local
        tl, tt, tp, tq, ts_, tid = [], [], [], [], [], []
        for sec in range(3600):
            at = base + sec * 1_000_000 + rng.randrange(1_000_000)
            for k in range(rng.randint(TRADES_PER_SECOND // 2, TRADES_PER_SECOND * 3 // 2)):
                tl.append(at)
                tt.append(at // 1000 - rng.randint(1, 50))
                tp.append(round(97000 + rng.uniform(-50, 50), 2))
                tq.append(round(rng.uniform(0.0001, 0.5), 5))
                ts_.append("BUY" if rng.random() < 0.5 else "SELL")
                tid.append(f"{hour}-{sec}-{k}")
        n = len(tl)
        table = pa.table([tl, ["trade"] * n, [None] * n, tt, tp, tq, ts_, tid],
                         schema=TRADE_SCHEMA)
        write_rows(root, MARKET, TRADE, table, hour)
        trade_rows += n
    return book_rows, trade_rows


def tape(args: argparse.Namespace, tmp: str) -> Path:
    import astra.tape.files

    if args.row_group:  # an experiment: the tape's row group size (astra.tape.ROW_GROUP)
        astra.tape.files.ROW_GROUP = args.row_group
    root = Path(args.cache) if args.cache else Path(tmp) / "day"
    marker = root / f".bench-{args.hours}h-{args.rate}-{astra.tape.files.ROW_GROUP}"
    if marker.exists():
        print(f"day: reusing the tape in {root}")
        return root
    if root.exists() and any(root.iterdir()):
        sys.exit(f"--cache {root}: not empty and not a tape of this benchmark's shape")
    t0 = time.perf_counter()
    book, trades = generate_day(root, args.hours, args.rate)
    size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
    print(f"day: {args.hours} h of {MARKET} at {args.rate} updates/s = {book:,} book rows "
          f"+ {trades:,} trades, {size / 1e6:,.0f} MB of Parquet (row groups of "
          f"{astra.tape.files.ROW_GROUP:,} rows), generated in "
          f"{time.perf_counter() - t0:.0f} s")
    marker.touch()
    return root


def bench_queries(root: Path, args: argparse.Namespace) -> dict:
    import duckdb
    import pyarrow.compute as pc

    from astra.core import HistoricalTrade, Side
    from astra.history.book import RecordedBook
    from astra.history.query import HistoryReader
    from astra.tape import TRADE, read_table

    reader = HistoryReader(root, None)
    rng = random.Random(4)
    start = day_start_us()
    end = start + args.hours * 3_600_000_000
    times = [rng.randrange(start + 60_000_000, end) for _ in range(args.samples)]
    out: dict[str, list[float]] = {}

    def timed(name: str, fn, items) -> None:
        for item in items[:3]:  # warm the page cache and the code
            fn(item)
        samples = []
        for item in items:
            t0 = time.perf_counter()
            fn(item)
            samples.append((time.perf_counter() - t0) * 1000)
        out[name] = samples

    timed("book_at pyarrow", lambda t: reader.book_at(MARKET, t, 20), times)
    con = duckdb.connect()
    book_glob = f"{root}/exchange=SIM/type=book/symbol={MARKET}/*/*.parquet"
    trade_glob = f"{root}/exchange=SIM/type=trade/symbol={MARKET}/*/*.parquet"

    def duck_book(t: int) -> bytes:
        # The reader's plan: the last snapshot in the 2 minutes before t (then further back),
        # the frames from it to t, rebuilt and encoded in Python the same way. Two queries:
        # a join on the first's result would not push the time range into the scan.
        window = 120_000_000
        while True:
            ((since,),) = con.sql(
                f"select max(local_ts) from read_parquet('{book_glob}') "
                "where type = 'snapshot' and local_ts between ? and ?",
                params=[t - window, t]).fetchall()
            if since is not None or t - window < start:
                break
            window *= 2
        frames = con.sql(f"select frame from read_parquet('{book_glob}') "
                         "where local_ts between ? and ? order by local_ts",
                         params=[since, t]).fetchall()
        book = RecordedBook(MARKET).apply_frames(f for (f,) in frames)
        return book.snapshot_frame(20)

    timed("book_at duckdb", duck_book, times)
    hours = [start + rng.randrange(args.hours) * 3_600_000_000 for _ in range(args.hour_samples)]

    hour, slack = 3_600_000_000, 60_000_000
    columns = ["price", "quantity", "side", "time", "trade_id", "local_ts"]

    def objects(table) -> list:  # what the reader builds of the rows of a page
        return [HistoricalTrade(price=p, quantity=q, side=Side(s), time=t, trade_id=i,
                                local_timestamp=lt)
                for p, q, s, t, i, lt in zip(*(table.column(c).to_pylist() for c in columns),
                                             strict=True)]

    def reader_pages(h: int) -> int:
        n, cursor = 0, None
        while True:
            page = reader.trades(MARKET, h, h + hour - 1, limit=1000, cursor=cursor)
            n += len(page.trades)
            if (cursor := page.next_cursor) is None:
                return n

    def arrow_hour(h: int) -> int:
        table = read_table(root, MARKET, TRADE, h - slack, h + hour + slack,
                           columns=["type", *columns])
        when = table.column("time")
        table = table.filter(pc.and_(pc.equal(table.column("type"), "trade"), pc.and_(
            pc.greater_equal(when, h // 1000), pc.less_equal(when, (h + hour - 1) // 1000))))
        table = table.take(pc.sort_indices(table, sort_keys=[("time", "ascending"),
                                                             ("local_ts", "ascending")]))
        return len(objects(table))

    def duck_rows(h: int, after: tuple | None = None, limit: int | None = None):
        lo = h if after is None else max(h, after[0] * 1000)
        where = "local_ts between ? and ? and type = 'trade' and time between ? and ?"
        params = [lo - slack, h + hour + slack, h // 1000, (h + hour - 1) // 1000]
        if after is not None:  # keyset pagination: after the last row of the previous page
            where += (" and (time > ? or (time = ? and (local_ts > ? or (local_ts = ? "
                      "and trade_id > ?))))")
            params += [after[0], after[0], after[1], after[1], after[2]]
        return con.sql(f"select {', '.join(columns)} from read_parquet('{trade_glob}') "
                       f"where {where} order by time, local_ts, trade_id"
                       + (f" limit {limit}" if limit else ""), params=params).to_arrow_table()

    def duck_hour(h: int) -> int:
        return len(objects(duck_rows(h)))

    def duck_pages(h: int) -> int:
        n, after = 0, None
        while True:
            page = objects(duck_rows(h, after, 1000))
            n += len(page)
            if len(page) < 1000:
                return n
            after = (page[-1].time, page[-1].local_timestamp, page[-1].trade_id)

    counts = {f.__name__: f(hours[0]) for f in (reader_pages, arrow_hour, duck_hour, duck_pages)}
    if len(set(counts.values())) != 1:
        print(f"  WARNING: the reads disagree on an hour's trades: {counts}")
    out["trades_per_hour"] = [float(counts["duck_hour"])]
    timed("trades hour, pages pyarrow", reader_pages, hours)
    timed("trades hour, pages duckdb", duck_pages, hours)
    timed("trades hour, one read pyarrow", arrow_hour, hours)
    timed("trades hour, one read duckdb", duck_hour, hours)
    con.close()
    # astra history export: a stretch of the day to Parquet, tardis.dev columns
    from astra.history.export import export

    span = start + 7_200_000_000
    t0 = time.perf_counter()
    files = export(root, [MARKET], span, span + args.export_minutes * 60_000_000, "parquet",
                   out=Path(tempfile.mkdtemp(prefix="bench-history-export-")))
    out["export_s"] = [time.perf_counter() - t0]
    out["export_rows"] = [float(sum(f.rows for f in files))]
    for f in files:
        f.path.unlink()
    f.path.parent.rmdir()
    return out


# -- 1. the recorder -------------------------------------------------------------------------

async def bench_recorder(args: argparse.Namespace, tmp: str) -> dict:
    from astra.core import DataType
    from astra.history.config import HistoryConfig
    from astra.history.recorder import Recorder
    from astra.marketdata.engine import MarketDataEngine
    from astra.net.sender import BoundedSender
    from astra.server.gateway import venues_from_config
    from astra.sim import SimExchange, SimServer

    frames = Frames(seed=9)
    uid = 10**9
    now_ms = int(time.time() * 1000)
    sample = [frames.update(uid + i, now_ms) for i in range(args.frames)]
    out: dict = {"frame_bytes": statistics.mean(len(f) for f in sample[:1000])}
    async with SimServer(SimExchange(seed=1)) as sim:
        engine = MarketDataEngine(venues_from_config({}, sim.base_url), linger=0.5)

        async def recorder(folder: str, flush_seconds: float) -> tuple[Recorder, object]:
            config = HistoryConfig.from_config(
                {"markets": [MARKET], "dir": str(Path(tmp) / folder),
                 "flush_seconds": flush_seconds}, Path(tmp))
            rec = await Recorder(engine, config).start()
            channel = engine.channels[(MARKET, DataType.ORDERBOOK)]
            async with asyncio.timeout(30):
                await channel.synced.wait()
            (client,) = [c for c in channel.clients if getattr(c, "kind", None) == "book"]
            return rec, client

        # 1a. deliver alone, then one flush of all of it
        rec, client = await recorder("absorb", 3600)
        deliver_s = 0.0
        for i in range(0, len(sample), 1000):
            chunk = sample[i:i + 1000]
            t0 = time.perf_counter()
            for f in chunk:
                client.deliver(f)
            deliver_s += time.perf_counter() - t0
            await asyncio.sleep(0)  # the loop runs between messages (periodic checkpoints)
        t0 = time.perf_counter()
        await rec.flush()
        flush_s = time.perf_counter() - t0
        out["deliver_ns"] = deliver_s / len(sample) * 1e9
        out["flush_rows_s"] = rec.stats["rows_recorded"] / flush_s if flush_s else 0
        out["absorb_s"] = len(sample) / (deliver_s + flush_s)
        out["rows_recorded"] = rec.stats["rows_recorded"]
        await rec.close()

        # 1b. the live path: fan-out to K clients, with and without the recorder attached
        rec, client = await recorder("live", 0.5)  # flushes every 0.5 s in its thread
        senders = [BoundedSender(None, None, max_queue=10**9) for _ in range(args.clients)]

        async def fan_out(clients: list, recorder: Recorder | None = None
                          ) -> tuple[float, float]:
            """(frames/s, CPU µs per frame): the CPU of the whole process, so the
            recorder's flushes in their thread count (the last one, after the loop, too)."""
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(0, len(sample), 500):
                for f in sample[i:i + 500]:
                    for c in clients:  # Channel._fan_out
                        c.deliver(f)
                for s in senders:  # what each client's writer task drains (not timed apart)
                    s._queue.clear()
                await asyncio.sleep(0)
            wall = time.perf_counter() - t0
            if recorder is not None:
                await recorder.flush()
            return len(sample) / wall, (time.process_time() - c0) / len(sample) * 1e6

        runs: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
        for _ in range(3):  # alternated: a neighbour's load hits both alike
            runs["without"].append(await fan_out(senders))
            runs["with"].append(await fan_out([*senders, client], rec))
        for name, results in runs.items():
            out[f"live_{name}"] = max(r for r, _ in results)
            out[f"cpu_{name}"] = min(c for _, c in results)
        out["live_flushes"] = rec.stats["flushes"]
        out["live_dropped"] = rec.stats["rows_dropped"]
        await rec.close()
        await engine.close()
    return out


# -- 3. replay -------------------------------------------------------------------------------

async def serve_replay(root: Path) -> None:
    """The child: a ``Gateway`` serving ``root``'s record (``[history] dir``, recording
    nothing), and on a port of its own ``/reference``: the same frames from memory, written as
    the live path writes them (``send_frame`` per frame)."""
    from aiohttp import WSMsgType, web

    from astra.history.config import HistoryConfig
    from astra.history.replay import replay_events
    from astra.server.gateway import Gateway
    from astra.server.protocol import GatewayRunner
    from astra.store import ApiKeyStore, open_database

    data = tempfile.TemporaryDirectory(prefix="bench-history-keys-", ignore_cleanup_errors=True)
    keys = ApiKeyStore(open_database(data_dir=Path(data.name)))
    token = keys.create("bench").token
    history = HistoryConfig(markets=(), dir=root, retention_days=36_500)
    cache: dict[tuple[int, int], list[bytes]] = {}

    async def reference(request: web.Request) -> web.WebSocketResponse:
        span = (int(request.query["from"]), int(request.query["to"]))
        if span not in cache:
            cache[span] = [f for _, f in await asyncio.to_thread(
                lambda: list(replay_events(root, [MARKET], "ORDERBOOK", *span)))]
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for frame in cache[span]:
            await ws.send_frame(frame, WSMsgType.TEXT)
        await ws.close(message=b"end")
        return ws

    app = web.Application()
    app.router.add_get("/reference", reference)
    runner = GatewayRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ref_port = site._server.sockets[0].getsockname()[1]
    async with Gateway({}, keys, port=0, metrics_port=0, history=history) as gw:
        print(f"listening {gw.port} {ref_port} {token}", flush=True)
        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # to EOF
    await runner.cleanup()
    data.cleanup()


async def _measure_replay(port: str, ref_port: str, token: str, args: argparse.Namespace
                          ) -> dict:
    import aiohttp

    start = day_start_us() + 3_600_000_000  # the second hour: its book at `from` first
    span = (start, start + args.replay_minutes * 60_000_000)
    from_ms, to_ms = span[0] // 1000, span[1] // 1000
    out = {}
    headers = {"x-astra-api-key": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        for name, url in (
            ("reference", f"http://127.0.0.1:{ref_port}/reference?from={span[0]}&to={span[1]}"),
            ("replay", f"http://127.0.0.1:{port}/ws?market={MARKET}&dataType=ORDERBOOK"
                       f"&from={from_ms}&to={to_ms}&speed=max"),
        ):
            best = 0.0
            for attempt in range(3):
                n = 0
                t0 = time.perf_counter()
                async with s.ws_connect(url, max_msg_size=0) as ws:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            n += 1
                rate = n / (time.perf_counter() - t0)
                if attempt:  # the first fills the reference's cache and the page cache
                    best = max(best, rate)
            out[name] = (n, best)
    return out


def bench_replay(root: Path, args: argparse.Namespace) -> dict:
    """The server in a child process (the client here would otherwise share its CPU)."""
    child = subprocess.Popen([sys.executable, __file__, "--serve-replay", str(root)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"the replay server did not start: {line!r}")
        _, port, ref_port, token = line.split()
        return asyncio.run(_measure_replay(port, ref_port, token, args))
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# -- the report ------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run: 3 hours, 50k frames, 50 samples")
    parser.add_argument("--hours", type=int, default=24, help="hours of the generated day")
    parser.add_argument("--rate", type=int, default=100, help="book updates per second")
    parser.add_argument("--cache", help="keep (and reuse) the generated tape in this folder")
    parser.add_argument("--samples", type=int, default=200, help="book_at samples")
    parser.add_argument("--hour-samples", type=int, default=5, help="trades-hour samples")
    parser.add_argument("--frames", type=int, default=200_000, help="frames fed the recorder")
    parser.add_argument("--clients", type=int, default=100, help="fan-out clients")
    parser.add_argument("--replay-minutes", type=int, default=20, help="replayed span")
    parser.add_argument("--export-minutes", type=int, default=10, help="exported span")
    parser.add_argument("--row-group", type=int, default=0,
                        help="rows per row group of the generated tape (default: the tape's "
                        "ROW_GROUP); to compare book_at latencies")
    parser.add_argument("--serve-replay", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_replay:
        try:
            import uvloop
        except ImportError:
            asyncio.run(serve_replay(Path(args.serve_replay)))
        else:
            uvloop.run(serve_replay(Path(args.serve_replay)))
        return
    if args.quick:
        args.hours, args.samples, args.frames = min(args.hours, 3), 50, 50_000
        args.hour_samples, args.replay_minutes, args.export_minutes = 3, 5, 2
    with tempfile.TemporaryDirectory(prefix="bench-history-", ignore_cleanup_errors=True) as tmp:
        r = asyncio.run(bench_recorder(args, tmp))
        print(f"recorder, {r['rows_recorded']:,} synthetic updates of {r['frame_bytes']:.0f} "
              "bytes (the simulator's size):")
        print(f"  deliver (the live path's only work)   {r['deliver_ns']:8.0f} ns/frame")
        print(f"  one flush (headers, Arrow, Parquet)   {r['flush_rows_s']:11,.0f} rows/s")
        print(f"  deliver + flush absorb                {r['absorb_s']:11,.0f} frames/s")
        print(f"  fan-out to {args.clients} clients ({r['live_flushes']} flushes in the "
              f"recorder's thread, {r['live_dropped']} rows dropped):")
        print(f"    CPU per frame     {r['cpu_without']:8.2f} us without the recorder, "
              f"{r['cpu_with']:8.2f} us with it = {r['cpu_with'] / r['cpu_without']:.2f}x")
        print(f"    frames/s (wall)   {r['live_without']:11,.0f} without, "
              f"{r['live_with']:11,.0f} with = {r['live_with'] / r['live_without']:.2f}x")
        root = tape(args, tmp)
        q = bench_queries(root, args)
        print(f"queries on the day ({args.samples} random times, {args.hour_samples} hours of "
              f"{q['trades_per_hour'][0]:,.0f} trades):")
        print(f"  {'':30} {'p50 ms':>9} {'p99 ms':>9}")
        for name in ("book_at pyarrow", "book_at duckdb", "trades hour, pages pyarrow",
                     "trades hour, pages duckdb", "trades hour, one read pyarrow",
                     "trades hour, one read duckdb"):
            p50, p99 = _pct(q[name])
            print(f"  {name:30} {p50:9.2f} {p99:9.2f}")
        for what in ("book_at", "trades hour, pages", "trades hour, one read"):
            a = statistics.median(q[f"{what} pyarrow"])
            d = statistics.median(q[f"{what} duckdb"])
            print(f"  {what}: DuckDB / pyarrow = {d / a:.2f}x (median)")
        rows, secs = q["export_rows"][0], q["export_s"][0]
        print(f"export of {args.export_minutes} min (book and trades, Parquet): {rows:,.0f} "
              f"rows in {secs:.1f} s = {rows / secs:,.0f} rows/s "
              f"({args.export_minutes * 60 * args.rate / secs:,.0f} recorded updates/s)")
        rep = bench_replay(root, args)
        n, rate = rep["replay"]
        ref_n, ref = rep["reference"]
        print(f"replay of {args.replay_minutes} min at speed=max ({n:,} messages, one client):")
        print(f"  WS /ws?from=... replay                {rate:11,.0f} messages/s")
        print(f"  same frames from memory (reference)   {ref:11,.0f} messages/s "
              f"({ref_n:,} messages)")
        print(f"  ratio                                 {rate / ref:11.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
