"""HTX book handling throughput: Astra's feed code next to ccxt.pro's ``htx`` handler.

``bench(frames_path)`` takes the recorded session (``HUOBI.ws.44.0``; ``HUOBI.0`` beside it
gives ccxt its markets) and returns messages/s for:

- ``depth_astra``: the recorded ``depth.step0`` frames through gunzip + msgspec decode +
  ``FullBookDiff`` (mrid/version order, diff) + ``L2Book.apply`` (what the gateway does);
- ``depth_ccxt``: the same frames through gunzip + ``json.loads`` + ccxt.pro
  ``htx.handle_message``. ccxt keeps no book from ``depth.step0`` (it only caches pushes that
  carry no ``prevSeqNum``), so this is an upper bound on its cost for these frames;
- ``mbp_astra`` / ``mbp_ccxt``: synthetic ``mbp.150`` increments (gzip, a few levels each,
  ``prevSeqNum`` chained) through ``MbpSync`` + ``L2Book`` vs ccxt.pro's handler on a book
  already synced to the first ``prevSeqNum`` (both apply every increment).

Usage: python benchmarks/feeds/htx.py ../shared/fixtures/recorded/HUOBI.ws.44.0
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import json
import random
import re
import sys
import time
from pathlib import Path

import msgspec

from astra.venues.book import L2Book
from astra.venues.htx.feed import FullBookDiff, MbpSync, gunzip
from astra.venues.htx.schemas import DepthMessage, MbpMessage
from astra.venues.htx.symbols import ccxt_markets

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


def _rate(n: int, fn) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def _astra_depth(frames: list[bytes]) -> None:
    decode = msgspec.json.Decoder(DepthMessage, strict=False).decode
    diffs: dict[str, FullBookDiff] = {}
    books: dict[str, L2Book] = {}
    for raw in frames:
        m = decode(gunzip(raw))
        diff = diffs.get(m.ch)
        if diff is None:
            diff = diffs[m.ch] = FullBookDiff()
            diff.load(m.tick)
            books[m.ch] = L2Book(m.ch)
            books[m.ch].reset(diff.bids.items(), diff.asks.items(), diff.seq, m.tick.ts)
            continue
        changes = diff.changes(m.tick)
        if changes is not None:
            books[m.ch].apply(*changes, diff.seq, m.tick.ts)


def _astra_mbp(start: int, frames: list[bytes]) -> None:
    decode = msgspec.json.Decoder(MbpMessage, strict=False).decode
    sync, book = MbpSync(), L2Book("X")
    sync.start(start)
    for raw in frames:
        m = decode(gunzip(raw))
        if sync.push(m.tick):
            book.apply(m.tick.bids, m.tick.asks, m.tick.seqNum, m.ts)


async def _ccxt_runs(markets: list[dict], depth: list[bytes], start: int, mbp: list[bytes]):
    import ccxt.pro

    exchange = ccxt.pro.htx()
    try:
        exchange.set_markets(markets)
        client = _StubClient()

        def feed(frames: list[bytes]) -> None:
            for raw in frames:
                exchange.handle_message(client, json.loads(gzip.decompress(raw)))

        depth_rate = _rate(len(depth), lambda: feed(depth))
        book = exchange.order_book({}, 150)
        book["nonce"] = start
        exchange.orderbooks["BTC/USDT"] = book
        mbp_rate = _rate(len(mbp), lambda: feed(mbp))
        assert exchange.orderbooks["BTC/USDT"]["nonce"] != start  # increments were applied
        return depth_rate, mbp_rate
    finally:
        await exchange.close()


def bench(frames_path) -> dict:
    path = Path(frames_path)
    depth = _depth_frames(path)
    start, mbp = _mbp_frames()
    spot = json.loads((path.parent / "HUOBI.0").read_text().split(": ", 1)[1].splitlines()[0])
    markets = ccxt_markets({"spot": spot})
    depth_ccxt, mbp_ccxt = asyncio.run(_ccxt_runs(markets, depth, start, mbp))
    return {
        "depth_astra": _rate(len(depth), lambda: _astra_depth(depth)),
        "depth_ccxt": depth_ccxt,
        "mbp_astra": _rate(len(mbp), lambda: _astra_mbp(start, mbp)),
        "mbp_ccxt": mbp_ccxt,
    }


if __name__ == "__main__":
    for name, rate in bench(sys.argv[1]).items():
        print(f"{name:12s} {rate:12,.0f} msg/s")
