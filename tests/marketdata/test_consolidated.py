"""The consolidated book's semantics, driven step by step by scripted in-process venues: the
gateway's update ids across member resyncs, stale members, contract units, the listener hook,
``member_books`` and the single-venue BBO stream. (Loopback tests against real simulators are
in tests/server/test_smart_book.py.)"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from astra.core import (
    AssetType,
    DataType,
    FeedUnavailable,
    InvalidParameter,
    MarketMetadata,
    MarketNotFound,
    VenueUnavailable,
)
from astra.marketdata.engine import MarketDataEngine
from astra.marketdata.smart import SmartConfig
from astra.venues.base import Capabilities, Venue, VenueMarket
from astra.venues.book import L2Book

SMART = "SMART-PERP-BTC-USDT"


class Scripted(Venue):
    """A venue whose book feed does what the test says: ``await venue.do(fn)`` runs
    ``fn(sink)`` in the feed task and returns once it has run."""

    capabilities = Capabilities(asset_types=("PERP",), orderbook="t", trades="t", rest="t")

    def __init__(self, code: str, contract_size: float | None = None, fee: float = 0.0):
        self.code = code
        symbol = f"{code}-PERP-BTC-USDT"
        self.market = VenueMarket(symbol, "BTCUSDT", "perp", MarketMetadata(
            symbol=symbol, asset_type=AssetType.PERP, base_asset="BTC", quote_asset="USDT",
            margin_asset="USDT", contract_size=contract_size, taker_fee=fee, maker_fee=fee / 2))
        self.steps: asyncio.Queue = asyncio.Queue()
        self.running = asyncio.Event()

    async def do(self, fn) -> None:
        done = asyncio.Event()
        self.steps.put_nowait(lambda sink: (fn(sink), done.set()))
        async with asyncio.timeout(5):
            await done.wait()

    async def snapshot(self, update_id: int, bids, asks) -> None:
        book = L2Book(self.market.symbol)
        book.reset(bids, asks, update_id, 1000 + update_id)
        await self.do(lambda s: s.on_snapshot(book))

    async def update(self, update_id: int, bids, asks) -> None:
        await self.do(lambda s: s.on_update(update_id, 1000 + update_id, bids, asks))

    async def load_markets(self) -> dict[str, VenueMarket]:
        return {self.market.symbol: self.market}

    async def run_book_feed(self, market, sink) -> None:
        self.running.set()
        while True:
            (await self.steps.get())(sink)

    async def run_trade_feed(self, market, sink) -> None:
        await asyncio.Event().wait()

    async def recent_trades(self, market, limit):
        return []

    async def close(self) -> None:
        pass


class Collector:
    def __init__(self) -> None:
        self.msgs: list[dict] = []

    def deliver(self, frame: bytes) -> None:
        self.msgs.append(json.loads(frame))


async def engine_of(*venues: Scripted, stale_after: float = 30.0) -> MarketDataEngine:
    return MarketDataEngine({v.code: v for v in venues}, linger=0.05, book_wait=2.0,
                            smart=SmartConfig(stale_after=stale_after))


def replay(msgs: list[dict]) -> dict:
    book: dict = {"bids": {}, "asks": {}}
    for msg in msgs:
        if msg["type"] == "snapshot":
            book = {"bids": {}, "asks": {}}
        for side in ("bids", "asks"):
            for lv in msg.get(side, []):
                if lv["quantity"]:
                    book[side][lv["price"]] = lv
                else:
                    book[side].pop(lv["price"], None)
    return {"bids": sorted(book["bids"].values(), key=lambda lv: -lv["price"]),
            "asks": sorted(book["asks"].values(), key=lambda lv: lv["price"])}


async def test_update_ids_stay_monotonic_across_member_resyncs_and_replay_equals_rest():
    a, b = Scripted("SIM"), Scripted("SIM2", contract_size=0.01)  # SIM2 counts 0.01 BTC lots
    engine = await engine_of(a, b)
    try:
        add, remove = await engine.subscription(SMART, DataType.ORDERBOOK)
        client = Collector()
        add(client)
        await a.snapshot(500, [(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.5)])
        await b.snapshot(90, [(100.0, 30.0)], [(101.0, 10.0), (102.0, 5.0)])
        await a.update(501, [(99.0, 0.0), (98.0, 0.25)], [])
        await b.update(91, [(100.0, 20.0)], [(101.0, 0.0)])
        # SIM resyncs: its sequence restarts lower; the gateway's does not.
        await a.do(lambda s: s.on_resync("gap"))
        await a.snapshot(7, [(100.0, 0.5)], [(100.5, 1.0)])
        await a.update(8, [], [(100.5, 2.0)])
        kinds = [(m["type"], m["updateId"]) for m in client.msgs]
        ids = [i for _, i in kinds]
        assert ids == sorted(set(ids)) and ids == list(range(ids[0], ids[0] + len(ids)))
        assert [k for k, _ in kinds] == ["snapshot", "snapshot", "update", "update",
                                         "snapshot", "snapshot", "update"]
        dropped = client.msgs[4]
        assert [(m["venue"], m["state"]) for m in dropped["members"]] == [
            ("SIM", "resyncing"), ("SIM2", "synced")]
        assert dropped["bids"] == [{"price": 100.0, "quantity": 0.2, "venues": {"SIM2": 0.2}}]
        # Base units (0.01 BTC contracts), per-venue quantities, exact sums.
        channel = engine.channels[(SMART, DataType.ORDERBOOK)]
        rest = json.loads(channel.rest_body(channel.select(None), None, False))
        assert rest["updateId"] == ids[-1]
        assert rest["bids"] == [{"price": 100.0, "quantity": 0.7,
                                 "venues": {"SIM": 0.5, "SIM2": 0.2}}]
        assert rest["asks"] == [
            {"price": 100.5, "quantity": 2.0, "venues": {"SIM": 2.0}},
            {"price": 102.0, "quantity": 0.05, "venues": {"SIM2": 0.05}}]
        assert replay(client.msgs) == {"bids": rest["bids"], "asks": rest["asks"]}
        remove(client)
        assert client not in channel.clients and channel.refs == 0
        # After its linger the SMART channel goes, and with it its members' feeds.
        async with asyncio.timeout(5):
            while True:
                if not engine.channels:
                    break
                await asyncio.sleep(0.02)
        assert channel.task.done() and all(m.channel is None for m in channel.members.values())
    finally:
        await engine.close()


async def test_stale_members_stop_contributing_and_come_back_with_a_snapshot():
    a, b = Scripted("SIM", fee=0.001), Scripted("SIM2", fee=0.002)
    engine = await engine_of(a, b, stale_after=0.2)
    try:
        add, _ = await engine.subscription(SMART, DataType.ORDERBOOK)
        client = Collector()
        add(client)
        await a.snapshot(1, [(100.0, 1.0)], [(101.0, 1.0)])
        await b.snapshot(1, [(100.0, 2.0)], [(101.0, 2.0)])
        # Neither changes: both go stale, and the client is told no member is live.
        async with asyncio.timeout(5):
            while True:
                if client.msgs[-1]["type"] == "resync":
                    break
                await asyncio.sleep(0.02)
        assert "SIM stale" in client.msgs[-1]["reason"]
        with pytest.raises(FeedUnavailable) as err:
            await engine.smart_order_book(SMART)
        assert [m.state for m in err.value.members] == ["stale", "stale"]
        # SIM2 changes again: a fresh snapshot of it alone.
        await b.update(2, [(100.0, 3.0)], [])
        snap = client.msgs[-1]
        assert snap["type"] == "snapshot"
        assert [m["state"] for m in snap["members"]] == ["stale", "synced"]
        assert snap["bids"] == [{"price": 100.0, "quantity": 3.0, "venues": {"SIM2": 3.0}}]
        # Fee-adjusted REST book: SIM2's prices net of its 0.2 % taker fee.
        body = json.loads(await engine.smart_order_book(SMART, fee_adjusted=True))
        assert body["feeAdjusted"] is True
        assert body["bids"] == [{"price": 99.8, "quantity": 3.0, "venues": {"SIM2": 3.0}}]
        assert body["asks"] == [{"price": 101.202, "quantity": 2.0, "venues": {"SIM2": 2.0}}]
    finally:
        await engine.close()


async def test_member_books_copies_states_filters_and_errors():
    a, b = Scripted("SIM", fee=0.0004), Scripted("SIM2", contract_size=0.01)
    engine = await engine_of(a, b)
    try:
        books = await engine.member_books(SMART, wait=0)  # nothing synced yet: no wait
        assert [(m.venue, m.state, m.bids, m.update_id) for m in books.members] == [
            ("SIM", "connecting", [], None), ("SIM2", "connecting", [], None)]
        await a.snapshot(10, [(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0)])
        await b.do(lambda s: s.on_resync("reconnecting: refused"))  # known down
        async with asyncio.timeout(1):  # returns at once: every member synced or down
            books = await engine.member_books(SMART, depth=1, wait=30)
        sim, sim2 = books.members
        assert (sim.state, sim.bids, sim.asks, sim.update_id) == (
            "synced", [(100.0, 1.0)], [(101.0, 1.0)], 10)
        assert (sim.taker_fee, sim.maker_fee) == (0.0004, 0.0002)
        assert (sim2.state, sim2.bids, sim2.taker_fee) == ("disconnected", [], 0.0)
        assert books.market.symbol == SMART and list(books.market.members) == ["SIM", "SIM2"]
        sim.bids.clear()  # a copy: the live book is untouched
        again = await engine.member_books(SMART, ["sim2", "SIM"], wait=0)
        assert [m.venue for m in again.members] == ["SIM", "SIM2"]
        assert again.members[0].bids == [(100.0, 1.0), (99.0, 2.0)]
        for bad in (["SIM3"], ["NOPE"], [], ["SMART"]):
            with pytest.raises(InvalidParameter) as err:
                await engine.member_books(SMART, bad, wait=0)
            assert err.value.parameter == "venues"
        with pytest.raises(MarketNotFound):
            await engine.member_books("SMART-PERP-ETH-USDT", wait=0)
        assert set(await engine.smart_markets()) == {SMART}
    finally:
        await engine.close()


async def test_a_failing_listener_disturbs_neither_the_feed_nor_other_listeners():
    a = Scripted("SIM")
    engine = await engine_of(a)
    try:
        add, _ = await engine.subscription(SMART, DataType.ORDERBOOK)
        client = Collector()
        add(client)
        channel = engine.channels[(a.market.symbol, DataType.ORDERBOOK)]

        class Broken:
            def book_snapshot(self, ch):
                raise RuntimeError("bug")

            book_update = book_state = book_snapshot

        channel.listeners.add(Broken())
        await a.snapshot(1, [(100.0, 1.0)], [(101.0, 1.0)])
        await a.update(2, [(100.0, 2.0)], [])
        assert channel.book.bids == {100.0: 2.0}
        assert [m["type"] for m in client.msgs] == ["snapshot", "update"]
        assert client.msgs[-1]["bids"] == [{"price": 100.0, "quantity": 2.0,
                                            "venues": {"SIM": 2.0}}]
    finally:
        await engine.close()


async def test_single_venue_bbo_is_sent_only_when_it_changes():
    a = Scripted("SIM")
    engine = await engine_of(a)
    try:
        add, remove = await engine.subscription(a.market.symbol, DataType.BBO)
        client = Collector()
        add(client)
        await a.snapshot(1, [(100.0, 1.0), (99.0, 1.0)], [(101.0, 1.0), (102.0, 1.0)])
        await a.update(2, [(99.0, 5.0)], [(102.0, 0.0)])  # below the best: no message
        await a.update(3, [(100.0, 0.0)], [])  # the best bid goes: 99 is best
        await a.update(4, [], [(100.5, 2.0)])
        assert [(m["updateId"], m["bid"], m["ask"]) for m in client.msgs] == [
            (1, {"price": 100.0, "quantity": 1.0, "venue": "SIM"},
             {"price": 101.0, "quantity": 1.0, "venue": "SIM"}),
            (3, {"price": 99.0, "quantity": 5.0, "venue": "SIM"},
             {"price": 101.0, "quantity": 1.0, "venue": "SIM"}),
            (4, {"price": 99.0, "quantity": 5.0, "venue": "SIM"},
             {"price": 100.5, "quantity": 2.0, "venue": "SIM"}),
        ]
        await a.do(lambda s: s.on_resync("gap"))
        assert client.msgs[-1]["type"] == "resync"
        channel = engine.channels[(a.market.symbol, DataType.ORDERBOOK)]
        remove(client)
        assert not channel.listeners and channel.refs == 0
    finally:
        await engine.close()


class Late(Scripted):
    """A venue whose markets cannot be read until ``up`` is set (down when SMART started)."""

    up = False

    async def load_markets(self) -> dict[str, VenueMarket]:
        if not self.up:
            raise ConnectionError("connection refused")
        return await super().load_markets()


async def test_a_member_whose_markets_load_late_joins_the_running_consolidated_book():
    a, b = Scripted("SIM"), Late("SIM2")
    engine = await engine_of(a, b)
    try:
        add, remove = await engine.subscription(SMART, DataType.ORDERBOOK)
        client = Collector()
        add(client)
        await a.snapshot(1, [(100.0, 1.0)], [(101.0, 1.0)])
        assert [m["venue"] for m in client.msgs[-1]["members"]] == ["SIM"]
        with pytest.raises(VenueUnavailable, match="SIM2"):  # a member not known yet: no 400
            await engine.smart_order_book(SMART, venues=["SIM2"])
        b.up = True  # SIM2's markets load now: the running channel must take it in
        books = await engine.member_books(SMART, ["SIM2"], wait=0)
        assert [(m.venue, m.state) for m in books.members] == [("SIM2", "connecting")]
        async with asyncio.timeout(5):
            await b.running.wait()
        await b.snapshot(1, [(100.0, 2.0), (99.5, 1.0)], [(101.0, 0.5)])
        snap = client.msgs[-1]
        assert snap["type"] == "snapshot"
        assert [(m["venue"], m["state"]) for m in snap["members"]] == [
            ("SIM", "synced"), ("SIM2", "synced")]
        rest = json.loads(await engine.smart_order_book(SMART))
        assert rest["bids"] == snap["bids"] == [
            {"price": 100.0, "quantity": 3.0, "venues": {"SIM": 1.0, "SIM2": 2.0}},
            {"price": 99.5, "quantity": 1.0, "venues": {"SIM2": 1.0}}]
        only = json.loads(await engine.smart_order_book(SMART, venues=["SIM2"]))
        assert only["asks"] == [{"price": 101.0, "quantity": 0.5, "venues": {"SIM2": 0.5}}]
        remove(client)
        channel = engine.channels[(SMART, DataType.ORDERBOOK)]
        assert channel.refs == 0
        assert [engine.channels[(v.market.symbol, DataType.ORDERBOOK)].refs for v in (a, b)] \
            == [1, 1]  # held by the lingering SMART channel, once each
    finally:
        await engine.close()


async def test_update_ids_go_on_when_the_smart_channel_is_retired_and_recreated():
    a = Scripted("SIM")
    engine = await engine_of(a)
    try:
        seen: list[int] = []
        for round_ in range(2):
            add, remove = await engine.subscription(SMART, DataType.ORDERBOOK)
            client = Collector()
            add(client)
            await a.snapshot(10, [(100.0, 1.0)], [(101.0, 1.0)])
            await a.update(11, [(100.0, 2.0)], [])
            seen += [m["updateId"] for m in client.msgs]
            seen.append(json.loads(await engine.smart_order_book(SMART))["updateId"])
            remove(client)
            async with asyncio.timeout(5):  # linger: the channel and its members' go
                while True:
                    if not engine.channels:
                        break
                    await asyncio.sleep(0.02)
            assert round_ == 1 or seen[-1] >= 2
        # Every id given out, over REST and WebSocket, by both channels: never going back.
        assert seen == sorted(seen) and len(set(seen)) == len(seen) - 2  # REST = last update
    finally:
        await engine.close()


async def test_an_empty_member_diff_is_no_consolidated_update_and_keeps_it_fresh():
    a = Scripted("SIM")
    engine = await engine_of(a, stale_after=0.5)
    try:
        add, remove = await engine.subscription(SMART, DataType.ORDERBOOK)
        client = Collector()
        add(client)
        await a.snapshot(1, [(100.0, 1.0)], [(101.0, 1.0)])
        for i in range(2, 10):  # quiet market, live feed: empty diffs for 0.8 s
            await a.update(i, [], [])
            await asyncio.sleep(0.1)
        await a.update(10, [(100.0, 2.0)], [])
        assert [(m["type"], m["updateId"]) for m in client.msgs] == [
            ("snapshot", 1), ("update", 2)]
        assert client.msgs[-1]["bids"] == [
            {"price": 100.0, "quantity": 2.0, "venues": {"SIM": 2.0}}]
        remove(client)
    finally:
        await engine.close()


async def test_raw_prices_that_round_to_one_fee_adjusted_price_add_up():
    a, b = Scripted("SIM", fee=0.001), Scripted("SIM2", fee=0.001)
    engine = await engine_of(a, b)
    try:
        add, remove = await engine.subscription(SMART, DataType.ORDERBOOK)
        client = Collector()
        add(client)
        # 1000 and 1000.0000000001 net of 0.1 %: 999 at 12 significant digits, both.
        await a.snapshot(1, [(1000.0000000001, 1.5), (1000.0, 2.0)], [(1001.0, 1.0)])
        await b.snapshot(1, [(1000.0, 0.25)], [(1001.0, 1.0)])
        body = json.loads(await engine.smart_order_book(SMART, fee_adjusted=True))
        assert body["bids"] == [{"price": 999.0, "quantity": 3.75,
                                 "venues": {"SIM": 3.5, "SIM2": 0.25}}]
        raw = json.loads(await engine.smart_order_book(SMART))
        assert [lv["quantity"] for lv in raw["bids"]] == [1.5, 2.25]
        remove(client)
    finally:
        await engine.close()


async def test_summed_quantities_keep_every_digit_a_float_can_carry():
    # Meme-coin sizes: 11 integer digits and 2 decimals; the exact sums have 13 to 15 digits.
    a, b = Scripted("SIM"), Scripted("SIM2")
    engine = await engine_of(a, b)
    try:
        add, remove = await engine.subscription(SMART, DataType.ORDERBOOK)
        client = Collector()
        add(client)
        await a.snapshot(1, [(1e-05, 12345678901.25)], [(2e-05, 98765432109.87)])
        await b.snapshot(1, [(1e-05, 1.5)], [(2e-05, 0.01)])
        await b.update(2, [(1e-05, 0.75)], [])
        rest = json.loads(await engine.smart_order_book(SMART))
        exact = {"bids": (Decimal("12345678901.25") + Decimal("0.75")),
                 "asks": (Decimal("98765432109.87") + Decimal("0.01"))}
        for side in ("bids", "asks"):
            assert [lv["quantity"] for lv in rest[side]] == [float(exact[side])]
            assert replay(client.msgs)[side] == rest[side]
        bbo = json.loads(await engine.bbo(SMART))
        assert (bbo["bid"]["quantity"], bbo["ask"]["quantity"]) == (
            float(exact["bids"]), float(exact["asks"]))
        remove(client)
    finally:
        await engine.close()


async def test_a_member_stuck_connecting_costs_one_wait_not_one_per_read():
    a, b = Scripted("SIM"), Scripted("SIM2")  # SIM2 connects but never sends a snapshot
    engine = await engine_of(a, b)  # book_wait 2 s
    try:
        first = asyncio.create_task(engine.member_books(SMART))
        await a.snapshot(1, [(100.0, 1.0)], [(101.0, 1.0)])
        books = await first  # waited for SIM2, in vain
        assert [(m.venue, m.state) for m in books.members] == [
            ("SIM", "synced"), ("SIM2", "connecting")]
        async with asyncio.timeout(10):  # not again: each read would take its 30 s wait
            for _ in range(3):
                books = await engine.member_books(SMART, wait=30)
                assert books.members[0].bids == [(100.0, 1.0)]
            rest = json.loads(await engine.smart_order_book(SMART))
        assert [m["state"] for m in rest["members"]] == ["synced", "connecting"]
        # Once synced it is waited for again: a read during its resync sees it back.
        await b.snapshot(1, [(100.0, 2.0)], [(101.0, 2.0)])
        await b.do(lambda s: s.on_resync("gap"))
        read = asyncio.create_task(engine.member_books(SMART, wait=30))
        await asyncio.sleep(0)
        await b.snapshot(5, [(100.0, 3.0)], [(101.0, 3.0)])
        async with asyncio.timeout(10):
            books = await read
        assert [(m.venue, m.state, m.bids) for m in books.members] == [
            ("SIM", "synced", [(100.0, 1.0)]), ("SIM2", "synced", [(100.0, 3.0)])]
    finally:
        await engine.close()


async def test_member_updates_wakes_on_each_members_next_update_and_gives_up_at_its_bound():
    a, b, c = Scripted("SIM"), Scripted("SIM2"), Scripted("SIM3")
    engine = await engine_of(a, b, c)
    try:
        add, remove = await engine.subscription(SMART, DataType.ORDERBOOK)
        client = Collector()
        add(client)  # the member feeds run while the consolidated book has a client
        await a.snapshot(1, [(100.0, 1.0)], [(101.0, 1.0)])
        await b.snapshot(1, [(100.0, 2.0)], [(101.0, 2.0)])
        await c.snapshot(1, [(100.0, 3.0)], [(101.0, 3.0)])
        async with asyncio.timeout(10):
            waiting = asyncio.create_task(engine.member_updates(SMART, ["SIM", "SIM2"], 30))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            await c.update(2, [(100.0, 4.0)], [])  # not asked about: no wake-up
            await a.update(2, [], [])  # a heartbeat is an update too (the id moved)
            await asyncio.sleep(0.05)
            assert not waiting.done()  # SIM2 has not published yet
            await b.update(2, [(100.0, 5.0)], [])
            assert await waiting is True
            # A member that goes out of sync stops the wait (its book is not planned on).
            waiting = asyncio.create_task(engine.member_updates(SMART, ["SIM2"], 30))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            await b.do(lambda s: s.on_resync("gap"))
            assert await waiting is True
            # A member already out of sync is not waited for; nothing moving: the bound.
            assert await engine.member_updates(SMART, ["SIM2"], 30) is True
            assert await engine.member_updates(SMART, ["SIM", "SIM3"], 0.2) is False
            books = await engine.member_books(SMART, wait=0)
            assert [(m.venue, m.state, m.update_id) for m in books.members] == [
                ("SIM", "synced", 2), ("SIM2", "resyncing", None), ("SIM3", "synced", 2)]
        remove(client)
    finally:
        await engine.close()
