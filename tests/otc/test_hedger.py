"""The desk's hedges on three simulated venues: a leg a stopped gateway left ``SENT`` is asked
again by its own client order id and never sent twice; a hedge that cannot trade is retried,
then flagged ``FAILED``, and the client's trade stands."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tests.conftest import OTC_CLIENT_DEPOSIT, SorDesk

from astra.core import Side
from astra.core._otc import AcceptQuote, QuoteRequest
from astra.core._trading import OrderType, SmartOrderRequest

BTC = "SMART-SPOT-BTC-USDT"


def _venue_orders(desk, accounts: dict) -> list:
    out = []
    for code, sim in desk.sims.items():
        if code not in accounts:
            continue
        account = sim.exchange.registry.by_api_key(accounts[code].apiKey)
        out += sim.exchange.sides["spot"].trading.by_account.get((account.id, "BTCUSDT"), [])
    return out


async def _book_trade(desk, amount: str = "0.3"):
    otc = desk.gw.desk
    got = await otc.request_quote(desk.key_id, QuoteRequest(
        account_id=desk.account_id, from_asset="BTC", to_asset="USDT",
        from_amount=Decimal(amount)))
    return (await otc.accept(desk.key_id, AcceptQuote(quote=got.quote))).trade


async def test_a_leg_left_sent_is_asked_again_by_its_id_and_never_sent_twice(otc_desk):
    desk = otc_desk
    await desk.freeze(BTC)
    hedger = desk.gw.desk.hedger
    await hedger.close()  # this "gateway" stops before its hedger runs
    trade = await _book_trade(desk)
    store = desk.gw.desk.store
    [leg] = store.hedges(trade_id=trade.trade_id)
    assert leg.state == "PENDING" and leg.quantity == Decimal("0.3")
    # What the stopped gateway did: the leg marked SENT, then the order sent through the
    # router, and no answer recorded.
    cid = f"otc{leg.hedge_id}a1"
    store.update_hedge(leg.hedge_id, state="SENT", attempts=1, client_order_id=cid,
                       sent_quantity=Decimal("0.3"))
    sent = await desk.gw.router.place(hedger.key_id, hedger.creds_for, SmartOrderRequest(
        market=BTC, side=Side.BUY, type=OrderType.MARKET, quantity=0.3, client_order_id=cid,
        max_slippage_bps=hedger.slippage_bps))
    orders_before = len(_venue_orders(desk, desk.desk_accounts))
    assert orders_before >= 1 and sent.filled_quantity == 0.3
    # The next gateway's hedger: the same id, the router's journal answers, nothing new sent.
    assert await hedger.run_once() is None
    assert len(_venue_orders(desk, desk.desk_accounts)) == orders_before
    [leg] = store.hedges(trade_id=trade.trade_id)
    assert (leg.state, leg.filled, leg.parent_order_id) == ("DONE", Decimal("0.3"),
                                                            sent.order_id)
    assert store.trade(trade.trade_id).hedge_state == "HEDGED"
    assert store.inventory().get("BTC", Decimal(0)) == 0


async def test_a_hedge_that_cannot_trade_is_retried_then_flagged_and_the_trade_stands(
        sor_sims, key_store):
    desk = SorDesk(sor_sims, key_store)  # no desk accounts on the venues: hedges cannot trade
    desk.linger = 600.0
    try:
        await desk.start()
        desk.account_id = desk.otc_account(OTC_CLIENT_DEPOSIT)
        await desk.freeze(BTC)
        otc = desk.gw.desk
        otc.hedger.retry_delay = 0.05
        trade = await _book_trade(desk, "0.2")
        async with asyncio.timeout(20):
            while True:
                if otc.store.trade(trade.trade_id).hedge_state != "PENDING":
                    break
                await asyncio.sleep(0.05)
        [leg] = otc.store.hedges(trade_id=trade.trade_id)
        assert (leg.state, leg.attempts, leg.filled) == ("FAILED", 3, None)
        assert "EXCHANGE_CREDENTIALS_REQUIRED" in leg.error
        assert otc.store.trade(trade.trade_id).hedge_state == "FAILED"
        balances = otc.store.balances(desk.account_id)
        assert balances["BTC"] == Decimal(OTC_CLIENT_DEPOSIT["BTC"]) + Decimal("0.2")
        assert otc.store.inventory()["BTC"] == Decimal("-0.2")  # the desk holds the risk
        assert otc.hedger.failed == 1
        kinds = [r["kind"] for r in otc.store.audit_rows(trade_id=trade.trade_id, limit=20)]
        assert kinds.count("HEDGE_RETRY") == 2 and kinds.count("HEDGE_FAILED") == 1
        metrics = desk.gw.metrics.render()
        assert "astra_otc_hedge_legs_failed_total 1" in metrics
        assert 'astra_otc_events_total{event="trades"} 1' in metrics
    finally:
        await desk.close()
