"""Gateway throughput, measured side by side in one run.

``astra serve`` runs as a child process (with its simulator child); the load comes from
this process (WebSocket clients) and from ``wrk`` when it is installed (HTTP).

1. ``GET /orderbook?depth=20`` requests/s from the gateway's live synced book, next to
   ``GET /api/v1/depth?limit=20`` straight from the simulator (the venue's own REST): ratio.
2. ORDERBOOK WebSocket: 100 clients on one market; update frames/s delivered in total, and
   the share of the upstream updates each client received (1.00 = nothing dropped).
3. Encode once vs encode per client, for one update fanned out to 100 clients: ratio.

Usage: python benchmarks/bench_gateway.py [--clients 100] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import aiohttp
import msgspec

from astra.core import BookUpdate, Level

TOKEN = "benchbench23." + "b" * 10 + "ENCH" + "c" * 20 + "-_xyz0123"


def start_gateway() -> tuple[subprocess.Popen, str, str]:
    data_dir = tempfile.mkdtemp()
    env = dict(os.environ, ASTRA_API_KEY=TOKEN, ASTRA_DATA_DIR=data_dir)
    config = os.path.join(data_dir, "bench.toml")
    with open(config, "w") as f:  # every benchmark client shares one key: lift the per-key cap
        f.write("ws_connections_per_key = 10000\n")
        # One simulated venue (serve's default is three): the figures stay comparable with
        # earlier runs, and the simulator's CPU does not crowd the gateway on a small machine.
        f.write("[venues.SIM]\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "astra", "serve", "--port", "0", "--metrics-port", "0",
         "--config", config],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    gateway = sim = ""
    while not (gateway and sim):
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("astra serve exited")
        if m := re.search(r"listening on (http://\S+)", line):
            gateway = m[1]
        if m := re.search(r"running at (http://\S+)", line):
            sim = m[1]
    return proc, gateway, sim


def wrk(url: str, seconds: float, headers: dict[str, str]) -> float | None:
    if shutil.which("wrk") is None:
        return None
    args = ["wrk", "-t1", "-c32", f"-d{int(seconds)}s"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    return float(m[1]) if m else None


async def ws_fanout(gateway: str, clients: int, seconds: float) -> tuple[float, float]:
    url = (
        f"{gateway.replace('http', 'ws')}/ws?market=SIM-PERP-BTC-USDT&dataType=ORDERBOOK"
        f"&apiKey={TOKEN}"
    )
    counts = [0] * clients
    max_update = [0] * clients
    stop = time.monotonic() + seconds

    async def client(i: int) -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            first = msgspec.json.decode((await ws.receive(timeout=10)).data)
            start_id = first["updateId"]
            while time.monotonic() < stop:
                try:
                    msg = await ws.receive(timeout=1)
                except TimeoutError:
                    continue
                counts[i] += 1
                max_update[i] = msgspec.json.decode(msg.data)["updateId"] - start_id

    begin = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.monotonic() - begin
    # Every client should receive every upstream update: compare with the busiest client.
    expected = max(counts)
    return sum(counts) / elapsed, (sum(counts) / clients) / expected if expected else 0.0


def encode_fanout(clients: int = 100, n: int = 2000) -> tuple[float, float]:
    levels = [Level(97000.0 + i / 10, 0.5 + i) for i in range(10)]
    update = BookUpdate(
        type="update",
        market="SIM-PERP-BTC-USDT",
        update_id=1,
        bids=levels,
        asks=levels,
        timestamp=1,
    )
    encode = msgspec.json.Encoder().encode
    sink: list[bytes] = []
    t0 = time.perf_counter()
    for _ in range(n):
        frame = encode(update)
        for _ in range(clients):
            sink.append(frame)
        sink.clear()
    t1 = time.perf_counter()
    for _ in range(n):
        for _ in range(clients):
            sink.append(encode(update))
        sink.clear()
    t2 = time.perf_counter()
    return n / (t1 - t0), n / (t2 - t1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    proc, gateway, sim = start_gateway()
    try:
        headers = {"x-astra-api-key": f"Bearer {TOKEN}"}
        book_url = f"{gateway}/orderbook?market=SIM-SPOT-BTC-USDT&depth=20"
        asyncio.run(_warm(book_url, headers))
        ours = wrk(book_url, args.seconds, headers)
        venue = wrk(f"{sim}/api/v1/depth?symbol=BTCUSDT&limit=20", args.seconds, {})
        if ours is None:
            print("wrk not installed: HTTP figures skipped (apt-get install wrk)")
        else:
            print(
                f"GET /orderbook depth=20: {ours:,.0f} req/s from the gateway vs "
                f"{venue:,.0f} req/s from the venue's own REST = {ours / venue:.2f}x"
            )
        rate, share = asyncio.run(ws_fanout(gateway, args.clients, args.seconds))
        print(
            f"WS ORDERBOOK, {args.clients} clients: {rate:,.0f} updates/s delivered; each "
            f"client got {share:.2f} of the updates the busiest client got"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    once, each = encode_fanout(args.clients)
    print(
        f"fan-out of one update to {args.clients} clients: encode once {once:,.0f}/s vs "
        f"encode per client {each:,.0f}/s = {once / each:.1f}x"
    )


async def _warm(url: str, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession(headers=headers) as s, s.get(url) as r:
        assert r.status == 200, await r.text()


if __name__ == "__main__":
    main()
