"""OKX book handling throughput: Astra's feed code next to ccxt.pro's ``okx`` handler.

``bench(frames_path)`` takes the recorded session (``OKX.ws.1.0``; ``OKX.0`` beside it gives
ccxt its markets) and returns messages/s for the recorded ``books`` frames (snapshots +
updates, 3 instruments, replayed in order several times), the best of a few rounds per side,
the sides alternated:

- ``astra``: ``book.decode_push`` (the stream's decoder: a books push parsed by the C core
  where it is built, else msgspec's ``Push[BookData]``) + ``BookFeed.on_push`` (seqId chain
  when present, CRC32 of the top 25 on every message: the count of comparisons is asserted) +
  ``L2Book.apply`` (what the gateway does);
- ``ccxt``: ``json.loads`` + ccxt.pro ``okx.handle_message`` on a stub client, which keeps
  its own book but verifies no checksum (it checks only seqId, absent from this recording).

Both sides get each frame as the socket gives it (text). Each side is timed in CPU seconds,
the best of ``rounds``, the sides alternated (``timing.py``); a run's books start empty (set
up untimed) and are built by the recorded snapshots inside the timed loop. The output says
which book core ran (``book_core``: ``c`` or ``python``, see ``okx/book.py``).

Usage: python benchmarks/feeds/okx.py ../shared/fixtures/recorded/OKX.ws.1.0
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import ccxt.pro

from astra.venues.okx.book import IMPLEMENTATION, decode_push
from astra.venues.okx.feed import BookFeed
from astra.venues.okx.symbols import instruments_from_raw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import EngineSink as _Sink
from timing import best_rates

_RECV = re.compile(r"^[\d.]+: (\{.*\})$")


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


def astra_run(frames: list[str], repeat: int):
    """A run of the feed over ``frames``: returns its CPU seconds; ``run.verified`` is how
    many checksums the last run compared."""
    decode = decode_push  # what OkxVenue's book stream decodes with
    once = frames[: len(frames) // repeat]
    keys = [json.loads(f)["arg"]["instId"] for f in once] * repeat

    def run() -> float:
        feeds = {inst: BookFeed(None, "books", inst, inst, _Sink()) for inst in set(keys)}  # type: ignore[arg-type]
        targets = [feeds[inst].on_push for inst in keys]
        start = time.process_time()
        for on_push, raw in zip(targets, frames, strict=True):
            on_push(decode(raw))
        elapsed = time.process_time() - start
        run.verified = sum(feed.sync.verified for feed in feeds.values())
        # Every recorded message carries a checksum and every one was compared.
        assert run.verified == len(frames), f"checksums verified: {run.verified} of {len(frames)}"
        return elapsed

    run.verified = 0
    return run


def ccxt_run(frames: list[str], path: Path):
    """A run of ccxt.pro's handler over ``frames`` on a fresh exchange: its CPU seconds."""
    insts = {json.loads(f)["arg"]["instId"] for f in frames}

    def run() -> float:
        exchange = _ccxt_exchange(path)
        client = _StubClient()
        for inst in insts:
            client.subscriptions[f"books:{exchange.safe_market(inst)['symbol']}"] = True
        handle = exchange.handle_message
        start = time.process_time()
        for raw in frames:
            handle(client, json.loads(raw))
        elapsed = time.process_time() - start
        assert len(exchange.orderbooks) == len(insts)  # every book was kept
        return elapsed

    return run


def bench(frames_path, repeat: int = 20, rounds: int = 5) -> dict:
    """Messages per CPU second of each side, best of ``rounds``, the sides alternated."""
    path = Path(frames_path)
    frames = _frames(path) * repeat
    astra = astra_run(frames, repeat)
    rates = best_rates(
        {"astra": (len(frames), astra), "ccxt": (len(frames), ccxt_run(frames, path))}, rounds
    )
    return {
        "messages": len(frames),
        "checksums_verified": astra.verified,
        "astra_msgs_per_s": rates["astra"],
        "ccxt_msgs_per_s": rates["ccxt"],
        "book_core": IMPLEMENTATION,
    }


if __name__ == "__main__":
    result = bench(sys.argv[1] if len(sys.argv) > 1 else "../shared/fixtures/recorded/OKX.ws.1.0")
    ratio = result["astra_msgs_per_s"] / result["ccxt_msgs_per_s"]
    print(json.dumps({k: round(v) if isinstance(v, float) else v for k, v in result.items()}))
    print(f"astra / ccxt.pro: {ratio:.1f}x")
