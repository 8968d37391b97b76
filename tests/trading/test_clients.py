"""The private-client cache: one client per (venue, credentials), LRU and idle eviction, no
close under a lease, and secrets redacted exactly as long as their client lives."""

from __future__ import annotations

import asyncio

import pytest

from astra.core.credentials import ExchangeCredentials
from astra.trading.clients import ClientCache
from astra.trading.credentials import REDACTOR


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Client:
    """What the cache needs of a ccxt client: ``close()``."""

    def __init__(self, creds: ExchangeCredentials) -> None:
        self.creds, self.closed = creds, False

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.closed = True


def creds(n: int) -> ExchangeCredentials:
    return ExchangeCredentials(exchange="BINANCE", api_key=f"key-{n:04d}-abcdef",
                               secret=f"secret-{n:04d}-0123456789")


async def lease(cache: ClientCache, c: ExchangeCredentials, venue: str = "BINANCE") -> Client:
    async with cache.lease(venue, c, lambda: Client(c)) as client:
        return client


async def test_one_client_per_venue_and_credentials():
    cache = ClientCache()
    a = await lease(cache, creds(1))
    assert await lease(cache, creds(1)) is a  # equal credentials, built anew: same client
    b = await lease(cache, creds(2))
    other_venue = await lease(cache, creds(1), venue="OKX")
    assert len({id(a), id(b), id(other_venue)}) == 3
    assert (cache.built, len(cache)) == (3, 3)
    assert b.creds.secret == "secret-0002-0123456789"
    await cache.close()
    assert a.closed and b.closed and other_venue.closed and len(cache) == 0


async def test_secrets_are_redacted_while_their_client_lives():
    cache = ClientCache(max_clients=1)
    secret = creds(1).secret
    await lease(cache, creds(1))
    assert REDACTOR.scrub(f"sig {secret}") == "sig [REDACTED]"
    first = cache._entries[next(iter(cache._entries))].client
    await lease(cache, creds(2))  # over max_clients: the least recently used goes
    await asyncio.sleep(0.01)  # its close runs as a task
    assert first.closed
    assert REDACTOR.scrub(f"sig {secret}") == f"sig {secret}"  # unregistered with it
    await cache.close()
    assert REDACTOR.scrub(creds(2).secret) == creds(2).secret


async def test_least_recently_used_is_evicted_first():
    cache = ClientCache(max_clients=2)
    one, two = await lease(cache, creds(1)), await lease(cache, creds(2))
    assert await lease(cache, creds(1)) is one  # now two is the least recently used
    await lease(cache, creds(3))
    await asyncio.sleep(0.01)
    assert two.closed and not one.closed
    await cache.close()


async def test_idle_and_old_clients_are_rebuilt():
    clock = Clock()
    cache = ClientCache(idle_ttl=60, max_age=600, clock=clock)
    first = await lease(cache, creds(1))
    clock.now += 61
    second = await lease(cache, creds(1))
    await asyncio.sleep(0.01)
    assert second is not first and first.closed
    for _ in range(11):  # used every 59 s: never idle, but older than max_age at last
        clock.now += 59
        latest = await lease(cache, creds(1))
    assert latest is not second and cache.built == 3
    await cache.close()


async def test_an_evicted_client_in_use_closes_when_its_call_ends():
    cache = ClientCache(max_clients=1)
    c = creds(1)
    async with cache.lease("BINANCE", c, lambda: Client(c)) as held:
        await lease(cache, creds(2))  # evicts the held client
        await asyncio.sleep(0.01)
        assert not held.closed  # a call is using it
    await asyncio.sleep(0.01)
    assert held.closed
    await cache.close()


async def test_a_failed_build_caches_nothing_and_registers_nothing():
    cache = ClientCache()
    c = creds(9)

    def broken() -> Client:
        raise ValueError("bad config")

    with pytest.raises(ValueError):
        async with cache.lease("BINANCE", c, broken):
            pass
    assert len(cache) == 0 and REDACTOR.scrub(c.secret) == c.secret


def test_max_clients_must_allow_one():
    with pytest.raises(ValueError, match="max_clients"):
        ClientCache(max_clients=0)
