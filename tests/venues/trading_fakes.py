"""What the per-venue private-trading tests (``tests/venues/*/test_trading.py``) share.

- ``FakeVenue``: a venue's private REST on 127.0.0.1 (no network) that records every request
  it receives as a ``Seen`` and answers each ``(method, path)`` with a scripted JSON body;
- ``trading_service``: a ``TradingService`` over one venue with an order journal on a
  temporary SQLite file; ``venue_fixtures``: the ``fake``/``venue``/``service`` fixtures over
  it; ``trading_env``: the same as one ``TradingEnv`` (fake, venue, service, journal,
  credentials), with ``journal_unknown`` and ``assert_never_sent``;
- small helpers: ``run`` (a call under a timeout), ``documented`` (a doc-shaped body from a
  JSON file), ``refused_fast`` (a call refused at a closed gate),
  ``rejected_for_balance`` and ``reconciled_after_unknown_outcome`` (what placing an order
  must leave in the journal in those cases), ``place_through_gateway`` (``POST /orders`` end
  to end, the exchange key in headers).

Each venue's wire format, signature check, endpoints and answers stay in its own test file.
Import as ``from tests.venues.trading_fakes import ...`` (the test packages are imported with
``--import-mode=importlib``; this name resolves from every venue's directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from tests.venues.loopback import serve

from astra.core import InsufficientBalance, RateLimited
from astra.core._trading import Order, OrderStatus, PlaceOrder
from astra.core.credentials import ExchangeCredentials
from astra.store import OrderJournal, open_database
from astra.store.journal import JournalEntry, JournalState
from astra.trading.service import TradingService
from astra.venues.limiter import VenueLimiter

Route = tuple[str, str]  # (method, path)


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    host: str
    path: str
    path_qs: str  # path and query string exactly as sent (still percent-encoded)
    query_string: str  # the query string as aiohttp decodes it
    headers: dict[str, str]
    body: str
    url: str  # as the client addressed it (http://127.0.0.1:port/path?query)

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    @property
    def form(self) -> dict[str, str]:
        """The body as a form (``application/x-www-form-urlencoded``)."""
        return dict(parse_qsl(self.body, keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        """Everything the request carried, for "the secret is never sent" checks."""
        headers = (f"{name}: {value}" for name, value in self.headers.items())
        return "\n".join([self.path_qs, self.query_string, self.body, *headers])


class FakeVenue:
    """A venue's private REST on one loopback port; every request lands in ``seen``.

    A request of ``(method, path)`` is answered with, in this order of preference:
    the next ``answer(...)`` scripted for the route (the last one scripted repeats); the
    route's body in ``answers`` (status 200, every time); else ``unscripted``, a
    ``(status, body)`` in the venue's error shape."""

    def __init__(self, answers: dict[Route, Any] | None = None, *,
                 unscripted: tuple[int, Any]) -> None:
        self.answers: dict[Route, Any] = dict(answers or {})
        self.unscripted = unscripted
        self.scripts: dict[Route, list[tuple[int, Any, dict]]] = {}
        self.seen: list[Seen] = []
        self.base_url = ""

    def answer(self, method: str, path: str, body: Any, status: int = 200,
               headers: dict | None = None) -> None:
        """Script the next answer of a route; the last one scripted repeats."""
        self.scripts.setdefault((method, path), []).append((status, body, headers or {}))

    def calls(self, *route: str) -> list[Seen]:
        """The requests of ``calls(method, path)``, or of ``calls(path)`` whatever the method."""
        return [s for s in self.seen if (s.method, s.path)[-len(route):] == route]

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append(Seen(request.method, request.host, request.path, request.raw_path,
                              request.query_string, dict(request.headers),
                              await request.text(), f"{self.base_url}{request.raw_path}"))
        key = (request.method, request.path)
        script = self.scripts.get(key)
        if script:
            status, body, headers = script.pop(0) if len(script) > 1 else script[0]
        elif key in self.answers:
            status, body, headers = 200, self.answers[key], {}
        else:
            (status, body), headers = self.unscripted, {}
        return web.json_response(body, status=status, headers=headers)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeVenue]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        async with serve(app) as self.base_url:
            yield self


async def run(coro, seconds: float = 15):
    async with asyncio.timeout(seconds):
        return await coro


@contextlib.asynccontextmanager
async def trading_service(exchange: str, venue, tmp_path: Path,
                          limiter: VenueLimiter | None = None) -> AsyncIterator[TradingService]:
    """``TradingService`` over one venue, its order journal on a SQLite file in
    ``tmp_path``; afterwards its cached clients are closed and the database disposed.
    ``limiter``: the venue's, or the service's default."""
    engine = open_database(data_dir=tmp_path)
    service = TradingService({exchange: venue}, OrderJournal(engine), timeout=5.0,
                             limiters={exchange: limiter} if limiter else None)
    try:
        yield service
    finally:
        await service.close()
        engine.dispose()


def venue_fixtures(exchange: str, make_fake: Callable[[], FakeVenue],
                   make_venue: Callable[[str], Any]):
    """A test module's ``fake``, ``venue`` and ``service`` fixtures, bound as
    ``fake, venue, service = venue_fixtures(...)``: ``make_fake()`` running, the venue
    ``make_venue(fake.base_url)`` (closed afterwards) and a ``trading_service`` over it."""

    @pytest.fixture(name="fake")
    async def fake_fixture():
        async with make_fake().running() as server:
            yield server

    @pytest.fixture(name="venue")
    async def venue_fixture(fake):
        venue = make_venue(fake.base_url)
        yield venue
        await venue.close()

    @pytest.fixture(name="service")
    async def service_fixture(venue, tmp_path):
        async with trading_service(exchange, venue, tmp_path) as service:
            yield service

    return fake_fixture, venue_fixture, service_fixture


@dataclass
class TradingEnv:
    """What a test drives: the fake, the venue on it, the service over the venue, its
    journal and the key's credentials."""

    fake: FakeVenue
    venue: Any
    service: TradingService
    journal: OrderJournal
    creds: ExchangeCredentials

    async def run(self, coro):
        return await run(coro, seconds=10)

    def journal_unknown(self, key_id: str, request: dict) -> JournalEntry:
        """An order sent (``request``, as the gateway takes it) with no answer: journaled as
        of unknown outcome, for ``reconcile_pending`` to settle."""
        entry, _ = self.journal.begin(key_id, self.creds.exchange, request["market"],
                                      request["clientOrderId"], request)
        self.journal.mark_sent(entry.id)
        self.journal.mark_unknown(entry.id, TimeoutError("no answer"))
        return entry

    def assert_never_sent(self, *values: str) -> None:
        """Requests were made, and none of ``values`` is in any of them."""
        assert self.fake.seen
        for seen in self.fake.seen:
            for value in values:
                assert value not in seen.text()


@contextlib.asynccontextmanager
async def trading_env(fake: FakeVenue, make_venue: Callable[[str], Any],
                      creds: ExchangeCredentials, tmp_path: Path,
                      limiter: VenueLimiter) -> AsyncIterator[TradingEnv]:
    """The fake running, the venue ``make_venue(fake.base_url)`` and a service over it for
    ``creds.exchange``; the venue is closed afterwards."""
    async with fake.running():
        venue = make_venue(fake.base_url)
        try:
            async with trading_service(creds.exchange, venue, tmp_path, limiter) as service:
                yield TradingEnv(fake, venue, service, service.journal, creds)
        finally:
            await venue.close()


def documented(file: Path, *keys: str, **placeholders: str) -> Any:
    """The body at ``keys`` in a JSON file of doc-shaped answers, each ``{name}`` in it
    replaced by ``placeholders[name]``."""
    body = json.loads(file.read_text())
    for key in keys:
        body = body[key]
    text = json.dumps(body)
    for name, value in placeholders.items():
        text = text.replace(f"{{{name}}}", value)
    return json.loads(text)


async def refused_fast(call) -> RateLimited:
    """``call`` refused with RateLimited within a second: the venue's gate is closed."""
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        await run(call)
    assert time.monotonic() - started < 1.0
    return caught.value



async def rejected_for_balance(service: TradingService, key_id: str,
                               creds: ExchangeCredentials, body: PlaceOrder,
                               venue_code: str) -> InsufficientBalance:
    """Placing ``body`` fails with INSUFFICIENT_BALANCE (HTTP 422) carrying the venue's
    ``venue_code``, and the journal holds the order as rejected with it. Returns the error."""
    with pytest.raises(InsufficientBalance) as caught:
        await run(service.place(key_id, creds, body))
    err = caught.value
    assert (err.code, err.status, err.venue, err.venue_code) == (
        "INSUFFICIENT_BALANCE", 422, creds.exchange, venue_code)
    entry = service.journal.get(key_id, creds.exchange, body.client_order_id)
    assert entry.state == JournalState.REJECTED and entry.error["venueCode"] == venue_code
    return err


async def reconciled_after_unknown_outcome(service: TradingService, key_id: str,
                                           creds: ExchangeCredentials, body: PlaceOrder,
                                           venue_order_id: str) -> Order:
    """Placing ``body`` has an unknown outcome (so says the answer, and the journal); then
    ``reconcile_pending`` settles that one order as acknowledged, with ``venue_order_id``.
    Returns what ``place`` answered."""
    placed = await run(service.place(key_id, creds, body))
    assert placed.status == OrderStatus.UNKNOWN
    journal, cid = service.journal, body.client_order_id
    assert journal.get(key_id, creds.exchange, cid).state == JournalState.UNKNOWN
    assert await run(service.reconcile_pending(key_id, creds.exchange, creds)) == 1
    entry = journal.get(key_id, creds.exchange, cid)
    assert entry.state == JournalState.ACKNOWLEDGED and entry.venue_order_id == venue_order_id
    return placed


async def place_through_gateway(exchange: str, venue, key_store, api_key: str, secret: str,
                                order: dict) -> dict:
    """``POST /orders`` of ``order`` through a ``Gateway`` over the venue, with a new Astra
    key and the exchange key and secret in headers; the order answered (HTTP 200)."""
    from astra.server.gateway import Gateway

    token = key_store.create(f"{exchange.lower()}-trading").token
    headers = {"x-astra-api-key": f"Bearer {token}", "x-astra-exchange-key": api_key,
               "x-astra-exchange-secret": secret}
    async with (
        Gateway({exchange: venue}, key_store, port=0, metrics_port=0, linger=1.0) as gw,
        aiohttp.ClientSession(gw.base_url, headers=headers) as http,
        asyncio.timeout(20),
        http.post("/orders", json=order) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()
