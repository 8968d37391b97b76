"""Shared fixtures: a real simulator on a loopback socket, torn down after each test."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from pathlib import Path

import pytest

from astra.sim import SimExchange, SimServer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"


def fixture_path(*parts: str) -> Path:
    """A file under ../shared/fixtures, or skip the test with the reason when it is absent."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"fixture {path} is absent (../shared/fixtures is not beside this clone)")
    return path


class SimBooks:
    """The simulator engine's whole book at each published ``u`` of one diff stream, as
    floats (what the gateway's clients see), captured in-process on the simulator's hub."""

    combined = False

    def __init__(self, sim: SimServer, kind: str, symbol: str) -> None:
        side = sim.exchange.sides[kind]
        self.state = side.states[symbol]
        self.books: dict[int, dict] = {}
        side.hub.subscribe(self, f"{symbol.lower()}@depth@100ms")

    def deliver(self, frame: bytes) -> None:
        bids, asks = self.state.engine.depth()
        pu, qu = 10**self.state.market.price_dp, 10**self.state.market.qty_dp
        self.books[json.loads(frame)["u"]] = {
            "bids": {p / pu: q / qu for p, q in bids},
            "asks": {p / pu: q / qu for p, q in asks},
        }


@pytest.fixture
def sim_books():
    """``sim_books(sim, kind, symbol)``: the simulator's book at each diff event, in-process."""
    return SimBooks


@pytest.fixture
def shared_fixture():
    """``shared_fixture("aster", "spot-exchangeInfo.json")`` -> Path, or skip when absent."""
    return fixture_path


@pytest.fixture
async def sim():
    """A running simulator (seed 1) on 127.0.0.1 with an ephemeral port."""
    async with SimServer(SimExchange(seed=1)) as server:
        yield server


@pytest.fixture
def key_store(tmp_path):
    """An API key store on a real SQLite file in the test's temporary directory."""
    from astra.store import ApiKeyStore, open_database

    return ApiKeyStore(open_database(data_dir=tmp_path / "data"))


@pytest.fixture
async def gateway(sim, key_store):
    """The gateway serving SIM from the ``sim`` fixture; yields (gateway, api token)."""
    from astra.server.gateway import Gateway, venues_from_config

    token = key_store.create("tests").token
    async with Gateway(
        venues_from_config({}, sim.base_url), key_store, port=0, metrics_port=0, linger=1.0
    ) as gw:
        yield gw, token


class ClientBook:
    """A gateway client's book: built from a ``snapshot`` message, then ``update``s."""

    def __init__(self) -> None:
        self.levels: dict[str, dict[float, float]] = {"bids": {}, "asks": {}}

    def apply(self, msg: dict) -> dict:
        if msg["type"] in ("snapshot", "resync"):  # after a resync: void until a snapshot
            self.levels = {"bids": {}, "asks": {}}
        if msg["type"] == "resync":
            return self.levels
        for side in ("bids", "asks"):
            for lv in msg[side]:
                if lv["quantity"] == 0:
                    self.levels[side].pop(lv["price"], None)
                else:
                    self.levels[side][lv["price"]] = lv["quantity"]
        return self.levels


@pytest.fixture
def client_book():
    """``client_book()``: a fresh ClientBook."""
    return ClientBook


async def _stalled_ws(port: int, path: str, headers: str = "") -> asyncio.StreamWriter:
    """A WebSocket handshake on ``path`` over a socket with a tiny receive buffer, after
    which it never reads again: the slowest possible client. Close the returned writer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{headers}\r\n".encode()
    )
    await writer.drain()
    assert b"101" in await reader.readline()
    reader._transport.pause_reading()  # stop reading: the kernel buffers fill up
    return writer


@pytest.fixture
def stalled_ws():
    """``await stalled_ws(port, path)``: a connected WebSocket client that never reads."""
    return _stalled_ws
