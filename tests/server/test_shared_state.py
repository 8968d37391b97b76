"""Shared state across gateway processes on PostgreSQL: two ``astra serve`` children (separate
memory) on one PostgreSQL database and one simulator, as edges of a cluster are.

What must hold across processes, enforced by the database and not by process memory:
- the same ``clientOrderId`` raced on both gateways places one venue order, and both answer
  with it; a different body under that id is a 409 on either;
- a routed (SMART) order raced on both makes one parent, its children placed once;
- an order left with an unknown outcome by a gateway killed mid-send (its venue answer held by
  a proxy, then ``kill -9``) is found at the venue by client order id by the other gateway and
  at the killed one's restart, never placed again; a sender whose order the other gateway
  settled meanwhile answers with it when its own venue call times out;
- an API key created or revoked in the database is honoured by both (revocation closes the
  key's WebSockets on both within ``session_revalidate_seconds``).

(Accept-at-most-once of OTC quotes across two gateways on PostgreSQL is
``test_otc_processes.py``.) Exchange credentials are the production path: stored in PostgreSQL,
encrypted under ``ASTRA_MASTER_KEY``, which both processes are given.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from tests.server.test_smart_orders_restart import HoldingProxy
from tests.store.test_journal import PG_URL, PG_URL_ENV, _pg_engine

from astra.core.credentials import ExchangeCredentials
from astra.sim.admin import parse_deposits
from astra.store import ApiKeyStore, CredentialStore, generate_master_key, load_master_key
from astra.store.journal import OrderJournal
from astra.store.routing_journal import RoutingJournal

MARKET = "SIM-SPOT-BTC-USDT"
SMART = "SMART-SPOT-BTC-USDT"
_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclasses.dataclass
class Pg:
    engine: sa.Engine
    url: str  # with the test's schema as search_path, for the children


@pytest.fixture
def pg() -> Iterator[Pg]:
    """A throwaway schema of ``$ASTRA_TEST_POSTGRES_URL`` (skipped, saying why, without it)."""
    if not PG_URL:
        pytest.skip(f"set {PG_URL_ENV} to a PostgreSQL database to run the cross-process tests")
    schema = f"astra_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL at {PG_URL_ENV} is not usable: {exc!r}")
    engine = _pg_engine(PG_URL, schema)
    try:
        yield Pg(engine, f"{PG_URL}?options=-csearch_path%3D{schema}")
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class Edge:
    """``astra serve`` as a child process; its output goes to a file (never a full pipe)."""

    def __init__(self, proc: subprocess.Popen, log: Path, url: str) -> None:
        self.proc, self.log, self.url = proc, log, url

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cluster:
    """Two (or more) gateways on one PostgreSQL schema and one simulator (the ``sim``
    fixture), an API key and its SIM account, stored as credentials under a master key."""

    def __init__(self, pg: Pg, sims: dict, tmp: Path) -> None:
        self.pg, self.sims, self.tmp = pg, sims, tmp
        self.master = generate_master_key()
        self.keys = ApiKeyStore(pg.engine, cache_ttl=0)
        self.token = self.keys.create("cluster").token
        self.key_id = self.token.split(".")[0]
        self.headers = {"x-astra-api-key": f"Bearer {self.token}"}
        self.accounts = {}
        store = CredentialStore(pg.engine, load_master_key({"ASTRA_MASTER_KEY": self.master}))
        for code, sim in sims.items():
            creds = sim.exchange.create_account(parse_deposits("USDT=1000000,BTC=10"))
            self.accounts[code] = creds
            store.set(self.key_id, ExchangeCredentials(
                exchange=code, private_key=creds.signerPrivateKey, account=creds.user))
        self.edges: list[Edge] = []
        self.journal = OrderJournal(pg.engine)
        self.serve_args: list[str] = []  # e.g. --role edge (tests/server/test_roles.py)
        self.extra_config = ""  # e.g. a [cluster] section

    def config(self, name: str, urls: dict[str, str] | None = None) -> Path:
        path = self.tmp / f"{name}.toml"
        venues = "".join(f'[venues.{code}]\nurl = "{(urls or {}).get(code, sim.base_url)}"\n'
                         for code, sim in self.sims.items())
        path.write_text(f"session_revalidate_seconds = 0.5\n{venues}[otc]\nhedge = \"off\"\n"
                        f"{self.extra_config}")
        return path

    async def start(self, name: str, urls: dict[str, str] | None = None) -> Edge:
        log = self.tmp / f"{name}.log"
        out = log.open("wb")
        proc = subprocess.Popen(  # noqa: ASYNC220 - started, then polled off the loop below
            [sys.executable, "-m", "astra", "serve", "--port", "0", "--metrics-port", "0",
             "--database-url", self.pg.url, "--config", str(self.config(name, urls)),
             "--data-dir", str(self.tmp / name), *self.serve_args],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "ASTRA_API_KEY": "", "ASTRA_MASTER_KEY": self.master})
        out.close()
        edge = Edge(proc, log, "")
        self.edges.append(edge)
        async with asyncio.timeout(60):
            while True:
                text = log.read_text(errors="replace")
                found = _LISTENING.search(text)
                if found:
                    edge.url = found[1]
                    return edge
                if proc.poll() is not None:
                    raise AssertionError(f"astra serve exited: {text[-800:]}")
                await asyncio.sleep(0.05)

    def close(self) -> None:
        for edge in self.edges:
            edge.stop()

    def venue_orders(self, code: str = "SIM") -> list:
        """The simulator's own orders of this key's account on BTCUSDT (spot)."""
        exchange = self.sims[code].exchange
        account = exchange.registry.by_api_key(self.accounts[code].apiKey).id
        return list(exchange.sides["spot"].trading.by_account.get((account, "BTCUSDT"), []))


@pytest.fixture
async def cluster(pg, sim, tmp_path) -> AsyncIterator[Cluster]:
    c = Cluster(pg, {"SIM": sim}, tmp_path)
    try:
        yield c
    finally:
        c.close()


async def _call(http: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, dict]:
    async with http.request(method, url, **kw) as resp:
        return resp.status, await resp.json()


async def _resting_price(http: aiohttp.ClientSession, edge: Edge) -> float:
    """A buy price well under the market, on the tick: the order rests at the venue."""
    status, markets = await _call(http, "GET", f"{edge.url}/markets", params={"exchange": "SIM"})
    assert status == 200, markets
    tick = next(m for m in markets if m["symbol"] == MARKET)["tickSize"]
    async with asyncio.timeout(30):
        while True:
            status, book = await _call(http, "GET", f"{edge.url}/orderbook",
                                       params={"market": MARKET, "depth": 1})
            if status == 200 and book["bids"]:
                break
            await asyncio.sleep(0.1)
    return round(round(book["bids"][0]["price"] * 0.97 / tick) * tick, 8)


async def test_one_client_order_id_raced_on_two_gateways_places_one_venue_order(cluster):
    a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
    async with aiohttp.ClientSession(headers=cluster.headers) as http, asyncio.timeout(120):
        price = await _resting_price(http, a)
        bodies = {f"race-{i}": {"market": MARKET, "side": "BUY", "type": "LIMIT",
                                "quantity": 0.001, "price": price, "clientOrderId": f"race-{i}"}
                  for i in range(20)}
        answers = {}
        for cid, body in bodies.items():  # each id raced on both gateways at once
            answers[cid] = await asyncio.gather(
                _call(http, "POST", f"{a.url}/orders", json=body),
                _call(http, "POST", f"{b.url}/orders", json=body))
        # The same id with another body: refused on either gateway, nothing placed.
        other = {**bodies["race-0"], "quantity": 0.002}
        conflicts = await asyncio.gather(_call(http, "POST", f"{a.url}/orders", json=other),
                                         _call(http, "POST", f"{b.url}/orders", json=other))
    venue = cluster.venue_orders()
    by_cid: dict[str, list] = {}
    for order in venue:
        by_cid.setdefault(order.client_id, []).append(order)
    missing = {cid: answers[cid] for cid in bodies if cid not in by_cid}
    assert not missing, missing  # every id placed ...
    assert all(len(v) == 1 for v in by_cid.values()), {k: len(v) for k, v in by_cid.items()}
    for cid, ((sa_, ja), (sb, jb)) in answers.items():
        assert (sa_, sb) == (200, 200), (cid, ja, jb)
        # ... and both answers name the venue's one order
        assert ja["orderId"] == jb["orderId"] == str(by_cid[cid][0].id), (cid, ja, jb)
        assert ja["clientOrderId"] == jb["clientOrderId"] == cid
        entry = cluster.journal.get(cluster.key_id, "SIM", cid)
        assert entry.state == "ACKNOWLEDGED" and entry.venue_order_id == ja["orderId"]
    for status, body in conflicts:
        assert status == 409 and body["code"] == "CONFLICT", body
        assert body["parameter"] == "clientOrderId"
    assert len(cluster.venue_orders()) == 20


async def test_a_routed_order_raced_on_two_gateways_makes_one_parent(cluster):
    a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
    async with aiohttp.ClientSession(headers=cluster.headers) as http, asyncio.timeout(120):
        for edge in (a, b):  # each gateway's consolidated book is up
            while True:
                status, _ = await _call(http, "GET", f"{edge.url}/orderbook",
                                        params={"market": SMART, "depth": 1})
                if status == 200:
                    break
                await asyncio.sleep(0.1)
        rounds = []
        for i in range(5):
            body = {"market": SMART, "side": "BUY", "type": "MARKET", "quantity": 0.01,
                    "maxSlippageBps": 200, "clientOrderId": f"sor-race-{i}"}
            rounds.append(await asyncio.gather(
                _call(http, "POST", f"{a.url}/orders", json=body),
                _call(http, "POST", f"{b.url}/orders", json=body)))
    journal = RoutingJournal(cluster.pg.engine)
    venue = cluster.venue_orders()
    lot_units = 10 ** cluster.sims["SIM"].exchange.state("spot", "BTCUSDT").market.qty_dp
    for i, ((sa_, ja), (sb, jb)) in enumerate(rounds):
        cid = f"sor-race-{i}"
        assert (sa_, sb) == (200, 200), (ja, jb)
        parent = journal.by_client_id(cluster.key_id, cid)
        assert ja["orderId"] == jb["orderId"] == parent.parent_id
        with cluster.pg.engine.connect() as conn:
            parents = conn.execute(sa.text(
                "SELECT count(*) FROM routed_parents WHERE client_order_id = :c"), {"c": cid})
            assert parents.scalar_one() == 1
        assert parent.children, parent
        for child in parent.children:  # each child placed once at its venue
            placed = [o for o in venue if o.client_id == child.client_order_id]
            assert len(placed) == 1, (child, placed)
            assert child.state == "DONE" and child.last_order["orderId"] == str(placed[0].id)
        # every order the venue has under this parent's ids is one of its children
        ours = [o for o in venue if o.client_id.startswith(cid + "-")]
        assert sorted(o.client_id for o in ours) == sorted(
            c.client_order_id for c in parent.children)
        # Both answers are the parent as its rounds ended (whatever the live book gave it),
        # and it states what the venue filled.
        assert parent.state == "DONE"
        assert ja == jb
        assert ja["status"] == parent.status and ja["status"] in ("FILLED", "EXPIRED")
        assert ja["filledQuantity"] == pytest.approx(sum(o.executed for o in ours) / lot_units)
    # (A round may expire unfilled when the book moved past its slippage bound under load;
    # the orders as a whole traded.)
    assert sum(ja["filledQuantity"] for (_, ja), _ in rounds) > 0


async def test_an_order_left_unknown_by_a_killed_gateway_is_reconciled_not_resent(cluster):
    """Gateway A's answers to placements are held by a proxy: its order reaches the venue,
    then A is killed (SIGKILL) before hearing back. Gateway B finds it by client order id;
    A restarted finds it too; a retry on either answers with it and places nothing."""
    sim = cluster.sims["SIM"]
    proxy = await HoldingProxy(sim.base_url).start()
    try:
        a, b = await asyncio.gather(cluster.start("a", {"SIM": proxy.url}), cluster.start("b"))
        async with aiohttp.ClientSession(headers=cluster.headers) as http, asyncio.timeout(120):
            price = await _resting_price(http, b)
            bodies = {cid: {"market": MARKET, "side": "BUY", "type": "LIMIT",
                            "quantity": 0.001, "price": price, "clientOrderId": cid}
                      for cid in ("killed-1", "killed-2")}
            posts = []
            for cid, body in bodies.items():
                proxy.placed.clear()
                posts.append(asyncio.create_task(
                    _call(http, "POST", f"{a.url}/orders", json=body)))
                await proxy.placed.wait()  # the venue has it; A never hears back
                assert cluster.journal.get(cluster.key_id, "SIM", cid).state == "SENT"
            a.stop(signal.SIGKILL)
            for posting in posts:
                with contextlib.suppress(aiohttp.ClientError):
                    await posting
            placed = {o.client_id: o for o in cluster.venue_orders()}
            assert sorted(placed) == ["killed-1", "killed-2"]
            # The other gateway: a read of the key's open orders settles what is pending.
            status, opened = await _call(http, "GET", f"{b.url}/orders",
                                         params={"market": MARKET})
            assert status == 200
            assert sorted(o["clientOrderId"] for o in opened) == ["killed-1", "killed-2"]
            for cid in bodies:
                entry = cluster.journal.get(cluster.key_id, "SIM", cid)
                assert entry.state == "ACKNOWLEDGED" and entry.reconciled_at is not None
                assert entry.venue_order_id == str(placed[cid].id)
            # A retry on B answers with the venue's order and sends nothing.
            status, again = await _call(http, "POST", f"{b.url}/orders",
                                        json=bodies["killed-1"])
            assert status == 200 and again["orderId"] == str(placed["killed-1"].id)
        assert len(cluster.venue_orders()) == 2
    finally:
        await proxy.close()


async def test_a_slow_send_the_other_gateway_settled_answers_with_the_venue_order(cluster):
    """A's placement reaches the venue, its answer is held (A times out after its 10 s);
    meanwhile B, reading the key's orders, finds it at the venue and journals it. A's timeout
    must then answer with that order, not fail on the journal's move."""
    sim = cluster.sims["SIM"]
    proxy = await HoldingProxy(sim.base_url).start()
    try:
        a, b = await asyncio.gather(cluster.start("a", {"SIM": proxy.url}), cluster.start("b"))
        async with aiohttp.ClientSession(headers=cluster.headers) as http, asyncio.timeout(60):
            price = await _resting_price(http, b)
            body = {"market": MARKET, "side": "BUY", "type": "LIMIT", "quantity": 0.001,
                    "price": price, "clientOrderId": "slow-1"}
            posting = asyncio.create_task(_call(http, "POST", f"{a.url}/orders", json=body))
            await proxy.placed.wait()
            status, opened = await _call(http, "GET", f"{b.url}/orders",
                                         params={"market": MARKET})
            assert status == 200 and [o["clientOrderId"] for o in opened] == ["slow-1"]
            assert cluster.journal.get(cluster.key_id, "SIM", "slow-1").state == "ACKNOWLEDGED"
            status, answer = await posting  # A's venue call times out now
        (placed,) = cluster.venue_orders()
        assert status == 200, answer
        assert answer["orderId"] == str(placed.id) and answer["clientOrderId"] == "slow-1"
        entry = cluster.journal.get(cluster.key_id, "SIM", "slow-1")
        assert entry.state == "ACKNOWLEDGED" and entry.venue_order_id == str(placed.id)
    finally:
        await proxy.close()


async def test_a_killed_gateway_restarted_reconciles_its_orders_at_startup(cluster):
    sim = cluster.sims["SIM"]
    proxy = await HoldingProxy(sim.base_url).start()
    try:
        a = await cluster.start("a", {"SIM": proxy.url})
        async with aiohttp.ClientSession(headers=cluster.headers) as http, asyncio.timeout(120):
            price = await _resting_price(http, a)
            body = {"market": MARKET, "side": "BUY", "type": "LIMIT", "quantity": 0.001,
                    "price": price, "clientOrderId": "restart-1"}
            posting = asyncio.create_task(_call(http, "POST", f"{a.url}/orders", json=body))
            await proxy.placed.wait()
            a.stop(signal.SIGKILL)
            with contextlib.suppress(aiohttp.ClientError):
                await posting
            assert cluster.journal.get(cluster.key_id, "SIM", "restart-1").state == "SENT"
            # Restarted (direct to the venue): its startup reconciliation settles the order,
            # with no request from anyone.
            await cluster.start("a-again")
            while True:
                entry = cluster.journal.get(cluster.key_id, "SIM", "restart-1")
                if not entry.pending:
                    break
                await asyncio.sleep(0.05)
        (placed,) = cluster.venue_orders()
        assert placed.client_id == "restart-1"
        assert entry.state == "ACKNOWLEDGED" and entry.venue_order_id == str(placed.id)
    finally:
        await proxy.close()


async def _keys_cli(pg: Pg, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astra", "keys", *args, "--database-url", pg.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return out.decode()


async def test_keys_created_and_revoked_in_the_database_apply_on_both_gateways(cluster):
    a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
    async with asyncio.timeout(60):
        token = (await _keys_cli(cluster.pg, "create", "--label", "shared")).strip()
        key_id = token.split(".")[0]
        headers = {"x-astra-api-key": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for edge in (a, b):  # a key unknown a moment ago: the negative cache expires
                while True:
                    status, _ = await _call(http, "GET", f"{edge.url}/exchanges")
                    if status == 200:
                        break
                    await asyncio.sleep(0.1)
            sockets = [await http.ws_connect(
                f"{edge.url}/ws", params={"market": MARKET, "dataType": "ORDERBOOK"})
                for edge in (a, b)]
            for ws in sockets:
                first = await ws.receive_json()
                assert first["type"] in ("snapshot", "resync"), first
            await _keys_cli(cluster.pg, "revoke", key_id)
            for ws in sockets:  # closed by each gateway's revalidation (every 0.5 s)
                while (msg := await ws.receive()).type not in (
                        aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    pass
                assert (msg.data, msg.extra) == (1008, "API key revoked"), msg
                await ws.close()
            for edge in (a, b):
                status, body = await _call(http, "GET", f"{edge.url}/exchanges")
                assert status == 401, body
