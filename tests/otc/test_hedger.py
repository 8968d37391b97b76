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


def _twin(hedger, **kw):
    """A second hedger on the same store and router: another gateway's, in effect."""
    from astra.otc.hedger import Hedger

    return Hedger(hedger.engine, hedger.store, hedger.router, hedger.credentials,
                  key_id=hedger.key_id, venues=hedger.venues, slippage_bps=hedger.slippage_bps,
                  attempts=hedger.attempts, retry_delay=hedger.retry_delay, **kw)


async def _left_sent(desk, *, slippage: float | None = None, sent_quantity=Decimal("0.3")):
    """A booked trade whose leg a stopped gateway marked SENT (``sent_quantity`` as given)
    and whose order it handed to the router with ``slippage`` (None: not handed at all)."""
    await desk.freeze(BTC)
    hedger = desk.gw.desk.hedger
    await hedger.close()
    trade = await _book_trade(desk)
    store = desk.gw.desk.store
    [leg] = store.hedges(trade_id=trade.trade_id)
    cid = f"otc{leg.hedge_id}a1"
    store.update_hedge(leg.hedge_id, state="SENT", attempts=1, client_order_id=cid,
                       sent_quantity=sent_quantity)
    sent = None
    if slippage is not None:
        sent = await desk.gw.router.place(hedger.key_id, hedger.creds_for, SmartOrderRequest(
            market=BTC, side=Side.BUY, type=OrderType.MARKET, quantity=0.3,
            client_order_id=cid, max_slippage_bps=slippage))
        assert sent.filled_quantity == 0.3
    return trade, hedger, store, sent


async def test_a_leg_sent_under_other_settings_is_read_back_never_sent_again(otc_desk):
    # The stopped gateway ran with another hedge_slippage_bps: placing the same id again now
    # differs from the journaled request (the router's Conflict); it must be read, not re-sent
    # under a new id.
    desk = otc_desk
    trade, hedger, store, sent = await _left_sent(desk, slippage=hedger_slippage_other(desk))
    orders_before = len(_venue_orders(desk, desk.desk_accounts))
    assert await hedger.run_once() is None
    assert len(_venue_orders(desk, desk.desk_accounts)) == orders_before
    [leg] = store.hedges(trade_id=trade.trade_id)
    assert (leg.state, leg.filled, leg.attempts, leg.parent_order_id) == (
        "DONE", Decimal("0.3"), 1, sent.order_id)
    assert store.inventory().get("BTC", Decimal(0)) == 0
    assert store.trade(trade.trade_id).hedge_state == "HEDGED"


def hedger_slippage_other(desk) -> float:
    return desk.gw.desk.hedger.slippage_bps + 7


async def test_a_sent_leg_without_its_quantity_is_read_back_never_sent_again(otc_desk):
    desk = otc_desk
    trade, hedger, store, sent = await _left_sent(desk, slippage=desk.gw.desk.hedger.slippage_bps,
                                                  sent_quantity=None)
    orders_before = len(_venue_orders(desk, desk.desk_accounts))
    assert await hedger.run_once() is None
    assert len(_venue_orders(desk, desk.desk_accounts)) == orders_before
    [leg] = store.hedges(trade_id=trade.trade_id)
    assert (leg.state, leg.filled, leg.client_order_id) == ("DONE", Decimal("0.3"),
                                                            sent.client_order_id)
    assert store.inventory().get("BTC", Decimal(0)) == 0


async def test_a_leg_marked_sent_but_never_handed_over_is_sent_once_with_its_id(otc_desk):
    desk = otc_desk
    trade, hedger, store, _ = await _left_sent(desk, slippage=None)
    [leg] = store.hedges(trade_id=trade.trade_id)
    # Younger than the lease: another gateway may be about to send it; nothing is sent.
    waiting = _twin(hedger, lease_ms=3_600_000)
    assert await waiting.run_once() == waiting.retry_delay
    assert _venue_orders(desk, desk.desk_accounts) == []
    assert store.hedges(trade_id=trade.trade_id)[0].state == "SENT"
    # Past the lease: sent once, under the id it was marked with.
    late = _twin(hedger, lease_ms=0)
    assert await late.run_once() is None
    orders = _venue_orders(desk, desk.desk_accounts)
    assert orders and all(o.client_id.startswith(f"{leg.client_order_id}") for o in orders)
    assert sum(Decimal(o.executed).scaleb(-o.state.market.qty_dp) for o in orders) == \
        Decimal("0.3")
    [leg] = store.hedges(trade_id=trade.trade_id)
    assert (leg.state, leg.filled, leg.attempts) == ("DONE", Decimal("0.3"), 1)
    assert await late.run_once() is None
    assert len(_venue_orders(desk, desk.desk_accounts)) == len(orders)
    assert store.inventory().get("BTC", Decimal(0)) == 0


async def test_two_hedgers_on_one_database_hedge_a_leg_once(otc_desk):
    desk = otc_desk
    await desk.freeze(BTC)
    hedger = desk.gw.desk.hedger
    await hedger.close()
    trade = await _book_trade(desk)
    store = desk.gw.desk.store
    twins = [_twin(hedger) for _ in range(4)]
    await asyncio.gather(*(h.run_once() for h in twins))
    for h in twins:  # whatever was left for a later pass
        await h.run_once()
    orders = _venue_orders(desk, desk.desk_accounts)
    assert sum(Decimal(o.executed).scaleb(-o.state.market.qty_dp) for o in orders) == \
        Decimal("0.3")
    [leg] = store.hedges(trade_id=trade.trade_id)
    assert (leg.state, leg.filled, leg.attempts) == ("DONE", Decimal("0.3"), 1)
    # The desk sold 0.3 BTC and bought 0.3 back: flat, the fill booked once.
    assert store.inventory().get("BTC", Decimal(0)) == 0
    assert len(store.audit_rows(kind="HEDGE_SENT", trade_id=trade.trade_id)) == 1
    assert store.trade(trade.trade_id).hedge_state == "HEDGED"


async def test_the_dust_below_the_lot_stays_in_inventory_and_is_marked_in_the_result(otc_desk):
    desk = otc_desk
    await desk.freeze(BTC)
    hedger = desk.gw.desk.hedger
    await hedger.close()
    smart = await desk.gw.engine.smart_market(BTC)
    coarsest = max(Decimal(repr(m.metadata.lot_size)) for m in smart.members.values())
    assert coarsest > Decimal("0.00000001")  # 0.30000001 cannot be hedged to the last unit
    trade = await _book_trade(desk, "0.30000001")
    assert await hedger.run_once() is None
    store = desk.gw.desk.store
    [leg] = store.hedges(trade_id=trade.trade_id)
    dust = Decimal("0.30000001") - leg.filled
    assert leg.state == "DONE" and 0 < dust < coarsest
    assert store.inventory()["BTC"] == -dust  # the desk is still short the dust
    done = store.trade(trade.trade_id)
    cost = leg.average_price * leg.filled + leg.fees
    assert done.hedge_state == "HEDGED" and done.hedge_cost == cost
    # What the client paid, less the hedge, less the dust the desk still has to buy.
    assert done.result_home == trade.to_asset_quantity - cost - dust * leg.average_price


async def test_a_leg_whose_order_is_still_executing_elsewhere_waits_and_is_not_resent(otc_desk):
    # Another gateway journaled the order under the leg's id and is executing it: this hedger
    # must neither send again nor give the leg up (FAILED would drop the fills to come).
    from astra.store.routing_journal import new_parent_id

    desk = otc_desk
    trade, hedger, store, _ = await _left_sent(desk, slippage=None)
    [leg] = store.hedges(trade_id=trade.trade_id)
    request = {"market": BTC, "side": "BUY", "type": "MARKET", "quantity": 0.3,
               "clientOrderId": leg.client_order_id, "maxSlippageBps": hedger.slippage_bps}
    desk.gw.router.journal.begin(hedger.key_id, BTC, leg.client_order_id, request,
                                 new_parent_id(), {}, [])
    late = _twin(hedger, lease_ms=0)
    for _ in range(3):
        assert await late.run_once() == late.retry_delay
    assert _venue_orders(desk, desk.desk_accounts) == []
    [leg] = store.hedges(trade_id=trade.trade_id)
    assert (leg.state, leg.attempts, leg.filled) == ("SENT", 1, None)
    assert "outcome not known yet" in leg.error
    assert store.trade(trade.trade_id).hedge_state == "PENDING"
    assert store.inventory()["BTC"] == Decimal("-0.3")


async def test_a_leg_on_an_unknown_market_is_flagged_and_does_not_stall_the_others(otc_desk):
    import secrets
    import time
    import uuid

    from astra.store.otc import QuoteRow

    desk = otc_desk
    await desk.freeze(BTC)
    hedger = desk.gw.desk.hedger
    await hedger.close()
    store = desk.gw.desk.store
    # A trade booked with a leg on a market no venue lists (delisted since, say), first.
    quote_id, now = str(uuid.uuid4()), time.time()
    store.save_quote(QuoteRow(
        quote_id=quote_id, signature=secrets.token_hex(32), signing_key_id="test",
        account_id=desk.account_id, from_asset="BTC", to_asset="USDT",
        from_qty=Decimal("0.01"), to_qty=Decimal("700"), expiry_us=int(now * 1e6) + 10**7,
        state="ACTIVE", created_ms=int(now * 1000), accepted_ms=None,
        home_notional=Decimal("700"), detail={"hedges": [
            {"symbol": "SMART-SPOT-NOPE-USDT", "side": "BUY", "quantity": "0.01"}]}))
    bad, _ = store.accept(quote_id, account_id=desk.account_id, now_us=int(now * 1e6),
                          day="2026-01-01", daily_limit=None, inventory_limits={}, hedge=True)
    good = await _book_trade(desk)
    for _ in range(hedger.attempts):
        await hedger.run_once()
    assert store.trade(good.trade_id).hedge_state == "HEDGED"
    [leg] = store.hedges(trade_id=bad.trade_id)
    assert (leg.state, leg.attempts, leg.client_order_id) == ("FAILED", hedger.attempts, None)
    assert "NOPE" in leg.error
    assert store.trade(bad.trade_id).hedge_state == "FAILED"


async def test_a_trade_whose_last_leg_settled_before_a_stop_is_finished_later(otc_desk):
    desk = otc_desk
    trade, hedger, store, sent = await _left_sent(desk, slippage=desk.gw.desk.hedger.slippage_bps)
    [leg] = store.hedges(trade_id=trade.trade_id)
    # The stopped gateway settled the leg, then stopped before finishing its trade.
    store.settle_hedge(leg.hedge_id, state="DONE", filled=Decimal("0.3"),
                       average_price=Decimal(repr(sent.average_price)),
                       fees=Decimal(repr(sent.report.fees)),
                       inventory={"BTC": Decimal("0.3")}, parent_order_id=sent.order_id)
    assert store.hedges(states=("PENDING", "SENT")) == []
    assert await hedger.run_once() is None
    done = store.trade(trade.trade_id)
    assert done.hedge_state == "HEDGED" and done.result_home is not None
