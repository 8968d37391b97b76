"""KuCoin spot ``/market/level2`` throughput: Astra's feed path next to ccxt.pro's handler.

``bench(frames_path)`` takes the recorded session (``KUCOIN.ws.1.0``; ``KUCOIN.http.0.0``
beside it gives each symbol's REST snapshot, ``KUCOIN.0`` ccxt's markets). The level2 frames
that follow each snapshot (9 symbols, interleaved as recorded) are replayed ``repeat`` times
with their sequences shifted per pass so the chain stays contiguous (a repeat is new data,
not a duplicate to skip). Both sides start from the same synced books; returns messages/s:

- ``astra``: msgspec decode of ``RawEnvelope`` + the shared connection's type/topic dispatch
  + ``Level2Book.on_data`` (``Level2`` decode of the payload, sequenceStart continuity,
  per-change sequence filter, price-0 skip) + ``L2Book.apply`` in the sink (what the gateway
  does per message);
- ``ccxt``: ``json.loads`` + ccxt.pro ``kucoin.handle_message`` on a stub client (its own
  book; it drops stale messages but checks no continuity once synced).

Each side is timed in CPU seconds, the best of ``rounds``, the sides alternated (``timing.py``).

Usage: python benchmarks/feeds/kucoin.py [../shared/fixtures/recorded/KUCOIN.ws.1.0]
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import ccxt.pro
import msgspec

from astra.venues.book import L2Book
from astra.venues.kucoin.feed import Level2Book
from astra.venues.kucoin.schemas import Level2, RawEnvelope
from astra.venues.kucoin.symbols import parse_ccxt_markets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import EngineSink as _Sink
from timing import best_rates

DEFAULT = Path(__file__).resolve().parents[3] / "shared/fixtures/recorded/KUCOIN.ws.1.0"
_HTTP = re.compile(r"^\S+symbol=(?P<sym>[\w-]+) -> [\d.]+: (?P<body>.*)$")
_RECV = re.compile(r"^[\d.]+: (\{.*\})$")


class _StubClient:
    """What ccxt.pro's handlers touch on a client: resolve/reject and subscriptions."""

    url = "wss://ws-api-spot.kucoin.com"

    def __init__(self) -> None:
        self.subscriptions: dict = {}

    def resolve(self, result, message_hash=None):
        return result

    def reject(self, error, message_hash=None):
        raise AssertionError(f"ccxt rejected {message_hash}: {error}")


def _load(frames_path: Path) -> tuple[dict[str, dict], list[dict]]:
    snapshots = {}
    for line in frames_path.with_name("KUCOIN.http.0.0").read_text().splitlines():
        m = _HTTP.match(line)
        if m:
            snapshots[m["sym"]] = json.loads(m["body"])["data"]
    frames = []
    for line in frames_path.read_text().splitlines():
        m = _RECV.match(line)
        if m and '"/market/level2:' in m[1]:
            frame = json.loads(m[1])
            snap = snapshots.get(frame["data"]["symbol"])
            if snap is not None and frame["data"]["sequenceStart"] > int(snap["sequence"]):
                frames.append(frame)
    return snapshots, frames


def _repeated(snapshots: dict, frames: list[dict], repeat: int) -> list[bytes]:
    span = {}
    for f in frames:
        d = f["data"]
        span[d["symbol"]] = d["sequenceEnd"] - int(snapshots[d["symbol"]]["sequence"])
    out = []
    for r in range(repeat):
        for f in frames:
            d, shift = f["data"], r * span[f["data"]["symbol"]]
            changes = {
                side: [[p, s, str(int(q) + shift)] for p, s, q in d["changes"][side]]
                for side in ("asks", "bids")
            }
            data = dict(d, sequenceStart=d["sequenceStart"] + shift, changes=changes)
            data["sequenceEnd"] = d["sequenceEnd"] + shift
            out.append(json.dumps(dict(f, data=data)).encode())
    return out


def _astra(snapshots: dict, encoded: list[bytes]) -> float:
    """CPU seconds of the message loop (the books set up from the snapshots untimed)."""
    decode = msgspec.json.Decoder(RawEnvelope).decode
    decode_level2 = msgspec.json.Decoder(Level2).decode
    feeds = {}
    for symbol, snap in snapshots.items():
        feed = Level2Book(decode_level2, None, _Sink(), symbol)
        feed.sync.start(int(snap["sequence"]))
        book = L2Book(symbol)
        book.reset(
            [(float(p), float(q)) for p, q in snap["bids"]],
            [(float(p), float(q)) for p, q in snap["asks"]],
            int(snap["sequence"]),
            snap["time"],
        )
        feed.sink.on_snapshot(book)
        feeds[f"/market/level2:{symbol}"] = feed
    start = time.process_time()
    for raw in encoded:  # the connection's per-frame work, then the market's
        frame = decode(raw)
        if frame.type == "message":
            feeds[frame.topic].on_data(frame.data)
    return time.process_time() - start


def _ccxt(frames_path: Path, snapshots: dict, encoded: list[bytes]) -> float:
    """CPU seconds of the message loop (the books set up from the snapshots untimed)."""
    exchange = ccxt.pro.kucoin()
    first = frames_path.with_name("KUCOIN.0").read_text().splitlines()[0]
    exchange.set_markets(parse_ccxt_markets(json.loads(first.split(": ", 1)[1])))
    for symbol, snap in snapshots.items():
        unified = exchange.safe_market(symbol)["symbol"]
        book = exchange.order_book(
            {
                "bids": [[float(p), float(q)] for p, q in snap["bids"]],
                "asks": [[float(p), float(q)] for p, q in snap["asks"]],
                "nonce": int(snap["sequence"]),
            }
        )
        exchange.orderbooks[unified] = book
    client = _StubClient()
    start = time.process_time()
    for raw in encoded:
        exchange.handle_message(client, json.loads(raw))
    return time.process_time() - start


def bench(frames_path=DEFAULT, repeat: int = 20, rounds: int = 5) -> dict:
    """Best of ``rounds`` per side in CPU time, the sides alternated (``timing.py``)."""
    path = Path(frames_path)
    snapshots, frames = _load(path)
    encoded = _repeated(snapshots, frames, repeat)
    n = len(encoded)
    rates = best_rates(
        {
            "astra": (n, lambda: _astra(snapshots, encoded)),
            "ccxt": (n, lambda: _ccxt(path, snapshots, encoded)),
        },
        rounds,
    )
    return {"messages": n, "astra_msgs_per_s": rates["astra"], "ccxt_msgs_per_s": rates["ccxt"]}


if __name__ == "__main__":
    result = bench(sys.argv[1] if len(sys.argv) > 1 else DEFAULT)
    print(json.dumps({k: round(v) for k, v in result.items()}, indent=2))
