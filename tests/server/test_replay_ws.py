"""Replay over ``WS /ws?from=…`` (``astra.server.replay``): the gateway's own app (auth, the
per-key session cap) with the replay handler over a tape in tmp_path. The record is a real
session: the frames a WebSocket client got from the simulator through the gateway, with the
client's receive times; or scripted rows where a test needs a shape the simulator won't give
on demand (a resync, equal receive times)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time

import aiohttp
import msgspec
import pyarrow as pa

from astra.core import BookResync, BookUpdate, Level
from astra.history.book import RecordedBook
from astra.history.replay import replay_events
from astra.marketdata.engine import MarketDataEngine
from astra.server.app import Metrics, build_app
from astra.server.auth import KeyVerifier, auth_middleware
from astra.server.protocol import GatewayRunner
from astra.server.replay import END_REASON, replay_ws
from astra.server.sessions import WsSessions
from astra.tape import BOOK, BOOK_SCHEMA, TRADE, TRADE_SCHEMA, write_rows

A, B = "SIM-SPOT-BTC-USDT", "SIM2-SPOT-BTC-USDT"
T0 = 1_796_580_000_000_000  # 2026-12-06T18:00:00Z, µs
MS = 1_000
_encode = msgspec.json.Encoder().encode


@contextlib.asynccontextmanager
async def replay_server(keys, root, *, engine=None, per_key=50, retention=None, clock=None,
                        heartbeat=30.0):
    """The public app over ``engine`` with replays of ``root``; yields (ws base URL, handler)."""
    engine = engine or MarketDataEngine({})
    verifier = KeyVerifier(keys)
    sessions = WsSessions(keys, per_key=per_key, revalidate_every=0)
    handler = replay_ws(root, retention, clock=clock or time.time, heartbeat=heartbeat)
    app = build_app(engine, Metrics(engine), auth=auth_middleware(keys, verifier=verifier),
                    sessions=sessions, replay_ws=handler)
    runner = GatewayRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws", handler
    finally:
        await runner.cleanup()
        await sessions.close()
        verifier.close()


def _auth(token: str) -> dict[str, str]:
    return {"x-astra-api-key": f"Bearer {token}"}


async def _replay(url: str, token: str, **params
                  ) -> tuple[list[tuple[int, bytes]], tuple[int, str]]:
    """Every message of a replay, with its arrival (monotonic ns), and the close's code and
    reason."""
    got: list[tuple[int, bytes]] = []
    async with (aiohttp.ClientSession() as s,
                s.ws_connect(url, params=params, headers=_auth(token)) as ws,
                asyncio.timeout(60)):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                assert msg.type == aiohttp.WSMsgType.CLOSE, msg
                return got, (msg.data, msg.extra)
            got.append((time.monotonic_ns(), msg.data.encode()))


def _book_rows(frames: list[tuple[int, bytes]], reasons: dict[int, str]) -> pa.Table:
    rows = []
    for i, (ts, frame) in enumerate(frames):
        msg = json.loads(frame)
        rows.append({"local_ts": ts, "type": msg["type"], "reason": reasons.get(i),
                     "update_id": msg.get("updateId"), "timestamp": msg.get("timestamp"),
                     "frame": frame})
    return pa.Table.from_pylist(rows, schema=BOOK_SCHEMA)


def _levels(book) -> tuple[dict, dict]:
    if isinstance(book, RecordedBook):
        return ({p: lv.quantity for p, lv in book.bids.items()},
                {p: lv.quantity for p, lv in book.asks.items()})
    return book.levels["bids"], book.levels["asks"]


async def test_a_replayed_live_session_rebuilds_the_live_clients_book(
        gateway, tmp_path, client_book):
    gw, token = gateway
    url = f"{gw.base_url.replace('http', 'ws')}/ws"
    # 1. A live client's session, each message given a local time of our own.
    live = client_book()
    frames: list[tuple[int, bytes]] = []
    books: list[tuple[dict, dict]] = []  # the live client's book after each message
    base = time.time_ns() // 1_000_000 * 1000  # a whole ms: `from`/`to` below are Unix ms
    async with (aiohttp.ClientSession() as s,
                s.ws_connect(url, params={"market": A, "dataType": "ORDERBOOK"},
                             headers=_auth(token)) as ws, asyncio.timeout(60)):
        while len(frames) < 40:
            msg = await ws.receive()
            frames.append((base + len(frames) * 100 * MS, msg.data.encode()))  # every 100 ms
            live.apply(json.loads(msg.data))
            books.append((dict(live.levels["bids"]), dict(live.levels["asks"])))
    assert json.loads(frames[0][1])["type"] == "snapshot"
    # 2. As a recorder writes it: a checkpoint at 10 (never sent live), and at 25 a resync
    # (the book dropped, then a fresh snapshot of it), in three flushes.
    k = 25
    at_k = RecordedBook(A).apply_frames(f for _, f in frames[:k])
    resync = _encode(BookResync(market=A, reason="sequence gap", state="resyncing",
                                since=frames[k - 1][0] // 1000))
    periodic = RecordedBook(A).apply_frames(f for _, f in frames[:10]).snapshot_frame()
    rows = ([*frames[:10], (frames[9][0], periodic), *frames[10:k],
             (frames[k - 1][0], resync), (frames[k - 1][0], at_k.snapshot_frame()), *frames[k:]])
    reasons = {0: "start", 10: "periodic", k + 2: "resync"}
    table = _book_rows(rows, reasons)
    for seq, (lo, hi) in enumerate(((0, 15), (15, 30), (30, len(rows)))):
        write_rows(tmp_path, A, BOOK, table.slice(lo, hi - lo), seq)
    # 3. Replayed from 1 ms after the 5th message to the 36th, through a live client's code.
    start, end = frames[4][0] + MS, frames[35][0]
    async with replay_server(gw.keys, tmp_path, engine=gw.engine) as (replay_url, _):
        got, close = await _replay(replay_url, token, market=A, dataType="ORDERBOOK",
                                   speed="max", **{"from": str(start // MS),
                                                   "to": str(end // MS)})
    assert close == (1000, END_REASON)
    messages = [json.loads(f) for _, f in got]
    types = [m["type"] for m in messages]
    assert types[0] == "snapshot" and types.count("resync") == 1
    assert types[types.index("resync") + 1] == "snapshot"  # the resync, then a fresh book
    assert all(m["market"] == A for m in messages)
    client = client_book()
    for m in messages:
        client.apply(m)
    # It equals the book rebuilt from the record at `to`, and the live client's at that moment.
    recorded = RecordedBook(A).apply_frames(
        f for (t, f), i in zip(rows, range(len(rows)), strict=True)
        if t <= end and reasons.get(i) != "periodic")
    assert _levels(client) == _levels(recorded) == books[35]
    # The replay is the record's own frames after the book at `from` (periodic left out).
    assert [f for _, f in got[1:]] == [f for (t, f), i in zip(rows, range(len(rows)),
                                                               strict=True)
                                       if start < t <= end and reasons.get(i) != "periodic"]


def _scripted(root, market: str, times: list[int], seq: int = 0) -> list[bytes]:
    """A snapshot at times[0], then an update at each later time."""
    frames = []
    for i, ts in enumerate(times):
        frames.append(_encode(BookUpdate(
            type="snapshot" if i == 0 else "update", market=market, update_id=i + 1,
            bids=[Level(100.0 + i % 7, 1.0 + i)], asks=[Level(120.0 + i % 5, 2.0 + i)],
            timestamp=ts // 1000)))
    write_rows(root, market, BOOK, _book_rows(list(zip(times, frames, strict=True)),
                                              {0: "start"}), seq)
    return frames


async def test_two_markets_arrive_merged_in_time_order_each_tagged(key_store, tmp_path):
    token = key_store.create("replay").token
    _scripted(tmp_path, A, [T0 + i * 700 for i in range(60)])
    _scripted(tmp_path, B, [T0 + 200 + i * 500 for i in range(80)])
    trades = [{"local_ts": T0 + (i // 2) * 900, "type": "trade", "reason": None,
               "time": (T0 + (i // 2) * 900) // 1000, "price": 100.0 + i, "quantity": 1.0,
               "side": "SELL", "trade_id": str(i)} for i in range(20)]
    write_rows(tmp_path, A, TRADE, pa.Table.from_pylist(trades, schema=TRADE_SCHEMA), 0)
    write_rows(tmp_path, B, TRADE, pa.Table.from_pylist(
        [{**t, "local_ts": t["local_ts"] + 450} for t in trades], schema=TRADE_SCHEMA), 0)
    async with replay_server(key_store, tmp_path) as (url, _):
        got, (code, reason) = await _replay(url, token, market=f"{A},{B}", dataType="ORDERBOOK",
                                       speed="max", **{"from": str((T0 + 5000) // 1000),
                                                       "to": str((T0 + 30_000) // 1000)})
        repeated, _ = await _replay(url, token, market=[A, B], dataType="TRADE", speed="max",
                                    **{"from": str(T0 // 1000)})
    assert (code, reason) == (1000, END_REASON)
    expected = list(replay_events(tmp_path, [A, B], "ORDERBOOK", T0 + 5000, T0 + 30_000))
    assert [f for _, f in got] == [f for _, f in expected]
    assert [t for t, _ in expected] == sorted(t for t, _ in expected)  # non-decreasing
    markets = [json.loads(f)["market"] for _, f in got]
    assert set(markets) == {A, B} and markets[:2] == [A, B]
    trade_msgs = [json.loads(f) for _, f in repeated]
    assert [m["market"] for m in trade_msgs] == [A, B] * 10  # A's batch, then B's 450 µs later
    assert [t["tradeId"] for m in trade_msgs if m["market"] == A for t in m["trades"]] == [
        str(i) for i in range(20)]


async def test_speed_paces_the_replay_and_max_sends_everything(key_store, tmp_path):
    token = key_store.create("replay").token
    # 500 s of record, a frame every 5 s.
    _scripted(tmp_path, A, [T0 + i * 5_000_000 for i in range(101)])
    async with replay_server(key_store, tmp_path) as (url, _):
        began = time.monotonic_ns()
        paced, (code, _) = await _replay(url, token, market=A, dataType="ORDERBOOK",
                                         speed="1000", **{"from": "2026-12-06T18:00:00Z"})
        took = (time.monotonic_ns() - began) / 1e9
        fast, _ = await _replay(url, token, market=A, dataType="ORDERBOOK", speed="max",
                                **{"from": str(T0 // 1000)})
    assert code == 1000
    assert len(paced) == len(fast) == 101
    assert took >= 0.5  # 500 s at 1000x: no sooner than half a second (no upper bound)
    # Frame i (recorded 5 s after frame i-1) arrived no sooner than i * 5 ms after connecting.
    assert all(arrived - began >= i * 5_000_000 for i, (arrived, _) in enumerate(paced))
    assert [f for _, f in paced] == [f for _, f in fast]


async def test_a_replay_from_before_the_record_starts_with_it(key_store, tmp_path):
    token = key_store.create("replay").token
    frames = _scripted(tmp_path, A, [T0 + i * 10 * MS for i in range(4)])  # 30 ms of record
    async with replay_server(key_store, tmp_path) as (url, _):
        # At speed 1 from an hour before: it would take an hour (and time out) if it waited.
        got, close = await _replay(url, token, market=A, dataType="ORDERBOOK",
                                   **{"from": str(T0 // 1000 - 3_600_000)})
    assert close == (1000, END_REASON)
    assert [f for _, f in got] == frames


async def _refusal(url: str, params: dict, headers: dict) -> tuple[int, dict]:
    """A WebSocket handshake refused before the upgrade: its status and JSON body."""
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", **headers}
    async with (aiohttp.ClientSession() as s,
                s.get(url.replace("ws://", "http://"), params=params, headers=upgrade) as resp):
        assert resp.status != 101
        return resp.status, await resp.json()


async def test_bad_replays_are_refused_before_the_upgrade_naming_the_parameter(
        key_store, tmp_path):
    token = key_store.create("replay").token
    _scripted(tmp_path, A, [T0 + i * MS for i in range(10)])
    frm = str(T0 // 1000)
    base = {"market": A, "dataType": "ORDERBOOK", "from": frm}
    many = ",".join(f"SIM{i}-SPOT-BTC-USDT" for i in range(2, 23))
    cases = [
        ({**base, "dataType": "BBO"}, 400, "INVALID_PARAMETER", "dataType"),
        ({"dataType": "ORDERBOOK", "from": frm}, 400, "MISSING_PARAMETER", "market"),
        ({**base, "dataType": ""}, 400, "MISSING_PARAMETER", "dataType"),
        ({**base, "market": "BTC/USDT"}, 400, "INVALID_MARKET", "market"),
        ({**base, "market": f"{A},"}, 400, "INVALID_PARAMETER", "market"),
        ({**base, "market": f"{A},{A}"}, 400, "INVALID_PARAMETER", "market"),
        ({**base, "market": many}, 400, "INVALID_PARAMETER", "market"),
        ({**base, "market": "SIM3-SPOT-BTC-USDT"}, 404, "MARKET_NOT_FOUND", "market"),
        ({**base, "dataType": "TRADE"}, 404, "MARKET_NOT_FOUND", "market"),  # no trades kept
        ({**base, "from": "yesterday"}, 400, "INVALID_PARAMETER", "from"),
        ({**base, "from": ""}, 400, "INVALID_PARAMETER", "from"),
        ({**base, "from": str(T0 // 1000 + 60_000)}, 400, "INVALID_PARAMETER", "from"),  # after
        ({**base, "to": str(T0 // 1000 - 1)}, 400, "INVALID_PARAMETER", "to"),
        ({**base, "to": "1e99"}, 400, "INVALID_PARAMETER", "to"),
        *[({**base, "speed": s}, 400, "INVALID_PARAMETER", "speed")
          for s in ("0", "-1", "1001", "nan", "inf", "fast", "1" * 30, "")],
        # Replay parameters on the live path: a 400 naming the missing `from`.
        ({"market": A, "dataType": "ORDERBOOK", "to": frm}, 400, "MISSING_PARAMETER", "from"),
        ({"market": A, "dataType": "ORDERBOOK", "speed": "10"}, 400, "MISSING_PARAMETER",
         "from"),
    ]
    # Retention: 2 days kept, "now" is 5 days after the record.
    async with (replay_server(key_store, tmp_path) as (url, _),
                replay_server(key_store, tmp_path, retention=2,
                              clock=lambda: T0 / 1e6 + 5 * 86_400) as (old_url, _)):
        for params, status, code, parameter in cases:
            got = await _refusal(url, params, _auth(token))
            assert got[0] == status and (got[1]["code"], got[1].get("parameter")) == (
                code, parameter), params
        got = await _refusal(old_url, base, _auth(token))
        assert got[0] == 400 and got[1]["parameter"] == "from"
        assert "retention" in got[1]["message"]
        assert (await _refusal(url, base, {}))[0] == 401  # a key first, as for live sockets
        # The same request is served: the refusals were about their parameters.
        got, (code, _) = await _replay(url, token, **base, speed="max")
        assert code == 1000 and len(got) == 10


def _replay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("astra-replay-")]


async def test_a_client_leaving_mid_replay_stops_it_and_its_thread(key_store, tmp_path):
    token = key_store.create("replay").token
    _scripted(tmp_path, A, [T0 + i * 10 * MS for i in range(6000)])  # 60 s at speed 1
    async with replay_server(key_store, tmp_path) as (url, handler):
        async with (aiohttp.ClientSession() as s,
                    s.ws_connect(url, headers=_auth(token), params={
                        "market": A, "dataType": "ORDERBOOK", "from": str(T0 // 1000)}) as ws):
            for _ in range(3):
                assert (await ws.receive()).type == aiohttp.WSMsgType.TEXT
            assert len(handler.__self__.active) == 1 and _replay_threads()
        # The client is gone: the handler stops its replay and ends its reading thread.
        async with asyncio.timeout(20):
            while True:
                if not handler.__self__.active and not _replay_threads():
                    break
                await asyncio.sleep(0.02)
    assert not _replay_threads()


async def test_a_client_that_stops_reading_slows_only_itself_and_is_dropped(
        key_store, tmp_path, stalled_ws):
    token = key_store.create("replay").token
    times = [T0 + i * MS for i in range(3000)]
    frames = [_encode(BookUpdate(
        type="snapshot" if i == 0 else "update", market=A, update_id=i + 1,
        bids=[Level(100.0 + j + i % 3, 1.0 + j) for j in range(30)],
        asks=[Level(200.0 + j, 2.0 + i) for j in range(30)])) for i in range(len(times))]
    write_rows(tmp_path, A, BOOK, _book_rows(list(zip(times, frames, strict=True)),
                                             {0: "start"}), 0)
    assert sum(map(len, frames)) > 4_000_000  # far more than the socket buffers hold
    async with replay_server(key_store, tmp_path, heartbeat=1.0) as (url, handler):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        path = f"/ws?market={A}&dataType=ORDERBOOK&speed=max&from={T0 // 1000}"
        writer = await stalled_ws(port, path, f"x-astra-api-key: Bearer {token}\r\n")
        try:
            assert len(handler.__self__.active) == 1
            # Meanwhile another client's replay runs to its end.
            got, close = await _replay(url, token, market=A, dataType="ORDERBOOK",
                                       speed="max", **{"from": str(T0 // 1000),
                                                       "to": str(T0 // 1000 + 50)})
            assert close == (1000, END_REASON) and len(got) == 51
            # The stalled one misses its pong: dropped, its replay and thread ended.
            async with asyncio.timeout(30):
                while True:
                    if not handler.__self__.active and not _replay_threads():
                        break
                    await asyncio.sleep(0.05)
        finally:
            writer.close()


async def test_replays_count_in_the_per_key_websocket_cap(key_store, tmp_path):
    key = key_store.create("replay")
    _scripted(tmp_path, A, [T0 + i * 10 * MS for i in range(6000)])
    params = {"market": A, "dataType": "ORDERBOOK", "from": str(T0 // 1000)}
    async with replay_server(key_store, tmp_path, per_key=1) as (url, _):
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(url, headers=_auth(key.token), params=params) as ws:
                assert json.loads((await ws.receive()).data)["type"] == "snapshot"
                status, body = await _refusal(url, params, _auth(key.token))
                assert (status, body["code"]) == (429, "RATE_LIMITED")
            async with asyncio.timeout(20):  # its session ends with its handler
                while True:
                    status, _ = await _refusal(url, {**params, "speed": "0"},
                                               _auth(key.token))
                    if status == 400:
                        break
                    await asyncio.sleep(0.02)


def test_the_server_module_leaves_pyarrow_to_the_first_replay():
    # `astra serve` imports the gateway (and this module) at CLI start: pyarrow loads later.
    code = ("import sys, astra.server.replay, astra.server.app; "
            "sys.exit('pyarrow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
