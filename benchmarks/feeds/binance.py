"""Binance book handling throughput: Astra's feed code next to ccxt.pro's ``binance`` handler.

``bench(frames_path)`` takes the recorded spot session (``BINANCE.ws.1.0``; ``BINANCE.http.0.0``
and ``BINANCE.0`` beside it give the snapshot and ccxt's markets) and returns messages/s for
the NKNUSDT ``depth@100ms`` diffs, replayed ``repeat`` times with their update ids shifted
so the ``U == previous u + 1`` chain stays intact:

- ``astra``: msgspec decode of ``DepthUpdate`` + ``DiffSync.push`` (the chain check) +
  ``to_changes`` + ``L2Book.apply``: what the feed and the engine do per message;
- ``ccxt``: ``json.loads`` + ccxt.pro ``binance.handle_message`` on a stub client, whose
  book was reset from the same snapshot (it checks the same chain).

Each side is timed in CPU seconds, the best of ``rounds``, the sides alternated (``timing.py``).

Usage: python benchmarks/feeds/binance.py ../shared/fixtures/recorded/BINANCE.ws.1.0
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import ccxt.pro
import msgspec

from astra.venues.aster.feed import DiffSync
from astra.venues.binance.schemas import DepthUpdate
from astra.venues.book import L2Book

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import best_rates

_WS = re.compile(r"^[\d.]+: (\{.*\})$")
_SYMBOL = "NKNUSDT"


class _StubClient:
    """What ccxt.pro's handlers touch on a client: url, subscriptions, resolve/reject."""

    url = "wss://stream.binance.com:9443/stream"  # "/stream" marks a spot client for ccxt

    def __init__(self) -> None:
        self.subscriptions: dict = {}

    def resolve(self, result, message_hash=None):
        return result

    def reject(self, error, message_hash=None):
        raise AssertionError(f"ccxt rejected {message_hash}: {error}")


def _session(path: Path) -> tuple[dict, list[dict]]:
    snapshot = None
    for line in path.with_name("BINANCE.http.0.0").read_text().splitlines():
        if f"symbol={_SYMBOL}&" in line:
            snapshot = json.loads(line.split(": ", 1)[1])
    events = []
    for line in path.read_text().splitlines():
        m = _WS.match(line)
        if m and f'"{_SYMBOL.lower()}@depth@100ms"' in m[1]:
            events.append(json.loads(m[1])["data"])
    return snapshot, [e for e in events if e["u"] > snapshot["lastUpdateId"]]


def _tape(snapshot: dict, events: list[dict], repeat: int) -> list[bytes]:
    span = events[-1]["u"] - snapshot["lastUpdateId"]
    return [
        json.dumps(e | {"U": e["U"] + k * span, "u": e["u"] + k * span}).encode()
        for k in range(repeat)
        for e in events
    ]


def _ccxt_exchange(path: Path, snapshot: dict):
    exchange = ccxt.pro.binance()
    exchange.options["crossMarginPairsData"] = []
    exchange.options["isolatedMarginPairsData"] = []
    info = json.loads(path.with_name("BINANCE.0").read_text().splitlines()[0].split(": ", 1)[1])
    entry = next(s for s in info["symbols"] if s["symbol"] == _SYMBOL)
    exchange.set_markets([exchange.parse_market(entry)])
    symbol = exchange.safe_market(_SYMBOL, None, None, "spot")["symbol"]
    book = exchange.order_book({}, 1000)
    book.reset(exchange.parse_order_book(snapshot, symbol))
    book["nonce"] = snapshot["lastUpdateId"]
    book.cache = []
    exchange.orderbooks[symbol] = book
    return exchange


def bench(frames_path, repeat: int = 400, rounds: int = 5) -> dict:
    """Best of ``rounds`` per side in CPU time, the sides alternated (``timing.py``)."""
    path = Path(frames_path)
    snapshot, events = _session(path)
    tape = _tape(snapshot, events, repeat)
    last_id = json.loads(tape[-1])["u"]
    decode = msgspec.json.Decoder(DepthUpdate).decode

    def astra() -> float:
        sync = DiffSync(use_pu=False)
        sync.start(snapshot["lastUpdateId"])
        book = L2Book(_SYMBOL)
        book.reset(
            [(float(p), float(q)) for p, q in snapshot["bids"]],
            [(float(p), float(q)) for p, q in snapshot["asks"]],
            snapshot["lastUpdateId"],
            0,
        )
        start = time.process_time()
        for raw in tape:
            event = decode(raw)
            if sync.push(event):
                bids, asks = event.to_changes()
                book.apply(bids, asks, event.u, event.E)
        elapsed = time.process_time() - start
        assert book.update_id == last_id  # the whole chain was followed
        return elapsed

    def ccxt() -> float:
        exchange = _ccxt_exchange(path, snapshot)
        client = _StubClient()
        start = time.process_time()
        for raw in tape:
            exchange.handle_message(client, json.loads(raw))
        elapsed = time.process_time() - start
        (ccxt_book,) = exchange.orderbooks.values()
        assert ccxt_book["nonce"] == last_id  # ccxt followed the same chain
        return elapsed

    rates = best_rates({"astra": (len(tape), astra), "ccxt": (len(tape), ccxt)}, rounds)
    return {
        "messages": len(tape),
        "astra_msgs_per_s": rates["astra"],
        "ccxt_msgs_per_s": rates["ccxt"],
    }


if __name__ == "__main__":
    default = "../shared/fixtures/recorded/BINANCE.ws.1.0"
    result = bench(sys.argv[1] if len(sys.argv) > 1 else default)
    print(json.dumps({k: round(v) for k, v in result.items()}, indent=2))
