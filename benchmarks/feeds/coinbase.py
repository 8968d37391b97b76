"""Coinbase Advanced Trade ``level2`` throughput: Astra's router next to ccxt.pro's handler.

There is no recorded Advanced Trade session in ``../shared/fixtures`` (the recordings there are
of the retired ``ws-feed.pro``), so ``bench(frames_path)`` reads ``l2_data`` messages, one
raw JSON message per line, from ``frames_path`` when it exists, and otherwise writes a
deterministic synthetic session there first (one 2,000-level snapshot, then 20,000 updates
of 1-3 levels each, interleaved with heartbeats, shapes as in the channel docs). It returns
messages/s for:

- ``astra``: ``BookRouter.on_message`` (msgspec decode, the connection-wide
  ``sequence_num`` check, event routing) + ``L2Book.apply`` in the sink (what the gateway does);
- ``ccxt``: ``json.loads`` + ccxt.pro ``coinbase.handle_message`` on a stub client (it keeps
  its own book and checks no sequence number).

Each side is timed in CPU seconds, the best of ``rounds``, the sides alternated (``timing.py``).

Usage: python benchmarks/feeds/coinbase.py [/tmp/coinbase-level2.jsonl]
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import ccxt.pro

from astra.venues.coinbase import parse_products
from astra.venues.coinbase.feed import BookRouter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import EngineSink as _Sink
from timing import best_rates


class _StubClient:
    url = "wss://advanced-trade-ws.coinbase.com"

    def __init__(self) -> None:
        self.subscriptions: dict = {}

    def resolve(self, result, message_hash=None):
        return result

    def reject(self, error, message_hash=None):
        raise AssertionError(f"ccxt rejected {message_hash}: {error}")


def _level(side: str, price: float, qty: float, when: str) -> dict:
    return {"side": side, "event_time": when, "price_level": f"{price:.2f}", "new_quantity": qty}


def synthesize(path: Path, updates: int = 20_000, seed: int = 1) -> None:
    rng = random.Random(seed)
    lines, seq = [], 0

    def emit(channel: str, events: list) -> None:
        nonlocal seq
        stamp = (
            f"2024-10-08T09:{(seq // 60000) % 60:02d}:{(seq // 1000) % 60:02d}.{seq % 1000:03d}Z"
        )
        msg = {"channel": channel, "client_id": "", "timestamp": stamp, "sequence_num": seq}
        lines.append(json.dumps(dict(msg, events=events)))
        seq += 1

    epoch = "1970-01-01T00:00:00Z"
    snapshot = [_level("bid", 60000 - i * 0.01, f"{rng.random():.8f}", epoch) for i in range(1000)]
    snapshot += [
        _level("offer", 60000.01 + i * 0.01, f"{rng.random():.8f}", epoch) for i in range(1000)
    ]
    emit("l2_data", [{"type": "snapshot", "product_id": "BTC-USD", "updates": snapshot}])
    for n in range(updates):
        if n % 200 == 0:
            emit("heartbeats", [{"current_time": "now", "heartbeat_counter": str(n)}])
        changes = []
        for _ in range(rng.randint(1, 3)):
            side = rng.choice(("bid", "offer"))
            base = (
                60000 - rng.randrange(0, 300) * 0.01
                if side == "bid"
                else 60000.01 + rng.randrange(0, 300) * 0.01
            )
            qty = "0" if rng.random() < 0.3 else f"{rng.random():.8f}"
            changes.append(_level(side, base, qty, "2024-10-08T09:10:34.970831Z"))
        emit("l2_data", [{"type": "update", "product_id": "BTC-USD", "updates": changes}])
    path.write_text("\n".join(lines) + "\n")


def bench(frames_path, repeat: int = 3, rounds: int = 5) -> dict:
    """Best of ``rounds`` per side in CPU time, the sides alternated (``timing.py``); a run is
    ``repeat`` passes over the session, each from an empty book."""
    path = Path(frames_path)
    if not path.exists():
        synthesize(path)
    frames = [line.encode() for line in path.read_text().splitlines() if line]

    def astra() -> float:
        routers = []
        for _ in range(repeat):
            router = BookRouter()
            router.add("BTC-USD", _Sink(), 0.0, "COINBASE-SPOT-BTC-USD")
            router.connected(0.0)
            routers.append(router)
        start = time.process_time()
        for router in routers:
            for raw in frames:
                router.on_message(raw, 0.0)
        return time.process_time() - start

    exchange = ccxt.pro.coinbase()
    product = {
        "product_id": "BTC-USD",
        "base_currency_id": "BTC",
        "quote_currency_id": "USD",
        "product_type": "SPOT",
        "trading_disabled": False,
    }
    exchange.set_markets(parse_products(exchange, [product]))
    client = _StubClient()

    def ccxt_pro() -> float:
        start = time.process_time()
        for _ in range(repeat):
            exchange.orderbooks = {}
            for raw in frames:
                exchange.handle_message(client, json.loads(raw))
        return time.process_time() - start

    n = len(frames) * repeat
    rates = best_rates({"astra": (n, astra), "ccxt": (n, ccxt_pro)}, rounds)
    return {"messages": n, "astra_msgs_per_s": rates["astra"], "ccxt_msgs_per_s": rates["ccxt"]}


if __name__ == "__main__":
    result = bench(sys.argv[1] if len(sys.argv) > 1 else "/tmp/coinbase-level2.jsonl")
    print(json.dumps({k: round(v) for k, v in result.items()}, indent=2))
