"""Several feed nodes on the same venues: one publisher per market, decided in JetStream KV.

Real nats-server, the real simulator, two ``FeedPublisher``s on their own engines and NATS
connections (two feed nodes): a market is published by exactly one of them however many wants
come; a feed that stops hands its markets to the other at the next want; a feed that dies
without a word (its connection gone, its keys left) is taken over once its liveness is older
than the silence bound; two claims racing for a free market never both win."""

from __future__ import annotations

import asyncio
import contextlib

import nats
import pytest

from astra.cluster import wire
from astra.cluster.feed import FeedPublisher
from astra.cluster.owners import Ownership
from astra.cluster.wire import ClusterConfig, Want, WantReply
from astra.marketdata.engine import MarketDataEngine
from astra.venues import build_venue

BTC = "SIM-SPOT-BTC-USDT"
CONFIG = ClusterConfig(heartbeat_seconds=0.2, silence_seconds=1.0, lease_seconds=30)
_reply = __import__("msgspec").msgpack.Decoder(WantReply).decode


async def _want(nc, market: str = BTC) -> WantReply:
    msg = await nc.request(wire.WANT_SUBJECT, wire.encode(
        Want(market=market, data_type="ORDERBOOK", edge="test")), timeout=3)
    return _reply(msg.data)


@pytest.fixture
async def feeds(nats_server, sim):
    """Two feed nodes over the same simulator, and a NATS connection for the test."""
    made = []
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            nc = await nats.connect(nats_server.url)
            stack.push_async_callback(nc.close)
            engine = MarketDataEngine({"SIM": build_venue("SIM", {"url": sim.base_url})},
                                      linger=0.5)
            stack.push_async_callback(engine.close)
            publisher = await FeedPublisher(engine, nc, CONFIG).start()
            stack.push_async_callback(publisher.close)
            made.append((publisher, nc))
        client = await nats.connect(nats_server.url)
        stack.push_async_callback(client.close)
        yield made, client


def _holders(made) -> list[FeedPublisher]:
    return [p for p, _ in made if f"{BTC}/ORDERBOOK" in p.markets]


async def test_one_feed_publishes_a_market_however_many_wants_come(feeds):
    made, client = feeds
    replies = [await _want(client) for _ in range(12)]
    assert all(r.ok for r in replies), replies
    holders = _holders(made)
    assert len(holders) == 1
    assert {r.epoch for r in replies} == {holders[0].epoch}  # only the owner answered
    other = next(p for p, _ in made if p is not holders[0])
    assert other.stats["yielded"] >= 1 and other.markets == []


async def test_a_stopped_feed_hands_its_markets_over_at_the_next_want(feeds):
    made, client = feeds
    first = await _want(client)
    owner = _holders(made)[0]
    await owner.close()
    second = await _want(client)
    assert second.ok and second.epoch != first.epoch
    assert [p.epoch for p in _holders(made)] == [second.epoch]


async def test_a_feed_that_died_silently_is_taken_over_after_the_silence_bound(feeds):
    made, client = feeds
    first = await _want(client)
    owner_nc = next(nc for p, nc in made if p.epoch == first.epoch)
    await owner_nc.close()  # its keys stay in KV; its liveness stops being written
    async with asyncio.timeout(15):
        while True:
            try:
                reply = await _want(client)
            except nats.errors.TimeoutError:  # nobody answers while the owner looks alive
                continue
            if reply.ok and reply.epoch != first.epoch:
                break
    survivor = next(p for p, _ in made if p.epoch != first.epoch)
    assert survivor.markets == [f"{BTC}/ORDERBOOK"]


async def test_two_claims_racing_for_a_free_market_never_both_win(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        owners = [await Ownership(js, f"epoch{i}", 5.0).start() for i in range(6)]
        for round_ in range(5):
            key = f"SIM-SPOT-R{round_}-USDT/ORDERBOOK"
            won = await asyncio.gather(*(o.claim(key) for o in owners))
            assert won.count(True) == 1, won
            winner = owners[won.index(True)]
            assert await winner.owns(key)
            assert not await owners[(won.index(True) + 1) % 6].owns(key)
    finally:
        await nc.close()
