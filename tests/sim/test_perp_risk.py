"""Perpetual funding, liquidation (with the house as the insurance fund), wallet transfers and
persistence of positions and settings, over loopback; the ledger stays conserved throughout."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from decimal import Decimal
from urllib.parse import urlencode

import aiohttp

from astra.sim import SimExchange, SimServer
from astra.sim.admin import parse_deposits
from astra.sim.engine import BUY, SELL
from astra.sim.flow import STEP_MS
from astra.sim.funding import funding_payment, liquidate
from astra.sim.ledger import HOUSE

SYM = "BTCUSDT"  # perp: 1 price decimal, 3 quantity decimals
OWNER = -30
WAIT_S = 10


# -- helpers (as in test_perp.py; test modules cannot import each other here) --------------
def D(x) -> Decimal:
    return Decimal(str(x))


def trading(sim):
    return sim.exchange.sides["perp"].trading


def book(sim, symbol: str = SYM):
    return sim.exchange.state("perp", symbol)


def px(units: int) -> str:
    return f"{D(units) / 10:.1f}"


def set_mid(state, mid: int, qty: int = 10_000) -> None:
    """Move the mid (the mark price) to ``mid`` without a trade."""
    tick = state.market.tick
    for o in list(state.engine.orders.values()):
        if o.owner < 0 and ((o.side == SELL and o.price <= mid + tick)
                            or (o.side == BUY and o.price >= mid - tick)):
            state.cancel(o.id)
    state.place(OWNER, BUY, qty, mid - tick, post_only=True)
    state.place(OWNER, SELL, qty, mid + tick, post_only=True)


async def ok(call) -> object:
    status, body = await call
    assert status == 200, body
    return body


async def error(call) -> int:
    status, body = await call
    assert status == 400, body
    return body["code"]


async def order(t, side: str, type_: str = "MARKET", **params) -> dict:
    return await ok(t.v1("POST", "/fapi/v1/order", symbol=SYM, side=side, type=type_, **params))


async def position(t, ps: str = "BOTH") -> dict:
    rows = await ok(t.v1("GET", "/fapi/v2/positionRisk", symbol=SYM))
    return next(r for r in rows if r["positionSide"] == ps)


class HmacClient:
    """A v1 (HMAC) client for a server of the test's own (``make_trader`` is bound to ``sim``)."""

    def __init__(self, base_url: str, creds) -> None:
        self.base, self.creds = base_url, creds

    async def v1(self, method: str, path: str, **params) -> tuple[int, object]:
        params["timestamp"] = int(time.time() * 1000)
        query = urlencode(params)
        sig = hmac.new(self.creds.apiSecret.encode(), query.encode(), hashlib.sha256).hexdigest()
        async with aiohttp.ClientSession() as http, asyncio.timeout(WAIT_S):
            async with http.request(method, f"{self.base}{path}?{query}&signature={sig}",
                                    headers={"X-MBX-APIKEY": self.creds.apiKey}) as resp:
                return resp.status, await resp.json(content_type=None)


def account_id(sim, t) -> int:
    return sim.exchange.registry.by_api_key(t.creds.apiKey).id


async def test_funding_is_paid_at_each_interval(sim, make_trader):
    """Running clock: funding every 100 ms; longs and shorts pay each other through the house,
    and the wallet changes by exactly the FUNDING_FEE income."""
    perp = trading(sim)
    long_, short = make_trader("USDT=100000"), make_trader("USDT=100000")
    await order(long_, "BUY", quantity="0.100")
    await order(short, "SELL", quantity="0.100")
    ids = account_id(sim, long_), account_id(sim, short)
    start = {a: perp.wallet(a) for a in ids}
    seen: list[int] = []
    twice = asyncio.Event()
    forward = perp.emit

    def emit(account: int, event: dict) -> None:
        if event["e"] == "ACCOUNT_UPDATE" and event["a"]["m"] == "FUNDING_FEE":
            seen.append(account)
            if seen.count(ids[0]) >= 2 and seen.count(ids[1]) >= 2:
                twice.set()
        forward(account, event)

    perp.emit = emit
    perp.set_funding_interval(100)
    async with asyncio.timeout(WAIT_S):
        await twice.wait()
    # One synchronous look (the clock cannot run in between): wallet moves == income rows.
    funding = {a: [r for r in perp.income[a] if r["incomeType"] == "FUNDING_FEE"] for a in ids}
    for a in ids:
        assert perp.wallet(a) - start[a] == sum(int(D(r["income"]) * 10**8) for r in funding[a])
    last = perp.last_funding[SYM]
    mark, rate = D(last["markPrice"]), D(last["fundingRate"])
    paid = funding_payment(3, 100, mark, rate)  # 0.100 BTC long
    assert D(funding[ids[0]][-1]["income"]) * 10**8 == -paid
    assert D(funding[ids[1]][-1]["income"]) * 10**8 == paid
    if rate > 0:
        assert D(funding[ids[0]][-1]["income"]) < 0 < D(funding[ids[1]][-1]["income"])
    rows = await ok(long_.v1("GET", "/fapi/v1/income", incomeType="FUNDING_FEE"))
    assert rows and {r["symbol"] for r in rows} == {SYM}
    assert set(rows[0]) == {"symbol", "incomeType", "income", "asset", "info", "time", "tranId",
                            "tradeId"}
    sim.exchange.ledger.check()


async def test_liquidation_closes_everything_and_the_house_covers_the_deficit(
        still, make_trader):
    sim = still
    perp = trading(sim)
    state = book(sim)
    events: list[dict] = []
    forward = perp.emit
    perp.emit = lambda account, event: (events.append(event), forward(account, event))
    t = make_trader("USDT=1000")
    me = account_id(sim, t)
    await order(t, "BUY", quantity="0.190")  # ~18.4k at 20x: ~921 initial margin
    resting = await order(t, "SELL", "LIMIT", timeInForce="GTC", quantity="0.001",
                          price=px(state.engine.best_ask() + 2000))
    perp.check_triggers()
    assert D((await position(t))["positionAmt"]) == D("0.19")  # healthy so far
    entry = D((await position(t))["entryPrice"])
    pos = await position(t)
    assert D("90000") < D(pos["liquidationPrice"]) < entry
    set_mid(state, 900_000)  # the mark drops to 90000: a loss beyond the wallet
    before = sim.exchange.ledger.free("perp", HOUSE, "USDT")
    perp.check_triggers()
    assert D((await position(t))["positionAmt"]) == 0
    canceled = await ok(t.v1("GET", "/fapi/v1/order", symbol=SYM, orderId=resting["orderId"]))
    assert canceled["status"] == "CANCELED"
    forced = await ok(t.v1("GET", "/fapi/v1/forceOrders", symbol=SYM))
    assert len(forced) == 1 and forced[0]["clientOrderId"].startswith("autoclose-")
    assert forced[0]["status"] == "FILLED" and forced[0]["side"] == "SELL"
    assert forced[0]["executedQty"] == "0.190"
    income = await ok(t.v1("GET", "/fapi/v1/income"))
    clear = [r for r in income if r["incomeType"] == "INSURANCE_CLEAR"]
    assert len(clear) == 1 and D(clear[0]["income"]) > 0
    assert perp.wallet(me) == 0  # the loss took everything; the house absorbed the rest
    assert sim.exchange.ledger.free("perp", HOUSE, "USDT") != before
    liq = [e for e in events if e["e"] == "ORDER_TRADE_UPDATE"
           and e["o"]["c"] == forced[0]["clientOrderId"]]
    assert liq[0]["o"]["x"] == "NEW" and liq[-1]["o"]["X"] == "FILLED"
    assert all(e["o"]["o"] == "LIQUIDATION" for e in liq)
    assert {e["o"]["x"] for e in liq[1:]} == {"CALCULATED"}
    perp.check_triggers()  # nothing left to liquidate
    assert len(await ok(t.v1("GET", "/fapi/v1/forceOrders"))) == 1
    sim.exchange.ledger.check()


async def test_liquidation_on_an_empty_book_side_trades_with_the_house_at_mark(
        still, make_trader):
    sim = still
    perp = trading(sim)
    state = book(sim)
    t = make_trader("USDT=100000")
    await order(t, "BUY", quantity="0.500")
    for o in [o for o in state.engine.orders.values() if o.side == BUY]:
        state.cancel(o.id)  # no bids at all
    # The house bids at the mark, or just under the best ask when the mark is above it.
    price = min(perp.mark_units(state), state.engine.best_ask() - state.market.tick)
    liquidate(perp, account_id(sim, t))
    assert D((await position(t))["positionAmt"]) == 0
    forced = await ok(t.v1("GET", "/fapi/v1/forceOrders"))
    assert forced[0]["status"] == "FILLED" and D(forced[0]["avgPrice"]) == D(px(price))
    assert state.engine.best_bid() is None  # the house's liquidity was used up exactly
    sim.exchange.ledger.check()


async def test_liquidations_are_published_on_the_force_order_streams(still, make_trader):
    """``<symbol>@forceOrder`` and ``!forceOrder@arr`` (futures docs): each second, the latest
    liquidation order of each symbol, as documented; nothing when there was none. These
    streams were refused before."""
    sim = still
    perp = trading(sim)
    feeds = sim.exchange.sides["perp"].feeds
    a, b, c = (make_trader("USDT=100000") for _ in range(3))
    await order(a, "BUY", quantity="0.100")
    await order(b, "BUY", quantity="0.200")
    await ok(c.v1("POST", "/fapi/v1/order", symbol="ETHUSDT", side="SELL", type="MARKET",
                  quantity="1.000"))
    base = f"ws://{sim.host}:{sim.port}/fstream"

    def one_second() -> None:
        for _ in range(1000 // STEP_MS):  # the stream scheduler's ticks for one second
            feeds.tick()

    async def frames_until_reply(ws, rid: int) -> list[dict]:
        """Frames published before now: everything ahead of a LIST_SUBSCRIPTIONS reply."""
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": rid})
        out = []
        async with asyncio.timeout(WAIT_S):
            while "result" not in (msg := await ws.receive_json()):
                out.append(msg)
        return out

    async with aiohttp.ClientSession() as http, asyncio.timeout(WAIT_S), \
            http.ws_connect(f"{base}/stream?streams=btcusdt@forceOrder/!forceOrder@arr") as all_, \
            http.ws_connect(f"{base}/ws/ethusdt@forceOrder") as eth:
        one_second()
        assert await frames_until_reply(all_, 1) == []  # no liquidation: nothing pushed
        liquidate(perp, account_id(sim, a))
        liquidate(perp, account_id(sim, b))  # the same symbol within the second: b is latest
        one_second()
        frames = await frames_until_reply(all_, 2)
        assert [f["stream"] for f in frames] == ["btcusdt@forceOrder", "!forceOrder@arr"]
        assert frames[0]["data"] == frames[1]["data"]
        event = frames[0]["data"]
        forced = (await ok(b.v1("GET", "/fapi/v1/forceOrders", symbol=SYM)))[0]
        assert list(event) == ["e", "E", "o"] and event["e"] == "forceOrder"
        o = event["o"]
        assert list(o) == ["s", "S", "o", "f", "q", "p", "ap", "X", "l", "z", "T"]
        assert (o["s"], o["S"], o["o"], o["f"], o["X"]) == (SYM, "SELL", "MARKET", "GTC",
                                                           "FILLED")
        assert (o["q"], o["z"]) == ("0.200", "0.200") == (forced["origQty"],
                                                          forced["executedQty"])
        assert o["ap"] == o["p"] == forced["avgPrice"] and D(o["ap"]) > 0
        assert D("0") < D(o["l"]) <= D("0.200") and o["T"] == forced["updateTime"]
        assert await frames_until_reply(eth, 3) == []  # another symbol's stream: nothing
        liquidate(perp, account_id(sim, c))
        one_second()
        (eth_event,) = await frames_until_reply(eth, 4)
        assert (eth_event["o"]["s"], eth_event["o"]["S"], eth_event["o"]["q"]) == (
            "ETHUSDT", "BUY", "1.000")
        frames = await frames_until_reply(all_, 5)
        assert [f["stream"] for f in frames] == ["!forceOrder@arr"]  # not btcusdt@forceOrder
        assert frames[0]["data"] == eth_event
        one_second()
        assert await frames_until_reply(all_, 6) == []  # each liquidation is pushed once
    sim.exchange.ledger.check()


async def test_wallet_transfers_between_spot_and_futures(still, make_trader):
    sim = still
    t = make_trader("USDT=1000")
    done = await ok(t.v1("POST", "/fapi/v1/asset/wallet/transfer", asset="USDT", amount="250",
                         kindType="FUTURE_SPOT", clientTranId="t-1"))
    assert done["status"] == "SUCCESS" and isinstance(done["tranId"], int)
    assert await error(t.v1("POST", "/fapi/v1/asset/wallet/transfer", asset="USDT",
                            amount="1", kindType="FUTURE_SPOT", clientTranId="t-1")) == -4115
    assert await error(t.v1("POST", "/fapi/v1/asset/wallet/transfer", asset="USDT",
                            amount="5000", kindType="SPOT_FUTURE",
                            clientTranId="t-2")) == -2018
    await ok(t.v1("POST", "/fapi/v1/asset/wallet/transfer", asset="USDT", amount="100.5",
                  kindType="SPOT_FUTURE", clientTranId="t-3"))
    balance = await ok(t.v1("GET", "/fapi/v2/balance"))
    assert D(balance[0]["balance"]) == D("850.5")
    spot = await ok(t.v1("GET", "/api/v1/account"))
    assert {b["asset"]: D(b["free"]) for b in spot["balances"]}["USDT"] == D("1149.5")
    rows = await ok(t.v1("GET", "/fapi/v1/income", incomeType="TRANSFER"))
    assert [D(r["income"]) for r in rows] == [D(-250), D("100.5")]
    sim.exchange.ledger.check()


async def test_positions_and_settings_survive_a_restart(tmp_path):
    path = str(tmp_path / "sim-state.json")
    first = SimExchange(seed=1, data_path=path)
    creds = first.create_account(parse_deposits("USDT=100000"))
    async with SimServer(first) as server:
        t = HmacClient(server.base_url, creds)
        await ok(t.v1("POST", "/fapi/v1/positionSide/dual", dualSidePosition="true"))
        await ok(t.v1("POST", "/fapi/v1/leverage", symbol=SYM, leverage=33))
        await ok(t.v1("POST", "/fapi/v1/marginType", symbol="ETHUSDT", marginType="ISOLATED"))
        await order(t, "BUY", quantity="0.100", positionSide="LONG")
        await order(t, "SELL", quantity="0.040", positionSide="SHORT")
        far = first.state("perp", SYM).engine.best_bid() - 3000
        resting = await order(t, "BUY", "LIMIT", timeInForce="GTC", quantity="0.010",
                              positionSide="LONG", price=px(far))
        before = {
            "risk": await ok(t.v1("GET", "/fapi/v2/positionRisk", symbol=SYM)),
            "eth": await ok(t.v1("GET", "/fapi/v2/positionRisk", symbol="ETHUSDT")),
            "income": await ok(t.v1("GET", "/fapi/v1/income")),
            "trades": await ok(t.v1("GET", "/fapi/v1/userTrades", symbol=SYM)),
        }
    # Closing the server saved the state; a second exchange loads it.
    second = SimExchange(seed=1, data_path=path)
    second.ledger.check()
    assert second.ledger.totals() == first.ledger.totals()
    async with SimServer(second) as server:
        t = HmacClient(server.base_url, creds)
        assert await ok(t.v1("GET", "/fapi/v1/positionSide/dual")) == {"dualSidePosition": True}
        risk = await ok(t.v1("GET", "/fapi/v2/positionRisk", symbol=SYM))
        keep = ("positionAmt", "entryPrice", "leverage", "positionSide", "marginType")
        assert [{k: r[k] for k in keep} for r in risk] == [
            {k: r[k] for k in keep} for r in before["risk"]]
        eth = await ok(t.v1("GET", "/fapi/v2/positionRisk", symbol="ETHUSDT"))
        assert {r["marginType"] for r in eth} == {"isolated"}
        assert await ok(t.v1("GET", "/fapi/v1/income")) == before["income"]
        assert await ok(t.v1("GET", "/fapi/v1/userTrades", symbol=SYM)) == before["trades"]
        reopened = await ok(t.v1("GET", "/fapi/v1/openOrder", symbol=SYM,
                                 orderId=resting["orderId"]))
        assert reopened["status"] == "NEW" and reopened["positionSide"] == "LONG"
        assert resting["orderId"] in second.state("perp", SYM).engine.orders
        closing = await order(t, "SELL", quantity="0.100", positionSide="LONG")
        assert closing["status"] == "FILLED"
        second.ledger.check()


async def test_the_house_quote_steps_inside_a_hidden_order(still, make_trader):
    """A HIDDEN ask under the displayed best: the house's post-only bid for a liquidation is
    priced inside it (the post-only check sees hidden orders), so it rests and the position
    closes, at one tick under the hidden ask."""
    sim = still
    perp = trading(sim)
    state = book(sim)
    t = make_trader("USDT=100000")
    await order(t, "BUY", quantity="0.500")
    for o in [o for o in state.engine.orders.values() if o.side == BUY]:
        state.cancel(o.id)  # no bids at all
    tick = state.market.tick
    hidden_at = min(perp.mark_units(state), state.engine.best_ask() - tick)
    hidden, _ = state.place(-31, SELL, 1, hidden_at, hidden=True)
    assert state.engine.best_ask() > hidden_at  # out of the displayed book
    liquidate(perp, account_id(sim, t))
    assert D((await position(t))["positionAmt"]) == 0
    forced = await ok(t.v1("GET", "/fapi/v1/forceOrders"))
    assert forced[0]["status"] == "FILLED"
    assert D(forced[0]["avgPrice"]) == D(px(hidden_at - tick))
    assert hidden.id in state.engine.orders  # the hidden ask was never reached
    state.engine.check_invariants()
    sim.exchange.ledger.check()
