"""HTX book handling throughput: Astra's feed code next to ccxt.pro's ``htx`` handler.

``bench(frames_path)`` takes the recorded session (``HUOBI.ws.44.0``; ``HUOBI.0`` beside it
gives ccxt its markets) and returns messages/s for:

- ``depth_astra``: the recorded ``depth.step0`` frames (292 pushes of ten markets, each run
  ``passes`` sessions of them) through what the feed runs: one ``Inflater`` per session,
  ``depth_fields`` (C; any frame it does not read is decoded by msgspec, as everywhere
  without the extension) + ``DepthBookHandler`` (mrid/version order, the diff from the
  previous push) into a sink that keeps an ``L2Book`` (``reset`` on a snapshot, ``apply`` on
  an update: what the gateway does with them);
- ``depth_ccxt``: the same frames through gunzip + ``json.loads`` + ccxt.pro
  ``htx.handle_message``. ccxt keeps no book from ``depth.step0`` (it only caches pushes that
  carry no ``prevSeqNum``), so this is a lower bound on its cost for these frames (its CPU
  plus the collections its parsed frames cause; with the collector off it runs ~3x faster);
- ``mbp_astra`` / ``mbp_ccxt``: synthetic ``mbp.150`` increments (gzip, a few levels each,
  ``prevSeqNum`` chained) through ``Inflater`` + msgspec + ``MbpSync`` + ``L2Book`` vs
  ccxt.pro's handler on a book already synced to the first ``prevSeqNum`` (both apply every
  increment).

Each figure is the best of ``rounds`` runs, the four kinds of run alternated, timed in CPU
seconds of this process (``time.process_time``): on a machine shared with other work, wall
time mostly measures how often the process was preempted.

Which implementation runs (``IMPLEMENTATION``: "c" with the extension built, "python" without
it or with ``ASTRA_NATIVE=0``) is printed first when run as a script.

Usage: python benchmarks/feeds/htx.py ../shared/fixtures/recorded/HUOBI.ws.44.0
"""

from __future__ import annotations

import ast
import asyncio
import gc
import gzip
import json
import random
import re
import sys
import time
from pathlib import Path

import msgspec

from astra.venues.book import L2Book
from astra.venues.htx.feed import (
    IMPLEMENTATION,
    DepthBookHandler,
    Inflater,
    MbpSync,
    depth_fields,
)
from astra.venues.htx.schemas import DepthMessage, MbpMessage
from astra.venues.htx.symbols import ccxt_markets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import EngineSink as _BookSink

_RECV = re.compile(r"^[\d.]+: (b['\"].*)$")


class _StubClient:
    """What ccxt.pro's handlers touch on a client: resolve/reject and subscriptions."""

    url = "wss://api.huobi.pro/ws"

    def __init__(self) -> None:
        self.subscriptions: dict = {}

    def resolve(self, result, message_hash=None):
        return result

    def reject(self, error, message_hash=None):
        return error


def _depth_frames(path: Path) -> list[bytes]:
    frames = []
    for line in path.read_text().splitlines():
        if m := _RECV.match(line):
            raw = ast.literal_eval(m[1])  # bytes literal: parsed, never evaluated
            if json.loads(gzip.decompress(raw)).get("ch", "").endswith(".depth.step0"):
                frames.append(raw)
    return frames


def _mbp_frames(n: int = 20_000) -> tuple[int, list[bytes]]:
    rng = random.Random(1)
    seq = start = 100_000
    frames = []
    for i in range(n):
        prev, seq = seq, seq + rng.randint(1, 5)
        bids = [[round(99.5 + rng.randint(0, 49) * 0.01, 2), rng.randint(0, 9) / 3] for _ in "ab"]
        asks = [[round(100.01 + rng.randint(0, 49) * 0.01, 2), rng.randint(0, 9) / 3]]
        tick = {"seqNum": seq, "prevSeqNum": prev, "bids": bids, "asks": asks}
        msg = {"ch": "market.btcusdt.mbp.150", "ts": 1_600_000_000_000 + i, "tick": tick}
        frames.append(gzip.compress(json.dumps(msg).encode()))
    return start, frames


def _best_rates(runs: dict, rounds: int) -> dict[str, float]:
    """msgs/s of each ``name: (messages, fn)`` in CPU time, best of ``rounds``, the runs
    alternated so both sides see the same machine; a full collection before each run lets
    every run start from the same collector state (the collections a run's own allocations
    cause count)."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, (n, fn) in runs.items():
            gc.collect()
            t0 = time.process_time()
            fn()
            best[name] = max(best[name], n / (time.process_time() - t0))
    return best


def _astra_depth(frames: list[bytes]) -> None:
    decode = msgspec.json.Decoder(DepthMessage, strict=False).decode
    inflate = Inflater().inflate  # one per connection, as the feed keeps it
    handlers: dict[str, DepthBookHandler] = {}
    for raw in frames:
        data = inflate(raw)
        # As _DepthBookFeed: the push read by depth_fields where built, else decoded.
        fields = None if depth_fields is None else depth_fields(data)
        if fields is not None:
            ch = fields[0]
        else:
            m = decode(data)
            ch = m.ch
        handler = handlers.get(ch)
        if handler is None:
            handler = handlers[ch] = DepthBookHandler(_BookSink(), ch)
        if fields is not None:
            handler.on_fields(fields)
        else:
            handler.on_push(m.tick, m.tick.ts or m.ts)


def _astra_mbp(start: int, frames: list[bytes]) -> None:
    decode = msgspec.json.Decoder(MbpMessage, strict=False).decode
    inflate = Inflater().inflate
    sync, book = MbpSync(), L2Book("X")
    sync.start(start)
    for raw in frames:
        m = decode(inflate(raw))
        if sync.push(m.tick):
            book.apply(m.tick.bids, m.tick.asks, m.tick.seqNum, m.ts)


def _ccxt_feeds(markets: list[dict], start: int):
    """(depth, mbp) callables feeding frames to one ccxt.pro ``htx``: each depth run starts
    with no books (as each astra run does), each mbp run with a book synced to ``start``."""
    import ccxt.pro

    exchange = ccxt.pro.htx()
    exchange.set_markets(markets)
    client = _StubClient()

    def feed(frames: list[bytes]) -> None:
        for raw in frames:
            exchange.handle_message(client, json.loads(gzip.decompress(raw)))

    def depth(frames: list[bytes]) -> None:
        exchange.orderbooks = {}
        feed(frames)

    def mbp(frames: list[bytes]) -> None:
        book = exchange.order_book({}, 150)
        book["nonce"] = start
        exchange.orderbooks = {"BTC/USDT": book}
        feed(frames)
        assert exchange.orderbooks["BTC/USDT"]["nonce"] != start  # increments were applied

    return exchange, depth, mbp


def bench(frames_path, rounds: int = 7, passes: int = 3) -> dict:
    """Best-of-``rounds`` msgs/s; a depth run is ``passes`` sessions of the recorded frames."""
    path = Path(frames_path)
    depth = _depth_frames(path)
    start, mbp = _mbp_frames()
    spot = json.loads((path.parent / "HUOBI.0").read_text().split(": ", 1)[1].splitlines()[0])
    exchange, ccxt_depth, ccxt_mbp = _ccxt_feeds(ccxt_markets({"spot": spot}), start)
    n_depth = len(depth) * passes
    try:
        return _best_rates(
            {
                "depth_astra": (n_depth, lambda: [_astra_depth(depth) for _ in range(passes)]),
                "depth_ccxt": (n_depth, lambda: [ccxt_depth(depth) for _ in range(passes)]),
                "mbp_astra": (len(mbp), lambda: _astra_mbp(start, mbp)),
                "mbp_ccxt": (len(mbp), lambda: ccxt_mbp(mbp)),
            },
            rounds,
        )
    finally:
        asyncio.run(exchange.close())


if __name__ == "__main__":
    print(f"implementation: {IMPLEMENTATION}")
    for name, rate in bench(sys.argv[1]).items():
        print(f"{name:12s} {rate:12,.0f} msg/s")
