"""The SDK's local book: its rules on crafted messages (continuity, resync, deletes,
order, SMART venues), and ``watch_orderbook`` on real gateways: equal to ``GET /orderbook``
at the same ``updateId``, across a resync the gateway forces (the simulator drops every
feed connection), after a gap the client itself detects (a proxy swallows one frame) and
after its own connection is cut."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from tests.cluster.proxy import CutProxy

from astra.client import AsyncAstra, BookGap, LocalBook

from .helpers import BOUND, matches_rest


def _level(price: float, quantity: float, venues: dict | None = None) -> dict:
    return {"price": price, "quantity": quantity,
            **({"venues": venues} if venues is not None else {})}


def _msg(type_: str, update_id: int | None = None, bids=(), asks=(), **extra) -> bytes:
    body = {"type": type_, "market": extra.pop("market", "SIM-SPOT-BTC-USDT"), **extra}
    if type_ != "resync":
        body.update(updateId=update_id, timestamp=1000 + update_id,
                    bids=[_level(*lv) for lv in bids], asks=[_level(*lv) for lv in asks])
    return json.dumps(body).encode()


def test_snapshot_then_updates_keep_sorted_sides_and_delete_at_zero():
    book = LocalBook("SIM-SPOT-BTC-USDT")
    assert not book.synced and book.bids == [] and book.best_bid is None
    assert book.apply(_msg("snapshot", 10, [(99.0, 1.0), (100.0, 2.0)], [(101.0, 3.0)]))
    assert (book.bids, book.asks, book.update_id) == ([(100.0, 2.0), (99.0, 1.0)],
                                                      [(101.0, 3.0)], 10)
    assert book.apply(_msg("update", 13, [(100.0, 0.0), (99.5, 4.0)], [(100.5, 1.0)]))
    assert book.bids == [(99.5, 4.0), (99.0, 1.0)]
    assert book.asks == [(100.5, 1.0), (101.0, 3.0)]
    assert (book.update_id, book.timestamp, book.spread) == (13, 1013, 1.0)


def test_depth_cuts_the_views_but_keeps_the_levels():
    book = LocalBook("SIM-SPOT-BTC-USDT", depth=1)
    book.apply(_msg("snapshot", 1, [(99.0, 1.0), (100.0, 2.0)], [(101.0, 3.0), (102.0, 1.0)]))
    assert (book.bids, book.asks) == ([(100.0, 2.0)], [(101.0, 3.0)])
    book.apply(_msg("update", 2, [(100.0, 0.0)], []))
    assert book.bids == [(99.0, 1.0)]  # the next level was kept beyond the depth


def test_a_venue_book_update_must_increase_its_id():
    book = LocalBook("SIM-SPOT-BTC-USDT")
    book.apply(_msg("snapshot", 10, [(100.0, 1.0)], []))
    book.apply(_msg("update", 25, [(100.0, 2.0)], []))  # venue ids may jump
    with pytest.raises(BookGap) as caught:
        book.apply(_msg("update", 25, [(100.0, 9.0)], []))
    assert (caught.value.last, caught.value.got) == (25, 25)
    assert book.bids == [(100.0, 2.0)] and book.update_id == 25 and book.gaps == 1


def test_a_venue_book_update_must_name_the_last_id_as_its_previous():
    book = LocalBook("SIM-SPOT-BTC-USDT")
    book.apply(_msg("snapshot", 10, [(100.0, 1.0)], []))
    book.apply(_msg("update", 25, [(100.0, 2.0)], [], prevUpdateId=10))
    with pytest.raises(BookGap):  # the message after 25 (id 31) was lost
        book.apply(_msg("update", 40, [(100.0, 9.0)], [], prevUpdateId=31))
    assert book.bids == [(100.0, 2.0)] and book.update_id == 25 and book.gaps == 1
    # A venue whose id did not move (a message with no new sequence) still chains.
    book2 = LocalBook("SIM-SPOT-BTC-USDT")
    book2.apply(_msg("snapshot", 10, [(100.0, 1.0)], []))
    assert book2.apply(_msg("update", 10, [(100.0, 3.0)], [], prevUpdateId=10))
    assert book2.bids == [(100.0, 3.0)]


def test_a_smart_book_update_must_be_the_next_id_and_keeps_venues():
    market = "SMART-SPOT-BTC-USDT"
    book = LocalBook(market)
    book.apply(_msg("snapshot", 5, [(100.0, 3.0, {"SIM": 1.0, "SIM2": 2.0})], [],
                    market=market, members=[{"venue": "SIM", "market": "SIM-SPOT-BTC-USDT",
                                             "state": "synced"}]))
    assert book.venues("bids", 100.0) == {"SIM": 1.0, "SIM2": 2.0}
    assert book.members[0].venue == "SIM" and book.members[0].state == "synced"
    book.apply(_msg("update", 6, [(100.0, 2.0, {"SIM2": 2.0})], [], market=market))
    assert book.bid_venues == {100.0: {"SIM2": 2.0}} and book.bids == [(100.0, 2.0)]
    with pytest.raises(BookGap, match="expected previous \\+ 1"):
        book.apply(_msg("update", 8, [(100.0, 0.0, {})], [], market=market))
    assert book.bids == [(100.0, 2.0)] and book.update_id == 6


def test_resync_empties_the_book_until_the_next_snapshot_even_with_a_lower_id():
    book = LocalBook("SIM-SPOT-BTC-USDT")
    book.apply(_msg("snapshot", 100, [(100.0, 1.0)], [(101.0, 1.0)]))
    assert not book.apply(_msg("resync", reason="gap", state="resyncing", since=1))
    assert (book.state, book.reason, book.bids, book.asks) == ("resyncing", "gap", [], [])
    assert not book.apply(_msg("update", 101, [(100.0, 5.0)], []))  # ignored: no snapshot
    assert book.bids == []
    assert book.apply(_msg("snapshot", 3, [(98.0, 1.0)], []))  # the venue restarted
    assert (book.state, book.update_id, book.bids, book.snapshots) == ("synced", 3,
                                                                      [(98.0, 1.0)], 2)


def test_an_update_before_any_snapshot_is_ignored():
    book = LocalBook("SIM-SPOT-BTC-USDT")
    assert not book.apply(_msg("update", 1, [(100.0, 1.0)], []))
    assert book.bids == [] and book.update_id is None and book.state == "connecting"


# --- live ---------------------------------------------------------------------------------


@pytest.mark.parametrize("market", ["SIM-SPOT-BTC-USDT", "SMART-SPOT-BTC-USDT"])
async def test_watch_orderbook_equals_rest_at_the_same_update_id(served, market):
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND * 2):
        books = client.watch_orderbook(market)
        book = await anext(books)
        assert book.synced and book.market == market and book.snapshots == 1
        book = await matches_rest(client, books, book)
        for _ in range(20):  # and still after a run of updates
            book = await anext(books)
        await matches_rest(client, books, book)
        assert book.gaps == 0 and book.snapshots == 1
        await books.aclose()


async def test_watch_orderbook_across_a_resync_the_gateway_forces(sim, gateway):
    """The simulator drops every feed connection: the gateway tells its clients
    (``resync``, ``disconnected``), reconnects, and sends a fresh snapshot; the SDK's book
    follows and again equals ``GET /orderbook`` at the same updateId."""
    gw, token = gateway
    market = "SIM-SPOT-BTC-USDT"
    async with AsyncAstra(gw.base_url, token) as client, asyncio.timeout(BOUND * 2):
        books = client.watch_orderbook(market, yield_resyncs=True)
        book = await anext(books)
        book = await matches_rest(client, books, book)
        assert sim.exchange.drop_connections("test: forced resync") >= 1
        states = []
        while not (states and states[-1] == "synced" and "disconnected" in states):
            book = await anext(books)
            states.append(book.state)
        assert book.snapshots == 2 and book.gaps == 0
        book = await matches_rest(client, books, book)
        await books.aclose()
    assert gw.engine.stats["resyncs"] >= 1


class FrameDropper:
    """A WebSocket proxy in front of a gateway's ``/ws`` that swallows frame ``drop_at`` of
    its first connection (an update lost on the way: the client sees an id gap)."""

    def __init__(self, upstream: str, drop_at: int) -> None:
        self.upstream, self.drop_at = upstream, drop_at
        self.connections = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        first = self.connections == 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        headers = {"x-astra-api-key": request.headers["x-astra-api-key"]}
        async with aiohttp.ClientSession() as s, s.ws_connect(
                f"{self.upstream}/ws?{request.query_string}", headers=headers) as up:
            count = 0
            async for msg in up:
                count += 1
                if ws.closed:
                    break
                if not (first and count == self.drop_at):
                    try:
                        await ws.send_str(msg.data)
                    except ConnectionError:  # the client left (it resyncs)
                        break
        return ws

    async def __aenter__(self) -> FrameDropper:
        app = web.Application()
        app.router.add_get("/ws", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


@pytest.mark.parametrize("market", ["SMART-SPOT-BTC-USDT", "SIM-SPOT-BTC-USDT"])
async def test_a_gap_the_client_sees_makes_it_resync_itself(served, market):
    """One update lost between gateway and client: the next one does not continue (a SMART
    id is not the last + 1; a venue book's ``prevUpdateId`` is not the last id), so the SDK
    reconnects and rebuilds from a fresh snapshot, equal to REST again."""
    async with FrameDropper(served.ws_base, drop_at=4) as proxy, \
            AsyncAstra(f"http://127.0.0.1:{proxy.port}", served.token) as via_proxy, \
            AsyncAstra(served.base, served.token) as direct, asyncio.timeout(BOUND * 2):
        books = via_proxy.watch_orderbook(market, yield_resyncs=True)
        seen = []
        book = await anext(books)
        while book.snapshots < 2:
            seen.append((book.state, book.update_id))
            book = await anext(books)
        assert book.gaps == 1 and proxy.connections == 2
        assert seen[-1][0] == "resyncing"  # told, before the fresh snapshot
        # The rebuilt book, checked against the gateway itself (not through the proxy).
        while True:
            rest = await direct.orderbook(market)
            while book.update_id < rest.update_id:
                book = await anext(books)
            if book.update_id == rest.update_id:
                break
        assert book.bids == [(lv.price, lv.quantity) for lv in rest.bids]
        assert book.asks == [(lv.price, lv.quantity) for lv in rest.asks]
        await books.aclose()


async def test_a_cut_connection_is_reconnected_and_the_book_rebuilt(served):
    port = int(served.base.rsplit(":", 1)[1])
    proxy = await CutProxy(port).start()
    try:
        async with AsyncAstra(f"http://127.0.0.1:{proxy.port}", served.token,
                              backoff=0.05) as client, asyncio.timeout(BOUND * 2):
            books = client.watch_orderbook("SIM-SPOT-BTC-USDT", yield_resyncs=True)
            book = await matches_rest(client, books, await anext(books))
            proxy.refusing = True  # the gateway unreachable for a while: attempts fail
            proxy.cut()
            failures = 0
            while failures < 3:  # each failed attempt is told (yield_resyncs)
                book = await anext(books)
                assert book.state == "disconnected" and book.bids == []
                failures += 1
            proxy.refusing = False
            while not book.synced:
                book = await anext(books)
            assert book.snapshots == 2 and book.gaps == 0
            await matches_rest(client, books, book)
            await books.aclose()
    finally:
        await proxy.close()
