"""Several simulated venues in one process: profiles as data, one shared fair path, venues
that really differ (fees, ticks, lots, depth), cross now and then and reconverge, and keep
their own accounts; the same seed gives the same books."""

from __future__ import annotations

import asyncio
import hashlib
import random
import statistics
import time
from dataclasses import replace
from decimal import Decimal

import aiohttp
import ccxt.async_support as ccxt_async
import pytest

from astra.core import MAX_SIM_VENUES, SIM_CODES
from astra.sim import DEFAULT_MARKETS, SimCluster, SimExchange, profile_for
from astra.sim.admin import parse_deposits
from astra.sim.fairpath import BAND, Basis
from astra.sim.flow import ARB_BAND, STEP_MS
from astra.sim.spot import SPOT_MAKER_PPM, SPOT_TAKER_PPM
from astra.sim.venues import venue_data_path

from .conftest import SignedClient

SPOT = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def tops(cluster: SimCluster, kind: str, symbol: str) -> dict[str, tuple[float, float]]:
    """Venue -> (best bid, best ask) as prices."""
    out = {}
    for code, ex in cluster.exchanges.items():
        state = ex.sides[kind].states[symbol]
        unit = 10**state.market.price_dp
        out[code] = (state.engine.best_bid() / unit, state.engine.best_ask() / unit)
    return out


def crossed(top: dict[str, tuple[float, float]]) -> bool:
    return max(b for b, _ in top.values()) > min(a for _, a in top.values())


# -- profiles -------------------------------------------------------------------------------


def test_sim_profile_lists_the_markets_and_fees_a_lone_venue_always_had():
    sim = profile_for("SIM")
    assert sim.markets(DEFAULT_MARKETS) == DEFAULT_MARKETS
    assert sim.spot_fees_ppm == (SPOT_MAKER_PPM, SPOT_TAKER_PPM)
    assert SimExchange().code == "SIM" and SimExchange().latency == 0


def test_a_lone_sim_venue_draws_the_same_flow_as_before_venues_existed():
    # Golden: the books of SimExchange(seed=1) over 600 steps, as the simulator produced them
    # before several venues existed (commit 3a35fee). A change here changes every SIM test's
    # data; make it only on purpose.
    ex = SimExchange(seed=1)
    digest = hashlib.sha256()
    for _ in range(600):
        ex.step()
        for kind, side in ex.sides.items():
            for sym, st in side.states.items():
                digest.update(repr((kind, sym, st.engine.depth(), st.engine.update_id)).encode())
    assert digest.hexdigest() == (
        "3eb9aa3932a62e4ba043fd0335968b6924ff736112bd930688052007226fb608"
    )


@pytest.mark.parametrize("code", SIM_CODES)
def test_every_profile_lists_valid_markets(code):
    profile = profile_for(code)
    assert profile.code == code and profile_for(code.lower()) == profile
    markets = profile.markets(DEFAULT_MARKETS)
    assert [(m.kind, m.symbol, m.start_price) for m in markets] == [
        (m.kind, m.symbol, m.start_price) for m in DEFAULT_MARKETS
    ]
    for m in markets:
        assert m.min_price % m.tick == 0 and m.max_price % m.tick == 0
        assert m.typical_size >= m.step and m.typical_size % m.step == 0
        assert m.max_qty % m.step == 0 and m.max_market_qty % m.step == 0
        assert m.level_spacing >= 1
    for maker, taker in (profile.spot_fees_ppm, profile.perp_fees_ppm):
        assert 0 <= maker <= taker <= 1000
    assert 0 <= profile.latency_ms <= 5
    assert profile_for(code) == profile  # derived profiles are the same on every call


def test_unknown_venue_codes_have_no_profile():
    for code in ("SMART", f"SIM{MAX_SIM_VENUES + 1}", "SIM1", "ASTER"):
        with pytest.raises(ValueError, match="not a simulator venue"):
            profile_for(code)
    with pytest.raises(ValueError):
        SimCluster(MAX_SIM_VENUES + 1)


def test_data_files_per_venue():
    assert venue_data_path("/d/sim.json", "SIM") == "/d/sim.json"
    assert venue_data_path("/d/sim.json", "SIM2") == "/d/sim.json.SIM2"
    assert venue_data_path(None, "SIM3") is None


def test_sim3_is_coarser_and_sim2_deeper_than_sim():
    sim, sim2, sim3 = (
        {(m.kind, m.symbol): m for m in profile_for(c).markets(DEFAULT_MARKETS)}
        for c in ("SIM", "SIM2", "SIM3")
    )
    btc, eth = ("spot", "BTCUSDT"), ("spot", "ETHUSDT")
    assert sim3[btc].tick == 10 * sim[btc].tick and sim3[eth].step == 10 * sim[eth].step
    assert sim2[btc].typical_size == 2 * sim[btc].typical_size
    # The distance between maker levels, in price units, follows the spacing factor.
    assert sim3[btc].level_spacing * sim3[btc].tick == 3 * sim[btc].level_spacing * sim[btc].tick


# -- one fair path ------------------------------------------------------------------------------


def test_venues_follow_one_fair_path_within_a_bound():
    cluster = SimCluster(3, seed=1, clock=False)
    dev: dict[tuple[str, str], list[float]] = {}
    for step in range(1000):
        cluster.step()
        for sym in SPOT:
            fair = cluster.fair.price(sym)
            mids = {c: (b + a) / 2 for c, (b, a) in tops(cluster, "spot", sym).items()}
            for code, mid in mids.items():
                bps = (mid / fair - 1) * 1e4
                dev.setdefault((code, sym), []).append(bps)
                assert abs(bps) < 10, (step, code, sym, bps)
            assert (max(mids.values()) - min(mids.values())) / fair * 1e4 < 12, (step, sym)
        for code, (bid, ask) in tops(cluster, "perp", "BTCUSDT").items():
            spot_bid, spot_ask = tops(cluster, "spot", "BTCUSDT")[code]
            index = (spot_bid + spot_ask) / 2  # a perpetual follows its own venue's spot
            assert bid <= index * (1 + ARB_BAND) + 0.1 and ask >= index * (1 - ARB_BAND) - 0.1
    assert cluster.steps == 1000 and {ex.steps for ex in cluster.exchanges.values()} == {1000}
    for (code, sym), values in dev.items():
        assert abs(statistics.mean(values)) < 0.5, (code, sym)  # no venue drifts away
    # The path moves: it is a walk, not a constant.
    prices = {sym: cluster.fair.price(sym) for sym in SPOT}
    assert all(prices[m.symbol] != m.start_price for m in DEFAULT_MARKETS if m.kind == "spot")


def test_the_consolidated_book_crosses_now_and_then_and_reconverges():
    cluster = SimCluster(3, seed=1, clock=False)
    series = []
    for _ in range(1000):
        cluster.step()
        series.append(crossed(tops(cluster, "spot", "BTCUSDT")))
    # Seed 1: SIM's, SIM2's and SIM3's BTC books cross (one's bid above another's ask) ...
    first = series.index(True)
    assert first < 100
    # ... and uncross again as the venues reconverge; crossing is the exception.
    assert series.index(False, first) > first
    assert 0.01 < sum(series) / len(series) < 0.2, sum(series)
    runs, run = [], 0
    for x in series:
        if x:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    assert max(runs) <= 40  # no crossing lasts more than 2 s (40 steps) here


def test_a_dislocation_jumps_then_decays_at_its_half_life():
    profile = profile_for("SIM3")
    basis = Basis(random.Random("t"), replace(profile, basis_sd=0.0, shock_every_s=0.05))
    basis.step()  # a rate of one per step: a dislocation starts at once
    size = abs(basis.value)
    assert 0.6 * profile.shock_size <= size <= 1.4 * profile.shock_size
    quiet = Basis(random.Random("t"), replace(profile, basis_sd=0.0, shock_every_s=0.0))
    quiet.shock = 4.0
    halflife_steps = round(profile.shock_halflife_s * 1000 / STEP_MS)
    for _ in range(halflife_steps):
        quiet.step()
    assert quiet.value == pytest.approx(2.0)


def test_each_venue_keeps_within_its_band_of_its_own_fair():
    cluster = SimCluster(3, seed=2, clock=False)
    for _ in range(400):
        cluster.step()
        for code, ex in cluster.exchanges.items():
            for sym in SPOT:
                flow = next(f for f in ex.sides["spot"].flows if f.state.market.symbol == sym)
                band = flow.fair_source.band
                assert band == pytest.approx(BAND * cluster.fair.spacing[sym])
                bid, ask = tops(cluster, "spot", sym)[code]
                tick = flow.state.market.tick / 10**flow.state.market.price_dp
                # The arbitrageur leaves no bid above fair + band, no ask below fair - band.
                assert bid <= flow.fair * (1 + band) + tick, (code, sym)
                assert ask >= flow.fair * (1 - band) - tick, (code, sym)


def test_the_same_seed_gives_the_same_books_and_venues_differ():
    def run(seed: int) -> dict:
        cluster = SimCluster(3, seed=seed, clock=False)
        for _ in range(200):
            cluster.step()
        return {
            (code, kind, sym): st.engine.depth()
            for code, ex in cluster.exchanges.items()
            for kind, side in ex.sides.items()
            for sym, st in side.states.items()
        }

    a, b = run(4), run(4)
    assert a == b
    assert run(5) != a
    assert a[("SIM", "spot", "BTCUSDT")] != a[("SIM2", "spot", "BTCUSDT")]


def test_depth_differs_by_profile():
    cluster = SimCluster(3, seed=1, clock=False)
    totals: dict[str, list[int]] = {c: [] for c in cluster.exchanges}
    for step in range(600):
        cluster.step()
        if step % 20 == 0:
            for code, ex in cluster.exchanges.items():
                bids, asks = ex.sides["spot"].states["BTCUSDT"].engine.depth()
                totals[code].append(sum(q for _, q in bids) + sum(q for _, q in asks))
    depth = {c: statistics.mean(v) for c, v in totals.items()}
    # SIM2: twice the size and more quotes; SIM3: half the size and fewer quotes.
    assert depth["SIM2"] > 1.5 * depth["SIM"] > 1.5 * depth["SIM3"], depth


# -- served: every venue its own port, fees, accounts; ccxt ---------------------------------


@pytest.fixture
async def cluster():
    async with asyncio.timeout(20), SimCluster(3, seed=1, clock=False, latency=False) as c:
        for _ in range(40):
            c.step()
        yield c


async def _get(url: str) -> dict:
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        async with http.get(url) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


async def test_each_venue_publishes_its_own_fees_and_rules(cluster):
    urls = cluster.urls()
    assert list(urls) == ["SIM", "SIM2", "SIM3"] and len(set(urls.values())) == 3
    for code, url in urls.items():
        profile = profile_for(code)
        for kind, root in (("spot", "api"), ("perp", "fapi")):
            info = await _get(f"{url}/{root}/v1/exchangeInfo")
            maker, taker = profile.fees_ppm(kind)
            for entry in info["symbols"]:
                assert Decimal(entry["makerCommissionRate"]) == Decimal(maker) / 10**6
                assert Decimal(entry["takerCommissionRate"]) == Decimal(taker) / 10**6
            if kind == "spot":
                btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
                tick = next(f["tickSize"] for f in btc["filters"]
                            if f["filterType"] == "PRICE_FILTER")
                assert Decimal(tick) == Decimal("0.10" if code == "SIM3" else "0.01")
        creds = cluster.exchanges[code].create_account(parse_deposits("USDT=10"))
        client = SignedClient(url, creds)
        status, rate = await client.v1("GET", "/api/v1/commissionRate", symbol="BTCUSDT")
        assert status == 200
        assert Decimal(rate["takerCommissionRate"]) == Decimal(profile.spot_fees_ppm[1]) / 10**6
        status, rate = await client.v1("GET", "/fapi/v1/commissionRate", symbol="BTCUSDT")
        assert status == 200
        assert Decimal(rate["makerCommissionRate"]) == Decimal(profile.perp_fees_ppm[0]) / 10**6


async def test_an_account_exists_on_its_own_venue_only(cluster):
    urls = cluster.urls()
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        async with http.post(f"{urls['SIM2']}/admin/accounts", json={}) as resp:
            assert resp.status == 200
            body = await resp.json()
    creds = type("Creds", (), {"apiKey": body["apiKey"], "apiSecret": body["apiSecret"]})
    on_sim2 = SignedClient(urls["SIM2"], creds)
    status, account = await on_sim2.v1("GET", "/api/v1/account")
    assert status == 200
    assert {b["asset"]: Decimal(b["free"]) for b in account["balances"]}["USDT"] == 100000
    for code in ("SIM", "SIM3"):
        status, error = await SignedClient(urls[code], creds).v1("GET", "/api/v1/account")
        assert status in (400, 401) and error["code"] == -2015, (code, error)
    assert [len(ex.registry.accounts) for ex in cluster.exchanges.values()] == [0, 1, 0]


async def test_an_order_fills_on_its_venue_and_nowhere_else(cluster):
    traders = {}
    for code, ex in cluster.exchanges.items():
        traders[code] = SignedClient(cluster.urls()[code], ex.create_account(
            parse_deposits("USDT=100000")))
    status, order = await traders["SIM3"].v1(
        "POST", "/api/v1/order", symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01")
    assert status == 200 and order["status"] == "FILLED"
    _, fills = await traders["SIM3"].v1("GET", "/api/v1/userTrades", symbol="BTCUSDT")
    assert sum(Decimal(f["qty"]) for f in fills) == Decimal("0.01")
    for f in fills:  # SIM3's taker fee (0.025 %), withheld from the BTC of each fill
        fee = (Decimal(f["qty"]) * Decimal("0.00025")).quantize(Decimal("1e-8"), "ROUND_DOWN")
        assert Decimal(f["commission"]) == fee
    received = sum(Decimal(f["qty"]) - Decimal(f["commission"]) for f in fills)
    for code, trader in traders.items():
        _, account = await trader.v1("GET", "/api/v1/account")
        btc = {b["asset"]: Decimal(b["free"]) for b in account["balances"]}.get("BTC", 0)
        assert btc == (received if code == "SIM3" else 0), code


async def test_ccxt_aster_loads_sim2_markets_and_books(cluster):
    url = cluster.urls()["SIM2"]
    ex = ccxt_async.aster({"enableRateLimit": False, "options": {"builderFee": False}})
    api = ex.urls["api"]
    api["fapiPublic"] = api["fapiPrivate"] = url + "/fapi"
    api["sapiPublic"] = api["sapiPrivate"] = url + "/api"
    try:
        async with asyncio.timeout(15):
            markets = await ex.load_markets()
            book = await ex.fetch_order_book("BTC/USDT", limit=20)
    finally:
        await ex.close()
    assert {"BTC/USDT", "ETH/USDT", "BTC/USDT:USDT"} <= set(markets)
    state = cluster.exchanges["SIM2"].sides["spot"].states["BTCUSDT"]
    bids, asks = state.engine.depth(20)  # the clock is stopped: the book stands still
    unit, qunit = 10**state.market.price_dp, 10**state.market.qty_dp
    assert book["bids"] == [[p / unit, q / qunit] for p, q in bids]
    assert book["asks"] == [[p / unit, q / qunit] for p, q in asks]


async def test_the_cluster_clock_steps_every_venue_in_lockstep():
    async with asyncio.timeout(20), SimCluster(2, seed=3, latency=False) as c:
        await asyncio.sleep(0.5)  # the clock runs meanwhile: 10 steps at 50 ms
        await c.stop_clock()
        assert c.steps > 0
        assert [ex.steps for ex in c.exchanges.values()] == [c.steps, c.steps]
        assert c.fair.steps == c.steps
        assert all(ex._task is None for ex in c.exchanges.values())  # no clock of their own



async def test_each_venue_keeps_its_state_in_its_own_file(tmp_path):
    data = str(tmp_path / "sim.json")
    async with asyncio.timeout(20), SimCluster(2, seed=1, clock=False, latency=False,
                                               data_path=data) as c:
        creds = c.exchanges["SIM2"].create_account(parse_deposits("USDT=5"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.json", "sim.json.SIM2"]
    again = SimCluster(2, seed=1, clock=False, data_path=data)
    assert again.exchanges["SIM2"].registry.by_api_key(creds.apiKey) is not None
    assert again.exchanges["SIM"].registry.by_api_key(creds.apiKey) is None


async def test_rest_latency_follows_the_profile_and_can_be_turned_off():
    assert [ex.latency for ex in SimCluster(3, clock=False).exchanges.values()] == [
        0.0, 0.001, 0.003]
    assert {ex.latency for ex in SimCluster(3, clock=False, latency=False).exchanges.values()} \
        == {0.0}
    async with asyncio.timeout(20), SimCluster(3, seed=1, clock=False) as c:
        url = c.urls()["SIM3"]
        async with aiohttp.ClientSession() as http:
            for path in ("/api/v1/ping", "/fapi/v1/time"):
                start = time.monotonic()
                async with http.get(url + path) as resp:
                    assert resp.status == 200
                # A lower bound only: the answer waits at least SIM3's 3 ms.
                assert time.monotonic() - start >= 0.003
