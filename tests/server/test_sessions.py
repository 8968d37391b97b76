"""WebSocket sessions and their API key, through the gateway on loopback: revoking a key (by
the CLI in another process, or through the same store) closes its sessions; a per-key cap."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
import pytest

from astra.server.gateway import Gateway, venues_from_config
from astra.server.sessions import REVOKED_CLOSE_CODE, REVOKED_REASON

TIMEOUT = 20
MARKET = "SIM-SPOT-BTC-USDT"


def _gateway(sim, key_store, **settings) -> Gateway:
    venues = venues_from_config({}, sim.base_url)
    return Gateway(venues, key_store, port=0, metrics_port=0, linger=1.0, **settings)


def _ws_url(gw: Gateway, data_type: str = "TRADE") -> str:
    return f"{gw.base_url.replace('http', 'ws')}/ws?market={MARKET}&dataType={data_type}"


def _auth(token: str) -> dict[str, str]:
    return {"x-astra-api-key": f"Bearer {token}"}


async def _until_closed(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """Read (and drop) data frames until the server's close frame."""
    async with asyncio.timeout(TIMEOUT):  # a bound, not a speed assertion
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return msg


async def test_key_revoked_by_the_cli_closes_its_websockets(sim, key_store, tmp_path):
    victim, bystander = key_store.create("victim"), key_store.create("bystander")
    async with (
        _gateway(sim, key_store, session_revalidate_seconds=0.3) as gw,
        aiohttp.ClientSession() as s,
        s.ws_connect(_ws_url(gw), headers=_auth(victim.token)) as ws,
        s.ws_connect(_ws_url(gw, "ORDERBOOK"), protocols=(victim.token,)) as browser,
        s.ws_connect(_ws_url(gw), headers=_auth(bystander.token)) as other,
    ):
        await ws.receive(timeout=TIMEOUT)  # streaming
        # `astra keys revoke`, as an operator runs it beside the gateway: another process,
        # so only the gateway's periodic re-check can notice.
        env = {**os.environ, "ASTRA_DATA_DIR": str(tmp_path / "data")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "astra", "keys", "revoke", victim.key_id, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode == 0, (out, err)
        for closed in (ws, browser):
            msg = await _until_closed(closed)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert (msg.data, msg.extra) == (REVOKED_CLOSE_CODE, REVOKED_REASON)
        async with asyncio.timeout(TIMEOUT):  # the handlers end just after the close frame
            while gw.sessions.count(victim.key_id):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        # The other key's session streams on.
        assert (await other.receive(timeout=TIMEOUT)).type == aiohttp.WSMsgType.TEXT
        assert not other.closed
        # And the revoked key cannot open a new one.
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await s.ws_connect(_ws_url(gw), headers=_auth(victim.token))
        assert exc.value.status == 401


async def test_key_revoked_in_process_closes_its_websockets_at_once(sim, key_store):
    key = key_store.create("victim")
    # A re-check period far beyond the test's bound: only the store's revoke hook can act.
    async with (
        _gateway(sim, key_store, session_revalidate_seconds=3600) as gw,
        aiohttp.ClientSession() as s,
        s.ws_connect(_ws_url(gw), headers=_auth(key.token)) as ws,
    ):
        await ws.receive(timeout=TIMEOUT)
        assert key_store.revoke(key.key_id)
        msg = await _until_closed(ws)
        assert (msg.data, msg.extra) == (REVOKED_CLOSE_CODE, REVOKED_REASON)


async def test_websockets_per_key_are_capped(sim, key_store):
    key, other = key_store.create("busy"), key_store.create("other")
    async with (
        _gateway(sim, key_store, ws_connections_per_key=3) as gw,
        aiohttp.ClientSession() as s,
    ):
        open_ = [await s.ws_connect(_ws_url(gw), headers=_auth(key.token)) for _ in range(3)]
        try:
            async with s.get(
                _ws_url(gw).replace("ws://", "http://"),
                headers={**_auth(key.token), "Upgrade": "websocket", "Connection": "Upgrade",
                         "Sec-WebSocket-Version": "13",
                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
            ) as r:
                assert r.status == 429 and r.content_type == "application/json"
                assert r.headers.get("Retry-After") == "1"  # as every other 429
                body = await r.json()
            assert body["retryAfter"] == 1.0
            assert body["code"] == "RATE_LIMITED" and "at most 3" in body["message"]
            # Other keys are not affected, and a closed session frees its slot.
            async with s.ws_connect(_ws_url(gw), headers=_auth(other.token)) as ws:
                assert (await ws.receive(timeout=TIMEOUT)).type == aiohttp.WSMsgType.TEXT
            await open_.pop().close()
            async with asyncio.timeout(TIMEOUT):
                while gw.sessions.count(key.key_id) > 2:  # noqa: ASYNC110 - the handler ends later
                    await asyncio.sleep(0.02)
            open_.append(await s.ws_connect(_ws_url(gw), headers=_auth(key.token)))
            assert gw.sessions.count(key.key_id) == 3
        finally:
            for ws in open_:
                await ws.close()


async def test_revocation_closes_private_websockets_too_and_no_signal_taxes_responses(
    sim, key_store
):
    # Sessions learn their socket from the WebSocket handlers (attach_ws), public and private
    # alike; no on_response_prepare signal runs for every HTTP response.
    from astra.sim.admin import parse_deposits

    key = key_store.create("victim")
    account = sim.exchange.create_account(parse_deposits("USDT=1000"))
    headers = {**_auth(key.token), "x-astra-exchange-private-key": account.signerPrivateKey}
    async with (
        _gateway(sim, key_store, session_revalidate_seconds=3600) as gw,
        aiohttp.ClientSession() as s,
        s.ws_connect(_ws_url(gw), headers=headers) as public,
        s.ws_connect(f"{gw.base_url.replace('http', 'ws')}/ws?dataType=ORDERS&exchange=SIM",
                     headers=headers) as private,
    ):
        assert not gw._runners[0].app.on_response_prepare
        assert (await private.receive_json(timeout=TIMEOUT))["type"] == "resync"  # streaming
        assert gw.sessions.count(key.key_id) == 2
        assert key_store.revoke(key.key_id)
        for ws in (public, private):
            msg = await _until_closed(ws)
            assert (msg.data, msg.extra) == (REVOKED_CLOSE_CODE, REVOKED_REASON)
