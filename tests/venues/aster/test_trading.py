"""Aster's private client (``astra.venues.aster.trading``): strictly increasing v3 nonces and
v1 (HMAC) signing, checked against the simulator's own verifiers (``astra.sim.signing``)."""

from __future__ import annotations

import itertools
from urllib.parse import parse_qsl, urlsplit

import pytest
from eth_account import Account

from astra.core.credentials import ExchangeCredentials
from astra.sim.signing import recover_v3_signer, split_signed, verify_hmac
from astra.venues.aster import AsterUrls, AsterVenue
from astra.venues.aster.trading import NONCES, AsterPrivate, MonotonicNonce, v1_path

PRIVATE_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
SIGNER = Account.from_key(PRIVATE_KEY).address.lower()
API_KEY = "K" * 64
SECRET = "S3cr3t" * 10
URLS = AsterUrls.for_simulator("http://127.0.0.1:9")  # never connected: signing only


def test_nonces_strictly_increase_under_a_frozen_clock():
    now = [1_700_000_000_000_000]
    nonces = MonotonicNonce(clock_us=lambda: now[0])
    got = [nonces() for _ in range(1000)]
    assert got == list(range(now[0], now[0] + 1000))  # the clock's time, then +1 each
    now[0] += 10_000_000  # the clock moves on past them: nonces follow it
    assert nonces() == now[0]
    now[0] -= 60_000_000  # and steps back a minute: nonces still increase
    assert nonces() == now[0] + 60_000_000 + 1


def _v3(client: AsterPrivate, params: dict) -> dict[str, str]:
    """The parameters of a signed v3 POST, after checking its signature is the key's."""
    signed = client.sign("v3/order", ["fapiPrivate"], "POST", params)
    payload, signature = split_signed("", signed["body"])
    assert recover_v3_signer(payload, signature).lower() == SIGNER
    return dict(parse_qsl(payload))


async def test_clients_sharing_a_signer_sign_with_increasing_nonces_under_a_frozen_clock():
    frozen = MonotonicNonce(clock_us=lambda: 1_700_000_000_000_000)
    config = ExchangeCredentials("SIM", private_key=PRIVATE_KEY).ccxt_config()
    clients = [AsterPrivate(dict(config), nonces=frozen) for _ in range(2)]
    try:
        sent = [_v3(c, {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.001"})
                for c in itertools.islice(itertools.cycle(clients), 20)]
    finally:
        for c in clients:
            await c.close()
    nonces = [int(p["nonce"]) for p in sent]
    assert nonces == list(range(1_700_000_000_000_000, 1_700_000_000_000_020))
    assert {p["signer"] for p in sent} == {SIGNER} and sent[0]["symbol"] == "BTCUSDT"


async def test_every_client_in_the_process_shares_one_nonce_source():
    # ccxt's own nonce, milliseconds() * 1000, repeats for every request signed within a
    # millisecond; the default source is one for the whole process, on the real clock.
    venue = AsterVenue("SIM", URLS)
    config = ExchangeCredentials("SIM", private_key=PRIVATE_KEY).ccxt_config()
    clients = [venue.private_client(dict(config)) for _ in range(2)]
    try:
        assert all(c._nonces is NONCES for c in clients)
        nonces = [int(_v3(c, {"symbol": "BTCUSDT"})["nonce"])
                  for c in itertools.islice(itertools.cycle(clients), 200)]
    finally:
        for c in clients:
            await c.close()
        await venue.close()
    assert all(a < b for a, b in itertools.pairwise(nonces)), nonces
    assert NONCES() > nonces[-1]


@pytest.mark.parametrize(("api", "path", "v1"), [
    ("sapiPrivate", "v3/order", "v1/order"),
    ("sapiPrivate", "v3/account", "v1/account"),
    ("fapiPrivate", "v3/balance", "v2/balance"),
    ("fapiPrivate", "v3/positionRisk", "v2/positionRisk"),
    ("fapiPrivate", "v4/account", "v4/account"),
    ("fapiPrivate", "v3/listenKey", "v1/listenKey"),
])
def test_v1_paths_follow_the_docs(api, path, v1):
    assert v1_path(api, path) == v1


async def test_a_key_and_secret_sign_v1_with_hmac():
    venue = AsterVenue("SIM", URLS)
    client = venue.private_client(
        ExchangeCredentials("SIM", api_key=API_KEY, secret=SECRET).ccxt_config())
    try:
        assert client.hmac_v1 and await client.sign_in() is False  # no v3 builder approval
        post = client.sign("v3/order", ["sapiPrivate"], "POST",
                           {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.001"})
        get = client.sign("v3/balance", ["fapiPrivate"], "GET", {})
        listen = client.sign("v3/listenKey", ["fapiPrivate"], "POST", {})
    finally:
        await client.close()
        await venue.close()
    assert post["url"] == "http://127.0.0.1:9/api/v1/order"
    assert post["headers"]["X-MBX-APIKEY"] == API_KEY
    payload, signature = split_signed("", post["body"])
    assert verify_hmac(SECRET, payload, signature)
    assert not verify_hmac(SECRET[::-1], payload, signature)
    params = dict(parse_qsl(payload))
    assert params["symbol"] == "BTCUSDT" and int(params["timestamp"]) > 1_700_000_000_000
    assert "nonce" not in params and "signer" not in params
    url = urlsplit(get["url"])
    assert url.path == "/fapi/v2/balance" and get["body"] is None
    assert verify_hmac(SECRET, *split_signed(url.query, ""))
    # USER_STREAM (listenKey): the key header only, as the docs define it
    assert listen["url"] == "http://127.0.0.1:9/fapi/v1/listenKey"
    assert listen["body"] is None and listen["headers"]["X-MBX-APIKEY"] == API_KEY


async def test_a_private_key_alongside_a_key_and_secret_signs_v3():
    creds = ExchangeCredentials("SIM", api_key=API_KEY, secret=SECRET, private_key=PRIVATE_KEY)
    client = AsterPrivate(creds.ccxt_config())
    try:
        assert not client.hmac_v1
        assert _v3(client, {"symbol": "BTCUSDT"})["signer"] == SIGNER
    finally:
        await client.close()
