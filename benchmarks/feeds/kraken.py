"""Kraken v2 ``book`` throughput: Astra's feed path next to ccxt.pro's handler.

The recorded session (``../shared/fixtures/recorded/KRAKEN.ws.50.0``, WebSocket v1
``book-1000`` of ten pairs) is converted to v2 messages first, as Kraken sends them today:
numbers instead of text, and a checksum in every message, computed here from exact decimals at
each pair's precision (the places its v1 text uses). ``bench(frames_path)`` returns messages
per CPU second, the best of a few rounds per side, the sides alternated (``timing.py``):

- ``astra``: the real feed's objects and path, each frame handed to ``SpotDialect.route`` as
  the receive loop does: msgspec decode of the v2 message, ``KrakenStream.deliver`` to the
  pair's ``SpotBook``, whose ``on_message`` runs ``KrakenBook.update`` (timestamp, levels
  applied and truncated, CRC32 of the top 10 compared) and the sink's ``L2Book.apply`` (what
  the gateway does per message). Every message's checksum is compared, and the count of
  comparisons, and of messages that reached the sink, is asserted. ``book`` in the result
  says which ``KrakenBook`` ran (``c``, or ``python`` with ``ASTRA_NATIVE=0`` or unbuilt);
- ``ccxt``: ``json.loads`` + ccxt.pro ``kraken.handle_message`` on a stub client (its own
  book; its checksum check is off by default and stays off, as shipped).

Usage: python benchmarks/feeds/kraken.py [../shared/fixtures/recorded/KRAKEN.ws.50.0]
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from decimal import Decimal
from pathlib import Path

import ccxt.pro

from astra.venues.kraken.feed import IMPLEMENTATION, SpotBook, SpotDialect, SpotPool
from astra.venues.kraken.stream import KrakenStream
from astra.venues.kraken.symbols import KrakenMarket

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import EngineSink as _Sink
from timing import best_rates

DEFAULT = Path(__file__).resolve().parents[3] / "shared/fixtures/recorded/KRAKEN.ws.50.0"


def _strip(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def _number(text: str) -> str:
    d = Decimal(text).normalize()
    return format(d, "f") if d else "0"


def convert(path: Path) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """v1 recording -> v2 book messages (text, as the socket hands them to ``route``) and
    each pair's (price, qty) places."""
    frames, books, places = [], {}, {}
    for line in path.read_text().splitlines():
        _, _, body = line.partition(": ")
        if not body.startswith("[") or "book-" not in body:
            continue
        msg = json.loads(body)
        pair, parts = msg[-1], msg[1:-2]
        snapshot = "as" in parts[0] or "bs" in parts[0]
        asks = [lv[:2] for p in parts for lv in p.get("as" if snapshot else "a", [])]
        bids = [lv[:2] for p in parts for lv in p.get("bs" if snapshot else "b", [])]
        if snapshot:
            books[pair] = ({}, {})
            places[pair] = (len(asks[0][0].split(".")[1]), len(asks[0][1].split(".")[1]))
        side_asks, side_bids = books[pair]
        for side, levels in ((side_asks, asks), (side_bids, bids)):
            for p, q in levels:
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = Decimal(q)
        pd, qd = places[pair]
        top = [(k, side_asks[k]) for k in sorted(side_asks)[:10]]
        top += [(k, side_bids[k]) for k in sorted(side_bids, reverse=True)[:10]]
        text = "".join(_strip(f"{p:.{pd}f}") + _strip(f"{q:.{qd}f}") for p, q in top)

        def levels(rows):  # numbers, not strings, as v2 sends them
            return ",".join(f'{{"price":{_number(p)},"qty":{_number(q)}}}' for p, q in rows)

        kind = "snapshot" if snapshot else "update"
        frames.append(
            f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{pair}",'
            f'"bids":[{levels(bids)}],"asks":[{levels(asks)}],'
            f'"checksum":{zlib.crc32(text.encode())},'
            f'"timestamp":"2021-04-17T16:48:54.259469Z"}}]}}'
        )
    return frames, places


def _feed(places: dict) -> tuple[SpotDialect, KrakenStream, list[SpotBook]]:
    """The real feed's objects: the v2 dialect, one connection and a ``SpotBook`` per pair
    registered on it (no socket: frames are handed to ``route`` as the receive loop does)."""
    pool = SpotPool(lambda: None, "wss://ws.kraken.com/v2")  # type: ignore[arg-type,return-value]
    stream = KrakenStream(lambda: None, pool.url, pool.dialect)  # type: ignore[arg-type,return-value]
    feeds = []
    for pair, (pd, qd) in places.items():
        market = KrakenMarket(
            symbol=f"KRAKEN-SPOT-{pair.replace('/', '-')}",
            exchange_symbol=pair,
            kind="spot",
            metadata=None,  # type: ignore[arg-type]
            ws_symbol=pair,
            price_decimals=pd,
            qty_decimals=qd,
        )
        feed = SpotBook(pool, market, 1000, _Sink())
        stream.consumers[feed.key] = (feed,)
        feeds.append(feed)
    return pool.dialect, stream, feeds


def bench_astra(frames: list[str], places: dict) -> float:
    """CPU seconds of the feed's own path over every frame: ``SpotDialect.route`` (decode)
    -> ``KrakenStream.deliver`` -> ``SpotBook.on_message`` (book update, checksum) -> sink."""
    dialect, stream, feeds = _feed(places)
    route = dialect.route
    start = time.process_time()
    for raw in frames:
        route(raw, stream)
    elapsed = time.process_time() - start
    # Every message carries a checksum and every one was compared (none skipped).
    verified = sum(feed.book.verified for feed in feeds)
    assert verified == len(frames), f"checksums verified: {verified} of {len(frames)}"
    assert sum(feed.update_id for feed in feeds) == len(frames)  # each one reached the sink
    return elapsed


class _StubClient:
    url = "wss://ws.kraken.com/v2"

    def __init__(self) -> None:
        self.subscriptions: dict = {}

    def resolve(self, result, message_hash=None):
        return result

    def reject(self, error, message_hash=None):
        raise AssertionError(f"ccxt rejected {message_hash}: {error}")


def bench_ccxt(frames: list[str]) -> float:
    """CPU seconds of ccxt.pro's handler over every frame (``json.loads`` included)."""
    exchange = ccxt.pro.kraken()
    client = _StubClient()
    start = time.process_time()
    for raw in frames:
        exchange.handle_message(client, json.loads(raw))
    return time.process_time() - start


def bench(frames_path: str | Path = DEFAULT, rounds: int = 5) -> dict:
    """Best of ``rounds`` per side in CPU time, the sides alternated (``timing.py``)."""
    frames, places = convert(Path(frames_path))
    n = len(frames)
    runs = {
        "astra": (n, lambda: bench_astra(frames, places)),
        "ccxt": (n, lambda: bench_ccxt(frames)),
    }
    rates = best_rates(runs, rounds)
    return {
        "messages": n,
        "checksums_verified": n,  # asserted per round by bench_astra
        "book": IMPLEMENTATION,  # the compiled KrakenBook, or the Python one
        "astra_msgs_per_s": round(rates["astra"]),
        "ccxt_msgs_per_s": round(rates["ccxt"]),
    }


if __name__ == "__main__":
    print(bench(sys.argv[1] if len(sys.argv) > 1 else DEFAULT))
