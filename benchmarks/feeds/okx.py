"""OKX book handling throughput: Astra's feed code next to ccxt.pro's ``okx`` handler.

``bench(frames_path)`` takes the recorded session (``OKX.ws.1.0``; ``OKX.0`` beside it gives
ccxt its markets) and returns messages/s for the recorded ``books`` frames (snapshots +
updates, 3 instruments, replayed in order several times), the best of a few rounds per side,
the sides alternated:

- ``astra``: msgspec decode of ``Push[BookData]`` + ``BookFeed.on_push`` (seqId chain when
  present, CRC32 of the top 25 on every message: the count of comparisons is asserted) +
  ``L2Book.apply`` (what the gateway does);
- ``ccxt``: ``json.loads`` + ccxt.pro ``okx.handle_message`` on a stub client, which keeps
  its own book but verifies no checksum (it checks only seqId, absent from this recording).

Usage: python benchmarks/feeds/okx.py ../shared/fixtures/recorded/OKX.ws.1.0
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import ccxt.pro
import msgspec

from astra.venues.okx.feed import BookFeed
from astra.venues.okx.schemas import BookData, Push
from astra.venues.okx.symbols import instruments_from_raw

_RECV = re.compile(r"^[\d.]+: (\{.*\})$")


class _Sink:
    """The engine's part: keep the snapshot's book and apply every update to it."""

    def __init__(self) -> None:
        self.book = None

    def on_snapshot(self, book) -> None:
        self.book = book

    def on_update(self, update_id, timestamp, bids, asks) -> None:
        self.book.apply(bids, asks, update_id, timestamp)

    def on_resync(self, reason: str) -> None:
        raise AssertionError(f"unexpected resync: {reason}")


class _StubClient:
    """What ccxt.pro's handlers touch on a client: resolve/reject and subscriptions."""

    url = "wss://ws.okx.com:8443/ws/v5/public"

    def __init__(self) -> None:
        self.subscriptions: dict = {}

    def resolve(self, result, message_hash=None):
        return result

    def reject(self, error, message_hash=None):
        raise AssertionError(f"ccxt rejected {message_hash}: {error}")


def _frames(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        m = _RECV.match(line)
        if m and '"channel":"books"' in m[1] and '"action"' in m[1]:
            out.append(m[1])
    return out


def _ccxt_exchange(frames_path: Path):
    exchange = ccxt.pro.okx()
    instruments = frames_path.with_name("OKX.0")
    if instruments.exists():
        rows = [ln.split(": ", 1)[1] for ln in instruments.read_text().splitlines() if " -> " in ln]
        parsed = (exchange.parse_market(i) for i in instruments_from_raw(rows[:5]))
        exchange.set_markets([m for m in parsed if m is not None])
    return exchange


def bench_astra(frames: list[str], repeat: int) -> tuple[float, int]:
    """Messages/s through the feed, and how many checksums it compared."""
    encoded = [f.encode() for f in frames]
    decode = msgspec.json.Decoder(Push[BookData]).decode
    feeds: dict[str, BookFeed] = {}
    for text in frames[: len(frames) // repeat]:
        inst = json.loads(text)["arg"]["instId"]
        feeds.setdefault(inst, BookFeed(None, "books", inst, inst, _Sink()))  # type: ignore[arg-type]
    keys = [json.loads(f)["arg"]["instId"] for f in frames[: len(frames) // repeat]] * repeat
    start = time.perf_counter()
    for inst, raw in zip(keys, encoded, strict=True):
        feeds[inst].on_push(decode(raw))
    rate = len(frames) / (time.perf_counter() - start)
    return rate, sum(feed.sync.verified for feed in feeds.values())


def bench_ccxt(frames: list[str], path: Path) -> float:
    encoded = [f.encode() for f in frames]
    exchange = _ccxt_exchange(path)
    client = _StubClient()
    for inst in {json.loads(f)["arg"]["instId"] for f in frames}:
        symbol = exchange.safe_market(inst)["symbol"]
        client.subscriptions[f"books:{symbol}"] = True
    start = time.perf_counter()
    for raw in encoded:
        exchange.handle_message(client, json.loads(raw))
    return len(frames) / (time.perf_counter() - start)


def bench(frames_path, repeat: int = 20, rounds: int = 3) -> dict:
    """Best of ``rounds`` for each side, the two alternated (a busy machine slows both)."""
    path = Path(frames_path)
    frames = _frames(path) * repeat
    astra = ccxt_rate = 0.0
    for _ in range(rounds):
        rate, verified = bench_astra(frames, repeat)
        # Every recorded message carries a checksum and every one was compared.
        assert verified == len(frames), f"checksums verified: {verified} of {len(frames)}"
        astra = max(astra, rate)
        ccxt_rate = max(ccxt_rate, bench_ccxt(frames, path))
    return {
        "messages": len(frames),
        "checksums_verified": verified,
        "astra_msgs_per_s": astra,
        "ccxt_msgs_per_s": ccxt_rate,
    }


if __name__ == "__main__":
    result = bench(sys.argv[1] if len(sys.argv) > 1 else "../shared/fixtures/recorded/OKX.ws.1.0")
    print(json.dumps({k: round(v) for k, v in result.items()}, indent=2))
