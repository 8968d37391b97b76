"""Kraken v2 ``book`` throughput: Astra's feed path next to ccxt.pro's handler.

The recorded session (``../shared/fixtures/recorded/KRAKEN.ws.50.0``, WebSocket v1
``book-1000`` of ten pairs) is converted to v2 messages first, as Kraken sends them today:
numbers instead of text, and a checksum in every message, computed here from exact decimals at
each pair's precision (the places its v1 text uses). ``bench(frames_path)`` returns messages/s,
the best of a few rounds per side, the sides alternated:

- ``astra``: msgspec decode of the v2 message + ``KrakenBook`` apply/truncate + CRC32 check
  of the top 10 + ``L2Book.apply`` in the sink (what the gateway does per message); every
  message's checksum is compared, and the count of comparisons is asserted;
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
import msgspec

from astra.venues.book import L2Book
from astra.venues.kraken.feed import KrakenBook
from astra.venues.kraken.schemas import BookMessage, ChannelMessage

DEFAULT = Path(__file__).resolve().parents[3] / "shared/fixtures/recorded/KRAKEN.ws.50.0"


def _strip(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def _number(text: str) -> str:
    d = Decimal(text).normalize()
    return format(d, "f") if d else "0"


def convert(path: Path) -> tuple[list[bytes], dict[str, tuple[int, int]]]:
    """v1 recording -> v2 book messages (bytes) and each pair's (price, qty) places."""
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
            (
                f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{pair}",'
                f'"bids":[{levels(bids)}],"asks":[{levels(asks)}],'
                f'"checksum":{zlib.crc32(text.encode())},'
                f'"timestamp":"2021-04-17T16:48:54.259469Z"}}]}}'
            ).encode()
        )
    return frames, places


def bench_astra(frames: list[bytes], places: dict) -> float:
    decode = msgspec.json.Decoder(ChannelMessage).decode
    books: dict[str, KrakenBook] = {}
    made: list[KrakenBook] = []  # every book, replaced ones too (their checksums count)
    sinks: dict[str, L2Book] = {}
    start = time.perf_counter()
    for i, raw in enumerate(frames):
        msg = decode(raw)
        assert type(msg) is BookMessage
        data = msg.data[0]
        if msg.type == "snapshot":
            book = books[data.symbol] = KrakenBook(1000, *places[data.symbol])
            made.append(book)
            book.reset(*data.to_changes())
            book.verify(data.checksum)
            sinks[data.symbol] = book.to_l2book(data.symbol, i, 0)
        else:
            bids, asks = books[data.symbol].apply(*data.to_changes())
            books[data.symbol].verify(data.checksum)
            sinks[data.symbol].apply(bids, asks, i, data.timestamp_ms(0))
    rate = len(frames) / (time.perf_counter() - start)
    # Every message carries a checksum and every one was compared (none skipped).
    verified = sum(book.verified for book in made)
    assert verified == len(frames), f"checksums verified: {verified} of {len(frames)}"
    return rate


class _StubClient:
    url = "wss://ws.kraken.com/v2"

    def __init__(self) -> None:
        self.subscriptions: dict = {}

    def resolve(self, result, message_hash=None):
        return result

    def reject(self, error, message_hash=None):
        raise AssertionError(f"ccxt rejected {message_hash}: {error}")


def bench_ccxt(frames: list[bytes]) -> float:
    exchange = ccxt.pro.kraken()
    client = _StubClient()
    start = time.perf_counter()
    for raw in frames:
        exchange.handle_message(client, json.loads(raw))
    return len(frames) / (time.perf_counter() - start)


def bench(frames_path: str | Path = DEFAULT, rounds: int = 5) -> dict:
    """Best of ``rounds`` for each side, the two alternated (a busy machine slows both)."""
    frames, places = convert(Path(frames_path))
    astra = ccxt_rate = 0.0
    for _ in range(rounds):
        astra = max(astra, bench_astra(frames, places))
        ccxt_rate = max(ccxt_rate, bench_ccxt(frames))
    return {
        "messages": len(frames),
        "checksums_verified": len(frames),  # asserted per round by bench_astra
        "astra_msgs_per_s": round(astra),
        "ccxt_msgs_per_s": round(ccxt_rate),
    }


if __name__ == "__main__":
    print(bench(sys.argv[1] if len(sys.argv) > 1 else DEFAULT))
