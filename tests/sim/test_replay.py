"""The simulator replaying a recorded book (``astra sim --replay``): real tape files written
with ``astra.tape.write_rows``, a real simulator on loopback following them, user orders
filling against the recorded levels, the synthetic flow off there and on elsewhere, and the
command's option checks."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import aiohttp
import pyarrow as pa
import pytest

from astra.cli import main
from astra.server.gateway import SimChild, replay_args
from astra.sim import SimExchange, SimServer
from astra.sim.admin import parse_deposits
from astra.sim.engine import BUY, SELL
from astra.sim.flow import MAKERS
from astra.sim.replay import (
    REPLAYER,
    BookReplay,
    ReplaySource,
    parse_replay_options,
    plan_replays,
)
from astra.tape import BOOK, BOOK_SCHEMA, parse_time, write_rows

from .conftest import SignedClient

T0 = parse_time("2026-12-06T10:00:00Z", "t")
SEC = 1_000_000
MARKET = "SIM-SPOT-BTC-USDT"

SNAPSHOT = {"bids": [(96990.0, 0.5), (96980.0, 1.0)],
            "asks": [(97010.0, 0.3), (97020.0, 0.7), (97030.0, 2.0)]}
UPDATE_1 = {"bids": [(96995.5, 0.2)], "asks": [(97010.0, 0.4)]}  # at T0 + 1 s
UPDATE_2 = {"bids": [], "asks": [(97020.0, 0.0)]}  # at T0 + 2 s: 97020 deleted


def frame(kind: str, market: str, uid: int, levels: dict, smart: bool = False) -> bytes:
    def side(rows):
        return [{"price": p, "quantity": q, **({"venues": {"SIM": q}} if smart else {})}
                for p, q in rows]

    return json.dumps({"type": kind, "market": market, "updateId": uid,
                       "bids": side(levels["bids"]), "asks": side(levels["asks"]),
                       "timestamp": T0 // 1000}).encode()


def write_book(root, market: str, rows: list[tuple[int, str, str | None, bytes]],
               seq: int = 0) -> None:
    table = pa.table({
        "local_ts": [r[0] for r in rows],
        "type": [r[1] for r in rows],
        "reason": [r[2] for r in rows],
        "update_id": [i + 1 for i in range(len(rows))],
        "timestamp": [r[0] // 1000 for r in rows],
        "frame": [r[3] for r in rows],
    }, schema=BOOK_SCHEMA)
    write_rows(root, market, BOOK, table, seq)


def standard_record(root, market: str = MARKET, smart: bool = False) -> None:
    write_book(root, market, [
        (T0, "snapshot", "start", frame("snapshot", market, 1, SNAPSHOT, smart)),
        (T0 + SEC, "update", None, frame("update", market, 2, UPDATE_1, smart)),
        (T0 + 2 * SEC, "update", None, frame("update", market, 3, UPDATE_2, smart)),
    ])


def levels(exchange: SimExchange, symbol: str = "BTCUSDT") -> tuple[list, list]:
    """The engine's depth as (price, quantity) Decimals, bids best first, asks best first."""
    state = exchange.state("spot", symbol)
    m = state.market
    bids, asks = state.engine.depth()

    def conv(rows):
        return [(Decimal(m.format_price(p)), Decimal(m.format_qty(q))) for p, q in rows]

    return conv(bids), conv(asks)


def expected(bids, asks) -> tuple[list, list]:
    conv = [(Decimal(str(p)), Decimal(str(q))) for p, q in bids]
    return (sorted(conv, reverse=True),
            sorted((Decimal(str(p)), Decimal(str(q))) for p, q in asks))


def replaying(root, code: str = "SIM", **source) -> SimExchange:
    from astra.sim import profile_for

    plans = plan_replays({code: ReplaySource(root, **source)})
    return SimExchange(seed=1, profile=profile_for(code), replay=plans[code], own_clock=False)


def replay_of(exchange: SimExchange, symbol: str = "BTCUSDT") -> BookReplay:
    return next(f for f in exchange.sides["spot"].flows if f.state.market.symbol == symbol)


def steps(exchange: SimExchange, n: int) -> None:
    for _ in range(n):
        exchange.step()


def test_book_follows_the_record_update_by_update(tmp_path):
    standard_record(tmp_path)
    ex = replaying(tmp_path)
    assert levels(ex) == expected(**SNAPSHOT)
    # Only the replay participant rests in a replayed market: no maker, no taker.
    owners = {o.owner for o in ex.state("spot", "BTCUSDT").engine.orders.values()}
    assert owners == {REPLAYER}
    steps(ex, 19)  # 950 ms of simulated time: the update at 1 s is not due yet
    assert levels(ex) == expected(**SNAPSHOT)
    steps(ex, 1)  # 1000 ms
    after_1 = expected(bids=SNAPSHOT["bids"] + UPDATE_1["bids"],
                       asks=[(97010.0, 0.4), (97020.0, 0.7), (97030.0, 2.0)])
    assert levels(ex) == after_1
    steps(ex, 20)
    after_2 = expected(bids=after_1[0], asks=[(97010.0, 0.4), (97030.0, 2.0)])
    assert levels(ex) == after_2
    assert replay_of(ex).rows_applied == 3


def test_record_beyond_the_end_and_flow_stay_off(tmp_path, capsys):
    standard_record(tmp_path)
    ex = replaying(tmp_path)
    eth = ex.state("spot", "ETHUSDT")
    eth_before = eth.engine.update_id
    btc = ex.state("spot", "BTCUSDT")
    steps(ex, 40)
    settled = levels(ex)
    uid = btc.engine.update_id
    steps(ex, 100)  # 5 s more: the record has ended, nothing else may touch the book
    assert levels(ex) == settled and btc.engine.update_id == uid
    assert replay_of(ex).ended
    out = capsys.readouterr().out
    assert ("replay of SIM-SPOT-BTC-USDT on SIM ended at 2026-12-06T10:00:02.000Z; "
            "its book stays as recorded last") in out
    # A market not in the record keeps its synthetic flow: makers quote and the book moves.
    assert eth.engine.update_id > eth_before + 100
    assert {o.owner for o in eth.engine.orders.values()} & set(MAKERS)


def test_from_mid_record_rebuilds_the_book_at_that_time_and_speed(tmp_path):
    standard_record(tmp_path)
    ex = replaying(tmp_path, start_us=T0 + 1_500_000, speed=10.0)
    assert levels(ex) == expected(bids=SNAPSHOT["bids"] + UPDATE_1["bids"],
                                  asks=[(97010.0, 0.4), (97020.0, 0.7), (97030.0, 2.0)])
    steps(ex, 1)  # 50 ms x 10 = 0.5 s of record: reaches the update at 2 s
    assert [p for p, _ in levels(ex)[1]] == [Decimal("97010.00"), Decimal("97030.00")]


def test_resync_keeps_the_book_until_the_next_snapshot(tmp_path):
    second = {"bids": [(96900.0, 1.5)], "asks": [(97100.0, 2.5)]}
    write_book(tmp_path, MARKET, [
        (T0, "snapshot", "start", frame("snapshot", MARKET, 1, SNAPSHOT)),
        (T0 + SEC, "resync", "gap", b'{"type":"resync","market":"SIM-SPOT-BTC-USDT",'
                                     b'"reason":"gap","state":"resyncing","since":1}'),
        (T0 + SEC + 1, "update", None, frame("update", MARKET, 9, UPDATE_2)),  # not in sync
        (T0 + 2 * SEC, "snapshot", "resync", frame("snapshot", MARKET, 10, second)),
    ])
    ex = replaying(tmp_path)
    steps(ex, 39)
    assert levels(ex) == expected(**SNAPSHOT)  # the resync kept it; the update was ignored
    steps(ex, 1)
    assert levels(ex) == expected(**second)  # a snapshot replaces it whole


def test_prices_round_to_the_tick_and_quantities_to_the_lot(tmp_path):
    # SIM3's BTC spot tick is 0.10: bids round down, asks up; prices sharing a tick add up.
    book = {"bids": [(96990.03, 0.1), (96990.07, 0.2), (96980.0, 0.123456789)],
            "asks": [(97010.01, 0.3), (97010.1, 0.05), (97020.55, 1.0)]}
    write_book(tmp_path, MARKET, [(T0, "snapshot", "start", frame("snapshot", MARKET, 1, book))])
    ex = replaying(tmp_path, code="SIM3")
    assert levels(ex) == expected(bids=[(96990.0, 0.3), (96980.0, 0.12345)],
                                  asks=[(97010.1, 0.35), (97020.6, 1.0)])


def test_smart_record_and_the_venues_own_market_preferred(tmp_path, capsys):
    standard_record(tmp_path, "SMART-SPOT-BTC-USDT", smart=True)
    plans = plan_replays({"SIM": ReplaySource(tmp_path)})
    assert [(p.symbol, p.recorded) for p in plans["SIM"]] == [("BTCUSDT", "SMART-SPOT-BTC-USDT")]
    ex = SimExchange(seed=1, replay=plans["SIM"], own_clock=False)
    assert levels(ex) == expected(**SNAPSHOT)  # ConsolidatedUpdate levels decoded
    standard_record(tmp_path, "SIM2-SPOT-BTC-USDT")
    standard_record(tmp_path, "BINANCE-PERP-BTC-USDT")
    said: list[str] = []
    plans = plan_replays({"SIM2": ReplaySource(tmp_path), "SIM3": ReplaySource(tmp_path)},
                         say=said.append)
    assert {(p.kind, p.symbol, p.recorded) for p in plans["SIM2"]} == {
        ("spot", "BTCUSDT", "SIM2-SPOT-BTC-USDT"), ("perp", "BTCUSDT", "BINANCE-PERP-BTC-USDT")}
    assert {(p.kind, p.recorded) for p in plans["SIM3"]} == {
        ("spot", "SIM2-SPOT-BTC-USDT"), ("perp", "BINANCE-PERP-BTC-USDT")}  # sorted first
    assert any("SIM3: spot BTCUSDT follows SIM2-SPOT-BTC-USDT" in s for s in said)


async def test_market_buy_walks_the_recorded_asks_over_rest(tmp_path):
    standard_record(tmp_path)
    ex = replaying(tmp_path)
    async with SimServer(ex) as server:
        trader = SignedClient(server.base_url, ex.create_account(parse_deposits("USDT=200000")))
        async with aiohttp.ClientSession() as http, http.get(
                f"{server.base_url}/api/v1/depth", params={"symbol": "BTCUSDT"}) as resp:
            depth = await resp.json()
        assert [[Decimal(p), Decimal(q)] for p, q in depth["asks"]] == [
            [Decimal(str(p)), Decimal(str(q))] for p, q in SNAPSHOT["asks"]]
        status, order = await trader.v1("POST", "/api/v1/order", symbol="BTCUSDT", side="BUY",
                                        type="MARKET", quantity="0.5")
        assert status == 200 and order["status"] == "FILLED"
        _, fills = await trader.v1("GET", "/api/v1/userTrades", symbol="BTCUSDT")
        assert [(Decimal(f["price"]), Decimal(f["qty"])) for f in fills] == [
            (Decimal("97010"), Decimal("0.3")), (Decimal("97020"), Decimal("0.2"))]
        # What the order took stays taken until the record changes that level.
        assert levels(ex)[1] == expected([], [(97020.0, 0.5), (97030.0, 2.0)])[1]
        steps(ex, 20)  # the update at 1 s sets 97010 to 0.4; 97020 is unchanged there
        assert levels(ex)[1] == expected([], [(97010.0, 0.4), (97020.0, 0.5),
                                              (97030.0, 2.0)])[1]
        steps(ex, 20)  # the update at 2 s deletes 97020
        assert levels(ex)[1] == expected([], [(97010.0, 0.4), (97030.0, 2.0)])[1]
        ex.ledger.check()


async def test_a_resting_user_order_meets_the_recorded_liquidity(tmp_path):
    # The record's ask falls to 96995 at 1 s, under the user's bid at 97000: it trades.
    write_book(tmp_path, MARKET, [
        (T0, "snapshot", "start", frame("snapshot", MARKET, 1, SNAPSHOT)),
        (T0 + SEC, "update", None, frame("update", MARKET, 2,
                                          {"bids": [], "asks": [(96995.0, 0.1)]})),
    ])
    ex = replaying(tmp_path)
    async with SimServer(ex) as server:
        trader = SignedClient(server.base_url, ex.create_account(parse_deposits("USDT=200000")))
        status, order = await trader.v1("POST", "/api/v1/order", symbol="BTCUSDT", side="BUY",
                                        type="LIMIT", timeInForce="GTC", quantity="0.25",
                                        price="97000")
        assert status == 200 and order["status"] == "NEW"
        steps(ex, 20)
        _, fills = await trader.v1("GET", "/api/v1/userTrades", symbol="BTCUSDT")
        assert [(Decimal(f["price"]), Decimal(f["qty"]), f["maker"]) for f in fills] == [
            (Decimal("97000"), Decimal("0.1"), True)]
        state = ex.state("spot", "BTCUSDT")
        assert state.engine.best_bid() == 9700000 and state.engine.level_qty(BUY, 9700000) == 15000
        assert state.engine.level_qty(SELL, 9699500) == 0
        ex.ledger.check()


def test_options_resolve_per_venue(tmp_path):
    standard_record(tmp_path)
    sources = parse_replay_options(
        [str(tmp_path), f"SIM2={tmp_path}"], ["2026-12-06T10:00:01Z", f"SIM2={T0 // 1000 + 500}"],
        ["SIM2=2026-12-06T10:00:02Z"], ["SIM2=10"], venues=2)
    assert sources["SIM"] == ReplaySource(tmp_path, T0 + SEC, None, 1.0)
    assert sources["SIM2"] == ReplaySource(tmp_path, T0 + 500_000, T0 + 2 * SEC, 10.0)
    plans = plan_replays(sources)
    assert [(p.start_us, p.end_us) for p in plans["SIM"]] == [(T0 + SEC, T0 + 2 * SEC)]


@pytest.mark.parametrize(("args", "message"), [
    (["--replay", "{missing}"], "no such directory"),
    (["--replay", "{empty}"], "nothing to replay on venue SIM"),
    (["--replay", "{doge}"], "the directory holds BINANCE-SPOT-DOGE-USDT"),
    (["--replay", "{root}", "--replay-from", "yesterday"],
     "'--replay-from': 'yesterday' is not a time"),
    (["--replay", "{root}", "--replay-from", "2026-12-06T10:00:02Z", "--replay-to",
      "2026-12-06T10:00:01Z"], "--replay-to 2026-12-06T10:00:01.000Z is before --replay-from"),
    (["--replay", "{root}", "--replay-speed", "0"], "--replay-speed: expected a number above 0"),
    (["--replay-from", "2026-12-06"], "need --replay DIR"),
    (["--replay", "SIM2={root}"], "venue SIM2 is not run (--venues 1)"),
    (["--replay", "{root}", "--replay-from", "2027-01-01"], "in the range asked"),
])
def test_bad_options_exit_2_with_the_reason(tmp_path, capsys, args, message):
    root, empty, doge = tmp_path / "rec", tmp_path / "empty", tmp_path / "doge"
    standard_record(root)
    empty.mkdir()
    standard_record(doge, "BINANCE-SPOT-DOGE-USDT")
    paths = {"missing": tmp_path / "nope", "root": root, "empty": empty, "doge": doge}
    argv = ["sim", "--port", "0", *(a.format(**paths) for a in args)]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("astra sim: ") and message in err


async def test_serve_child_replays_what_the_venue_options_say(tmp_path):
    standard_record(tmp_path)
    options = {"SIM": {"replay": str(tmp_path), "replay_from": "2026-12-06T10:00:01Z",
                       "replay_speed": 1}}
    assert replay_args(options) == [
        "--replay", f"SIM={tmp_path}", "--replay-from", "SIM=2026-12-06T10:00:01Z",
        "--replay-speed", "SIM=1"]
    child = SimChild(0, 1, options)
    try:
        urls = await child.start()
        async with aiohttp.ClientSession() as http, asyncio.timeout(10), http.get(
                f"{urls['SIM']}/api/v1/depth", params={"symbol": "BTCUSDT"}) as resp:
            depth = await resp.json()
    finally:
        await child.stop()
    assert [[Decimal(p), Decimal(q)] for p, q in depth["bids"]] == [
        [Decimal(str(p)), Decimal(str(q))] for p, q in expected(
            SNAPSHOT["bids"] + UPDATE_1["bids"], [])[0]]


async def test_serve_child_relays_what_the_replay_says(tmp_path):
    # Under astra serve the child's stdout is a pipe: its replay lines are the operator's only
    # word of which recorded book a venue follows, and of the replay's end.
    standard_record(tmp_path)
    said: list[str] = []
    both = asyncio.Event()

    def say(text: str) -> None:
        said.append(text)
        if len(said) == 2:
            both.set()

    child = SimChild(0, 1, {"SIM": {"replay": str(tmp_path), "replay_speed": 100}}, say=say)
    try:
        await child.start()
        async with asyncio.timeout(10):  # 2 s of record at speed 100: it ends at once
            await both.wait()
    finally:
        await child.stop()
    # (in either order: at speed 100 the replay may end before the banner is printed)
    assert sorted(said) == [
        "replay of SIM-SPOT-BTC-USDT on SIM ended at 2026-12-06T10:00:02.000Z; "
        "its book stays as recorded last",
        "venue SIM replays: spot BTCUSDT follows SIM-SPOT-BTC-USDT, "
        "2026-12-06T10:00:00.000Z to 2026-12-06T10:00:02.000Z, speed 100"]


def test_venue_options_reach_the_child_only(tmp_path):
    from astra.server.gateway import venues_from_config

    config = {"venues": {"SIM": {"replay": str(tmp_path), "replay_speed": 10}}}
    venues = venues_from_config(config, {"SIM": "http://127.0.0.1:7070"})
    assert venues["SIM"].urls.spot_rest == "http://127.0.0.1:7070/api"
    with pytest.raises(ValueError, match=r"unknown options \['replay'\]"):
        venues_from_config({"venues": {"BINANCE": {"replay": str(tmp_path)}}}, None)


@pytest.mark.parametrize("toml", [
    '[venues.SIM]\nurl = "http://127.0.0.1:9"\nreplay = "{root}"\n',  # not our child
    '[venues.SIM]\nreplay_from = "2026-12-06"\n',  # no replay dir
])
async def test_astra_serve_refuses_replay_options_it_cannot_honour(tmp_path, capsys, toml):
    from astra.cli import _parser
    from astra.server.serve import serve

    path = tmp_path / "astra.toml"
    path.write_text(toml.format(root=tmp_path))
    args = _parser().parse_args(["serve", "--config", str(path), "--data-dir", str(tmp_path)])
    async with asyncio.timeout(60):
        assert await serve(args) == 2
    assert "[venues.SIM] replay options need replay" in capsys.readouterr().err
