"""Hostile input against ``/history/*`` and the replay WebSocket, over real tapes in tmp_path
and real sockets on loopback: every answer is a 4xx naming the parameter (or, for a damaged
record file, a ``RECORD_UNREADABLE`` naming the file), never an internal error; replays
are bounded in number, all keys together, and stopped with the gateway."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq
from tests.history.test_query import SPOT, T0, S, book_rows, frame, trade_rows, write
from tests.server.test_history_routes import get, served
from tests.server.test_replay_ws import MS, A, _auth, _refusal, _replay, _scripted

from astra.history.query import HistoryReader
from astra.marketdata.engine import MarketDataEngine
from astra.server.app import Metrics, build_app
from astra.server.auth import KeyVerifier, auth_middleware
from astra.server.history import MAX_QUERIES, QUERY_THREADS
from astra.server.protocol import GatewayRunner
from astra.server.replay import replay_ws, stop_replays
from astra.server.sessions import WsSessions
from astra.tape import BOOK, TRADE, partition_files

OTHER = "SIM-SPOT-ETH-USDT"


def _trades(n: int, market: str = SPOT) -> list[tuple[int, bytes]]:
    """``n`` single-trade messages, one a second from T0, as a live client got them."""
    return [(T0 + i * S + 500, json.dumps({"type": "trades", "market": market, "trades": [{
        "price": 100.0 + i, "quantity": 1.0, "side": "BUY", "time": (T0 + i * S) // 1000,
        "tradeId": str(i)}]}).encode()) for i in range(n)]


def _record(root) -> None:
    """SPOT: a book (snapshot + 30 updates, one a second) and 30 trades; OTHER: 30 trades."""
    book = [(T0, frame("snapshot", 1, bids=[(99.0, 1.0)], asks=[(101.0, 1.0)]))]
    book += [(T0 + i * S, frame("update", i + 1, bids=[(99.0, 1.0 + i)])) for i in range(1, 30)]
    write(root, SPOT, BOOK, book_rows(book), flush=10)
    write(root, SPOT, TRADE, trade_rows(_trades(30)), flush=10)
    write(root, OTHER, TRADE, trade_rows(_trades(30, OTHER)), flush=10)


async def test_a_cursor_of_another_market_or_altered_is_refused(tmp_path, key_store):
    _record(tmp_path)
    reader = HistoryReader(tmp_path)
    rng = {"start": str(T0 // 1000), "end": str(T0 // 1000 + 60_000)}
    async with served(reader, key_store) as (s, base):
        status, page = await get(s, f"{base}/history/trades", market=SPOT, limit="5", **rng)
        assert status == 200 and len(page["trades"]) == 5 and page["nextCursor"]
        cursor = page["nextCursor"]
        # The same cursor on its market: the next page.
        status, nxt = await get(s, f"{base}/history/trades", market=SPOT, limit="5",
                                cursor=cursor, **rng)
        assert status == 200 and [t["tradeId"] for t in nxt["trades"]] == list("56789")
        # On another market (which has trades at the same times): refused, not a silent page.
        status, body = await get(s, f"{base}/history/trades", market=OTHER, limit="5",
                                 cursor=cursor, **rng)
        assert (status, body["code"], body["parameter"]) == (400, "INVALID_PARAMETER", "cursor")
        # Altered: its position moved on, the check left as it was.
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        time_ms, local, k, check = raw.split(".")
        for forged in (f"{int(time_ms) + 1000}.{local}.{k}.{check}", f"{time_ms}.{local}.{k}",
                       f"1.2.3.{check}"):
            text = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
            status, body = await get(s, f"{base}/history/trades", market=SPOT, cursor=text,
                                     **rng)
            assert (status, body["parameter"]) == (400, "cursor"), forged


async def test_times_in_other_scripts_digits_are_a_400_not_a_500(tmp_path, key_store):
    _record(tmp_path)
    async with served(HistoryReader(tmp_path), key_store) as (s, base):
        for text in ("²", f"{T0 // 1000}²", "１７９６５８０００００００",
                     "١٧٩٦٥٨٠٠٠٠٠٠٠"):
            status, body = await get(s, f"{base}/history/orderbook", market=SPOT, time=text)
            assert (status, body["code"], body["parameter"]) == (
                400, "INVALID_PARAMETER", "time"), text
        # ASCII digits of that same moment are a time.
        status, book = await get(s, f"{base}/history/orderbook", market=SPOT,
                                 time=str(T0 // 1000 + 5000))
        assert status == 200 and book["bids"] == [{"price": 99.0, "quantity": 6.0}]


async def test_a_lowercase_market_is_a_400_as_on_the_live_routes(tmp_path, key_store):
    _record(tmp_path)
    async with served(HistoryReader(tmp_path), key_store) as (s, base):
        for path, extra in (("trades", {}), ("orderbook", {"time": str(T0 // 1000)}),
                            ("candles", {"interval": "1m"})):
            status, body = await get(s, f"{base}/history/{path}", market=SPOT.lower(), **extra)
            assert (status, body["code"], body["parameter"]) == (
                400, "INVALID_MARKET", "market"), path
            assert "uppercase" in body["message"]


def _damage(root, market: str, kind: str, how: str) -> str:
    """A file named like a part inside the record's range: not Parquet, or Parquet of another
    schema. Returns its name."""
    files = partition_files(root, market, kind)
    mid = (files[0].first + files[-1].last) // 2
    path = files[0].path.parent / f"p-{mid:016d}-{mid + 1:016d}-99.parquet"
    if how == "garbage":
        path.write_bytes(b"PAR1 not a parquet file PAR1")
    else:
        pq.write_table(pa.table({"x": ["a", "b"]}), path)
    return path.name


async def test_a_damaged_record_file_is_a_named_error_not_an_internal_one(
        tmp_path, key_store, caplog):
    _record(tmp_path)
    names = {_damage(tmp_path, SPOT, BOOK, "garbage"), _damage(tmp_path, SPOT, TRADE, "schema")}
    late, span = str(T0 // 1000 + 29_000), {"start": str(T0 // 1000),
                                            "end": str(T0 // 1000 + 60_000)}
    async with served(HistoryReader(tmp_path), key_store) as (s, base):
        for path, params in (("orderbook", {"time": late}), ("trades", span),
                             ("candles", {**span, "interval": "1s"})):
            status, body = await get(s, f"{base}/history/{path}", market=SPOT, **params)
            assert (status, body["code"]) == (500, "RECORD_UNREADABLE"), (path, body)
            assert any(name in body["message"] for name in names)
        # Before the damaged file the record still answers.
        status, book = await get(s, f"{base}/history/orderbook", market=SPOT,
                                 time=str(T0 // 1000 + 2000))
        assert status == 200 and book["bids"] == [{"price": 99.0, "quantity": 3.0}]
    assert not [r for r in caplog.records if r.exc_info]  # one log line, no stack trace


@contextlib.asynccontextmanager
async def replays(keys, root, *, max_replays: int):
    """The public app with replays of ``root``, at most ``max_replays`` at once; yields the
    ws URL and the handler."""
    verifier = KeyVerifier(keys)
    sessions = WsSessions(keys, per_key=50, revalidate_every=0)
    handler = replay_ws(root, None, max_replays=max_replays)
    engine = MarketDataEngine({})
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
        await stop_replays(handler)
        await sessions.close()
        verifier.close()


def _replay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name.startswith("astra-replay-") and t.is_alive()]


async def test_replay_parameters_given_twice_or_unknown_are_refused(key_store, tmp_path):
    token = key_store.create("replay").token
    _scripted(tmp_path, A, [T0 + i * MS for i in range(10)])
    frm, to = str(T0 // 1000), str(T0 // 1000 + 5)
    base = {"market": A, "dataType": "ORDERBOOK", "from": frm}
    cases = [
        ([*base.items(), ("from", to)], "from"),
        ([*base.items(), ("to", to), ("to", frm)], "to"),
        ([*base.items(), ("speed", "10"), ("speed", "1")], "speed"),
        ([*base.items(), ("dataType", "TRADE")], "dataType"),
        ([*base.items(), ("depth", "5")], "depth"),
        ([*base.items(), ("exchange", "SIM")], "exchange"),
    ]
    async with replays(key_store, tmp_path, max_replays=4) as (url, _):
        for params, parameter in cases:
            status, body = await _refusal(url, params, _auth(token))
            assert (status, body["code"], body["parameter"]) == (
                400, "INVALID_PARAMETER", parameter), params
        # market may repeat (a list); the key may come as apiKey.
        got, close = await _replay(url, token, **base, to=to, speed="max")
        assert close[0] == 1000 and len(got) == 6
        status, body = await _refusal(url, [*base.items(), ("apiKey", token), ("speed", "0")],
                                      {})
        assert (status, body["parameter"]) == (400, "speed")


async def test_replays_are_bounded_all_keys_together(key_store, tmp_path):
    _scripted(tmp_path, A, [T0 + i * 10 * MS for i in range(6000)])  # 60 s at speed 1
    tokens = [key_store.create(f"k{i}").token for i in range(3)]
    params = {"market": A, "dataType": "ORDERBOOK", "from": str(T0 // 1000)}
    async with (replays(key_store, tmp_path, max_replays=2) as (url, handler),
                aiohttp.ClientSession() as s):
        first = await s.ws_connect(url, params=params, headers=_auth(tokens[0]))
        second = await s.ws_connect(url, params=params, headers=_auth(tokens[1]))
        for ws in (first, second):
            assert json.loads((await ws.receive()).data)["type"] == "snapshot"
        # A third key: the gateway's bound, not the key's.
        status, body = await _refusal(url, params, _auth(tokens[2]))
        assert (status, body["code"]) == (503, "OVERLOADED")
        await first.close()
        async with asyncio.timeout(20):  # its slot is free once its handler has ended
            while True:
                if handler.__self__.running == 1:
                    break
                await asyncio.sleep(0.02)
        async with s.ws_connect(url, params=params, headers=_auth(tokens[2])) as third:
            assert json.loads((await third.receive()).data)["type"] == "snapshot"
        await second.close()


async def test_stop_replays_ends_every_reading_thread(key_store, tmp_path, stalled_ws):
    token = key_store.create("replay").token
    _scripted(tmp_path, A, [T0 + i * MS for i in range(20_000)])
    async with replays(key_store, tmp_path, max_replays=8) as (url, handler):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        path = f"/ws?market={A}&dataType=ORDERBOOK&speed=max&from={T0 // 1000}"
        writers = [await stalled_ws(port, path, f"x-astra-api-key: Bearer {token}\r\n")
                   for _ in range(3)]
        try:
            async with asyncio.timeout(20):
                while True:
                    if len(handler.__self__.active) == 3:
                        break
                    await asyncio.sleep(0.02)
            assert len(_replay_threads()) >= 3
            await stop_replays(handler)
            # Every stream's thread has ended when it returns (the clients still connected).
            assert handler.__self__.active
            assert all(not s.thread.is_alive() for s in handler.__self__.active)
            assert not _replay_threads()
        finally:
            for writer in writers:
                writer.close()


async def test_a_replay_meeting_a_damaged_file_closes_naming_the_error(key_store, tmp_path,
                                                                       caplog):
    token = key_store.create("replay").token
    _scripted(tmp_path, A, [T0 + i * MS for i in range(50)])
    bad = T0 + 20 * MS + 500
    folder = partition_files(tmp_path, A, BOOK)[0].path.parent
    (folder / f"p-{bad:016d}-{bad + 1:016d}-9.parquet").write_bytes(b"not parquet")
    async with replays(key_store, tmp_path, max_replays=4) as (url, _):
        _, (code, reason) = await _replay(url, token, market=A, dataType="ORDERBOOK",
                                          speed="max", **{"from": str(T0 // 1000)})
    assert code == 1011 and reason.startswith("RECORD_UNREADABLE: ")
    assert not [r for r in caplog.records if r.exc_info]  # a log line naming it, no trace
    assert any("is unreadable" in r.getMessage() for r in caplog.records)


class _Held(HistoryReader):
    """A reader whose candles wait for ``release``: a slow query, on demand."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.release = threading.Event()
        self.inside = 0

    def candles(self, *args):
        self.inside += 1
        assert self.release.wait(60)
        return super().candles(*args)


async def test_slow_history_queries_never_hold_the_default_executor(tmp_path, key_store):
    _record(tmp_path)
    reader = _Held(tmp_path)
    params = {"market": SPOT, "interval": "1m", "start": str(T0 // 1000),
              "end": str(T0 // 1000 + 60_000)}
    async with served(reader, key_store) as (s, base):
        tasks = [asyncio.create_task(get(s, f"{base}/history/candles", **params))
                 for _ in range(MAX_QUERIES + 1)]
        try:
            # One too many: refused at once, while the others run or wait for a thread.
            async with asyncio.timeout(30):
                while True:
                    done = [t for t in tasks if t.done()]
                    if done and reader.inside == QUERY_THREADS:
                        break
                    await asyncio.sleep(0.02)
            status, body = done[0].result()
            assert (status, body["code"]) == (503, "OVERLOADED") and len(done) == 1
            # The loop's default executor (order settlement, key checks, the recorder's
            # writes) still serves while every history thread is held.
            async with asyncio.timeout(30):
                assert await asyncio.to_thread(lambda: 42) == 42
        finally:
            reader.release.set()
        answers = await asyncio.gather(*tasks)
    assert sorted(status for status, _ in answers) == [200] * MAX_QUERIES + [503]
    candles = [body for status, body in answers if status == 200]
    assert all(c == candles[0] and c[0]["trades"] == 30 for c in candles)
