"""Simulator trading fixtures: a funded account and a client that signs like Aster's docs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from urllib.parse import urlencode

import aiohttp
import ccxt.async_support as ccxt_async
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from astra.sim import SimExchange, SimServer
from astra.sim.admin import parse_deposits

AUTH_DOMAIN = {
    "name": "AsterSignTransaction",
    "version": "1",
    "chainId": 1666,
    "verifyingContract": "0x0000000000000000000000000000000000000000",
}


class SignedClient:
    """Signs v1 requests with HMAC-SHA256 and v3 requests with EIP-712, as documented."""

    def __init__(self, base_url: str, creds) -> None:
        self.base = base_url
        self.creds = creds
        self._nonce = 0
        self.last_headers: dict[str, str] = {}  # of the latest response

    async def v1(self, method: str, path: str, **params) -> tuple[int, object]:
        params.setdefault("timestamp", int(time.time() * 1000))
        query = urlencode(params)
        sig = hmac.new(self.creds.apiSecret.encode(), query.encode(), hashlib.sha256).hexdigest()
        headers = {"X-MBX-APIKEY": self.creds.apiKey}
        return await self._send(method, path, f"{query}&signature={sig}", headers)

    async def v3(self, method: str, path: str, **params) -> tuple[int, object]:
        self._nonce = max(self._nonce + 1, int(time.time() * 1_000_000))
        params.update(nonce=str(self._nonce), user=self.creds.user, signer=self.creds.signer)
        msg = urlencode(params)
        signable = encode_typed_data(full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Message": [{"name": "msg", "type": "string"}],
            },
            "primaryType": "Message",
            "domain": AUTH_DOMAIN,
            "message": {"msg": msg},
        })
        sig = Account.sign_message(signable, private_key=self.creds.signerPrivateKey).signature
        return await self._send(method, path, f"{msg}&signature=0x{bytes(sig).hex()}", {})

    async def _send(self, method: str, path: str, payload: str, headers: dict):
        async with aiohttp.ClientSession() as http, asyncio.timeout(10):
            if method == "GET":
                ctx = http.get(f"{self.base}{path}?{payload}", headers=headers)
            else:
                headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
                ctx = http.request(method, f"{self.base}{path}", data=payload, headers=headers)
            async with ctx as resp:
                self.last_headers = dict(resp.headers)
                return resp.status, await resp.json(content_type=None)


@pytest.fixture
def make_trader(sim):
    """``make_trader("USDT=100000,BTC=2")`` -> a SignedClient for a new funded account."""

    def make(deposit: str = "USDT=100000,BTC=2,ETH=20,SOL=500") -> SignedClient:
        creds = sim.exchange.create_account(parse_deposits(deposit))
        return SignedClient(sim.base_url, creds)

    return make


@pytest.fixture
async def still(sim):
    """The ``sim`` fixture with its clock stopped: the book moves only when a test moves it."""
    return await _stop_clock(sim)


async def _stop_clock(server: SimServer) -> SimServer:
    task = server.exchange._task
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return server


@pytest.fixture
async def frozen_rates():
    """A stopped simulator (as ``still``) whose rate limiters' clock stands still at 1000 s:
    weight and order counts never roll into a new window in the middle of a test."""
    async with SimServer(SimExchange(seed=1, rate_clock=lambda: 1000.0)) as server:
        yield await _stop_clock(server)


@pytest.fixture
async def ccxt_aster(still):
    """An unmodified ccxt ``aster`` client (V3 signing with the API-wallet key) pointed at the
    stopped simulator, for a new account funded with USDT=100000 in both wallets."""
    creds = still.exchange.create_account(parse_deposits("USDT=100000"))
    # enableRateLimit off: ccxt's own throttle would wait 10 s before a cost-30 call.
    ex = ccxt_async.aster({"privateKey": creds.signerPrivateKey, "enableRateLimit": False,
                           "options": {"builderFee": False}})
    api = ex.urls["api"]
    api["fapiPublic"] = api["fapiPrivate"] = still.base_url + "/fapi"
    api["sapiPublic"] = api["sapiPrivate"] = still.base_url + "/api"
    try:
        async with asyncio.timeout(15):
            await ex.load_markets()
        yield ex
    finally:
        await ex.close()
