"""The wire contract: messages round-trip, subjects refuse what is not one token, settings
name what is wrong."""

from __future__ import annotations

import pytest

from astra.cluster import wire
from astra.core import Side, Trade


def test_book_messages_round_trip_with_their_tag() -> None:
    for message in (
        wire.BookSnapshot("e1", 1, 100, 5, [(10.5, 1.0)], [(11.0, 2.0)], 7),
        wire.BookDelta("e1", 2, 101, 6, [(10.5, 0.0)], [], 8),
        wire.BookResync("e1", 3, "gap: expected 5, got 7"),
        wire.Heartbeat("e1", 3, False),
    ):
        assert wire.decode_book(wire.encode(message)) == message


def test_trade_messages_round_trip() -> None:
    batch = wire.TradeBatch("e", 4, [Trade(price=1.5, quantity=2.0, side=Side.SELL, time=9,
                                           trade_id="x")])
    assert wire.decode_trade(wire.encode(batch)) == batch
    conn = wire.TradeConnection("e", 5, False, "RECONNECTING: closed")
    assert wire.decode_trade(wire.encode(conn)) == conn


def test_subjects_take_only_a_market_token() -> None:
    assert wire.book_subject("SIM-SPOT-BTC-USDT", "upd") == "astra.book.SIM-SPOT-BTC-USDT.upd"
    assert wire.trade_subject("SMART-SPOT-BTC-USDT") == "astra.trade.SMART-SPOT-BTC-USDT"
    for bad in ("SIM.SPOT", "SIM-*", ">", "", "sim-spot-btc-usdt", "A B"):
        with pytest.raises(ValueError, match="NATS subject token"):
            wire.book_subject(bad, "snap")


def test_config_names_the_bad_setting(monkeypatch) -> None:
    monkeypatch.delenv(wire.NATS_URL_ENV, raising=False)
    assert wire.ClusterConfig.from_config(None).nats_url == "nats://127.0.0.1:4222"
    assert wire.ClusterConfig.from_config({"nats_url": "nats://n:1"}).nats_url == "nats://n:1"
    assert wire.ClusterConfig.from_config({"nats_url": "nats://n:1"},
                                          "nats://cli:2").nats_url == "nats://cli:2"
    monkeypatch.setenv(wire.NATS_URL_ENV, "nats://env:3")
    assert wire.ClusterConfig.from_config({"nats_url": "nats://n:1"}).nats_url == "nats://env:3"
    for section, name in (({"silence_seconds": 0}, "silence_seconds"),
                          ({"heartbeat_seconds": True}, "heartbeat_seconds"),
                          ({"lease_seconds": "5"}, "lease_seconds"),
                          ({"bogus": 1}, "bogus"),
                          ({"silence_seconds": 1, "heartbeat_seconds": 2}, "silence_seconds")):
        with pytest.raises(ValueError, match=name):
            wire.ClusterConfig.from_config(section)
    monkeypatch.delenv(wire.NATS_URL_ENV)
    with pytest.raises(ValueError, match="nats_url"):
        wire.ClusterConfig.from_config({"nats_url": "http://x"})


async def test_a_real_nats_server_answers(nats_server) -> None:
    import nats

    nc = await nats.connect(nats_server.url, connect_timeout=2)
    try:
        js = nc.jetstream()
        info = await js.account_info()
        assert info.limits is not None
    finally:
        await nc.close()
