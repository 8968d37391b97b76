"""The native signed Aster client (``astra.venues.aster.native``) against the real simulator, and
the order path built on it: signatures (ccxt's own and the venue docs' example), creates,
cancels and rejections mapped as ccxt's path maps them, a refused secret, 429 + Retry-After,
a timeout reported UNKNOWN then reconciled, the intent committed before the order's first byte
reaches the venue, the deferred acknowledgement, and the round-trip metrics."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sqlite3
import threading

import aiohttp
import msgspec
import pytest
import sqlalchemy as sa
from aiohttp import web

from astra.core import InsufficientBalance, InvalidOrder, RateLimited
from astra.core._trading import OrderStatus, PlaceOrder
from astra.core.credentials import ExchangeCredentials
from astra.sim.admin import parse_deposits
from astra.sim.app import SimExchange
from astra.sim.ratelimit import RateLimits
from astra.sim.server import SimServer
from astra.store import open_database
from astra.store.journal import ACK_DELAY, JournalBusy, JournalState, OrderJournal
from astra.telemetry import Telemetry
from astra.trading.errors import map_venue_error
from astra.trading.service import TradingService
from astra.venues.aster import AsterUrls, AsterVenue
from astra.venues.aster.native import v3_signature
from astra.venues.aster.trading import AsterPrivate

SPOT = "SIM-SPOT-BTC-USDT"


def _order(**fields) -> PlaceOrder:
    return msgspec.convert({"market": SPOT, "side": "BUY", "type": "MARKET", "quantity": 0.001,
                            **fields}, PlaceOrder)


class _FixedNonce:
    def __init__(self) -> None:
        self.n = 1_756_000_000_000_000

    def __call__(self) -> int:
        self.n += 1
        return self.n


# --- signatures -------------------------------------------------------------------------------

def test_v1_signature_is_the_docs_example():
    # Aster spot API docs (seed 002), "Example 1": the HMAC SHA256 of the parameter string.
    secret = "fdde510a2b71fa43a43bff3e3cf7819c8c66df34633d338050f4f59664b3b313"
    client = AsterPrivate({"apiKey": "4452d7e2ed4da80b74105e02d06328c71a34488c9fdd60a5a0900d42d"
                                     "584b795", "secret": secret})
    native = client.native
    assert native.hmac_v1
    query = ("symbol=BNBUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=5&price=1.1"
             "&recvWindow=5000&timestamp=1756187806000")
    assert native.v1_signature(query) == (
        "e09169bf6c02ec4b29fa1bdc3a967f92c8c6cfcde0551ba1d477b2d3cf4c51b0")
    # and a signed query carries the HMAC of exactly what precedes it
    signed = native.signed_query({"symbol": "BNBUSDT", "side": "BUY"})
    payload, _, signature = signed.rpartition("&signature=")
    assert payload.startswith("symbol=BNBUSDT&side=BUY&timestamp=")
    assert signature == hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def test_v3_signed_query_is_byte_for_byte_ccxts():
    key = "0x" + "11" * 32
    main = "0x" + "ab" * 20
    for account in (None, main):  # the key's own wallet, and an API wallet for a main one
        creds = ExchangeCredentials(exchange="SIM", private_key=key, account=account)
        ccxt_nonces, native_nonces = _FixedNonce(), _FixedNonce()
        client = AsterPrivate({**creds.ccxt_config()}, nonces=ccxt_nonces)
        client.urls["api"]["sapiPrivate"] = "http://127.0.0.1:1/api"
        native = AsterPrivate({**creds.ccxt_config()}, nonces=native_nonces).native
        params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.010",
                  "price": "65000.1", "timeInForce": "GTC", "newClientOrderId": "astra-x/1"}
        expected = client.sign("v3/order", ["sapiPrivate"], "POST", dict(params))["body"]
        assert native.signed_query(dict(params)) == expected
        assert f"&user={(account or creds.signer_address).lower()}&" in expected


def test_v3_signature_is_ccxts_for_any_message():
    from coincurve import PrivateKey

    client = AsterPrivate({"privateKey": "0x" + "22" * 32})
    for msg in ("", "a=1", "nonce=1&user=0x1&signer=0x2&symbol=BTCUSDT&quantity=1%2C5"):
        encoded = client.eth_encode_structured_data(
            {"name": "AsterSignTransaction", "version": "1", "chainId": 1666,
             "verifyingContract": "0x" + "00" * 20},
            {"Message": [{"name": "msg", "type": "string"}]}, {"msg": msg})
        assert v3_signature(PrivateKey(bytes.fromhex("22" * 32)), msg) == client.sign_message(
            encoded, "0x" + "22" * 32)


# --- the client against the simulator ---------------------------------------------------------

async def _clients(sim, creds: ExchangeCredentials, http: aiohttp.ClientSession):
    client = AsterPrivate({**creds.ccxt_config(), "session": http, "enableRateLimit": False,
                           "options": {**creds.ccxt_config().get("options", {}),
                                       "builderFee": False}})
    api = client.urls["api"]
    api["sapiPublic"] = api["sapiPrivate"] = sim.base_url + "/api"
    api["fapiPublic"] = api["fapiPrivate"] = sim.base_url + "/fapi"
    await client.load_markets()
    return client


async def test_native_create_and_cancel_are_what_ccxt_parses(sim):
    acct = sim.exchange.create_account(parse_deposits("USDT=100000,BTC=1"))
    creds = ExchangeCredentials(exchange="SIM", private_key=acct.signerPrivateKey)
    async with aiohttp.ClientSession() as http, asyncio.timeout(20):
        client = await _clients(sim, creds, http)
        native = client.native
        bid = sim.exchange.state("spot", "BTCUSDT").engine.best_bid() / 100
        price = client.price_to_precision("BTC/USDT", bid - 500)
        placed = await native.create_order("BTC/USDT", "limit", "buy", "0.010", price,
                                           {"clientOrderId": "nat-1", "timeInForce": "GTC"})
        assert placed["clientOrderId"] == "nat-1" and placed["status"] == "open"
        assert placed["price"] == float(price) and placed["amount"] == 0.01
        fetched = await client.fetch_order(placed["id"], "BTC/USDT")  # ccxt's own view
        assert fetched["id"] == placed["id"] and fetched["status"] == "open"
        canceled = await native.cancel_order("", "BTC/USDT", {"clientOrderId": "nat-1"})
        assert canceled["id"] == placed["id"] and canceled["status"] == "canceled"
        market = await native.create_order("BTC/USDT", "market", "sell", "0.001")
        assert market["status"] == "closed" and market["filled"] == 0.001
        await client.close()


@pytest.mark.parametrize("case", ["insufficient", "unknown-order", "too-large"])
async def test_rejections_map_as_through_ccxt(sim, case):
    acct = sim.exchange.create_account(parse_deposits("USDT=100"))
    creds = ExchangeCredentials(exchange="SIM", private_key=acct.signerPrivateKey)
    async with aiohttp.ClientSession() as http, asyncio.timeout(20):
        client = await _clients(sim, creds, http)
        errors = []
        for impl in (client, client.native):
            try:
                if case == "insufficient":
                    await impl.create_order("BTC/USDT", "market", "buy", "1")
                elif case == "unknown-order":
                    await impl.cancel_order("123456789", "BTC/USDT")
                else:
                    await impl.create_order("BTC/USDT", "market", "buy", "50")
            except Exception as exc:
                errors.append((type(exc), map_venue_error(exc, "SIM", sent=True)))
        await client.close()
    (ccxt_type, ccxt_err), (native_type, native_err) = errors
    assert native_type is ccxt_type
    assert (native_err.code, native_err.status, native_err.venue, native_err.venue_code) == (
        ccxt_err.code, ccxt_err.status, "SIM", ccxt_err.venue_code)
    assert native_err.venue_code is not None and native_err.message == ccxt_err.message
    assert native_err.code == {"insufficient": "INSUFFICIENT_BALANCE",
                               "unknown-order": "ORDER_NOT_FOUND",
                               "too-large": "INVALID_ORDER"}[case], native_err.message


async def test_a_wrong_secret_is_refused(sim):
    acct = sim.exchange.create_account(parse_deposits("USDT=100"))
    for creds in (
        ExchangeCredentials(exchange="SIM", api_key=acct.apiKey, secret="0" * 64),  # v1
        ExchangeCredentials(exchange="SIM", private_key="0x" + "33" * 32),  # v3, no such signer
    ):
        async with aiohttp.ClientSession() as http, asyncio.timeout(20):
            client = await _clients(sim, creds, http)
            with pytest.raises(Exception) as caught:
                await client.native.create_order("BTC/USDT", "market", "buy", "0.001")
            await client.close()
        err = map_venue_error(caught.value, "SIM", sent=True)
        assert err.code == "INVALID_EXCHANGE_CREDENTIALS" and err.status == 401, err
        assert err.venue_code in ("-1022", "-2014", "-2015")


# --- the order path -----------------------------------------------------------------------------

class VenueProxy:
    """A loopback proxy in front of the simulator: ``on_order(body)`` runs when an order
    placement arrives (before it is forwarded); while ``holding``, placements' answers are held
    until ``release`` is set."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.on_order = None
        self.holding = False
        self.release = asyncio.Event()
        self.placements = 0
        self.url = ""

    async def __aenter__(self) -> VenueProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        self.release.set()
        await self.http.close()
        await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        data = await request.read()
        placement = request.method == "POST" and request.path.endswith("/v3/order")
        if placement:
            self.placements += 1
            if self.on_order is not None:
                self.on_order(data)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "accept-encoding")}
        async with self.http.request(request.method, self.upstream + request.path_qs,
                                     headers=headers, data=data) as resp:
            body, status = await resp.read(), resp.status
            out = {k: v for k, v in resp.headers.items() if k.lower() == "retry-after"}
        if placement and self.holding:
            await self.release.wait()
        return web.Response(body=body, status=status, headers=out,
                            content_type="application/json")


def _service(url: str, journal: OrderJournal, **kw) -> tuple[TradingService, AsterVenue]:
    venue = AsterVenue("SIM", AsterUrls.for_simulator(url))
    return TradingService({"SIM": venue}, journal, **kw), venue


async def test_the_intent_is_committed_before_the_order_reaches_the_venue(sim, tmp_path):
    acct = sim.exchange.create_account(parse_deposits("USDT=100000"))
    creds = ExchangeCredentials(exchange="SIM", private_key=acct.signerPrivateKey)
    engine = open_database(data_dir=tmp_path / "data")
    journal = OrderJournal(engine)
    # A separate connection to the same file: it sees committed rows only.
    witness = sa.create_engine(engine.url)
    seen: list[tuple[str, str | None]] = []

    def check(body: bytes) -> None:
        cid = dict(p.split("=", 1) for p in body.decode().split("&"))["newClientOrderId"]
        with witness.connect() as conn:
            row = conn.execute(sa.text("SELECT state FROM orders_journal WHERE "
                                       "client_order_id = :c"), {"c": cid}).first()
        seen.append((cid, row[0] if row else None))

    async with VenueProxy(sim.base_url) as proxy, asyncio.timeout(30):
        proxy.on_order = check
        service, venue = _service(proxy.url, journal)
        try:
            for i in range(3):
                order = await service.place("k1", creds, _order(clientOrderId=f"ord{i}"))
                assert order.status == OrderStatus.FILLED
        finally:
            await service.close()
            await venue.close()
    assert seen == [(f"ord{i}", "SENT") for i in range(3)]
    witness.dispose()


async def test_the_acknowledgement_is_deferred_yet_read_back_in_process(sim, tmp_path):
    acct = sim.exchange.create_account(parse_deposits("USDT=100000"))
    creds = ExchangeCredentials(exchange="SIM", private_key=acct.signerPrivateKey)
    engine = open_database(data_dir=tmp_path / "data")
    journal = OrderJournal(engine)
    witness = sa.create_engine(engine.url)
    service, venue = _service(sim.base_url, journal)
    try:
        async with asyncio.timeout(20):
            order = await service.place("k1", creds, _order(clientOrderId="def1"))
            # Not committed yet: the answer came first ...
            with witness.connect() as conn:
                state = conn.execute(sa.text("SELECT state FROM orders_journal WHERE "
                                             "client_order_id = 'def1'")).scalar()
            assert state == "SENT" and journal._deferred.pending == 1
            # ... but any read of this journal sees it (here, before the loop turns).
            entry = journal.get("k1", "SIM", "def1")
            assert entry.state == JournalState.ACKNOWLEDGED
            assert entry.venue_order_id == order.order_id
            second = await service.place("k1", creds, _order(clientOrderId="def2"))
            # On its own, it is committed ACK_DELAY later at most (the loop's timer).
            for _ in range(1000):  # (bounded by the test's timeout too)
                if _state(witness, "def2") == "ACKNOWLEDGED":
                    break
                await asyncio.sleep(ACK_DELAY)
            assert _state(witness, "def2") == "ACKNOWLEDGED" and second.order_id
    finally:
        await service.close()
        await venue.close()
        witness.dispose()


async def test_the_next_intent_commits_the_waiting_acknowledgement(sim, tmp_path):
    acct = sim.exchange.create_account(parse_deposits("USDT=100000"))
    creds = ExchangeCredentials(exchange="SIM", private_key=acct.signerPrivateKey)
    engine = open_database(data_dir=tmp_path / "data")
    journal = OrderJournal(engine)
    journal._deferred.delay = 60.0  # no timer within the test: only the next intent commits it
    witness = sa.create_engine(engine.url)
    service, venue = _service(sim.base_url, journal)
    try:
        async with asyncio.timeout(20):
            first = await service.place("k1", creds, _order(clientOrderId="grp1"))
            assert _state(witness, "grp1") == "SENT" and journal._deferred.pending == 1
            second = await service.place("k1", creds, _order(clientOrderId="grp2"))
            # grp2's intent went out in one commit with grp1's acknowledgement
            assert _state(witness, "grp1") == "ACKNOWLEDGED"
            assert _state(witness, "grp2") == "SENT" and journal._deferred.pending == 1
            with witness.connect() as conn:
                venue_id = conn.execute(sa.text("SELECT venue_order_id FROM orders_journal "
                                                "WHERE client_order_id = 'grp1'")).scalar()
            assert venue_id == first.order_id
            journal.flush()
            assert _state(witness, "grp2") == "ACKNOWLEDGED" and second.order_id
    finally:
        await service.close()
        await venue.close()
        witness.dispose()


def _state(witness: sa.Engine, client_order_id: str) -> str | None:
    with witness.connect() as conn:
        return conn.execute(sa.text("SELECT state FROM orders_journal WHERE client_order_id = "
                                    ":c"), {"c": client_order_id}).scalar()


async def test_a_locked_database_sends_the_write_to_a_thread(sim, tmp_path):
    acct = sim.exchange.create_account(parse_deposits("USDT=100000"))
    creds = ExchangeCredentials(exchange="SIM", private_key=acct.signerPrivateKey)
    engine = open_database(data_dir=tmp_path / "data")
    journal = OrderJournal(engine)
    assert journal.inline_writes
    locker = sqlite3.connect(engine.url.database, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's write lock
    try:
        with pytest.raises(JournalBusy):
            journal.inline(journal.begin, "k1", "SIM", SPOT, "busy0", {"a": 1}, sent=True)
        service, venue = _service(sim.base_url, journal)
        try:
            threading.Timer(0.3, locker.execute, ("COMMIT",)).start()
            async with asyncio.timeout(20):
                order = await service.place("k1", creds, _order(clientOrderId="busy1"))
            assert order.status == OrderStatus.FILLED
        finally:
            await service.close()
            await venue.close()
    finally:
        locker.close()
    assert journal.get("k1", "SIM", "busy0") is None  # the refused inline write wrote nothing
    assert journal.get("k1", "SIM", "busy1").state == JournalState.ACKNOWLEDGED


async def test_a_timeout_is_unknown_then_reconciled(sim, tmp_path):
    acct = sim.exchange.create_account(parse_deposits("USDT=100000"))
    account = sim.exchange.registry.by_api_key(acct.apiKey).id
    creds = ExchangeCredentials(exchange="SIM", private_key=acct.signerPrivateKey)
    journal = OrderJournal(open_database(data_dir=tmp_path / "data"))
    telemetry = Telemetry()
    async with VenueProxy(sim.base_url) as proxy, asyncio.timeout(30):
        proxy.holding = True
        service, venue = _service(proxy.url, journal, timeout=0.5, telemetry=telemetry)
        try:
            order = await service.place("k1", creds, _order(clientOrderId="late1"))
            assert order.status == OrderStatus.UNKNOWN and order.order_id is None
            assert journal.get("k1", "SIM", "late1").state == JournalState.UNKNOWN
            proxy.holding = False
            proxy.release.set()
            assert await service.reconcile_pending("k1", "SIM", creds) == 1
        finally:
            await service.close()
            await venue.close()
    entry = journal.get("k1", "SIM", "late1")
    (placed,) = sim.exchange.sides["spot"].trading.by_account[(account, "BTCUSDT")]
    assert entry.state == JournalState.ACKNOWLEDGED and entry.venue_order_id == str(placed.id)
    assert proxy.placements == 1  # reconciled by lookup, never sent twice
    assert telemetry.registry.get_sample_value("astra_order_round_trip_seconds_count", {
        "venue": "SIM", "operation": "create", "outcome": "unknown"}) == 1


async def test_a_429_closes_the_gate_for_its_retry_after(tmp_path):
    # A request weight budget so small that a few orders exhaust it: the venue answers 429
    # with Retry-After, the limiter closes its gate for that long, and the next order is
    # refused by the gateway without reaching the venue.
    limits = {"spot": RateLimits(weight_per_minute=30, orders_per_minute=10000)}
    async with SimServer(SimExchange(seed=3, rate_limits=limits)) as sim, asyncio.timeout(30):
        acct = sim.exchange.create_account(parse_deposits("USDT=100000"))
        account = sim.exchange.registry.by_api_key(acct.apiKey).id
        creds = ExchangeCredentials(exchange="SIM", private_key=acct.signerPrivateKey)
        service, venue = _service(sim.base_url, OrderJournal(open_database(
            data_dir=tmp_path / "data")))

        def placed() -> int:
            return len(sim.exchange.sides["spot"].trading.by_account.get(
                (account, "BTCUSDT"), []))

        try:
            limited = None
            for i in range(60):
                try:
                    await service.place("k1", creds, _order(clientOrderId=f"r{i}"))
                except RateLimited as exc:
                    limited, cid = exc, f"r{i}"
                    break
            assert limited is not None and limited.venue == "SIM"
            assert 0 < limited.retry_after <= 60  # the venue's Retry-After, in seconds
            _, market = await service.market(SPOT)
            gate = service._limiter("SIM", market).retry_after()
            assert gate is not None and 0 < gate <= 60
            before = placed()
            with pytest.raises(RateLimited) as again:  # refused here: never reaches the venue
                await service.place("k1", creds, _order(clientOrderId="after"))
            assert placed() == before and 0 < again.value.retry_after <= gate
            assert service.journal.get("k1", "SIM", cid).state == JournalState.REJECTED
        finally:
            await service.close()
            await venue.close()


async def test_round_trips_and_journal_writes_are_observed(sim, tmp_path):
    acct = sim.exchange.create_account(parse_deposits("USDT=100000"))
    creds = ExchangeCredentials(exchange="SIM", private_key=acct.signerPrivateKey)
    telemetry = Telemetry()
    journal = OrderJournal(open_database(data_dir=tmp_path / "data"), telemetry=telemetry)
    service, venue = _service(sim.base_url, journal, telemetry=telemetry)
    sample = telemetry.registry.get_sample_value
    try:
        async with asyncio.timeout(20):
            bid = sim.exchange.state("spot", "BTCUSDT").engine.best_bid() / 100
            resting = await service.place("k1", creds, _order(
                type="LIMIT", price=round(bid - 500, 2), timeInForce="GTC", quantity=0.01,
                clientOrderId="m1"))
            with pytest.raises((InsufficientBalance, InvalidOrder)):
                await service.place("k1", creds, _order(quantity=50.0, clientOrderId="m2"))
            canceled = await service.cancel("k1", creds, SPOT, resting.order_id, None)
            assert canceled.status == OrderStatus.CANCELED
    finally:
        await service.close()
        await venue.close()
    for operation, outcome in (("create", "ok"), ("create", "rejected"), ("cancel", "ok")):
        assert sample("astra_order_round_trip_seconds_count", {
            "venue": "SIM", "operation": operation, "outcome": outcome}) == 1, operation
    assert sample("astra_journal_write_seconds_count", {"operation": "begin"}) == 2
    assert sample("astra_journal_write_seconds_count", {"operation": "ack"}) == 1
    assert sample("astra_journal_write_seconds_count", {"operation": "reject"}) == 1
    assert sample("astra_journal_write_seconds_count", {"operation": "update"}) == 1
