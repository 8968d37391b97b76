"""Isolated position margin, Multi-Assets mode and ADL quantiles over loopback: positionMargin
add / reduce and its history, the margin set aside in the account's figures (and released
when the position closes), money conserved throughout, and ccxt's add_margin / reduce_margin /
fetch_margin_adjustment_history against them."""

from __future__ import annotations

from decimal import Decimal

from tests.sim.test_perp import SYM, D, book, error, ok, order, position, set_mid, trading
from tests.sim.test_perp_ccxt import BTC, call
from tests.sim.test_perp_market import settle_fundings
from tests.sim.test_perp_risk import HmacClient, account_id

from astra.sim import SELL, SimExchange, SimServer
from astra.sim.admin import parse_deposits
from astra.sim.ledger import HOUSE
from astra.sim.perp_positions import MARGIN_ASSET, WALLET


async def usdt(t) -> dict:
    rows = await ok(t.v1("GET", "/fapi/v2/balance"))
    return next(r for r in rows if r["asset"] == "USDT")


async def test_position_margin_add_reduce_history_and_release(still, make_trader):
    t = make_trader("USDT=10000")
    sim = still
    margin = {"symbol": SYM, "amount": "100"}
    assert await error(t.v1("POST", "/fapi/v1/positionMargin", **margin, type=1)) == -4049
    await ok(t.v1("POST", "/fapi/v1/marginType", symbol=SYM, marginType="ISOLATED"))
    assert await error(t.v1("POST", "/fapi/v1/positionMargin", **margin, type=1)) == -4054
    await order(t, "BUY", quantity="0.05")
    before = await usdt(t)
    pos = await position(t)
    assert pos["marginType"] == "isolated"
    pos_im = D(pos["isolatedWallet"])
    assert pos_im > 0 and D(pos["isolatedMargin"]) == pos_im + D(pos["unRealizedProfit"])

    added = await ok(t.v1("POST", "/fapi/v1/positionMargin", **margin, type=1))
    assert added == {"amount": 100.0, "code": 200,
                     "msg": "Successfully modify position margin.", "type": 1}
    after = await usdt(t)
    assert D(after["balance"]) == D(before["balance"])  # no money moved ...
    assert D(after["availableBalance"]) == D(before["availableBalance"]) - 100  # ... set aside
    pos = await position(t)
    assert D(pos["isolatedWallet"]) == pos_im + 100
    assert trading(sim).ledger.locked(WALLET, 1, MARGIN_ASSET) == 100 * 10**8
    sim.exchange.ledger.check()

    assert await error(t.v1("POST", "/fapi/v1/positionMargin", symbol=SYM, amount="150",
                            type=2)) == -4051
    assert await error(t.v1("POST", "/fapi/v1/positionMargin", symbol=SYM, amount="0",
                            type=1)) == -4055
    assert await error(t.v1("POST", "/fapi/v1/positionMargin", symbol=SYM, amount="1",
                            type=3)) == -1130
    assert await error(t.v1("POST", "/fapi/v1/positionMargin", symbol=SYM, amount="1",
                            type=1, positionSide="LONG")) == -4061
    assert await error(t.v1("POST", "/fapi/v1/positionMargin", symbol=SYM, amount="9999999",
                            type=1)) == -4050
    await ok(t.v3("POST", "/fapi/v3/positionMargin", symbol=SYM, amount="40", type=2))
    assert D((await position(t))["isolatedWallet"]) == pos_im + 60
    assert D((await usdt(t))["availableBalance"]) == D(before["availableBalance"]) - 60

    history = await ok(t.v1("GET", "/fapi/v1/positionMargin/history", symbol=SYM))
    assert [(h["type"], h["amount"], h["asset"], h["positionSide"], h["symbol"])
            for h in history] == [(1, "100.00000000", "USDT", "BOTH", SYM),
                                  (2, "40.00000000", "USDT", "BOTH", SYM)]
    only_adds = await ok(t.v3("GET", "/fapi/v3/positionMargin/history", symbol=SYM, type=1))
    assert [h["amount"] for h in only_adds] == ["100.00000000"]
    late = await ok(t.v1("GET", "/fapi/v1/positionMargin/history", symbol=SYM,
                         startTime=history[1]["time"] + 1))
    assert late == []

    # Closing the position frees what was set aside.
    await order(t, "SELL", quantity="0.05", reduceOnly="true")
    closed = await usdt(t)
    assert D(closed["availableBalance"]) == D(closed["balance"])
    assert trading(sim).ledger.locked(WALLET, 1, MARGIN_ASSET) == 0
    assert not trading(sim).isolated
    sim.exchange.ledger.check()


async def test_multi_assets_mode_is_stored_and_reported(still, make_trader):
    t = make_trader("USDT=1000")
    assert await ok(t.v1("GET", "/fapi/v1/multiAssetsMargin")) == {"multiAssetsMargin": False}
    assert await ok(t.v1("POST", "/fapi/v1/multiAssetsMargin", multiAssetsMargin="true")) == {
        "code": 200, "msg": "success"}
    assert await ok(t.v3("GET", "/fapi/v3/multiAssetsMargin")) == {"multiAssetsMargin": True}
    await ok(t.v3("POST", "/fapi/v3/multiAssetsMargin", multiAssetsMargin="false"))
    assert await ok(t.v1("GET", "/fapi/v1/multiAssetsMargin")) == {"multiAssetsMargin": False}
    assert await error(t.v1("POST", "/fapi/v1/multiAssetsMargin",
                            multiAssetsMargin="maybe")) == -1130
    assert await error(t.v1("POST", "/fapi/v1/multiAssetsMargin")) == -1102


async def test_adl_quantile_follows_the_position_return(still, make_trader):
    t = make_trader("USDT=10000")
    assert await ok(t.v1("GET", "/fapi/v1/adlQuantile")) == []
    state = book(still)
    mid = state.engine.best_bid() + 1
    set_mid(state, mid)
    bought = await order(t, "BUY", quantity="0.1")
    entry = Decimal(bought["avgPrice"])
    set_mid(state, int(entry * 10) - 50)  # 5 USDT under the entry: a loss
    rows = await ok(t.v1("GET", "/fapi/v1/adlQuantile"))
    assert rows == [{"symbol": SYM, "adlQuantile": {"LONG": 0, "SHORT": 0, "BOTH": 0}}]
    # 20x leverage: +2 % on the price is +40 % on the initial margin (the second quarter).
    set_mid(state, int(entry * Decimal("1.02") * 10))
    rows = await ok(t.v3("GET", "/fapi/v3/adlQuantile", symbol=SYM))
    assert rows == [{"symbol": SYM, "adlQuantile": {"LONG": 0, "SHORT": 0, "BOTH": 2}}]
    set_mid(state, int(entry * Decimal("1.05") * 10))  # +100 %: the top quantile
    rows = await ok(t.v1("GET", "/fapi/v1/adlQuantile", symbol=SYM))
    assert rows[0]["adlQuantile"]["BOTH"] == 4
    assert await ok(t.v1("GET", "/fapi/v1/adlQuantile", symbol="ETHUSDT")) == []


async def test_ccxt_add_and_reduce_margin(still, ccxt_aster):
    ex = ccxt_aster
    await call(ex.set_margin_mode("isolated", BTC))
    await call(ex.create_order(BTC, "market", "buy", 0.05))
    added = await call(ex.add_margin(BTC, 25))
    assert (added["type"], added["amount"], added["symbol"]) == ("add", 25, BTC)
    reduced = await call(ex.reduce_margin(BTC, 10))
    assert (reduced["type"], reduced["amount"]) == ("reduce", 10)
    history = await call(ex.fetch_margin_adjustment_history(BTC))
    assert [(h["type"], h["amount"]) for h in history] == [("add", 25), ("reduce", 10)]
    assert trading(still).isolated == {(1, "BTCUSDT", "BOTH"): 15 * 10**8}
    still.exchange.ledger.check()


async def test_new_records_survive_a_restart(tmp_path):
    """Isolated margin and its history, Multi-Assets mode, funding history, spot transaction
    rows and a resting HIDDEN order are saved and loaded with the rest of the state."""
    path = str(tmp_path / "sim-state.json")
    first = SimExchange(seed=1, data_path=path)
    creds = first.create_account(parse_deposits("USDT=100000,BTC=1"))
    async with SimServer(first) as server:
        t = HmacClient(server.base_url, creds)
        await ok(t.v1("POST", "/fapi/v1/marginType", symbol=SYM, marginType="ISOLATED"))
        await order(t, "BUY", quantity="0.05")
        await ok(t.v1("POST", "/fapi/v1/positionMargin", symbol=SYM, amount="75", type=1))
        await ok(t.v1("POST", "/fapi/v1/multiAssetsMargin", multiAssetsMargin="true"))
        await ok(t.v1("POST", "/api/v1/asset/wallet/transfer", asset="USDT", amount="5",
                      kindType="SPOT_FUTURE", clientTranId="r-1"))
        ask = first.state("spot", SYM).engine.best_ask()
        hidden = await ok(t.v1("POST", "/api/v1/order", symbol=SYM, side="SELL", type="LIMIT",
                               timeInForce="HIDDEN", quantity="0.01",
                               price=f"{Decimal(ask + 50_000) / 100:.2f}"))
        await settle_fundings(server, 1)
        before = {
            "risk": await ok(t.v1("GET", "/fapi/v2/positionRisk", symbol=SYM)),
            "margin": await ok(t.v1("GET", "/fapi/v1/positionMargin/history", symbol=SYM)),
            "funding": first.sides["perp"].trading.funding_history,
            "spot": await ok(t.v1("GET", "/api/v1/transactionHistory")),
        }
    second = SimExchange(seed=1, data_path=path)
    second.ledger.check()
    async with SimServer(second) as server:
        t = HmacClient(server.base_url, creds)
        risk = await ok(t.v1("GET", "/fapi/v2/positionRisk", symbol=SYM))
        assert risk[0]["isolatedWallet"] == before["risk"][0]["isolatedWallet"]
        assert await ok(t.v1("GET", "/fapi/v1/positionMargin/history", symbol=SYM)) == (
            before["margin"])
        assert await ok(t.v1("GET", "/fapi/v1/multiAssetsMargin")) == {"multiAssetsMargin": True}
        assert second.sides["perp"].trading.funding_history == before["funding"]
        assert await ok(t.v1("GET", "/api/v1/transactionHistory")) == before["spot"]
        engine = second.state("spot", SYM).engine
        assert hidden["orderId"] in engine.orders and engine.orders[hidden["orderId"]].hidden
        price = ask + 50_000  # 0.01 BTC (1000 units) there, none of it displayed
        assert dict(engine.reachable(SELL))[price] - dict(engine.depth()[1]).get(price, 0) == 1000
        await order(t, "SELL", quantity="0.05", reduceOnly="true")
        assert second.ledger.locked(WALLET, 1, MARGIN_ASSET) == 0
        second.ledger.check()


async def test_a_deficit_draws_only_what_it_needs_from_set_aside_margin(still, make_trader):
    """A wallet pushed below zero takes from the isolated margin only the shortfall (the rest
    stays set aside for its position); beyond it, the house pays the remainder."""
    t = make_trader("USDT=1000")
    perp = trading(still)
    ledger = still.exchange.ledger
    me = account_id(still, t)
    await ok(t.v1("POST", "/fapi/v1/marginType", symbol=SYM, marginType="ISOLATED"))
    await order(t, "BUY", quantity="0.05")
    await ok(t.v1("POST", "/fapi/v1/positionMargin", symbol=SYM, amount="300", type=1))
    unit = 10**8
    # A loss of the whole free balance and 100 USDT more (moved to the house: conserved).
    loss = ledger.free(WALLET, me, MARGIN_ASSET) + 100 * unit
    ledger.move(WALLET, MARGIN_ASSET, loss, me, HOUSE, allow_negative=True)
    perp.clear_deficit(me, SYM)
    assert ledger.free(WALLET, me, MARGIN_ASSET) == 0
    assert ledger.locked(WALLET, me, MARGIN_ASSET) == 200 * unit
    assert perp.isolated == {(me, SYM, "BOTH"): 200 * unit}
    income = await ok(t.v1("GET", "/fapi/v1/income"))
    assert "INSURANCE_CLEAR" not in {r["incomeType"] for r in income}
    ledger.check()
    # A shortfall beyond what is set aside: all of it, then the house.
    ledger.move(WALLET, MARGIN_ASSET, 250 * unit, me, HOUSE, allow_negative=True)
    perp.clear_deficit(me, SYM)
    assert (ledger.free(WALLET, me, MARGIN_ASSET), ledger.locked(WALLET, me, MARGIN_ASSET)) == (
        0, 0)
    assert perp.isolated == {}
    clear = await ok(t.v1("GET", "/fapi/v1/income", incomeType="INSURANCE_CLEAR"))
    assert [D(r["income"]) for r in clear] == [D(50)]
    ledger.check()


async def test_a_flipped_position_releases_its_set_aside_margin(still, make_trader):
    """One-way mode: a fill that takes a long through zero to a short frees the margin added
    to the long (the short starts with none)."""
    t = make_trader("USDT=10000")
    perp = trading(still)
    me = account_id(still, t)
    await ok(t.v1("POST", "/fapi/v1/marginType", symbol=SYM, marginType="ISOLATED"))
    await order(t, "BUY", quantity="0.05")
    await ok(t.v1("POST", "/fapi/v1/positionMargin", symbol=SYM, amount="100", type=1))
    assert perp.ledger.locked(WALLET, me, MARGIN_ASSET) == 100 * 10**8
    await order(t, "SELL", quantity="0.08")
    pos = await position(t)
    assert D(pos["positionAmt"]) == D("-0.03")
    assert perp.ledger.locked(WALLET, me, MARGIN_ASSET) == 0 and perp.isolated == {}
    risk = next(r for r in await ok(t.v1("GET", "/fapi/v2/positionRisk", symbol=SYM))
                if r["positionSide"] == "BOTH")
    # The short's isolated wallet is its own initial margin only: nothing carried over.
    assert D(risk["isolatedWallet"]) == D(
        (await ok(t.v1("GET", "/fapi/v4/account")))["positions"][0]["positionInitialMargin"])
    still.exchange.ledger.check()
