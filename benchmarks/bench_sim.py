"""Simulator throughput, measured side by side in one run.

1. Engine + synthetic flow without the clock: book changes per second the venue can produce,
   as a ratio to what real time needs (the flow's fixed 20 steps per second).
2. Live server (``astra sim`` in a child process) with WebSocket clients in this process,
   each on a combined stream of every depth@100ms, aggTrade and bookTicker stream of both
   sides: WebSocket messages per second delivered, and book changes per second sustained.
3. Encoding one depthUpdate: msgspec Struct (what the simulator does) vs stdlib json of a dict.

Usage: python benchmarks/bench_sim.py [--clients 20] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time

import aiohttp
import msgspec

from astra.sim import SimExchange
from astra.sim.flow import STEP_MS
from astra.venues.aster.schemas import DepthUpdate


def bench_engine(seconds: float = 2.0) -> tuple[float, float]:
    ex = SimExchange(seed=11)
    states = [s for side in ex.sides.values() for s in side.states.values()]
    before = sum(s.engine.update_id for s in states)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        ex.step()
        steps += 1
    elapsed = time.perf_counter() - start
    changes = sum(s.engine.update_id for s in states) - before
    return changes / elapsed, steps / elapsed / (1000 / STEP_MS)


async def _client(url: str, stop: float, counter: list[int]) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        while time.monotonic() < stop:
            try:
                msg = await ws.receive(timeout=1)
            except TimeoutError:
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            counter[0] += 1


async def _update_ids(base: str) -> int:
    total = 0
    async with aiohttp.ClientSession() as session:
        for root in ("/api/v1", "/fapi/v1"):
            for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
                async with session.get(
                    f"{base}{root}/depth", params={"symbol": symbol, "limit": "5"}
                ) as r:
                    total += (await r.json())["lastUpdateId"]
    return total


async def bench_live(base: str, clients: int, seconds: float) -> tuple[float, float]:
    ws_base = base.replace("http", "ws")
    streams = "/".join(
        f"{s}@{c}"
        for s in ("btcusdt", "ethusdt", "solusdt")
        for c in ("depth@100ms", "aggTrade", "bookTicker")
    )
    urls = [f"{ws_base}/{p}/stream?streams={streams}" for p in ("sstream", "fstream")]
    counter = [0]
    ids_before = await _update_ids(base)
    start = time.monotonic()
    await asyncio.gather(*(_client(urls[i % 2], start + seconds, counter) for i in range(clients)))
    elapsed = time.monotonic() - start
    ids_after = await _update_ids(base)
    return counter[0] / elapsed, (ids_after - ids_before) / elapsed


def run_live(clients: int, seconds: float) -> tuple[float, float]:
    """``astra sim`` in a child process (its own core), the clients in this one."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "astra", "sim", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        base = re.search(r"(http://\S+)", proc.stdout.readline())[1]
        return asyncio.run(bench_live(base, clients, seconds))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_encode(n: int = 20000) -> tuple[float, float]:
    levels = [(f"{97000 + i}.50", "0.12345") for i in range(20)]
    msg = DepthUpdate(e="depthUpdate", E=1, T=1, s="BTCUSDT", U=1, u=2, pu=0, b=levels, a=levels)
    as_dict = msgspec.to_builtins(msg)
    encode = msgspec.json.Encoder().encode
    t0 = time.perf_counter()
    for _ in range(n):
        encode(msg)
    t1 = time.perf_counter()
    for _ in range(n):
        json.dumps(as_dict, separators=(",", ":")).encode()
    t2 = time.perf_counter()
    return n / (t1 - t0), n / (t2 - t1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    changes, headroom = bench_engine()
    print(
        f"engine+flow, no clock: {changes:,.0f} book changes/s over 6 markets "
        f"({headroom:.0f}x real time)"
    )
    msgs, live_changes = run_live(args.clients, args.seconds)
    print(
        f"live server, {args.clients} WS clients x 9 streams: {msgs:,.0f} WS messages/s "
        f"delivered; {live_changes:,.0f} book changes/s sustained "
        f"({live_changes / 6:,.0f} per market)"
    )
    fast, slow = bench_encode()
    print(
        f"encode depthUpdate (20+20 levels): msgspec {fast:,.0f}/s vs json {slow:,.0f}/s "
        f"= {fast / slow:.1f}x"
    )


if __name__ == "__main__":
    main()
