"""Accounts (admin endpoint and ``astra sim account create``), persistence across restarts,
rate limits and bans over HTTP, and conservation of money under random order sequences."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astra.sim.admin import DEFAULT_DEPOSIT, parse_deposits
from astra.sim.app import SimExchange
from astra.sim.engine import BUY, SELL
from astra.sim.ledger import AMOUNT_DP
from astra.sim.orders import OrderError, OrderRequest
from astra.sim.ratelimit import RateLimits
from astra.sim.server import SimServer

KEYS = {"apiKey", "apiSecret", "user", "signer", "signerPrivateKey"}


async def test_admin_endpoint_creates_funded_accounts(sim):
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        async with http.post(f"{sim.base_url}/admin/accounts",
                             json={"deposit": {"USDT": "1000.5", "BTC": "2"}}) as resp:
            assert resp.status == 200
            creds = await resp.json()
        async with http.post(f"{sim.base_url}/admin/accounts",
                             json={"deposit": "USDT=-5"}) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == -1130
        async with http.post(f"{sim.base_url}/admin/accounts", data=b"{nope") as resp:
            assert resp.status == 400
    assert set(creds) == KEYS | {"deposit"}
    assert creds["deposit"] == {"USDT": "1000.5", "BTC": "2"}
    account = sim.exchange.registry.by_api_key(creds["apiKey"])
    assert account.signer == creds["signer"] and account.user == creds["user"]
    ledger = sim.exchange.ledger
    for wallet in ("spot", "perp"):
        assert ledger.free(wallet, account.id, "USDT") == 100050 * 10 ** (AMOUNT_DP - 2)
        assert ledger.free(wallet, account.id, "BTC") == 2 * 10**AMOUNT_DP


async def test_cli_account_create_prints_working_credentials(sim, make_trader):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astra.cli", "sim", "account", "create", "--url", sim.base_url,
        "--deposit", "USDT=5000,ETH=1", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err
    creds = json.loads(out)
    assert creds.pop("deposit") == {"USDT": "5000", "ETH": "1"}
    assert set(creds) == KEYS
    trader = make_trader("")
    trader.creds = type(trader.creds)(**creds)
    status, acct = await trader.v1("GET", "/api/v1/account")
    assert status == 200
    assert {b["asset"]: b["free"] for b in acct["balances"]} == {
        "ETH": "1.00000000", "USDT": "5000.00000000"}
    status, acct = await trader.v3("GET", "/api/v3/account")
    assert status == 200


async def _cli_create(sim, *args: str) -> dict:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astra.cli", "sim", "account", "create", "--url", sim.base_url,
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err
    return json.loads(out) if "--json" in args else {"text": out.decode()}


def _wallets(sim, api_key: str) -> dict[str, dict[str, int]]:
    account = sim.exchange.registry.by_api_key(api_key).id
    return {w: {a: sum(v) for a, v in sim.exchange.ledger.balances(w, account).items()}
            for w in ("spot", "perp")}


async def test_account_create_funds_by_default_and_none_is_empty(sim):
    """Before: no --deposit gave an empty account. Now the default is the simulator's single
    DEFAULT_DEPOSIT (what `astra serve` gives its paper account), on spot and on perp."""
    funded = {"USDT": 100000 * 10**AMOUNT_DP, "BTC": 2 * 10**AMOUNT_DP,
              "ETH": 20 * 10**AMOUNT_DP, "SOL": 500 * 10**AMOUNT_DP}
    assert parse_deposits(DEFAULT_DEPOSIT) == funded
    creds = await _cli_create(sim, "--json")
    assert creds["deposit"] == {"USDT": "100000", "BTC": "2", "ETH": "20", "SOL": "500"}
    assert _wallets(sim, creds["apiKey"]) == {"spot": funded, "perp": funded}
    for empty in ("none", ""):
        creds = await _cli_create(sim, "--deposit", empty, "--json")
        assert creds["deposit"] == {}
        assert _wallets(sim, creds["apiKey"]) == {"spot": {}, "perp": {}}
    text = (await _cli_create(sim))["text"]  # the human form says what was deposited
    assert "deposited           100000 USDT, 2 BTC, 20 ETH, 500 SOL" in text
    # The endpoint itself: no deposit (or null) -> the default; "" or {} -> empty.
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        for body, expected in (({}, funded), ({"deposit": None}, funded),
                               ({"deposit": ""}, {}), ({"deposit": {}}, {})):
            async with http.post(f"{sim.base_url}/admin/accounts", json=body) as resp:
                assert resp.status == 200
                creds = await resp.json()
            assert _wallets(sim, creds["apiKey"]) == {"spot": expected, "perp": expected}
        async with http.post(f"{sim.base_url}/admin/accounts") as resp:  # no body at all
            creds = await resp.json()
        assert _wallets(sim, creds["apiKey"])["perp"] == funded


async def test_cli_reports_bad_deposit_and_unreachable_simulator():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astra.cli", "sim", "account", "create", "--url",
        "http://127.0.0.1:9", "--deposit", "USDT=abc",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 2 and b"invalid amount" in err


async def test_state_survives_a_restart(tmp_path):
    path = str(tmp_path / "sim.json")
    ex = SimExchange(seed=3, data_path=path)
    creds = ex.create_account(parse_deposits("USDT=10000,BTC=1"))
    account = ex.registry.by_api_key(creds.apiKey)
    spot = ex.sides["spot"].trading
    bid = ex.state("spot", "BTCUSDT").engine.best_bid()
    resting = spot.place(account.id, OrderRequest("BTCUSDT", BUY, "LIMIT", qty=1000,
                                                  price=bid - 1000, tif="GTC"))
    filled = spot.place(account.id, OrderRequest("BTCUSDT", SELL, "MARKET", qty=500))
    assert filled.status == "FILLED"
    balances = ex.ledger.balances("spot", account.id)
    ex.save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # it holds HMAC secrets

    again = SimExchange(seed=3, data_path=path)
    restored = again.registry.by_api_key(creds.apiKey)
    assert restored is not None and restored.api_secret == creds.apiSecret
    assert again.registry.by_signer(creds.signer).id == account.id
    assert again.ledger.balances("spot", account.id) == balances
    trading = again.sides["spot"].trading
    order = trading.find(account.id, "BTCUSDT", resting.id, None)
    assert order.status == "NEW" and order.id in again.state("spot", "BTCUSDT").engine.orders
    assert [o.id for o in trading.open_orders(account.id, "BTCUSDT")] == [resting.id]
    assert trading.trades[(account.id, "BTCUSDT")] == spot.trades[(account.id, "BTCUSDT")]
    again.ledger.check()
    fresh = again.create_account({})
    assert again.registry.by_api_key(fresh.apiKey).id == account.id + 1


async def test_weight_limit_429_then_418_ban_then_recovery():
    now = [1000.0]
    limits = {"spot": RateLimits(weight_per_minute=3, orders_per_minute=100, ban_base_s=120)}
    ex = SimExchange(seed=1, rate_limits=limits, rate_clock=lambda: now[0])
    async with SimServer(ex) as sim, aiohttp.ClientSession() as http, asyncio.timeout(10):
        async def ping() -> tuple[int, dict]:
            async with http.get(f"{sim.base_url}/api/v1/ping") as resp:
                return resp.status, dict(resp.headers)

        for used in (1, 2, 3):
            status, headers = await ping()
            assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == str(used)
        for _ in range(RateLimits.spot().ban_after):  # 429s warn; they do not ban
            status, headers = await ping()
            assert status == 429 and 0 < int(headers["Retry-After"]) <= 60
        status, headers = await ping()  # kept going through all of them: banned
        assert status == 418 and int(headers["Retry-After"]) == 120
        now[0] += 60
        status, headers = await ping()
        assert status == 418 and int(headers["Retry-After"]) == 60
        now[0] += 61
        status, headers = await ping()
        assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "1"
        async with http.get(f"{sim.base_url}/fapi/v1/ping") as resp:  # the other side's limit
            assert resp.status == 200


async def test_order_limit_counts_per_account(still, make_trader):
    still.exchange.limiters["spot"].limits.orders_per_minute = 2
    still.exchange.limiters["spot"].limits.orders_per_10s = None
    a, b = make_trader("USDT=1000"), make_trader("USDT=1000")
    for _ in range(2):
        status, body = await a.v1("POST", "/api/v1/order", symbol="ETHUSDT", side="BUY",
                                  type="MARKET", quantity="0.01")
        assert status == 200, body
    status, body = await a.v1("POST", "/api/v1/order", symbol="ETHUSDT", side="BUY",
                              type="MARKET", quantity="0.01")
    assert (status, body["code"]) == (429, -1015)
    status, body = await b.v1("POST", "/api/v1/order", symbol="ETHUSDT", side="BUY",
                              type="MARKET", quantity="0.01")
    assert status == 200


# -- conservation ----------------------------------------------------------------------------
_op = st.one_of(
    st.tuples(st.just("limit"), st.integers(0, 1), st.sampled_from((BUY, SELL)),
              st.integers(-40, 40), st.integers(1, 400)),
    st.tuples(st.just("market"), st.integers(0, 1), st.sampled_from((BUY, SELL)),
              st.integers(1, 400)),
    st.tuples(st.just("cancel"), st.integers(0, 1), st.integers(0, 20)),
    st.tuples(st.just("step"), st.integers(1, 5)),
    st.tuples(st.just("deposit"), st.integers(0, 1), st.integers(1, 10**6)),
    st.tuples(st.just("perp"), st.integers(0, 1), st.sampled_from((BUY, SELL)),
              st.integers(-20, 20), st.integers(1, 300), st.booleans()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, min_size=1, max_size=40), seed=st.integers(0, 5))
def test_money_is_conserved(ops, seed):
    """Users, the synthetic flow's house and the fee account together hold exactly what was
    deposited, whatever users do (spot and perpetual orders, cancels, fills by the flow,
    funding and liquidations as the flow steps)."""
    ex = SimExchange(seed=seed)
    ledger = ex.ledger
    users = [ex.registry.by_api_key(ex.create_account(parse_deposits(d)).apiKey).id
             for d in ("USDT=3000,ETH=1", "USDT=500,ETH=5")]
    spot = ex.sides["spot"].trading
    perp = ex.sides["perp"].trading
    state = ex.state("spot", "ETHUSDT")
    perp_state = ex.state("perp", "ETHUSDT")
    for op in ops:
        kind = op[0]
        try:
            if kind == "limit":
                _, who, side, offset, qty = op
                ref = state.engine.best_bid() or 340000
                price = max(ref + offset * 50, 10)
                spot.place(users[who], OrderRequest("ETHUSDT", side, "LIMIT", qty=qty * 10,
                                                    price=price, tif="GTC"))
            elif kind == "market":
                _, who, side, qty = op
                spot.place(users[who], OrderRequest("ETHUSDT", side, "MARKET", qty=qty * 10))
            elif kind == "cancel":
                _, who, index = op
                opened = spot.open_orders(users[who], "ETHUSDT")
                if opened:
                    spot.cancel(users[who], "ETHUSDT", opened[index % len(opened)].id, None)
            elif kind == "step":
                for _ in range(op[1]):
                    ex.step()
            elif kind == "perp":  # perpetual orders: positions, PnL and fees against the house
                _, who, side, offset, qty, limit = op
                ref = perp_state.engine.best_bid() or 340000
                req = OrderRequest("ETHUSDT", side, "LIMIT" if limit else "MARKET", qty=qty * 10,
                                   price=max(ref + offset * 10, 3990) if limit else None,
                                   tif="GTC" if limit else None)
                perp.place(users[who], req)
            else:
                _, who, amount = op
                ledger.deposit("spot", users[who], "USDT", amount)
        except OrderError as exc:
            assert exc.code < 0  # a documented rejection, never a crash
        ledger.check()
        for user in users:
            for asset, (free, locked) in ledger.balances("spot", user).items():
                assert free >= 0 and locked >= 0, (asset, free, locked)
            reserved = sum(o.reserve for o in spot.open_orders(user, "ETHUSDT"))
            locked_total = sum(lk for _, lk in ledger.balances("spot", user).values())
            assert reserved == locked_total  # every locked unit belongs to an open order
