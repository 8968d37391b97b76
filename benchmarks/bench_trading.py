"""Order entry latency, side by side in one run, on the simulator over loopback.

1. ccxt ``aster`` straight to the simulator: ``create_order`` (MARKET, spot), sequential.
2. The gateway's ``POST /orders`` for the same order: credentials in headers, the order
   journaled (intent, sent, acknowledged) in SQLite, the key's cached ccxt client, the venue call.
3. The gateway's ``GET /orderbook`` on the same connection, as the floor of a gateway round trip.

Both run in this process on one event loop (the simulator too), so the ratio shows what the
gateway's safety (journal, idempotency, limiter) and normalization add per order.

Usage: python benchmarks/bench_trading.py [--orders 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import ccxt.async_support as ccxt_async

from astra.server.gateway import Gateway, venues_from_config
from astra.sim.admin import parse_deposits
from astra.sim.app import SimExchange
from astra.sim.server import SimServer
from astra.store import ApiKeyStore, open_database


def _summary(name: str, samples: list[float]) -> tuple[str, float]:
    med = statistics.median(samples) * 1000
    p90 = sorted(samples)[int(len(samples) * 0.9)] * 1000
    rate = len(samples) / sum(samples)
    print(f"{name:<36} median {med:7.2f} ms   p90 {p90:7.2f} ms   {rate:7.0f}/s")
    return name, med


async def main(orders: int) -> None:
    async with SimServer(SimExchange(seed=7)) as sim:
        creds = sim.exchange.create_account(parse_deposits("USDT=100000000,BTC=1000"))
        keys = ApiKeyStore(open_database(data_dir=Path(tempfile.mkdtemp())))
        token = keys.create("bench").token
        # No ccxt throttle: the comparison is of request paths, not of pacing policies.
        client = ccxt_async.aster({"privateKey": creds.signerPrivateKey,
                                   "enableRateLimit": False,
                                   "options": {"builderFee": False}})
        api = client.urls["api"]
        api["sapiPublic"] = api["sapiPrivate"] = sim.base_url + "/api"
        api["fapiPublic"] = api["fapiPrivate"] = sim.base_url + "/fapi"
        try:
            await client.load_markets()
            direct = []
            for i in range(orders):
                side = "buy" if i % 2 == 0 else "sell"
                start = time.perf_counter()
                await client.create_order("BTC/USDT", "market", side, 0.001)
                direct.append(time.perf_counter() - start)
        finally:
            await client.close()
        async with Gateway(venues_from_config({}, sim.base_url), keys, port=0,
                           metrics_port=0) as gw:
            headers = {"x-astra-api-key": f"Bearer {token}",
                       "x-astra-exchange-private-key": creds.signerPrivateKey}
            async with aiohttp.ClientSession(gw.base_url, headers=headers) as http:
                via, book = [], []
                for i in range(orders):
                    side = "BUY" if i % 2 == 0 else "SELL"
                    start = time.perf_counter()
                    async with http.post("/orders", json={
                            "market": "SIM-SPOT-BTC-USDT", "side": side, "type": "MARKET",
                            "quantity": 0.001}) as resp:
                        assert resp.status == 200, await resp.text()
                        await resp.read()
                    via.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    async with http.get("/orderbook", params={
                            "market": "SIM-SPOT-BTC-USDT", "depth": "20"}) as resp:
                        await resp.read()
                    book.append(time.perf_counter() - start)
    _, d = _summary("ccxt aster -> simulator", direct)
    _, g = _summary("POST /orders (gateway -> simulator)", via)
    _summary("GET /orderbook (gateway floor)", book)
    print(f"gateway order latency / direct ccxt: {g / d:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200)
    asyncio.run(main(parser.parse_args().orders))
