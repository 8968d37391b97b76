"""Gateway REST throughput against its ceiling, measured side by side in one run.

``astra serve`` runs as a child process (with its simulator child, one simulated venue); the
load comes from ``wrk`` (``/usr/bin/wrk``: -t1 -c32, the same for every target).

1. ``GET /orderbook?market=SIM-SPOT-BTC-USDT&depth=20`` from the gateway's live synced book,
   with the API key header (every request authenticated, scoped, counted and timed), next to
   the ceiling: a bare aiohttp app in its own child process (uvloop like ``astra serve``,
   access log off) answering every GET with the gateway's own answer, fetched once (the same
   bytes). Runs alternate gateway / ceiling, best of ``--rounds`` each; prints
   ``gateway r/s``, ``ceiling r/s`` and ``ratio``, and each server process's CPU time per
   request (user + system from /proc, the gateway's own process without its simulator):
   throughput depends on the machine's load, the CPU cost per request much less.
2. Encode once vs encode per client, for one update fanned out to 100 clients: ratio.

(The WebSocket fan-out benchmark is ``benchmarks/bench_fanout.py``. The simulator's own REST
is no reference here: it rate-limits per IP like the venue it imitates, so under wrk most of
its answers are 429s.)

Usage: python benchmarks/bench_gateway.py [--seconds 3] [--rounds 3] [--clients 100]
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
WRK = shutil.which("wrk") or "/usr/bin/wrk"
BOOK_PATH = "/orderbook?market=SIM-SPOT-BTC-USDT&depth=20"


def start_gateway() -> tuple[subprocess.Popen, str]:
    data_dir = tempfile.mkdtemp()
    env = dict(os.environ, ASTRA_API_KEY=TOKEN, ASTRA_DATA_DIR=data_dir)
    config = os.path.join(data_dir, "bench.toml")
    with open(config, "w") as f:
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
    return proc, gateway


# --- the ceiling: a bare aiohttp server answering precomputed bytes ---------------------------

def serve_ceiling(body_file: str) -> None:
    """Child process: GET on any path answers the file's bytes as application/json."""
    import uvloop
    from aiohttp import web

    with open(body_file, "rb") as f:
        body = f.read()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        print(f"ceiling on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def start_ceiling(body: bytes) -> tuple[subprocess.Popen, str]:
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve-ceiling", path],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    m = re.search(r"ceiling on (http://\S+)", line)
    if not m:
        proc.kill()
        raise RuntimeError("ceiling server did not start")
    return proc, m[1]


# --- measuring ------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (not its children), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: float, headers: dict[str, str], pid: int | None = None,
        ) -> tuple[float, float]:
    """(requests/s, server CPU µs per request; nan without ``pid``) of one wrk run."""
    args = [WRK, "-t1", "-c32", f"-d{int(seconds)}s"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    cpu = cpu_seconds(pid) if pid is not None else 0.0
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 30)
    cpu = cpu_seconds(pid) - cpu if pid is not None else float("nan")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    n = re.search(r"(\d+) requests in", out.stdout)
    if m is None or n is None:
        raise RuntimeError(f"wrk gave no figure: {out.stdout} {out.stderr}")
    if "Non-2xx" in out.stdout:
        raise RuntimeError(f"non-2xx answers from {url}: {out.stdout}")
    return float(m[1]), cpu * 1e6 / max(int(n[1]), 1)


async def fetch(url: str, headers: dict[str, str]) -> bytes:
    async with aiohttp.ClientSession(headers=headers) as s, s.get(url) as r:
        body = await r.read()
        assert r.status == 200, body
        return body


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
    parser.add_argument("--seconds", type=float, default=3.0, help="each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternated runs per target")
    parser.add_argument("--serve-ceiling", metavar="BODY_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ceiling:
        serve_ceiling(args.serve_ceiling)
        return
    if not os.path.exists(WRK):
        sys.exit("wrk is not installed (apt-get install wrk): the HTTP figures need it")
    proc, gateway = start_gateway()
    ceiling_proc = None
    try:
        headers = {"x-astra-api-key": f"Bearer {TOKEN}"}
        book_url = gateway + BOOK_PATH
        body = asyncio.run(fetch(book_url, headers))  # also starts the book's feed
        ceiling_proc, ceiling = start_ceiling(body)
        ceiling_url = ceiling + BOOK_PATH
        assert len(asyncio.run(fetch(ceiling_url, headers))) == len(body)
        wrk(book_url, 1, headers)  # warm both: connections, caches, the feed's first updates
        wrk(ceiling_url, 1, headers)
        ours, top = [], []
        for _ in range(args.rounds):
            ours.append(wrk(book_url, args.seconds, headers, proc.pid))
            top.append(wrk(ceiling_url, args.seconds, headers, ceiling_proc.pid))
        g, c = max(r for r, _ in ours), max(r for r, _ in top)
        g_cpu, c_cpu = min(u for _, u in ours), min(u for _, u in top)
        print(f"GET /orderbook depth=20 ({len(body)} bytes), wrk -c32, best of {args.rounds} "
              f"alternated {args.seconds:g} s runs:")
        for name, best, runs in (("gateway", g, ours), ("ceiling", c, top)):
            print(f"  {name} r/s  {best:>9,.0f}   (runs: "
                  f"{', '.join(f'{x:,.0f}' for x, _ in runs)}; server CPU µs/request: "
                  f"{', '.join(f'{u:.1f}' for _, u in runs)})")
        print(f"  ratio        {g / c:>9.2f}   (target >= 0.80; server CPU per request, best: "
              f"gateway {g_cpu:.1f} µs, ceiling {c_cpu:.1f} µs = {c_cpu / g_cpu:.2f})")
    finally:
        if ceiling_proc is not None:
            ceiling_proc.terminate()
            ceiling_proc.wait(timeout=15)
        proc.terminate()
        proc.wait(timeout=15)
    once, each = encode_fanout(args.clients)
    print(
        f"fan-out of one update to {args.clients} clients: encode once {once:,.0f}/s vs "
        f"encode per client {each:,.0f}/s = {once / each:.1f}x"
    )


if __name__ == "__main__":
    main()
