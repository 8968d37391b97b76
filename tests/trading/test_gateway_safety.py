"""Safety of the private API under crashes, retries and rate limits, on SIM over loopback:
an order sent but never acknowledged is reconciled after a restart; a 429 storm never
reaches a 418; no exchange secret reaches the database in header mode."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import ccxt.async_support as ccxt_async
import pytest

from astra.core.credentials import ExchangeCredentials
from astra.server.gateway import Gateway, venues_from_config
from astra.sim.admin import parse_deposits
from astra.sim.app import SimExchange
from astra.sim.ratelimit import RateLimits
from astra.sim.server import SimServer
from astra.store import OrderJournal
from astra.store.journal import JournalState
from astra.trading.paper import LayeredCredentials

SPOT = "SIM-SPOT-BTC-USDT"


async def call(http, method, path, **kw):
    async with asyncio.timeout(20), http.request(method, path, **kw) as resp:
        return resp.status, await resp.json()


async def test_sent_but_unacknowledged_order_is_reconciled_after_a_restart(sim, key_store):
    creds = sim.exchange.create_account(parse_deposits("USDT=10000"))
    account = sim.exchange.registry.by_api_key(creds.apiKey).id
    token = key_store.create("desk").token
    key_id = token.split(".")[0]
    journal = OrderJournal(key_store._engine)
    # The "killed" gateway: the intent was journaled and sent, the answer never recorded.
    entry, created = journal.begin(key_id, "SIM", SPOT, "crash1", {
        "market": SPOT, "side": "BUY", "type": "MARKET", "quantity": 0.001,
        "clientOrderId": "crash1"})
    assert created
    journal.mark_sent(entry.id)
    client = ccxt_async.aster({"privateKey": creds.signerPrivateKey,
                               "options": {"builderFee": False}})
    api = client.urls["api"]
    api["sapiPublic"] = api["sapiPrivate"] = sim.base_url + "/api"
    api["fapiPublic"] = api["fapiPrivate"] = sim.base_url + "/fapi"
    try:
        async with asyncio.timeout(15):
            await client.load_markets()
            sent = await client.create_order("BTC/USDT", "market", "buy", 0.001, None,
                                             {"clientOrderId": "crash1"})
    finally:
        await client.close()
    # The restarted gateway, with the key's credentials stored: it reconciles at startup.
    stored = LayeredCredentials()
    stored.add_default(key_id, ExchangeCredentials(exchange="SIM",
                                                   private_key=creds.signerPrivateKey))
    async with Gateway(venues_from_config({}, sim.base_url), key_store, port=0,
                       metrics_port=0, journal=journal, credentials=stored) as gw:
        async with asyncio.timeout(15):
            await gw._reconciler
        entry = journal.get_entry(entry.id)
        assert entry.state == JournalState.ACKNOWLEDGED and entry.venue_order_id == sent["id"]
        # A client retrying its POST gets that order back; nothing new reaches the venue.
        async with aiohttp.ClientSession(gw.base_url, headers={
                "x-astra-api-key": f"Bearer {token}"}) as http:
            status, order = await call(http, "POST", "/orders", json={
                "market": SPOT, "side": "BUY", "type": "MARKET", "quantity": 0.001,
                "clientOrderId": "crash1"})
    assert status == 200 and order["orderId"] == sent["id"] and order["status"] == "FILLED"
    orders = sim.exchange.sides["spot"].trading.by_account[(account, "BTCUSDT")]
    assert [o.client_id for o in orders] == ["crash1"]


async def test_header_mode_reconciles_on_the_next_request(sim, gateway):
    gw, token = gateway
    creds = sim.exchange.create_account(parse_deposits("USDT=10000"))
    key_id = token.split(".")[0]
    entry, _ = gw.trading.journal.begin(key_id, "SIM", SPOT, "lost2", {
        "market": SPOT, "side": "BUY", "type": "MARKET", "quantity": 0.001,
        "clientOrderId": "lost2"})
    gw.trading.journal.mark_sent(entry.id)  # never reached the venue: not found there
    headers = {"x-astra-api-key": f"Bearer {token}",
               "x-astra-exchange-private-key": creds.signerPrivateKey}
    async with aiohttp.ClientSession(gw.base_url, headers=headers) as http:
        status, opened = await call(http, "GET", "/orders", params={"market": SPOT})
    assert status == 200 and opened == []
    entry = gw.trading.journal.get_entry(entry.id)
    assert entry.reconcile_attempts == 1  # looked up by client order id, within the grace period
    assert entry.state in (JournalState.UNKNOWN, JournalState.NOT_PLACED)


@pytest.fixture
async def strict_sim():
    """A simulator that allows 20 weight a minute per IP: a storm trips it fast."""
    limits = {"spot": RateLimits(weight_per_minute=20, orders_per_minute=1000)}
    async with SimServer(SimExchange(seed=2, rate_limits=limits)) as server:
        yield server


async def test_a_429_storm_never_reaches_418(strict_sim, key_store):
    sim = strict_sim
    creds = sim.exchange.create_account(parse_deposits("USDT=10000"))
    token = key_store.create("storm").token
    headers = {"x-astra-api-key": f"Bearer {token}",
               "x-astra-exchange-private-key": creds.signerPrivateKey}
    async with Gateway(venues_from_config({}, sim.base_url), key_store, port=0,
                       metrics_port=0) as gw, aiohttp.ClientSession(gw.base_url,
                                                                    headers=headers) as http:
        statuses = []
        for _ in range(40):
            status, body = await call(http, "GET", "/balances", params={"exchange": "SIM"})
            statuses.append(status)
            if status == 429:
                assert body["code"] == "RATE_LIMITED" and body["retryAfter"] > 0
    assert 200 in statuses and 429 in statuses
    limiter = sim.exchange.limiters["spot"]
    assert limiter.banned_for("127.0.0.1") == 0  # the venue never had to ban the gateway


async def test_no_secret_in_the_database_in_header_mode(sim, gateway, key_store):
    gw, token = gateway
    creds = sim.exchange.create_account(parse_deposits("USDT=10000"))
    headers = {"x-astra-api-key": f"Bearer {token}",
               "x-astra-exchange-private-key": creds.signerPrivateKey}
    async with aiohttp.ClientSession(gw.base_url, headers=headers) as http:
        status, _ = await call(http, "POST", "/orders", json={
            "market": SPOT, "side": "BUY", "type": "MARKET", "quantity": 0.001})
        assert status == 200
        status, _ = await call(http, "POST", "/orders", json={
            "market": SPOT, "side": "BUY", "type": "MARKET", "quantity": 100.0})
        assert status == 422
    path = key_store._engine.url.database
    key_store._engine.dispose()
    data = _database_bytes(path)
    secret = creds.signerPrivateKey[2:]
    assert secret.encode() not in data and secret.upper().encode() not in data
    assert gw.trading.journal.list_orders(token.split(".")[0])  # the orders were journaled


def _database_bytes(path: str) -> bytes:
    """The SQLite file and its write-ahead log, as stored on disk."""
    return b"".join(Path(p).read_bytes() for p in (path, path + "-wal") if Path(p).exists())


class SlowFirstWriteJournal(OrderJournal):
    """The real journal, whose first new entry is answered late: concurrent retries of the
    same client order id find the entry journaled while its order has not been sent yet."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.slowed = False
        self.inline_writes = False  # its writes on a thread, as the sleep below assumes

    def begin(self, *args, **kwargs):
        entry, created = super().begin(*args, **kwargs)
        if created and not self.slowed:
            self.slowed = True
            time.sleep(0.3)  # a worker thread: the event loop runs the retries meanwhile
        return entry, created


async def test_retries_during_a_slow_journal_write_wait_for_the_one_send(sim, key_store):
    creds = sim.exchange.create_account(parse_deposits("USDT=10000"))
    account = sim.exchange.registry.by_api_key(creds.apiKey).id
    token = key_store.create("desk").token
    journal = SlowFirstWriteJournal(key_store._engine)
    headers = {"x-astra-api-key": f"Bearer {token}",
               "x-astra-exchange-private-key": creds.signerPrivateKey}
    body = {"market": SPOT, "side": "BUY", "type": "MARKET", "quantity": 0.001,
            "clientOrderId": "slow1"}
    async with Gateway(venues_from_config({}, sim.base_url), key_store, port=0,
                       metrics_port=0, journal=journal) as gw, \
            aiohttp.ClientSession(gw.base_url, headers=headers) as http:
        results = await asyncio.gather(*(call(http, "POST", "/orders", json=body)
                                         for _ in range(4)))
        entry = journal.get(token.split(".")[0], "SIM", "slow1")
    assert journal.slowed
    assert [s for s, _ in results] == [200] * 4, results
    assert len({o["orderId"] for _, o in results}) == 1
    assert entry.state == JournalState.ACKNOWLEDGED and entry.reconcile_attempts == 0
    orders = sim.exchange.sides["spot"].trading.by_account[(account, "BTCUSDT")]
    assert [o.client_id for o in orders] == ["slow1"]


class AcknowledgedMeanwhileJournal(OrderJournal):
    """The real journal, where another gateway process acknowledges the order between this
    process's "not found" lookup at the venue and its journal write."""

    def reconcile(self, entry_id, order, **kwargs):
        if order is None:
            self.acknowledge(entry_id, "777", {
                "orderId": "777", "clientOrderId": "other1", "market": SPOT, "side": "BUY",
                "type": "LIMIT", "quantity": 0.01, "filledQuantity": 0.0, "status": "NEW",
                "price": 1000.0})
        return super().reconcile(entry_id, order, **kwargs)


async def test_not_found_after_another_process_acknowledged_keeps_the_acknowledgement(
        sim, key_store):
    creds = sim.exchange.create_account(parse_deposits("USDT=10000"))
    token = key_store.create("desk").token
    key_id = token.split(".")[0]
    journal = AcknowledgedMeanwhileJournal(key_store._engine)
    request = {"market": SPOT, "side": "BUY", "type": "LIMIT", "quantity": 0.01,
               "price": 1000.0, "clientOrderId": "other1"}
    entry, _ = journal.begin(key_id, "SIM", SPOT, "other1", request)
    journal.mark_sent(entry.id)
    headers = {"x-astra-api-key": f"Bearer {token}",
               "x-astra-exchange-private-key": creds.signerPrivateKey}
    async with Gateway(venues_from_config({}, sim.base_url), key_store, port=0,
                       metrics_port=0, journal=journal) as gw, \
            aiohttp.ClientSession(gw.base_url, headers=headers) as http:
        status, order = await call(http, "POST", "/orders", json=request)
    assert status == 200, order
    assert order["orderId"] == "777" and order["status"] == "NEW"
    assert journal.get_entry(entry.id).state == JournalState.ACKNOWLEDGED
