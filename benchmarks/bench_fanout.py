"""WebSocket fan-out: the gateway's delivered updates/s and latency against a bare broadcaster.

Everything runs on this machine, each part in its own process:

- a loopback fake venue (``--role venue``): Aster's wire format (Binance's ``depthUpdate``,
  which the gateway's ASTER feed reads), serving ``exchangeInfo`` (the recorded Aster files
  in ``../shared/fixtures/aster/``, cut to BTCUSDT), the REST depth snapshot, and the raw
  stream ``/ws/btcusdt@depth@100ms``. It replays the RECORDED ``NKNUSDT`` depth updates of
  ``../shared/fixtures/recorded/BINANCE.ws.1.0`` in a loop, renumbered (``U == u ==`` one
  more than the last) so the chain stays valid however often the recording repeats. Each
  consumer (the gateway, the bare broadcaster) has its own stream and sequence; the one under
  test gets frames as fast as it takes them (each send awaited: backpressure) or paced at a
  given rate, the other a 10/s trickle that keeps its book alive.
- the gateway: a real ``astra serve`` child with ``[venues.ASTER]`` pointed at the fake;
  clients subscribe to ``WS /ws?market=ASTER-SPOT-BTC-USDT&dataType=ORDERBOOK``.
- the bare broadcaster (``--role bare``): aiohttp on uvloop, one upstream connection to the
  fake, each frame's text forwarded unchanged to every client (``await send_str``).
- the clients (``--role clients``): minimal WebSocket clients on raw asyncio protocols (no
  per-message library cost, so the measuring side stays light and is the same for both),
  split across two processes.

Figures (the servers' runs alternate; best of ``--rounds``; ratios against bare):
1. delivered updates/s per client with 100 and 1,000 clients, the venue as fast as the
   consumer takes it; the share of updates each client received (1.00: nothing dropped;
   the lowest client's share of the ids it spanned is shown, a closed client or one that got
   nothing in the window counts 0), the clients closed, and the server's CPU time per message
   delivered (from /proc: the figure least disturbed by other load on a shared machine).
   Target: gateway/bare >= 0.8. The gateway never waits for a client (bounded queues, a
   slow one is dropped with 1013) while the bare broadcaster awaits each send, so flat out
   the gateway may take frames faster than its slowest clients read them: the share column
   says what that costs them (on a loaded machine the client processes are the bottleneck
   with 1,000 clients, and a client still catching up counts 0).
2. latency from the fake venue's send of a frame (``perf_counter_ns`` just before the write)
   to a client's receipt of the update with that sequence id (``perf_counter_ns`` when its
   bytes arrive; CLOCK_MONOTONIC: one clock across processes on Linux), p50/p99 at paced
   1k, 10k and 20k updates/s to ``--latency-clients`` clients (each count in turn; target
   p99 <= 1 ms at 20k/s). The servers alternate, best p99 of ``--latency-rounds``. Fairness on
   a 2-core machine: all the clients of a run live in one process, the same for every server,
   and the pacer sleeps in the kernel between frames (uvloop's 1 ms timers would have it spin
   a core, taken from the server measured); the row shows the server's, the client process's
   and the venue's CPU over the window, so a figure set by the machine, not the server, shows.

``--before-src DIR`` runs a second gateway from another source tree (e.g. ``git archive
HEAD src | tar -x -C /tmp/before``, then ``/tmp/before/src``) on its own stream of the same
fake venue, so a change is measured before and after in the same run.

Usage: python benchmarks/bench_fanout.py [--seconds 3] [--rounds 2] [--clients 100,1000]
       [--rates 1000,10000,20000] [--latency-clients 1,10] [--latency-rounds 2]
       [--before-src DIR]   (``--clients ""``: the latency part alone)
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
TOKEN = "benchfan0023." + "b" * 10 + "FANO" + "c" * 20 + "-_xyz0123"
MARKET = "ASTER-SPOT-BTC-USDT"
SYMBOL = "BTCUSDT"
TRICKLE = 10.0  # updates/s to the consumer not under test


# --- the fake venue ------------------------------------------------------------------------

def recorded_updates() -> list[tuple[str, str]]:
    """(bids json, asks json) of every recorded NKNUSDT depthUpdate, in order."""
    out = []
    for line in (FIXTURES / "recorded" / "BINANCE.ws.1.0").read_text().splitlines()[1:]:
        _, _, body = line.partition(": ")
        if '"nknusdt@depth' not in body:
            continue
        data = json.loads(body)["data"]
        out.append((json.dumps(data["b"], separators=(",", ":")),
                    json.dumps(data["a"], separators=(",", ":"))))
    return out


def recorded_snapshot() -> dict:
    line = (FIXTURES / "recorded" / "BINANCE.http.0.0").read_text().splitlines()[0]
    return json.loads(line.split(": ", 1)[1])


def exchange_info(kind: str) -> bytes:
    info = json.loads((FIXTURES / "aster" / f"{kind}-exchangeInfo.json").read_text())
    info["symbols"] = [s for s in info["symbols"] if s["symbol"] == SYMBOL]
    return json.dumps(info).encode()


class Stream:
    """One consumer's stream: its connections, its sequence, its pace, its send log."""

    def __init__(self, updates: list[tuple[str, str]]) -> None:
        self.conns: set = set()
        self.seq = 1_000_000
        self.rate = TRICKLE  # 0: as fast as the consumer takes frames
        self.updates = updates
        self.log: array.array | None = None  # (id, send ns) pairs while recording
        self.wake = asyncio.Event()

    def frame(self) -> str:
        self.seq += 1
        bids, asks = self.updates[self.seq % len(self.updates)]
        return (f'{{"e":"depthUpdate","E":{int(time.time() * 1000)},"s":"{SYMBOL}",'
                f'"U":{self.seq},"u":{self.seq},"b":{bids},"a":{asks}}}')

    async def send(self, frame: str) -> None:
        log = self.log
        if log is not None:
            log.append(self.seq)
            log.append(time.perf_counter_ns())
        for ws in tuple(self.conns):
            try:
                await ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                self.conns.discard(ws)

    async def run(self) -> None:
        perf = time.perf_counter
        while True:
            if not self.conns:
                await self.wake.wait()
                self.wake.clear()
                continue
            rate = self.rate
            if rate == 0:  # flat out: yield now and then so control requests get through
                for _ in range(64):
                    await self.send(self.frame())
                await asyncio.sleep(0)
                continue
            start, sent = perf(), 0
            while self.rate == rate and self.conns:
                due = int((perf() - start) * rate) + 1
                while sent < due:
                    await self.send(self.frame())
                    sent += 1
                ahead = (sent / rate) - (perf() - start)
                if 0.0 < ahead < 0.001:
                    # uvloop's timers have 1 ms resolution: a shorter asyncio.sleep returns
                    # at the next loop turn, and the pacer would spin a whole core that a
                    # 2-core machine takes from the server measured. Sleep in the kernel
                    # instead (the other streams and control requests wait < 1 ms), after a
                    # loop turn: uvloop writes what was sent at the end of the turn.
                    await asyncio.sleep(0)
                    ahead = (sent / rate) - (perf() - start)
                    if ahead > 0.0:
                        time.sleep(ahead)  # noqa: ASYNC251 (deliberate, see above)
                else:
                    await asyncio.sleep(max(0.0, ahead))


def serve_venue() -> None:
    import uvloop
    from aiohttp import WSMsgType, web

    updates = recorded_updates()
    snapshot = recorded_snapshot()
    spot_info, perp_info = exchange_info("spot"), exchange_info("futures")

    async def main() -> None:
        streams: dict[str, Stream] = {}
        tasks = []

        def stream_of(request: web.Request | None, who: str = "") -> Stream:
            who = who or request.match_info["who"]
            if who not in streams:
                streams[who] = Stream(updates)
                tasks.append(asyncio.create_task(streams[who].run()))
            return streams[who]

        async def ws(request: web.Request) -> web.WebSocketResponse:
            stream = stream_of(request)
            sock = web.WebSocketResponse(compress=False)
            await sock.prepare(request)
            stream.conns.add(sock)
            stream.wake.set()
            try:
                async for msg in sock:
                    if msg.type == WSMsgType.CLOSE:
                        break
            finally:
                stream.conns.discard(sock)
            return sock

        async def depth(request: web.Request) -> web.Response:
            body = dict(snapshot, lastUpdateId=stream_of(request).seq)
            return web.json_response(body)

        async def control(request: web.Request) -> web.Response:
            order = await request.json()
            stream = stream_of(None, order["who"])
            if "rate" in order:
                stream.rate = float(order["rate"])
            if order.get("record"):
                stream.log = array.array("q")
            if order.get("collect"):
                log, stream.log = stream.log, None
                return web.Response(body=log.tobytes() if log else b"")
            return web.json_response({"seq": stream.seq})

        async def other(request: web.Request) -> web.Response:
            return web.json_response({})

        app = web.Application()
        app.router.add_get("/{who}/ws/{stream}", ws)
        app.router.add_get("/{who}/api/v3/exchangeInfo", lambda r: web.Response(
            body=spot_info, content_type="application/json"))
        app.router.add_get("/{who}/fapi/v3/exchangeInfo", lambda r: web.Response(
            body=perp_info, content_type="application/json"))
        app.router.add_get("/{who}/api/v3/depth", depth)
        app.router.add_post("/control", control)
        app.router.add_route("*", "/{tail:.*}", other)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"venue on http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}",
              flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            for t in tasks:
                t.cancel()

    uvloop.run(main())


# --- the bare broadcaster ------------------------------------------------------------------

def serve_bare(venue: str) -> None:
    import aiohttp
    import uvloop
    from aiohttp import web

    async def main() -> None:
        clients: set[web.WebSocketResponse] = set()
        upstream: list[asyncio.Task] = []

        async def pump() -> None:
            async with aiohttp.ClientSession() as session, session.ws_connect(
                f"{venue.replace('http', 'ws')}/bare/ws/btcusdt@depth@100ms",
                max_msg_size=0, compress=0,
            ) as up:
                async for msg in up:
                    data = msg.data
                    for ws in tuple(clients):
                        try:
                            await ws.send_str(data)
                        except (ConnectionError, RuntimeError):
                            clients.discard(ws)

        async def ws(request: web.Request) -> web.WebSocketResponse:
            sock = web.WebSocketResponse(compress=False)
            await sock.prepare(request)
            clients.add(sock)
            if not upstream or upstream[0].done():
                upstream[:] = [asyncio.create_task(pump())]
            try:
                async for _ in sock:
                    pass
            finally:
                clients.discard(sock)
                if not clients and upstream:
                    upstream.pop().cancel()
            return sock

        app = web.Application()
        app.router.add_get("/ws", ws)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"bare on http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


# --- the clients ---------------------------------------------------------------------------

class WsClient(asyncio.Protocol):
    """A minimal WebSocket client: counts data frames; records (id, receipt ns) when asked."""

    def __init__(self, request: bytes, id_key: bytes, ready: asyncio.Future) -> None:
        self.request, self.id_key, self.ready = request, id_key, ready
        self.buf = bytearray()
        self.open = False
        self.count = 0
        self.first: bytes | None = None
        self.last: bytes | None = None
        self.log: array.array | None = None
        self.closed_code: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed_code is None:
            self.closed_code = -1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during handshake"))

    def reset(self, record: bool) -> None:
        self.count, self.first, self.last = 0, None, None
        self.log = array.array("q") if record else None

    def _id(self, payload: bytes, start: int = 0, stop: int | None = None) -> int | None:
        at = payload.find(self.id_key, start, stop)
        if at < 0:
            return None
        first = digit = at + len(self.id_key)
        while payload[digit] in b"0123456789":
            digit += 1
        return int(payload[first:digit])

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        buf = self.buf
        buf += data
        if not self.open:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(bytes(buf[:200]).decode()))
                return
            del buf[: head_end + 4]
            self.open = True
            self.ready.set_result(None)
        pos, size, log = 0, len(buf), self.log
        last = None
        while size - pos >= 2:
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2: pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2: pos + 10], "big"), 10
            end = pos + head + n
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            if opcode in (1, 2):
                self.count += 1
                if self.first is None:
                    self.first = bytes(buf[pos + head: end])
                if log is None:
                    last = (pos + head, end)
                elif (i := self._id(buf, pos + head, end)) is not None:
                    log.append(i)
                    log.append(now)
            elif opcode == 9:  # ping: a masked pong with the same payload (mask of zeros)
                self.transport.write(bytes([0x8A, 0x80 | n]) + b"\0\0\0\0"
                                     + bytes(buf[pos + head: end]))
            elif opcode == 8:
                self.closed_code = int.from_bytes(buf[pos + head: pos + head + 2], "big")
            pos = end
        if last is not None:
            self.last = bytes(buf[last[0]: last[1]])
        del buf[:pos]

    def span(self) -> tuple[int, int, int] | None:
        """(count, first id, last id) of the window."""
        if self.first is None:
            return None
        first = self._id(self.first)
        last = self._id(self.last) if self.last is not None else first
        return self.count, first, last


def write_results(path: str, clients: list[WsClient]) -> None:
    """A JSON line (spans, close codes, log sizes), then each client's log's bytes."""
    spans = [c.span() for c in clients]
    logs = [c.log.tobytes() if c.log is not None else b"" for c in clients]
    with open(path, "wb") as f:
        f.write(json.dumps({"spans": spans, "codes": [c.closed_code for c in clients],
                            "logs": [len(x) for x in logs]}).encode() + b"\n")
        for x in logs:
            f.write(x)


def run_clients(url: str, count: int, token: str, id_key: str, out: str) -> None:
    import uvloop

    async def main() -> None:
        host, port, path = re.match(r"http://([^:/]+):(\d+)(/.*)", url).groups()
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\nx-astra-api-key: Bearer {token}\r\n\r\n"
                   ).encode()
        loop = asyncio.get_running_loop()
        clients = []
        for _ in range(count):
            ready = loop.create_future()
            _, proto = await loop.create_connection(
                lambda r=ready: WsClient(request, id_key.encode(), r), host, int(port))
            await asyncio.wait_for(ready, 30)
            clients.append(proto)
        print("ready", flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            if line.startswith("start"):
                for c in clients:
                    c.reset(record=line == "start record")
            elif line == "stop":
                write_results(out, clients)
                print("stopped", flush=True)
        for c in clients:
            c.transport.close()

    uvloop.run(main())


class ClientGroup:
    """``count`` clients of ``url`` across ``procs`` child processes."""

    def __init__(self, url: str, count: int, id_key: str, procs: int = 2) -> None:
        self.procs, self.files = [], []
        per = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
        for n in per:
            if not n:
                continue
            fd, path = tempfile.mkstemp(suffix=".clients")
            os.close(fd)
            self.files.append(path)
            self.procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--role", "clients", url, str(n),
                 TOKEN, id_key, path],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for p in self.procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("clients did not connect")

    def tell(self, line: str) -> None:
        for p in self.procs:
            p.stdin.write(line + "\n")
            p.stdin.flush()

    def stop(self) -> tuple[list, list[int], list[array.array]]:
        self.tell("stop")
        for p in self.procs:
            p.stdout.readline()
        spans, codes, logs = [], [], []
        for path in self.files:
            with open(path, "rb") as f:
                head = json.loads(f.readline())
                spans += head["spans"]
                codes += head["codes"]
                for size in head["logs"]:
                    log = array.array("q")
                    log.frombytes(f.read(size))
                    logs.append(log)
        return spans, codes, logs

    def close(self) -> None:
        for p in self.procs:
            p.stdin.close()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for path in self.files:
            os.unlink(path)


# --- orchestration -------------------------------------------------------------------------

def start_child(args: list[str], pattern: str, env: dict | None = None):
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(pattern, line):
            return proc, m[1]
    proc.kill()
    raise RuntimeError(f"{args[:3]} did not start")


def start_gateway(venue: str, who: str, src: str | None = None
                  ) -> tuple[subprocess.Popen, str]:
    """``astra serve`` on the fake venue's stream ``who``; ``src``: run that source tree's
    astra instead (``--before-src``: the code before a change, measured in the same run)."""
    data_dir = tempfile.mkdtemp()
    config = os.path.join(data_dir, "fanout.toml")
    ws = venue.replace("http", "ws")
    with open(config, "w") as f:
        f.write(f'ws_connections_per_key = 5000\n[venues.ASTER]\n'
                f'spot_rest = "{venue}/{who}/api"\nperp_rest = "{venue}/{who}/fapi"\n'
                f'spot_ws = "{ws}/{who}"\nperp_ws = "{ws}/{who}"\n')
    env = dict(os.environ, ASTRA_API_KEY=TOKEN, ASTRA_DATA_DIR=data_dir)
    if src:
        env["PYTHONPATH"] = src
    return start_child(["-m", "astra", "serve", "--port", "0", "--metrics-port", "0",
                        "--config", config], r"listening on (http://\S+)", env)


def control(venue: str, **order) -> bytes:
    import urllib.request

    req = urllib.request.Request(f"{venue}/control", data=json.dumps(order).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=30) as answer:
        return answer.read()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(venue: str, who: str, url: str, id_key: str, clients: int,
               seconds: float, pid: int) -> tuple[float, float, int, float]:
    """(updates/s per client, lowest share, clients dropped, server CPU us per message
    delivered) with the venue flat out."""
    group = ClientGroup(url, clients, id_key)
    try:
        control(venue, who=who, rate=0)
        time.sleep(0.5 + clients / 500)  # past the snapshots and the ramp
        group.tell("start")
        cpu0 = cpu_seconds(pid)
        time.sleep(seconds)
        cpu = cpu_seconds(pid) - cpu0
        spans, codes, _ = group.stop()
        control(venue, who=who, rate=TRICKLE)
    finally:
        group.close()
    live = [s for s in spans if s]
    dropped = sum(1 for c in codes if c is not None)
    print(f"  {who} {clients} clients: {len(live)} received, {dropped} closed "
          f"{sorted(set(codes) - {None})}", file=sys.stderr, flush=True)
    if not live:
        return 0.0, 0.0, dropped, float("nan")
    rate = sum(s[0] for s in live) / len(spans) / seconds
    # A client's share: updates received / the span of sequence ids it saw (a closed or silent
    # client: 0).
    share = min((s[0] / (s[2] - s[1] + 1) if s and c is None else 0.0)
                for s, c in zip(spans, codes, strict=True))
    return rate, share, dropped, cpu * 1e6 / max(1, sum(s[0] for s in live))


def latency(venue: str, who: str, url: str, id_key: str, clients: int, rate: float,
            seconds: float, pid: int, venue_pid: int
            ) -> tuple[float, float, float, float, float, float]:
    """(p50 ms, p99 ms, share received, server / clients / venue CPU in % of one core over
    the window) at a paced ``rate``."""
    group = ClientGroup(url, clients, id_key, procs=1)
    try:
        control(venue, who=who, rate=rate)
        time.sleep(0.5)
        control(venue, who=who, record=True)
        group.tell("start record")
        pids = (pid, group.procs[0].pid, venue_pid)
        cpu0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
        time.sleep(seconds)
        cpu = [(cpu_seconds(p) - c) * 100 / (time.monotonic() - t0)
               for p, c in zip(pids, cpu0, strict=True)]
        sent_raw = control(venue, who=who, collect=True)
        time.sleep(0.2)  # the last frames in flight
        _, _, logs = group.stop()
        control(venue, who=who, rate=TRICKLE)
    finally:
        group.close()
    sent = array.array("q")
    sent.frombytes(sent_raw)
    sent_at = dict(zip(sent[::2], sent[1::2], strict=True))
    lat, received = [], 0
    for log in logs:
        for i, at in zip(log[::2], log[1::2], strict=True):
            t0 = sent_at.get(i)
            if t0 is not None:
                lat.append(at - t0)
                received += 1
    lat.sort()
    if not lat:
        return float("nan"), float("nan"), 0.0, *cpu
    return (lat[len(lat) // 2] / 1e6, lat[int(len(lat) * 0.99)] / 1e6,
            received / (len(sent_at) * clients), *cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", default="100,1000")
    parser.add_argument("--rates", default="1000,10000,20000")
    parser.add_argument("--latency-clients", default="1,10")
    parser.add_argument("--latency-rounds", type=int, default=2)
    parser.add_argument("--before-src", help="a source tree (its src/) to measure as well")
    args = parser.parse_args()
    here = os.path.abspath(__file__)
    venue_proc, venue = start_child([here, "--role", "venue"], r"venue on (http://\S+)")
    procs = [venue_proc]
    try:
        gateway_proc, gateway = start_gateway(venue, "gw")
        procs.append(gateway_proc)
        bare_proc, bare = start_child([here, "--role", "bare", venue], r"bare on (http://\S+)")
        procs.append(bare_proc)
        book = f"/ws?market={MARKET}&dataType=ORDERBOOK"
        targets = {
            "gateway": ("gw", f"{gateway}{book}", '"updateId":'),
            "bare": ("bare", f"{bare}/ws", '"u":'),
        }
        pids = {"gateway": gateway_proc.pid, "bare": bare_proc.pid}
        if args.before_src:
            before_proc, before = start_gateway(venue, "before", args.before_src)
            procs.append(before_proc)
            targets["before"] = ("before", f"{before}{book}", '"updateId":')
            pids["before"] = before_proc.pid
        rows = []
        for clients in [int(c) for c in args.clients.split(",") if c]:
            best: dict[str, tuple[float, float, int, float]] = {}
            for _ in range(args.rounds):
                for name, (who, url, key) in targets.items():
                    got = throughput(venue, who, url, key, clients, args.seconds, pids[name])
                    if name not in best or got[0] > best[name][0]:
                        best[name] = got
            rows.append((clients, best))
        print(f"\nfan-out, venue flat out, best of {args.rounds} x {args.seconds:g} s: "
              f"updates/s delivered to each client; share: the lowest client's, of the ids "
              f"it spanned (1.00: nothing dropped); drop: clients closed; cpu: the server's CPU "
              f"us per message delivered (the figure least disturbed by other load); ratios "
              f"against bare (cpu ratio: bare's cpu / this one's)")
        print(f"{'clients':>8} {'server':>8} {'updates/s':>10} {'share':>6} {'drop':>5} "
              f"{'cpu':>6} {'ratio':>6} {'cpu ratio':>9}")
        for clients, best in rows:
            b = best["bare"]
            for name, got in best.items():
                ratio = got[0] / b[0] if b[0] else float("nan")
                print(f"{clients:>8} {name:>8} {got[0]:>10.0f} {got[1]:>6.2f} {got[2]:>5} "
                      f"{got[3]:>6.2f} {ratio:>6.2f} {b[3] / got[3]:>9.2f}")
        print(f"\nlatency, venue send -> client receipt, {args.seconds:g} s paced, the servers "
              f"alternated, best p99 of {args.latency_rounds} (ms; share: updates received of "
              f"those sent; ratio: p99 against bare's; cpu %: of one core over the window, "
              f"the server's, the client process's (all clients in one process, the same load "
              f"for every server), the fake venue's; {os.cpu_count()} cores, shared: the three "
              f"together near 100 x cores means the machine, not the server, sets the figure)")
        print(f"{'clients':>8} {'rate/s':>8} {'server':>8} {'p50':>8} {'p99':>8} {'share':>6} "
              f"{'p99 ratio':>9} {'srv%':>5} {'cli%':>5} {'ven%':>5}")
        for clients in [int(c) for c in args.latency_clients.split(",") if c]:
            for rate in [float(r) for r in args.rates.split(",") if r]:
                res: dict[str, tuple] = {}
                for _ in range(args.latency_rounds):
                    for name, (who, url, key) in targets.items():
                        got = latency(venue, who, url, key, clients, rate, args.seconds,
                                      pids[name], venue_proc.pid)
                        if name not in res or got[1] < res[name][1]:
                            res[name] = got
                b = res["bare"]
                for name, got in res.items():
                    print(f"{clients:>8} {rate:>8.0f} {name:>8} {got[0]:>8.3f} {got[1]:>8.3f} "
                          f"{got[2]:>6.2f} {got[1] / b[1]:>9.2f} {got[3]:>5.0f} {got[4]:>5.0f} "
                          f"{got[5]:>5.0f}", flush=True)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        role, rest = sys.argv[2], sys.argv[3:]
        if role == "venue":
            serve_venue()
        elif role == "bare":
            serve_bare(rest[0])
        elif role == "clients":
            run_clients(rest[0], int(rest[1]), rest[2], rest[3], rest[4])
    else:
        main()
