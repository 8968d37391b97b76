"""Shared fixtures: a real simulator on a loopback socket, torn down after each test."""

from __future__ import annotations

import asyncio
import base64
import contextlib
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
def nats_server(tmp_path):
    """A running ``nats-server -js`` on 127.0.0.1 (``.url``, ``.restart()``, ``.stop()``),
    stopped after the test; skips, saying why, without the binary."""
    from tests.cluster.natsd import NatsServer

    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


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


# -- routed (SMART) orders: three simulated venues, a gateway over them -------------------------

SOR_CODES = ("SIM", "SIM2", "SIM3")
OTC_HEDGE_KEY = "otc-desk"  # the OTC desk's default hedge_key
OTC_DESK_DEPOSIT = "USDT=5000000,BTC=50,ETH=500,SOL=20000"
OTC_CLIENT_DEPOSIT = {"USDT": "100000", "USD": "100000", "BTC": "2", "ETH": "20"}


async def _stopped(server: SimServer) -> SimServer:
    task = server.exchange._task
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return server


@pytest.fixture
async def sor_sims():
    """Three independent simulated venues ``SIM``, ``SIM2``, ``SIM3`` (each with its own
    profile: fees, ticks, depth), each its own server on a loopback port, clocks running
    (``SorDesk.freeze`` stops them)."""
    from astra.sim.venues import profile_for

    async with contextlib.AsyncExitStack() as stack:
        sims = {}
        for i, code in enumerate(SOR_CODES):
            exchange = SimExchange(seed=i + 1, profile=profile_for(code), latency_ms=0)
            sims[code] = await stack.enter_async_context(SimServer(exchange))
        yield sims


async def _publish_only(server: SimServer) -> None:
    """A stopped venue's feeds flushed every 10 ms: no synthetic flow moves its books, but
    the trades tests make on them reach subscribers as diffs, as on a live venue."""
    feeds = [side.feeds for side in server.exchange.sides.values()]
    while True:
        for f in feeds:
            f.tick()
        await asyncio.sleep(0.01)


class SorDesk:
    """A gateway over ``sor_sims`` and one API key whose accounts (one per venue, funded as
    asked) are its stored credentials."""

    def __init__(self, sims, key_store, journal=None) -> None:
        self.sims, self.key_store, self.journal = sims, key_store, journal
        self.token = key_store.create("sor").token
        self.key_id = self.token.split(".")[0]
        self.accounts: dict = {}  # code -> NewCredentials
        self.desk_accounts: dict = {}  # code -> NewCredentials: the OTC desk's hedge accounts
        self.otc = None  # an OtcConfig for the gateway (None: the defaults)
        self.linger = 1.0  # seconds an unused feed stays up
        self.smart = None  # a SmartConfig (None: the defaults)
        self.gw = None
        self.feeds: list[asyncio.Task] = []

    async def close(self) -> None:
        for task in self.feeds:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.feeds.clear()
        if self.gw is not None:
            await self.gw.close()
            self.gw = None

    def fund(self, code: str, deposit: str) -> None:
        from astra.sim.admin import parse_deposits

        self.accounts[code] = self.sims[code].exchange.create_account(parse_deposits(deposit))

    def fund_desk(self, code: str, deposit: str) -> None:
        """An account on venue ``code`` for the OTC desk's hedges (key id ``otc-desk``)."""
        from astra.sim.admin import parse_deposits

        self.desk_accounts[code] = self.sims[code].exchange.create_account(
            parse_deposits(deposit))

    def credentials(self):
        from astra.core.credentials import ExchangeCredentials
        from astra.trading.paper import LayeredCredentials

        stored = LayeredCredentials()
        for key_id, accounts in ((self.key_id, self.accounts),
                                 (OTC_HEDGE_KEY, self.desk_accounts)):
            for code, creds in accounts.items():
                stored.add_default(key_id, ExchangeCredentials(
                    exchange=code, private_key=creds.signerPrivateKey))
        return stored

    def otc_account(self, deposits: dict[str, str], key_id: str | None = None) -> str:
        """A new OTC account of ``key_id`` (default this desk's key) holding ``deposits``."""
        from decimal import Decimal

        store = self.gw.desk.store
        account_id = store.create_account(key_id or self.key_id).account_id
        for asset, amount in deposits.items():
            store.deposit(account_id, asset, Decimal(amount))
        return account_id

    def venues(self, urls: dict | None = None) -> dict:
        from astra.venues import build_venue

        return {code: build_venue(code, {"url": (urls or {}).get(code, s.base_url)})
                for code, s in self.sims.items()}

    async def start(self, venues: dict | None = None, *, stored: bool = True):
        """A gateway over the venues; ``stored``: the accounts are the key's stored
        credentials (else the key must send them as headers)."""
        from astra.server.gateway import Gateway

        self.gw = await Gateway(venues or self.venues(), self.key_store, port=0,
                                metrics_port=0, linger=self.linger, journal=self.journal,
                                credentials=self.credentials() if stored else None,
                                otc=self.otc, smart=self.smart).start()
        return self.gw

    async def freeze(self, market: str = "SMART-SPOT-BTC-USDT", kind: str = "spot") -> None:
        """Every member book synced in the gateway, then every venue's clock stopped and the
        gateway's books caught up with each venue's own book (levels equal)."""
        async with asyncio.timeout(30):
            while True:
                books = await self.gw.engine.member_books(market)
                if all(m.state == "synced" for m in books.members):
                    break
                await asyncio.sleep(0.05)
            for server in self.sims.values():
                await _stopped(server)
                # The books stand still, but what trades on them is still published.
                self.feeds.append(asyncio.create_task(_publish_only(server)))
        await self.publish(market, kind)  # changes since the last diff flush

    async def publish(self, market: str = "SMART-SPOT-BTC-USDT", kind: str = "spot") -> None:
        """With clocks stopped: wait until the gateway's member books equal the venues' own
        (``freeze`` keeps each venue's feeds publishing the changes trades make)."""
        async with asyncio.timeout(20):
            while True:
                books = await self.gw.engine.member_books(market)
                if all(m.state == "synced" and self.venue_depth(
                        m.venue, kind, m.market.exchange_symbol) == (m.bids, m.asks)
                       for m in books.members):
                    return
                await asyncio.sleep(0.02)

    def venue_depth(self, code: str, kind: str, symbol: str):
        """The venue's own whole book (its engine), best first, as floats."""
        state = self.sims[code].exchange.sides[kind].states[symbol]
        bids, asks = state.engine.depth()
        pu, qu = 10**state.market.price_dp, 10**state.market.qty_dp
        return ([(p / pu, q / qu) for p, q in bids], [(p / pu, q / qu) for p, q in asks])

    def creds_for(self, code: str):
        from astra.core import MissingCredentials

        creds = self.credentials().get(self.key_id, code)
        if creds is None:
            raise MissingCredentials(f"no {code} credentials", venue=code)
        return creds

    def account_id(self, code: str) -> int:
        sim = self.sims[code].exchange
        return sim.registry.by_api_key(self.accounts[code].apiKey).id


@pytest.fixture
async def sor_desk(sor_sims, key_store):
    """``SorDesk`` over the three stopped venues: fund, then ``await desk.start()``."""
    desk = SorDesk(sor_sims, key_store)
    try:
        yield desk
    finally:
        await desk.close()


@pytest.fixture
async def otc_desk(sor_sims, key_store):
    """``SorDesk`` started with the OTC desk: hedge accounts on the three venues (clocks
    running; ``freeze`` stops them) and ``desk.account_id``, an OTC account of ``desk.key_id``
    funded with ``OTC_CLIENT_DEPOSIT``."""
    desk = SorDesk(sor_sims, key_store)
    desk.linger = 600.0  # a frozen venue sends no diff, so a feed started after freeze never syncs
    try:
        for code in SOR_CODES:
            desk.fund_desk(code, OTC_DESK_DEPOSIT)
        await desk.start()
        desk.account_id = desk.otc_account(OTC_CLIENT_DEPOSIT)
        yield desk
    finally:
        await desk.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One real ``astra serve`` (no configuration: simulator child, paper accounts, SMART,
    the OTC desk) for a whole test module: ``.base``, ``.token``, ``.otc_account``."""
    from tests.serve_process import ServedAstra

    server = ServedAstra(tmp_path_factory.mktemp("served") / "data").start()
    try:
        yield server
    finally:
        server.stop()
