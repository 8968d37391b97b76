"""The venue's feeds against the fake Coinbase, without the gateway: shared connections,
alias markets sharing one stream, clean unsubscription, and the optional JWT."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from astra.venues.coinbase import CoinbaseUrls, CoinbaseVenue
from astra.venues.coinbase import connection as connection_module
from astra.venues.coinbase.connection import Throttle


def _venue(fake, **options) -> CoinbaseVenue:
    return CoinbaseVenue(
        urls=CoinbaseUrls(rest=fake.base_url, ws=fake.ws_url),
        markets_source=fake.products_source,
        send_interval=0.0,
        **options,
    )


async def _until(predicate, within: float = 5.0) -> None:
    """Poll a condition other components make true (sinks, the fake), bounded."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - no event to wait on across components
            await asyncio.sleep(0.01)


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def test_alias_markets_share_one_stream_and_leave_cleanly(fake_coinbase, recording_sink):
    fake = await fake_coinbase()
    venue = _venue(fake)
    try:
        markets = await venue.load_markets()
        usd, usdc = recording_sink(), recording_sink()
        t1 = asyncio.create_task(venue.run_book_feed(markets["COINBASE-SPOT-BTC-USD"], usd))
        await _until(lambda: usd.book is not None)
        t2 = asyncio.create_task(venue.run_book_feed(markets["COINBASE-SPOT-BTC-USDC"], usdc))
        await _until(lambda: usdc.book is not None and usdc.kinds().count("update") >= 3)
        assert usdc.book.market == "COINBASE-SPOT-BTC-USDC" and usd.book is not usdc.book
        history = fake.history["BTC-USD"]
        for sink in (usd, usdc):
            assert {"bids": sink.book.bids, "asks": sink.book.asks} == history[sink.book.update_id]
        # the newcomer got a fresh snapshot by resubscribing the shared product
        assert fake.subscribes("level2") == [["BTC-USD"], ["BTC-USD"]]
        assert fake.subscribes("level2", "unsubscribe") == [["BTC-USD"]]
        assert "resync" not in usd.kinds()  # the first market never stopped being in sync
        await _stop(t1)
        assert fake.subscribes("level2", "unsubscribe") == [["BTC-USD"]]  # still in use
        await _stop(t2)
        await _until(lambda: len(fake.subscribes("level2", "unsubscribe")) == 2)
        assert venue._books.connections == []  # the idle connection was closed
        assert fake.connections == 1
        assert all("jwt" not in request for _, request in fake.requests)  # public: unsigned
    finally:
        await venue.close()


async def test_products_are_packed_per_connection(fake_coinbase, recording_sink):
    fake = await fake_coinbase()
    venue = _venue(fake, per_connection=1)
    try:
        markets = await venue.load_markets()
        sinks = [recording_sink(), recording_sink()]
        tasks = [
            asyncio.create_task(venue.run_book_feed(markets[symbol], sink))
            for symbol, sink in zip(
                ("COINBASE-SPOT-BTC-USD", "COINBASE-SPOT-ETH-USD"), sinks, strict=True
            )
        ]
        await _until(lambda: all(s.book is not None for s in sinks))
        assert fake.connections == 2 and len(venue._books.connections) == 2
        for task in tasks:
            await _stop(task)
    finally:
        await venue.close()


async def test_with_a_cdp_key_every_subscription_carries_a_fresh_jwt(fake_coinbase, recording_sink):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    name = "organizations/org-id/apiKeys/key-id"
    fake = await fake_coinbase()
    venue = _venue(fake, api_key=name, api_secret=pem)
    try:
        markets = await venue.load_markets()
        sink = recording_sink()
        task = asyncio.create_task(venue.run_book_feed(markets["COINBASE-SPOT-BTC-USD"], sink))
        await _until(lambda: sink.book is not None)
        await _stop(task)
    finally:
        await venue.close()
    tokens = [request["jwt"] for _, request in fake.requests]
    assert len(tokens) >= 2 and len(set(tokens)) == len(tokens)  # one per message
    for token in tokens:
        head, body, signature = token.split(".")
        header, claims = json.loads(_b64(head)), json.loads(_b64(body))
        assert header["alg"] == "ES256" and header["kid"] == name and header["nonce"]
        assert claims["sub"] == name and claims["exp"] - claims["nbf"] == 120
        assert "uri" not in claims and "uris" not in claims  # a WebSocket JWT names no request
        raw = _b64(signature)
        r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        key.public_key().verify(
            encode_dss_signature(r, s), f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())
        )


async def test_an_error_message_reconnects_and_resubscribes(fake_coinbase, recording_sink):
    fake = await fake_coinbase(reject_first=True)
    venue = _venue(fake)
    try:
        markets = await venue.load_markets()
        sink = recording_sink()
        task = asyncio.create_task(venue.run_book_feed(markets["COINBASE-SPOT-ETH-USD"], sink))
        await _until(lambda: sink.book is not None)
        await _stop(task)
    finally:
        await venue.close()
    assert fake.connections == 2 and fake.subscribes("level2") == [["ETH-USD"], ["ETH-USD"]]
    # each connection subscribed heartbeats first, then the channel
    assert [r["channel"] for i, r in fake.requests if i == 1][:2] == ["heartbeats", "level2"]


async def test_throttle_spaces_messages(monkeypatch):
    delays: list[float] = []

    async def sleep(delay: float) -> None:  # record instead of waiting
        delays.append(delay)

    monkeypatch.setattr(connection_module.asyncio, "sleep", sleep)
    throttle = Throttle(10.0)
    for _ in range(3):
        await throttle.wait()
    assert len(delays) == 2  # the first message goes at once
    assert 9.0 < delays[0] <= 10.0 and 19.0 < delays[1] <= 20.0
