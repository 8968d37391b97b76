"""The docs' "how to maintain a local order book" procedure, run by a client over real
loopback sockets, must give a book identical to the engine's after every event, across a
forced reconnect; a dropped event must be detected.

The engine's truth is captured in-process: a recorder subscribes to the same stream hub as
the socket clients and snapshots the engine's whole book at the moment each event is
published (the event's ``u``).
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from astra.sim import SimServer

Book = dict[str, dict[str, str]]  # "bids"/"asks" -> price text -> quantity text


class EngineRecorder:
    """In-process subscriber: the engine's full book at each published event's ``u``."""

    combined = False

    def __init__(self, server: SimServer, kind: str, symbol: str, stream: str) -> None:
        side = server.exchange.sides[kind]
        self.state = side.states[symbol]
        self.books: dict[int, Book] = {}
        side.hub.subscribe(self, stream)

    def deliver(self, frame: bytes) -> None:
        u = json.loads(frame)["u"]
        bids, asks = self.state.engine.depth()
        fmt_p, fmt_q = self.state.market.format_price, self.state.market.format_qty
        self.books[u] = {
            "bids": {fmt_p(p): fmt_q(q) for p, q in bids},
            "asks": {fmt_p(p): fmt_q(q) for p, q in asks},
        }


class LocalBook:
    """A client's book kept by the documented procedure (spot: ``U == prev u + 1``;
    perpetual: ``pu == prev u``). ``apply`` returns False on a sequence gap."""

    def __init__(self, kind: str, snapshot: dict) -> None:
        self.kind = kind
        self.last_id = snapshot["lastUpdateId"]
        self.prev_u: int | None = None
        self.book: Book = {"bids": dict(snapshot["bids"]), "asks": dict(snapshot["asks"])}

    def apply(self, event: dict) -> bool | None:
        """None: event predates the snapshot (dropped); True: applied; False: gap."""
        n = self.last_id
        if self.prev_u is None:
            if event["u"] < n + (1 if self.kind == "spot" else 0):
                return None
            if not event["U"] <= n + 1 <= event["u"] + (0 if self.kind == "spot" else 1):
                return False
        elif self.kind == "spot" and event["U"] != self.prev_u + 1:
            return False
        elif self.kind == "perp" and event["pu"] != self.prev_u:
            return False
        for side, key in (("bids", "b"), ("asks", "a")):
            levels = self.book[side]
            for price, qty in event[key]:
                if float(qty) == 0:
                    levels.pop(price, None)
                else:
                    levels[price] = qty
        self.prev_u = event["u"]
        return True


async def _sync(
    session: aiohttp.ClientSession,
    server: SimServer,
    kind: str,
    symbol: str,
    ws: aiohttp.ClientWebSocketResponse,
) -> tuple[LocalBook, list[dict]]:
    """Steps 2-5: buffer events, fetch the snapshot, drop what it already holds."""
    buffered: list[dict] = [json.loads((await ws.receive(timeout=5)).data)]
    rest = "/fapi/v1" if kind == "perp" else "/api/v1"
    async with session.get(
        f"{server.base_url}{rest}/depth", params={"symbol": symbol, "limit": "1000"}
    ) as resp:
        snapshot = await resp.json()
    assert snapshot["lastUpdateId"] >= buffered[0]["U"] - 1
    return LocalBook(kind, snapshot), buffered


@pytest.mark.parametrize("kind", ["spot", "perp"])
async def test_local_book_matches_engine_at_every_step_across_reconnect(sim, kind):
    symbol, stream = "BTCUSDT", "btcusdt@depth@100ms"
    recorder = EngineRecorder(sim, kind, symbol, stream)
    path = "/fstream" if kind == "perp" else "/sstream"
    url = f"ws://127.0.0.1:{sim.port}{path}/ws/{stream}"
    compared = 0
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        for connection in range(2):
            async with session.ws_connect(url) as ws:
                book, pending = await _sync(session, sim, kind, symbol, ws)
                applied_here = 0
                while applied_here < 15:
                    event = (
                        pending.pop(0)
                        if pending
                        else json.loads((await ws.receive(timeout=5)).data)
                    )
                    outcome = book.apply(event)
                    assert outcome is not False, f"sequence gap at U={event['U']}"
                    if outcome:
                        applied_here += 1
                        assert book.book == recorder.books[event["u"]], f"diverged at {event['u']}"
                        compared += 1
                if connection == 0:
                    assert sim.exchange.drop_connections() >= 1
                    closing = await ws.receive(timeout=5)
                    while closing.type == aiohttp.WSMsgType.TEXT:  # frames already in flight
                        closing = await ws.receive(timeout=5)
                    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert compared == 30
    # The book is lively: across ~3 s of events the recorded engine books kept changing.
    assert len({json.dumps(b, sort_keys=True) for b in recorder.books.values()}) > 10


async def test_dropped_event_is_detected(sim):
    url = f"ws://127.0.0.1:{sim.port}/sstream/ws/ethusdt@depth@100ms"
    async with (
        aiohttp.ClientSession() as session,
        asyncio.timeout(20),
        session.ws_connect(url) as ws,
    ):
        book, pending = await _sync(session, sim, "spot", "ETHUSDT", ws)
        applied = 0
        while applied < 3:
            event = pending.pop(0) if pending else json.loads((await ws.receive(timeout=5)).data)
            applied += bool(book.apply(event))
        await ws.receive(timeout=5)  # lost in transit
        after_gap = json.loads((await ws.receive(timeout=5)).data)
        assert book.apply(after_gap) is False
