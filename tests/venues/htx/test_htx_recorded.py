"""Replay of a real HTX spot session (HUOBI.ws.44.0: ``depth.step0`` and ``trade.detail`` for
ten symbols, gzip frames, server pings and the client's pongs) through the feed's own code:
frames decompress and decode, the pong for every recorded ping is the one the recorded
client sent, and the books rebuilt from the emitted snapshot + computed updates equal every
recorded frame exactly."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal

import msgspec
import pytest

from astra.core import Side
from astra.venues.book import L2Book
from astra.venues.htx.feed import FullBookDiff, VersionRegressed, gunzip, pong_frame
from astra.venues.htx.schemas import DepthMessage, DepthTick, TradeMessage

decode_depth = msgspec.json.Decoder(DepthMessage, strict=False).decode
decode_trades = msgspec.json.Decoder(TradeMessage, strict=False).decode


def test_every_frame_decompresses_and_decodes(recording):
    kinds = defaultdict(int)
    for raw, msg in recording.messages():
        # The feed's own gunzip and decoders (a connection carries one topic kind).
        is_trade = msg.get("ch", "").endswith(".trade.detail")
        envelope = (decode_trades if is_trade else decode_depth)(gunzip(raw))
        if envelope.ping is not None:
            kinds["ping"] += 1
            assert msg == {"ping": envelope.ping}
        elif envelope.subbed is not None:
            kinds["subbed"] += 1
            assert envelope.status == "ok"
        elif msg["ch"].endswith(".depth.step0"):
            kinds["depth"] += 1
            assert envelope.tick.version == msg["tick"]["version"]
        else:
            kinds["trade"] += 1
            assert len(envelope.tick.data) == len(msg["tick"]["data"])
    assert kinds == {"ping": 6, "subbed": 20, "depth": 292, "trade": 44}


def test_pongs_are_the_ones_htx_accepted(recording):
    pings = [msg["ping"] for _, msg in recording.messages() if "ping" in msg]
    pongs = [(body, text) for _, body, text in recording.sent if "pong" in body]
    assert len(pongs) == len(pings) == 6
    for (body, text), ping in zip(pongs, pings, strict=True):
        assert body == {"pong": ping}
        assert pong_frame(ping) == text  # byte for byte what the recorded client sent
        assert json.loads(pong_frame(ping)) == {"pong": ping}


def _levels(side: list) -> dict[Decimal, Decimal]:
    return {Decimal(str(p)): Decimal(str(q)) for p, q in side if q > 0}


def _as_decimals(book: L2Book) -> dict:
    # repr() of a parsed float round-trips the venue's decimal text.
    return {
        "bids": {Decimal(repr(p)): Decimal(repr(q)) for p, q in book.bids.items()},
        "asks": {Decimal(repr(p)): Decimal(repr(q)) for p, q in book.asks.items()},
    }


def test_recorded_full_books_rebuild_exactly_from_snapshot_and_diffs(recording):
    streams = recording.depth_topics()
    assert len(streams) == 10
    updates = 0
    for topic, frames in streams.items():
        diff, book = FullBookDiff(), None
        for raw, msg in frames:
            tick = decode_depth(gunzip(raw)).tick
            if book is None:  # the first push is the snapshot handed to the sink
                book = L2Book(topic)
                book.reset(*diff.load(tick), tick.version, tick.ts)
            else:
                changes = diff.changes(tick)
                assert changes is not None  # versions strictly increase in the recording
                book.apply(*changes, tick.version, tick.ts)  # what the sink does
                updates += 1
            # The sink's book equals the recorded frame, parsed independently (text -> Decimal).
            expect = json.loads(gunzip(raw), parse_float=Decimal)["tick"]
            assert _as_decimals(book) == {
                "bids": _levels(expect["bids"]),
                "asks": _levels(expect["asks"]),
            }, (topic, tick.version)
            assert book.update_id == msg["tick"]["version"]
    assert updates == 292 - 10


def test_diffs_are_minimal_and_removed_levels_are_zeroed():
    diff = FullBookDiff()
    diff.load(DepthTick.of([(10.0, 1.0), (9.0, 2.0)], [(11.0, 1.0)], version=5))
    bids, asks = diff.changes(DepthTick.of([(10.0, 1.0), (9.5, 3.0)], [(11.0, 4.0)], version=9))
    assert sorted(bids) == [(9.0, 0.0), (9.5, 3.0)]  # 10.0 unchanged: not sent
    assert asks == [(11.0, 4.0)]


def test_repeated_version_restates_the_book_and_an_older_one_is_refused(recording):
    frames = next(iter(recording.depth_topics().values()))
    first, second = (decode_depth(gunzip(raw)).tick for raw, _ in frames[:2])
    diff = FullBookDiff()
    diff.load(first)
    assert diff.changes(second) != ([], [])
    assert diff.changes(second) == ([], [])  # the same push again: applied, nothing changes
    with pytest.raises(VersionRegressed, match=f"version {first.version} after"):
        diff.changes(first)  # spot has no mrid: a lower version is a venue restart


def test_recorded_trades_parse_to_taker_side_and_trade_id(recording):
    checked = 0
    for raw, msg in recording.messages():
        if not msg.get("ch", "").endswith(".trade.detail"):
            continue
        trades = [d.to_trade() for d in decode_trades(gunzip(raw)).tick.data]
        assert len(trades) == len(msg["tick"]["data"])
        for trade, row in zip(trades, msg["tick"]["data"], strict=True):
            assert trade.price == row["price"] and trade.quantity == row["amount"]
            assert trade.side is (Side.BUY if row["direction"] == "buy" else Side.SELL)
            assert trade.time == row["ts"] and trade.trade_id == str(row["tradeId"])
            checked += 1
    assert checked >= 44
