"""Order entry latency, side by side in one run, on the simulator over loopback.

Three ways to place the same order (MARKET, spot, 0.001 BTC, alternating sides), in rounds
that alternate which goes first (so drift in the machine's load hits each alike):

1. ``ccxt direct``: ccxt's ``aster`` straight to the simulator, as a user without Astra would
   (its fastest setup: no throttle, the C Keccak Astra installs, markets loaded once).
2. ``native direct``: Astra's native signed client (``astra.venues.aster.native``) straight to
   the simulator, with the call the gateway makes (``place``: the answer read into an Astra
   ``Order``): the floor the gateway stands on.
3. ``gateway``: ``POST /orders`` through an in-process ``Gateway`` (credentials in headers,
   the order journaled in SQLite: intent committed before sending, acknowledgement deferred,
   the limiter, normalization, the HTTP hop), which sends through the native client, from a
   plain aiohttp client (any HTTP client a user may have);
4. ``gateway via the SDK``: the same ``POST /orders`` from Astra's own Python client
   (``AsyncAstra.place_order``: the order built and read back as Astra models, on its
   kept-alive connections), as a Python user of Astra places an order.

Where the simulator runs (``--sim``): ``inprocess`` (the default) on this process's event loop,
or ``child`` (``astra sim`` as a child process, as ``astra serve`` runs it). In process, every
path's time is CPU work (the simulator's is the same for all three), measured without the OS
scheduler in the way: on this shared 2-core machine, waking another process costs 1-10 ms
depending on what else runs, which swamps what is measured here and varies from run to run.
A child is closer to production on an idle machine; the ratios are what to compare.

The event loop (``--loop``): ``uvloop`` (the default, as ``astra serve`` runs the gateway, see
``astra.cli``) or ``asyncio``'s own. All three paths share the loop, so each is measured on
the same one; the gateway's path crosses it twice (the client's request, then the venue's),
so the loop's own cost per request weighs on it twice.

Pacing (``--rate``, orders per second over all paths, default 90): the three paths trade on
one simulator account, whose documented limit is 1,000 orders per 10 s (100/s), and the
gateway enforces it (its venue limiter, ccxt's 100/s for SIM): unpaced, the gateway's rounds
outrun the limit and wait for tokens (~10 ms each, which was the p90 here before), while ccxt
direct and native direct, unthrottled, do not. Paced under the limit, every path is measured
on the same terms; ``--rate 0`` sends back to back as before.

Printed: median and p90 of each, ``gateway - native direct`` (target <= 1 ms),
``gateway / ccxt direct`` and ``via the SDK / ccxt direct`` (target < 1), on wall time and
on this thread's CPU time per order (``time.thread_time``: with the simulator in process,
all of a path's work but the kernel's is on this thread, and unlike wall time it does not
grow when other processes take the cores).

Usage: python benchmarks/bench_trading.py [--orders 300] [--rounds 6] [--sim inprocess|child]
       [--rate 90] [--loop uvloop|asyncio]
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

from astra.client import AsyncAstra
from astra.server.gateway import Gateway, SimChild, venues_from_config
from astra.store import ApiKeyStore, open_database
from astra.trading.paper import create_paper_account
from astra.venues.aster.trading import AsterPrivate

MARKET = "SIM-SPOT-BTC-USDT"


def _stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.9)] * 1000


def _ccxt_urls(client, base: str) -> None:
    api = client.urls["api"]
    api["sapiPublic"] = api["sapiPrivate"] = base + "/api"
    api["fapiPublic"] = api["fapiPrivate"] = base + "/fapi"


class _InProcessSim:
    """The simulator on this event loop, with ``SimChild``'s interface."""

    async def start(self) -> None:
        from astra.sim.app import SimExchange
        from astra.sim.server import SimServer

        self._server = SimServer(SimExchange(seed=7))
        await self._server.__aenter__()
        self.url = self._server.base_url

    async def stop(self) -> None:
        await self._server.__aexit__(None, None, None)


async def main(orders: int, rounds: int, where: str, rate: float = 90.0) -> None:
    spacing = 1 / rate if rate > 0 else 0.0
    next_start = time.perf_counter()

    async def paced() -> None:
        """Wait for this order's turn: at most ``rate`` orders a second over all paths."""
        nonlocal next_start
        delay = next_start - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        next_start = max(next_start, time.perf_counter()) + spacing

    sim = SimChild(seed=7) if where == "child" else _InProcessSim()
    await sim.start()
    try:
        creds, _ = await create_paper_account(sim.url, deposit="USDT=100000000,BTC=1000")
        keys = ApiKeyStore(open_database(data_dir=Path(tempfile.mkdtemp())))
        token = keys.create("bench").token
        # 1. ccxt as a user would set it up (no throttle: paths are compared, not pacing).
        ccxt = ccxt_async.aster({"privateKey": creds.private_key, "enableRateLimit": False,
                                 "options": {"builderFee": False}})
        _ccxt_urls(ccxt, sim.url)
        # 2. the native client, on a session of its own
        session = aiohttp.ClientSession()
        private = AsterPrivate({**creds.ccxt_config(), "session": session,
                                "enableRateLimit": False, "options": {
                                    **creds.ccxt_config()["options"], "builderFee": False}})
        _ccxt_urls(private, sim.url)
        gw = Gateway(venues_from_config({}, sim.url), keys, port=0, metrics_port=0)
        try:
            await ccxt.load_markets()
            private.set_markets(ccxt.markets, ccxt.currencies)
            native = private.native
            await gw.start()
            headers = {"x-astra-api-key": f"Bearer {token}",
                       "x-astra-exchange-private-key": creds.private_key}
            http = aiohttp.ClientSession(gw.base_url, headers=headers)
            sdk = AsyncAstra(gw.base_url, token, headers={
                "x-astra-exchange-private-key": creds.private_key})

            async def via_ccxt(side: str) -> None:
                await ccxt.create_order("BTC/USDT", "market", side, 0.001)

            async def via_native(side: str) -> None:  # the call the gateway makes
                await native.place("BTC/USDT", "market", side, "0.001", market=MARKET)

            async def via_gateway(side: str) -> None:
                async with http.post("/orders", json={
                        "market": MARKET, "side": side.upper(), "type": "MARKET",
                        "quantity": 0.001}) as resp:
                    body = await resp.read()
                    assert resp.status == 200, body

            async def via_sdk(side: str) -> None:
                order = await sdk.place_order(MARKET, side.upper(), "MARKET", 0.001)
                assert order.status == "FILLED", order

            paths = {"ccxt direct": via_ccxt, "native direct": via_native,
                     "gateway POST /orders": via_gateway, "gateway via the SDK": via_sdk}
            samples: dict[str, list[float]] = {name: [] for name in paths}
            cpu: dict[str, list[float]] = {name: [] for name in paths}
            for fn in paths.values():  # warm-up: connections, caches, the gateway's client
                for i in range(10):
                    await paced()
                    await fn("buy" if i % 2 == 0 else "sell")
            per_round = max(1, orders // rounds)
            names = list(paths)
            for r in range(rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    fn = paths[name]
                    for i in range(per_round):
                        await paced()
                        start, start_cpu = time.perf_counter(), time.thread_time()
                        await fn("buy" if i % 2 == 0 else "sell")
                        samples[name].append(time.perf_counter() - start)
                        cpu[name].append(time.thread_time() - start_cpu)
            await http.close()
            await sdk.close()
        finally:
            await gw.close()
            await ccxt.close()
            await private.close()
            await session.close()
    finally:
        await sim.stop()
    meds, cpus = {}, {}
    for name, values in samples.items():
        med, p90 = _stats(values)
        meds[name] = med
        cpus[name] = statistics.median(cpu[name]) * 1000
        print(f"{name:<22} median {med:6.2f} ms   p90 {p90:6.2f} ms   "
              f"this thread's CPU median {cpus[name]:5.2f} ms   (n={len(values)})")
    for label, figures in (("wall", meds), ("CPU", cpus)):
        g, n, c, k = (figures[x] for x in ("gateway POST /orders", "native direct",
                                           "ccxt direct", "gateway via the SDK"))
        print(f"[{label}] gateway - native direct: {g - n:+.2f} ms (target <= 1 ms); "
              f"gateway / ccxt direct: {g / c:.2f}x, via the SDK / ccxt direct: {k / c:.2f}x "
              f"(target < 1); native / ccxt direct: {n / c:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300, help="orders per path")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--sim", choices=("inprocess", "child"), default="inprocess")
    parser.add_argument("--rate", type=float, default=90.0,
                        help="orders per second over all paths (0: back to back)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the event loop (uvloop: as astra serve runs)")
    args = parser.parse_args()
    run = asyncio.run
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # (optional where it cannot be installed, as for astra serve)
            args.loop = "asyncio (uvloop is not installed)"
        else:
            run = uvloop.run
    pace = f"{args.rate:g} orders/s" if args.rate > 0 else "unpaced"
    print(f"simulator: {args.sim}, {pace}, loop: {args.loop}")
    run(main(args.orders, args.rounds, args.sim, args.rate))
