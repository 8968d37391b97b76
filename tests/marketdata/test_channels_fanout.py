"""A book channel's fan-out: one encoded update, the same bytes object to every client, in
order; with the engine's telemetry, each update that has clients is observed once in
``astra_feed_to_client_seconds`` under its venue, and an update nobody listens to is not."""

from __future__ import annotations

import msgspec

from astra.core import DataType
from astra.marketdata.engine import MarketDataEngine
from astra.telemetry import Telemetry

from .test_channels import MARKET, ScriptedVenue, settle, snapshot


class Raw:
    """A client keeping the bytes objects it was given."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def deliver(self, frame: bytes) -> None:
        self.frames.append(frame)


def update(update_id: int, price: float):
    def step(sink) -> None:
        sink.on_update(update_id, update_id, [(price, 2.0)], [])

    return step


def observed(telemetry: Telemetry, suffix: str) -> float | None:
    return telemetry.registry.get_sample_value(
        f"astra_feed_to_client_seconds_{suffix}", {"venue": "SIM"})


async def test_one_frame_for_all_clients_and_its_latency_observed_only_with_clients():
    venue = ScriptedVenue()
    telemetry = Telemetry()
    engine = MarketDataEngine({"SIM": venue}, linger=60.0, telemetry=telemetry)
    clients = [Raw(), Raw(), Raw()]
    try:
        for client in clients:
            engine.subscribe(venue, MARKET, DataType.ORDERBOOK, client)
        venue.book_steps.put_nowait(snapshot(10))
        for i in range(11, 16):
            venue.book_steps.put_nowait(update(i, 90.0 + i))
        await settle()
        await settle()
        first = clients[0].frames
        assert len(first) == 6
        for other in clients[1:]:  # encoded once: the very same objects
            assert all(a is b for a, b in zip(first, other.frames, strict=True))
        decoded = [msgspec.json.decode(f) for f in first]
        assert [d["type"] for d in decoded] == ["snapshot"] + ["update"] * 5
        assert [d["updateId"] for d in decoded[1:]] == [11, 12, 13, 14, 15]
        assert [d["prevUpdateId"] for d in decoded[1:]] == [10, 11, 12, 13, 14]
        assert observed(telemetry, "count") == 5.0
        assert 0.0 < observed(telemetry, "sum") < 5.0

        for client in clients:  # nobody listens: updates are applied, not observed
            engine.unsubscribe(MARKET, DataType.ORDERBOOK, client)
        venue.book_steps.put_nowait(update(16, 120.0))
        await settle()
        channel = engine.channels[(MARKET.symbol, DataType.ORDERBOOK)]
        assert channel.book.update_id == 16
        assert observed(telemetry, "count") == 5.0
    finally:
        await engine.close()


async def test_without_telemetry_nothing_is_measured():
    venue = ScriptedVenue()
    engine = MarketDataEngine({"SIM": venue}, linger=60.0)
    client = Raw()
    try:
        engine.subscribe(venue, MARKET, DataType.ORDERBOOK, client)
        venue.book_steps.put_nowait(snapshot(1))
        venue.book_steps.put_nowait(update(2, 95.0))
        await settle()
        channel = engine.channels[(MARKET.symbol, DataType.ORDERBOOK)]
        assert channel._observe_fan_out is None
        assert [msgspec.json.decode(f)["type"] for f in client.frames] == ["snapshot", "update"]
    finally:
        await engine.close()
