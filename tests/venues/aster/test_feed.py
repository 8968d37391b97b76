"""Aster's feeds (the simulator's REST on 127.0.0.1 for the markets, WebSockets that refuse
every connection): a venue down from the very start is reported at once, the book that never
synced and the trade stream that was never live alike."""

from __future__ import annotations

import pytest
from tests.venues.loopback import check_down_from_the_start, refused_port

from astra.marketdata.engine import MarketDataEngine
from astra.venues.aster import AsterUrls, AsterVenue


@pytest.mark.parametrize("symbol", ["SIM-SPOT-BTC-USDT", "SIM-PERP-BTC-USDT"])
async def test_a_venue_down_from_the_start_is_reported_at_once(symbol, sim):
    rest = AsterUrls.for_simulator(sim.base_url)
    with refused_port() as port:
        ws = f"ws://127.0.0.1:{port}"
        urls = AsterUrls(rest.spot_rest, rest.perp_rest, f"{ws}/sstream", f"{ws}/fstream")
        engine = MarketDataEngine({"SIM": AsterVenue("SIM", urls)}, linger=60.0, book_wait=30.0)
        try:
            await check_down_from_the_start(engine, symbol)
        finally:
            await engine.close()
