"""The KuCoin venue end to end through the gateway, against a fake KuCoin on 127.0.0.1
(``FakeKucoin`` in conftest): tokens from bullet-public, welcome/subscribe/ack, recorded
``/market/level2`` frames, REST snapshots. Books served by ``GET /orderbook`` and ``WS /ws``
must equal the independent rebuild at the ``updateId`` they carry, through resyncs
(dropped frame, cut connection, silent connection, rate-limited snapshot)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from astra.server.gateway import Gateway
from astra.venues.kucoin import KucoinUrls, KucoinVenue, RestError
from astra.venues.kucoin import rest as kucoin_rest
from astra.venues.kucoin.schemas import SpotSnapshot
from astra.venues.kucoin.symbols import parse_ccxt_markets

SYMBOL, MARKET = "BCHSV-USDT", "KUCOIN-SPOT-BCHSV-USDT"


def _venue(fake, recording, contracts=None, **options) -> KucoinVenue:
    async def markets():
        return parse_ccxt_markets(recording.spot_symbols, contracts)

    urls = KucoinUrls.for_server(fake.base_url)
    return KucoinVenue(urls=urls, markets_source=markets, **options)


def _serve_recording(fake, recording, **stream):
    snapshot = recording.snapshots[SYMBOL][1]
    frames = [text for _, text in recording.level2[SYMBOL]]
    fake.level2(SYMBOL, snapshot, frames, **stream)
    return snapshot, [json.loads(t)["data"] for t in frames]


class _Truth:
    """The independent rebuild, walked forward to any sequence, within one snapshot's range."""

    def __init__(self, reference, snapshot, datas, bounds) -> None:
        states, self.as_decimals = reference[0], reference[2]
        self.states = states(snapshot, datas, bounds)
        self.seq, self.levels, _ = next(self.states)
        self.last_update = _last_update(reference, snapshot, datas, bounds)

    def check(self, update_id: int, levels: dict) -> None:
        while self.seq < update_id:
            self.seq, self.levels, _ = next(self.states)
        assert self.seq == update_id, f"no message ends at {update_id}"
        assert self.as_decimals(levels) == self.levels, f"book differs at {update_id}"


_LAST: dict = {}


def _last_update(reference, snapshot, datas, bounds) -> int:
    """The last message that changes the book within ``bounds`` (what clients see last)."""
    key = (snapshot["sequence"], len(datas), bounds)
    if key not in _LAST:
        states = reference[0](snapshot, datas, bounds)
        _LAST[key] = [seq for seq, _, changed in states if changed][-1]
    return _LAST[key]


def _levels(body: dict) -> dict:
    return {side: {lv["price"]: lv["quantity"] for lv in body[side]} for side in ("bids", "asks")}


async def _get(gw, token: str, path: str) -> dict:
    async with aiohttp.ClientSession() as s:
        headers = {"x-astra-api-key": f"Bearer {token}"}
        async with s.get(f"{gw.base_url}{path}", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


async def _watch(gw, token, market, until, data_type="ORDERBOOK", on_first=None) -> list[dict]:
    """WS messages of ``market`` until ``until(messages)``; ``on_first()`` after the first."""
    url = f"{gw.base_url.replace('http', 'ws')}/ws?market={market}&dataType={data_type}"
    messages: list[dict] = []
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(url, headers={"x-astra-api-key": f"Bearer {token}"}) as ws,
        asyncio.timeout(15),
    ):
        while not until(messages):
            messages.append(json.loads((await ws.receive(timeout=10)).data))
            if on_first is not None and len(messages) == 1:
                on_first()
    return messages


def _epochs(messages: list[dict]) -> list[list[dict]]:
    """Messages split at each snapshot."""
    epochs: list[list[dict]] = []
    for m in messages:
        if m["type"] == "snapshot":
            epochs.append([])
        epochs[-1].append(m)
    return epochs


def _assert_tracks(messages, fake, snapshot, datas, reference, client_book) -> None:
    """Every message, in every snapshot epoch, equals the rebuild within that epoch's range.
    The k-th snapshot the client sees is built on the k-th snapshot the fake served."""
    epochs = _epochs(messages)
    assert len(epochs) == len(fake.served)
    for epoch, (_, _, bounds) in zip(epochs, fake.served, strict=True):
        truth, book = _Truth(reference, snapshot, datas, bounds), client_book()
        for m in epoch:
            if m["type"] != "resync":  # told at once, before the next snapshot
                truth.check(m["updateId"], book.apply(m))


async def test_orderbook_and_ws_equal_the_rebuild_at_every_update_id(
    fake_kucoin, kucoin_recording, kucoin_reference, key_store, client_book
):
    token = key_store.create("tests").token
    async with fake_kucoin() as fake:
        snapshot, datas = _serve_recording(fake, kucoin_recording, hold=1200)
        stream = fake.streams[f"/market/level2:{SYMBOL}"]
        async with Gateway(
            {"KUCOIN": _venue(fake, kucoin_recording)}, key_store, port=0, metrics_port=0
        ) as gw:
            body = await _get(gw, token, f"/orderbook?market={MARKET}")
            [(symbol, sequence, bounds)] = fake.served  # the public top-100 snapshot
            assert (symbol, sequence) == (SYMBOL, int(snapshot["sequence"]))
            truth = _Truth(kucoin_reference, snapshot, datas, bounds)
            truth.check(body["updateId"], _levels(body))
            assert body["updateId"] > sequence and len(body["bids"]) >= 20

            def done(ms):
                return bool(ms) and ms[-1].get("updateId") == truth.last_update

            messages = await _watch(gw, token, MARKET, done, on_first=stream.release.set)
            assert messages[0]["type"] == "snapshot"
            assert {m["type"] for m in messages[1:]} == {"update"}
            assert len(messages) > 100
            _assert_tracks(messages, fake, snapshot, datas, kucoin_reference, client_book)

            final = await _get(gw, token, f"/orderbook?market={MARKET}&depth=5")
            assert final["updateId"] == truth.last_update and len(final["bids"]) == 5
            assert gw.engine.stats["resyncs"] == 0
    assert fake.bullets == fake.connections == 1 and stream.cursor == len(datas)


async def test_a_dropped_frame_resyncs_on_the_same_connection(
    fake_kucoin, kucoin_recording, kucoin_reference, key_store, client_book
):
    token = key_store.create("tests").token
    async with fake_kucoin() as fake:
        snapshot, datas = _serve_recording(fake, kucoin_recording, hold=1000, drop_at=1300)
        stream = fake.streams[f"/market/level2:{SYMBOL}"]
        venue = _venue(fake, kucoin_recording)
        async with Gateway({"KUCOIN": venue}, key_store, port=0, metrics_port=0) as gw:

            def done(ms):
                if [m["type"] for m in ms].count("snapshot") < 2:
                    return False
                last = _last_update(kucoin_reference, snapshot, datas, fake.served[-1][2])
                return ms[-1].get("updateId") == last

            messages = await _watch(gw, token, MARKET, done, on_first=stream.release.set)
            assert gw.engine.stats["resyncs"] >= 1
    assert stream.dropped == 1 and fake.connections == 1  # repaired by a new snapshot
    assert [m["type"] for m in messages].count("snapshot") == 2
    # After the resync the book includes the lost frame's changes: the truth does.
    _assert_tracks(messages, fake, snapshot, datas, kucoin_reference, client_book)


async def test_a_cut_connection_reconnects_with_a_fresh_token_and_pings(
    fake_kucoin, kucoin_recording, kucoin_reference, key_store, client_book
):
    token = key_store.create("tests").token
    async with fake_kucoin(ping_interval_ms=50) as fake:
        snapshot, datas = _serve_recording(fake, kucoin_recording, hold=800, close_after=1000)
        stream = fake.streams[f"/market/level2:{SYMBOL}"]
        venue = _venue(fake, kucoin_recording)
        async with Gateway({"KUCOIN": venue}, key_store, port=0, metrics_port=0) as gw:

            def done(ms):
                if [m["type"] for m in ms].count("snapshot") < 2:
                    return False
                last = _last_update(kucoin_reference, snapshot, datas, fake.served[-1][2])
                return ms[-1].get("updateId") == last

            messages = await _watch(gw, token, MARKET, done, on_first=stream.release.set)
            await fake.wait_until(lambda: fake.pings >= 2)  # every pingInterval, live or not
    assert fake.connections == 2 and fake.bullets == 2  # single-use tokens: a fresh one
    _assert_tracks(messages, fake, snapshot, datas, kucoin_reference, client_book)


async def test_a_silent_connection_is_replaced(fake_kucoin, kucoin_recording, key_store):
    token = key_store.create("tests").token
    async with fake_kucoin(ping_interval_ms=50, ping_timeout_ms=100, answer_pings=False) as fake:
        _serve_recording(fake, kucoin_recording, hold=300)
        venue = _venue(fake, kucoin_recording, silence=0.2)
        async with Gateway({"KUCOIN": venue}, key_store, port=0, metrics_port=0) as gw:
            await _get(gw, token, f"/orderbook?market={MARKET}")
            await fake.wait_until(lambda: fake.connections >= 2)
            assert gw.engine.stats["resyncs"] >= 1
    assert fake.bullets >= 2


async def test_rate_limited_snapshot_is_retried_after_the_venues_wait(
    fake_kucoin, kucoin_recording, kucoin_reference, key_store
):
    token = key_store.create("tests").token
    async with fake_kucoin(rate_limit_snapshots=1) as fake:
        snapshot, datas = _serve_recording(fake, kucoin_recording)
        async with aiohttp.ClientSession() as http:
            with pytest.raises(RestError) as err:
                await kucoin_rest.get(
                    http, fake.base_url, f"/api/v1/market/orderbook/level2_100?symbol={SYMBOL}",
                    SpotSnapshot, strict=False,
                )  # fmt: skip
        assert (err.value.status, err.value.code, err.value.retry_after) == (429, "429000", 0.3)
        fake.rate_limit_snapshots = 1
        venue = _venue(fake, kucoin_recording)
        async with Gateway({"KUCOIN": venue}, key_store, port=0, metrics_port=0) as gw:
            body = await _get(gw, token, f"/orderbook?market={MARKET}")
        assert fake.rate_limit_snapshots == 0 and len(fake.served) == 1
        _Truth(kucoin_reference, snapshot, datas, fake.served[0][2]).check(
            body["updateId"], _levels(body)
        )


async def test_full_depth_snapshot_with_an_api_key(
    fake_kucoin, kucoin_recording, kucoin_reference, key_store, kucoin_credentials
):
    token = key_store.create("tests").token
    async with fake_kucoin() as fake:
        snapshot, datas = _serve_recording(fake, kucoin_recording)
        venue = _venue(fake, kucoin_recording, credentials=kucoin_credentials)
        async with Gateway({"KUCOIN": venue}, key_store, port=0, metrics_port=0) as gw:
            body = await _get(gw, token, f"/orderbook?market={MARKET}")
    assert fake.signed_requests == 1 and fake.served[0][2] == (None, None)
    _Truth(kucoin_reference, snapshot, datas, (None, None)).check(body["updateId"], _levels(body))
    assert len(body["asks"]) > 300  # the whole book, not the top 100


async def test_trades_over_ws_and_rest(fake_kucoin, kucoin_recording, key_store):
    token, symbol = key_store.create("tests").token, "DAPPT-BTC"
    frames = kucoin_recording.matches[symbol]
    async with fake_kucoin() as fake:
        fake.stream(f"/market/match:{symbol}", frames)
        fake.trade_history[symbol] = [  # newest first, as documented
            {"sequence": "1545896668578", "price": "0.0000001120", "size": "120.5",
             "side": "sell", "time": 1545904567062140900},
            {"sequence": "1545896668571", "price": "0.0000001119", "size": "0.004",
             "side": "buy", "time": 1545904567062140823},
        ]  # fmt: skip
        venue = _venue(fake, kucoin_recording)
        async with Gateway({"KUCOIN": venue}, key_store, port=0, metrics_port=0) as gw:
            market = "KUCOIN-SPOT-DAPPT-BTC"
            messages = await _watch(
                gw, token, market, lambda ms: sum(len(m["trades"]) for m in ms) >= len(frames),
                data_type="TRADE",
            )  # fmt: skip
            # The feed is live: one REST read seeds it (the history, oldest first), then
            # what the feed delivered follows.
            recent = await _get(gw, token, f"/trades?market={market}&limit=1000")
    got = [t for m in messages for t in m["trades"]]
    want = [json.loads(f)["data"] for f in frames]
    assert [t["tradeId"] for t in got] == [w["sequence"] for w in want]
    assert [(t["price"], t["quantity"]) for t in got] == [
        (float(w["price"]), float(w["size"])) for w in want
    ]
    assert {t["side"] for t in got} == {w["side"].upper() for w in want}
    assert got[0]["time"] == int(want[0]["time"]) // 1_000_000
    assert [t["tradeId"] for t in recent["trades"][:2]] == ["1545896668571", "1545896668578"]
    assert recent["trades"][2:] == got
    assert recent["trades"][0] == {
        "price": 0.0000001119, "quantity": 0.004, "side": "BUY", "time": 1545904567062,
        "tradeId": "1545896668571",
    }  # fmt: skip


async def test_futures_book_through_the_gateway(
    fake_kucoin, kucoin_recording, contracts_active, key_store
):
    token = key_store.create("tests").token
    frames, book = [], {"buy": {3988.5: 15.0}, "sell": {3988.6: 47.0}}
    for seq in range(17, 80):  # one change per sequence, as the futures feed sends them
        side, price = ("buy", 3980 + seq % 8) if seq % 3 else ("sell", 3990 + seq % 5)
        size = 0 if seq % 7 == 0 else seq
        frames.append(json.dumps({
            "topic": "/contractMarket/level2:XBTUSDTM", "type": "message", "subject": "level2",
            "sn": seq, "data": {"sequence": seq, "change": f"{price},{side},{size}",
                                "timestamp": 1731897467000 + seq},
        }))  # fmt: skip
        if size:
            book[side][float(price)] = float(size)
        else:
            book[side].pop(float(price), None)
    async with fake_kucoin() as fake:
        fake.futures_snapshots["XBTUSDTM"] = {
            "symbol": "XBTUSDTM", "sequence": 16, "ts": 1731897466000000000,
            "bids": [[3988.5, 15]], "asks": [["3988.6", 47]],
        }  # fmt: skip
        fake.stream("/contractMarket/level2:XBTUSDTM", frames)
        venue = _venue(fake, kucoin_recording, contracts_active)
        async with Gateway({"KUCOIN": venue}, key_store, port=0, metrics_port=0) as gw:
            async with asyncio.timeout(10):
                while True:
                    body = await _get(gw, token, "/orderbook?market=KUCOIN-PERP-XBT-USDT")
                    if body["updateId"] == 79:
                        break
                    await asyncio.sleep(0.02)
    # The venue counts lots of 0.001 BTC; the gateway serves base units.
    in_btc = {side: {p: round(q * 0.001, 12) for p, q in book[side].items()}
              for side in ("buy", "sell")}
    assert _levels(body) == {"bids": in_btc["buy"], "asks": in_btc["sell"]}
    assert body["timestamp"] == 1731897467079


async def test_two_markets_through_the_gateway_share_one_token_and_connection(
    fake_kucoin, kucoin_recording, kucoin_reference, key_store
):
    token = key_store.create("tests").token
    async with fake_kucoin() as fake:
        books = {}
        for symbol in (SYMBOL, "SNX-BTC"):
            snapshot = kucoin_recording.snapshots[symbol][1]
            frames = [text for _, text in kucoin_recording.level2[symbol]]
            fake.level2(symbol, snapshot, frames, hold=200)  # both wait for the test's reads
            books[symbol] = (snapshot, [json.loads(t)["data"] for t in frames])
        venue = _venue(fake, kucoin_recording)
        async with Gateway({"KUCOIN": venue}, key_store, port=0, metrics_port=0) as gw:
            for symbol, (snapshot, datas) in books.items():  # the second joins live
                body = await _get(gw, token, f"/orderbook?market=KUCOIN-SPOT-{symbol}")
                bounds = next(b for s, _, b in fake.served if s == symbol)
                _Truth(kucoin_reference, snapshot, datas, bounds).check(
                    body["updateId"], _levels(body)
                )
            assert gw.engine.stats["resyncs"] == 0
    assert fake.bullets == fake.connections == 1
    assert fake.sent("subscribe") == [f"/market/level2:{SYMBOL}", "/market/level2:SNX-BTC"]
