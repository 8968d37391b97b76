"""Error statuses and shapes on the real gateway: aiohttp's own errors as JSON, a client gone
mid-body, stored credentials under another master key, venue addresses kept out of messages."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import aiohttp
from tests.venues.loopback import until

from astra.server.errors import CLIENT_CLOSED
from astra.server.gateway import Gateway, venues_from_config
from astra.store import CredentialStore, OrderJournal
from astra.trading.credentials import ExchangeCredentials

SPOT = "SIM-SPOT-BTC-USDT"


async def _call(gw, token, method, path, **kw) -> tuple[int, dict, aiohttp.typedefs.LooseHeaders]:
    headers = {"x-astra-api-key": f"Bearer {token}", **kw.pop("headers", {})}
    async with aiohttp.ClientSession(gw.base_url, headers=headers) as http, asyncio.timeout(20):
        async with http.request(method, path, **kw) as resp:
            assert resp.content_type == "application/json", await resp.text()
            return resp.status, await resp.json(), resp.headers


async def test_a_body_over_1_mib_is_a_json_413(gateway):
    gw, token = gateway
    status, body, _ = await _call(gw, token, "POST", "/orders", data=b"x" * (1024 * 1024 + 1),
                                  headers={"Content-Type": "application/json"})
    assert status == 413 and body["code"] == "PAYLOAD_TOO_LARGE"
    assert str(1024 * 1024) in body["message"]


async def test_ws_without_upgrade_is_a_json_400_naming_the_handshake(gateway):
    gw, token = gateway
    status, body, _ = await _call(gw, token, "GET", "/ws",
                                  params={"market": SPOT, "dataType": "TRADE"})
    assert status == 400 and body["code"] == "WEBSOCKET_UPGRADE_REQUIRED"
    assert "Upgrade: websocket" in body["message"]


async def test_405_is_json_with_allow_and_404_is_json(gateway):
    gw, token = gateway
    status, body, headers = await _call(gw, token, "POST", "/markets")
    assert status == 405 and body["code"] == "METHOD_NOT_ALLOWED"
    assert set(headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert "POST is not allowed on /markets" in body["message"]
    status, body, headers = await _call(gw, token, "PUT", "/orders")
    assert status == 405 and set(headers["Allow"].split(",")) == {"GET", "HEAD", "POST", "DELETE"}
    status, body, _ = await _call(gw, token, "GET", "/no/such/path")
    assert (status, body["code"]) == (404, "NOT_FOUND") and "/no/such/path" in body["message"]
    assert gw.metrics.requests[("unmatched", 404)] == 1


async def test_a_client_gone_mid_body_is_counted_499_and_not_logged_as_an_error(
    gateway, caplog
):
    gw, token = gateway
    caplog.set_level(logging.DEBUG, logger="astra")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(
        f"POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nx-astra-api-key: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    async with asyncio.timeout(10):
        # aiohttp answers 100 Continue once the request is routed to its handler
        assert await reader.readline() == b"HTTP/1.1 100 Continue\r\n"
        writer.write(b'{"market":')  # a tenth of the body, then the client goes away
        await writer.drain()
        writer.close()
    await until(lambda: gw.metrics.requests, asyncio.Event())  # polled every 0.2 s
    assert dict(gw.metrics.requests) == {("/orders", CLIENT_CLOSED): 1}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert f'route="/orders",status="{CLIENT_CLOSED}"' in gw.metrics.render()


async def test_credentials_stored_under_another_master_key_are_a_clear_503(sim, key_store,
                                                                         caplog):
    issued, other = key_store.create("desk"), key_store.create("other desk")
    CredentialStore(key_store._engine, os.urandom(32)).set(issued.key_id, ExchangeCredentials(
        exchange="SIM", private_key=sim.exchange.create_account({}).signerPrivateKey))
    restarted = CredentialStore(key_store._engine, os.urandom(32))  # another ASTRA_MASTER_KEY
    restarted.set(other.key_id, ExchangeCredentials(
        exchange="SIM", private_key=sim.exchange.create_account({}).signerPrivateKey))
    # Orders of unknown outcome for both keys (sent, never answered), the unreadable one's
    # first: startup reconciliation must skip it and still settle the other.
    journal = OrderJournal(key_store._engine, grace_ms=0)  # "not found" settles at once
    entries = []
    for key_id, cid in ((issued.key_id, "lost1"), (other.key_id, "lost2")):
        entry, _ = journal.begin(key_id, "SIM", SPOT, cid, {
            "market": SPOT, "side": "BUY", "type": "MARKET", "quantity": 0.001,
            "clientOrderId": cid})
        journal.mark_sent(entry.id)
        entries.append(entry)
    async with Gateway(venues_from_config({}, sim.base_url), key_store, port=0, metrics_port=0,
                       journal=journal, credentials=restarted) as gw:
        async with asyncio.timeout(15):
            assert await gw._reconciler == 1
        unreadable, readable = (journal.get_entry(e.id) for e in entries)
        assert unreadable.pending and not readable.pending
        for method, path, params in (("GET", "/balances", {"exchange": "SIM"}),
                                     ("GET", "/orders", {"market": SPOT})):
            status, body, _ = await _call(gw, issued.token, method, path, params=params)
            assert status == 503, body
            # No venue rejected anything: no "venue" (that marks a venue's own answer); the
            # exchange concerned is named in the message.
            assert body["code"] == "CREDENTIALS_UNREADABLE" and "venue" not in body
            assert "venueCode" not in body
            assert "stored SIM credentials" in body["message"]
            assert "cannot be decrypted with this ASTRA_MASTER_KEY" in body["message"]
        assert gw.metrics.requests[("/balances", 503)] == 1
    assert "unhandled error" not in caplog.text
    assert "cannot be decrypted" in caplog.text or "another master key" in caplog.text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_venue_outage_messages_carry_no_address(key_store):
    token = key_store.create("t").token
    port = _closed_port()  # the venue is down: nothing listens there
    async with Gateway(venues_from_config({}, f"http://127.0.0.1:{port}"), key_store, port=0,
                       metrics_port=0) as gw:
        for path in ("/trades", "/orderbook"):
            status, body, _ = await _call(gw, token, "GET", path, params={"market": SPOT})
            assert status in (503, 504) and body["venue"] == "SIM", body
            assert "127.0.0.1" not in body["message"] and str(port) not in body["message"]
            assert "://" not in body["message"]
