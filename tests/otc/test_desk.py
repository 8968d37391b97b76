"""The OTC desk on three simulated venues over loopback (``otc_desk``): quotes equal an
independent computation from the venues' own books, tampering and expiry are refused, a quote
books one trade under 50 concurrent accepts, the hedge lands on the venues with its result
recorded, and every refusal code is reachable."""

from __future__ import annotations

import asyncio
import time
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import msgspec
import pytest

from astra.core import (
    AstraError,
    DeskHalted,
    Forbidden,
    InsufficientBalance,
    InsufficientLiquidity,
    InvalidParameter,
    InvalidQuoteSignature,
    LimitExceeded,
    OtcAccountNotFound,
    QuoteAlreadyAccepted,
    QuoteExpired,
    StaleBook,
    UnsupportedPair,
)
from astra.core._otc import AcceptQuote, QuoteRequest
from astra.sim.venues import profile_for

BTC, ETH = "SMART-SPOT-BTC-USDT", "SMART-SPOT-ETH-USDT"
SPREAD = Decimal(10)  # the desk's default spread, bps
ONE = Decimal(1)


def _levels(desk, symbol: str, side: str) -> list[tuple[Decimal, Decimal, Decimal]]:
    """(fee-adjusted price, price, quantity) across the venues' OWN books, best first for
    the desk taking that side (asks ascending, bids descending by the fee-adjusted price)."""
    out = []
    for i, code in enumerate(("SIM", "SIM2", "SIM3")):
        fee = Decimal(profile_for(code).spot_fees_ppm[1]) / 1_000_000
        bids, asks = desk.venue_depth(code, "spot", symbol)
        for p, q in asks if side == "asks" else bids:
            p, q = Decimal(repr(p)), Decimal(repr(q))
            adjusted = p * (1 + fee) if side == "asks" else p * (1 - fee)
            out.append((adjusted, i, p, q))
    out.sort(key=lambda x: (x[0] if side == "asks" else -x[0], x[1]))
    return [(a, p, q) for a, _, p, q in out]


def _buy_cost(levels, base: Decimal) -> Decimal:
    """Quote spent (fees in) to buy ``base`` walking ``levels`` (asks)."""
    cost, left = Decimal(0), base
    for adjusted, _, q in levels:
        take = min(q, left)
        cost += take * adjusted
        left -= take
        if left == 0:
            return cost
    raise AssertionError("book too thin")


def _for_money(levels, money: Decimal) -> Decimal:
    """Base bought (walking asks) spending ``money``, or sold (walking bids) to receive
    ``money``, fees in: either way each level trades at its fee-adjusted price."""
    base, left = Decimal(0), money
    for adjusted, _, q in levels:
        take = min(q, left / adjusted)
        base += take
        left -= take * adjusted
        if left <= 0:
            return base
    raise AssertionError("book too thin")


def _up(x: Decimal, dp: int) -> Decimal:
    return x.quantize(Decimal(1).scaleb(-dp), rounding=ROUND_CEILING)


def _down(x: Decimal, dp: int) -> Decimal:
    return x.quantize(Decimal(1).scaleb(-dp), rounding=ROUND_FLOOR)


def _req(desk, **kw) -> QuoteRequest:
    return QuoteRequest(account_id=kw.pop("account_id", desk.account_id), **kw)


async def _buy_btc(desk, amount: str):
    """A quote for the desk's account to buy ``amount`` BTC with USDT."""
    return await desk.gw.desk.request_quote(desk.key_id, _req(
        desk, from_asset="BTC", to_asset="USDT", from_amount=Decimal(amount)))


async def _hedged(otc, trade_id: str):
    """The trade once its hedge is final (the hedger runs on its own)."""
    async with asyncio.timeout(30):
        while True:
            trade = otc.store.trade(trade_id)
            if trade.hedge_state != "PENDING":
                return trade
            await asyncio.sleep(0.05)


async def _frozen(desk) -> None:
    """Both books synced (a feed syncs on a venue's diff, and a frozen venue sends none: the
    fixture's feeds linger), then the venues' clocks stopped."""
    async with asyncio.timeout(30):
        while True:
            books = await desk.gw.engine.member_books(ETH)
            if all(m.state == "synced" for m in books.members):
                break
            await asyncio.sleep(0.05)
    await desk.freeze(BTC)
    await desk.publish(ETH)


async def test_quotes_equal_an_independent_computation_from_the_venues_books(otc_desk):
    desk = otc_desk
    await _frozen(desk)
    markup = ONE + SPREAD / 10000
    # The client buys 0.5 BTC paying USDT: the desk buys it on the asks.
    got = await _buy_btc(desk, "0.5")
    asks = _levels(desk, "BTCUSDT", "asks")
    assert got.quote.from_asset_quantity == Decimal("0.5")
    assert got.quote.to_asset_quantity == _up(_buy_cost(asks, Decimal("0.5")) * markup, 6)
    # The client sells 20,000 USDT for BTC: the desk keeps its spread out of the input.
    got = await desk.gw.desk.request_quote(desk.key_id, _req(
        desk, from_asset="BTC", to_asset="USDT", to_amount=Decimal("20000")))
    assert got.quote.to_asset_quantity == Decimal("20000")
    assert got.quote.from_asset_quantity == _down(_for_money(asks, Decimal(20000) / markup), 8)
    # The client buys 3 ETH selling BTC: through USDT (ETH bought on the asks, BTC sold on the
    # bids), the spread once on the whole.
    got = await desk.gw.desk.request_quote(desk.key_id, _req(
        desk, from_asset="ETH", to_asset="BTC", from_amount=Decimal("3")))
    usdt = _buy_cost(_levels(desk, "ETHUSDT", "asks"), Decimal(3))
    btc = _for_money(_levels(desk, "BTCUSDT", "bids"), usdt)
    assert got.quote.to_asset_quantity == _up(btc * markup, 8)
    # USD is USDT at 1.
    got = await desk.gw.desk.request_quote(desk.key_id, _req(
        desk, from_asset="BTC", to_asset="USD", from_amount=Decimal("0.25")))
    assert got.quote.to_asset_quantity == _up(_buy_cost(asks, Decimal("0.25")) * markup, 4)
    assert len(got.quote.signature) == 64 and int(got.quote.signature, 16) >= 0
    now_us = time.time() * 1e6
    assert now_us < got.quote.expiry_time <= now_us + 5.5e6


async def test_every_field_changed_is_refused_and_the_intact_quote_books_once(otc_desk):
    desk = otc_desk
    await _frozen(desk)
    otc = desk.gw.desk
    got = await _buy_btc(desk, "0.1")
    q = got.quote
    other = desk.otc_account({"USDT": "1000000"})
    changes = {
        "account_id": other, "from_asset": "ETH", "to_asset": "USD",
        "from_asset_quantity": q.from_asset_quantity + Decimal("0.00000001"),
        "to_asset_quantity": q.to_asset_quantity - Decimal("0.000001"),
        "expiry_time": q.expiry_time + 1,
        "signature": q.signature[:-1] + ("0" if q.signature[-1] != "0" else "1"),
    }
    for field, value in changes.items():
        tampered = msgspec.structs.replace(q, **{field: value})
        with pytest.raises(InvalidQuoteSignature):
            await otc.accept(desk.key_id, AcceptQuote(quote=tampered))
    # 1.25 and 1.250 are the same number: not a change.
    same = msgspec.structs.replace(q, from_asset_quantity=Decimal(
        str(q.from_asset_quantity) + "0"))
    before = await otc.account(desk.key_id, desk.account_id)
    results = await asyncio.gather(*(otc.accept(desk.key_id, AcceptQuote(quote=same))
                                     for _ in range(50)))
    assert len({r.trade.trade_id for r in results}) == 1
    after = await otc.account(desk.key_id, desk.account_id)
    assert after.balances["BTC"] == before.balances["BTC"] + q.from_asset_quantity
    assert after.balances["USDT"] == before.balances["USDT"] - q.to_asset_quantity
    converts = await otc.converts(desk.key_id, desk.account_id)
    assert [c.trade_id for c in converts.converts] == [results[0].trade.trade_id]
    # Its owner's repeat later gets the same trade; the path form for another account is
    # refused: the quote was accepted.
    again = await otc.accept(desk.key_id, AcceptQuote(quote=q))
    assert again.trade == results[0].trade
    with pytest.raises(QuoteAlreadyAccepted):
        await otc.accept(desk.key_id, AcceptQuote(quote=q), account_id=other)


async def test_an_expired_quote_is_refused_and_books_nothing(otc_desk):
    desk = otc_desk
    await _frozen(desk)
    otc = desk.gw.desk
    got = await _buy_btc(desk, "0.1")
    otc.clock = lambda: time.time() + 6  # the server's clock past the 5 s TTL
    with pytest.raises(QuoteExpired):
        await otc.accept(desk.key_id, AcceptQuote(quote=got.quote))
    otc.clock = time.time
    assert (await otc.converts(desk.key_id, desk.account_id)).converts == []


async def test_the_hedge_lands_on_the_venues_and_the_result_is_recorded(otc_desk):
    desk = otc_desk
    await _frozen(desk)
    otc = desk.gw.desk
    got = await _buy_btc(desk, "0.8")
    done = await otc.accept(desk.key_id, AcceptQuote(quote=got.quote))
    trade = await _hedged(otc, done.trade.trade_id)
    assert trade.hedge_state == "HEDGED", otc.store.hedges(trade_id=trade.trade_id)
    legs = otc.store.hedges(trade_id=trade.trade_id)
    assert [(leg.symbol, leg.side, leg.state) for leg in legs] == [(BTC, "BUY", "DONE")]
    assert legs[0].filled == Decimal("0.8")
    # The venues executed it, for the desk's own accounts: their orders' fills sum to 0.8.
    executed = Decimal(0)
    for code, sim in desk.sims.items():
        account = sim.exchange.registry.by_api_key(desk.desk_accounts[code].apiKey)
        for order in sim.exchange.sides["spot"].trading.by_account.get(
                (account.id, "BTCUSDT"), []):
            assert order.client_id.startswith(f"otc{legs[0].hedge_id}a1")
            executed += Decimal(order.executed).scaleb(-order.state.market.qty_dp)
    assert executed == Decimal("0.8")
    cost = legs[0].average_price * legs[0].filled + legs[0].fees
    assert trade.hedge_cost == cost
    assert trade.result_home == got.quote.to_asset_quantity - cost
    assert trade.result_bps == (trade.result_home / trade.home_notional * 10000).quantize(
        Decimal("0.0001"))
    assert trade.result_home > 0  # 10 bps of spread on a frozen book: the desk earns
    inventory = otc.store.inventory()
    assert inventory.get("BTC", Decimal(0)) == 0
    # (the ledger keeps USDT at 6 places: a hedge's cost is rounded half-even there)
    assert inventory["USDT"] == (got.quote.to_asset_quantity - cost).quantize(Decimal("1e-6"))
    kinds = [row["kind"] for row in otc.store.audit_rows(trade_id=trade.trade_id, limit=50)]
    assert {"ACCEPT", "HEDGE_SENT", "HEDGE_FILL", "HEDGED"} <= set(kinds)


async def test_every_refusal_code_is_reachable(otc_desk, key_store):
    desk = otc_desk
    await _frozen(desk)
    otc = desk.gw.desk
    key = desk.key_id
    small = otc.store.create_account(key, max_notional=Decimal(1000)).account_id
    otc.store.deposit(small, "BTC", Decimal(30))
    cases = [
        (UnsupportedPair, _req(desk, from_asset="BTC", to_asset="DOGE",
                               from_amount=Decimal(1))),
        (UnsupportedPair, _req(desk, from_asset="BTC", to_asset="BTC", from_amount=Decimal(1))),
        (InsufficientLiquidity, _req(desk, from_asset="BTC", to_asset="USDT",
                                     from_amount=Decimal(100000))),
        (InsufficientBalance, _req(desk, from_asset="BTC", to_asset="USDT",
                                   from_amount=Decimal("1.2"))),
        (LimitExceeded, _req(desk, from_asset="USDT", to_asset="BTC", to_amount=Decimal(2),
                             account_id=small)),
        (InvalidParameter, _req(desk, from_asset="BTC", to_asset="USDT")),
        (InvalidParameter, _req(desk, from_asset="BTC", to_asset="USDT",
                                from_amount=Decimal(1), to_amount=Decimal(1))),
        (InvalidParameter, _req(desk, from_asset="BTC", to_asset="USDT",
                                from_amount=Decimal("0.000000001"))),
        (InvalidParameter, _req(desk, from_asset="btc", to_asset="USDT",
                                from_amount=Decimal(1))),
        (OtcAccountNotFound, _req(desk, from_asset="BTC", to_asset="USDT",
                                  from_amount=Decimal(1),
                                  account_id="00000000-0000-4000-8000-000000000000")),
        (Forbidden, _req(desk, from_asset="BTC", to_asset="USDT", from_amount=Decimal(1),
                         account_id=desk.otc_account({}, key_id="someone-else"))),
    ]
    for error, req in cases:
        with pytest.raises(error) as caught:
            await otc.request_quote(key, req)
        assert caught.value.status < 500 and caught.value.parameter, caught.value
    otc.store.set_halted("test")
    with pytest.raises(DeskHalted):
        await otc.request_quote(key, _req(desk, from_asset="BTC", to_asset="USDT",
                                          from_amount=Decimal(1)))
    otc.store.set_halted(None)
    refused = [row["detail"]["code"] for row in otc.store.audit_rows(kind="QUOTE_REFUSED",
                                                                     limit=100)]
    assert {"UNSUPPORTED_PAIR", "INSUFFICIENT_LIQUIDITY", "LIMIT_EXCEEDED",
            "DESK_HALTED"} <= set(refused)
    assert all(issubclass(e, AstraError) for e, _ in cases)


async def test_a_stale_member_book_refuses_the_quote(sor_sims, key_store):
    from tests.conftest import OTC_CLIENT_DEPOSIT, SorDesk

    from astra.marketdata.smart import SmartConfig

    desk = SorDesk(sor_sims, key_store)
    desk.linger = 600.0
    desk.smart = SmartConfig.from_config({"stale_after": 0.5})
    try:
        await desk.start()
        account = desk.otc_account(OTC_CLIENT_DEPOSIT)
        await desk.freeze(BTC)  # no venue moves: after 0.5 s every member book is stale
        req = QuoteRequest(account_id=account, from_asset="BTC", to_asset="USDT",
                           from_amount=Decimal("0.1"))
        async with asyncio.timeout(20):
            while True:
                try:
                    await desk.gw.desk.request_quote(desk.key_id, req)
                except StaleBook as exc:
                    assert "stale" in exc.message and exc.status == 422
                    break
                await asyncio.sleep(0.1)
    finally:
        await desk.close()


async def test_the_kill_switch_stops_issued_quotes_but_not_the_hedger(otc_desk):
    desk = otc_desk
    await _frozen(desk)
    otc = desk.gw.desk
    await otc.hedger.close()  # its passes run by hand below
    first = await _buy_btc(desk, "0.2")
    second = await _buy_btc(desk, "0.1")
    booked = await otc.accept(desk.key_id, AcceptQuote(quote=first.quote))
    before = await otc.account(desk.key_id, desk.account_id)
    otc.store.set_halted("risk review")
    with pytest.raises(DeskHalted):  # issued before the halt, still unexpired: refused
        await otc.accept(desk.key_id, AcceptQuote(quote=second.quote))
    after = await otc.account(desk.key_id, desk.account_id)
    assert after.balances == before.balances
    assert otc.store.quote(second.quote_id).state == "ACTIVE"
    # A repeat of the accept booked before the halt still gets its trade (a client retrying
    # after a lost answer learns it traded); nothing more is booked.
    repeat = await otc.accept(desk.key_id, AcceptQuote(quote=first.quote))
    assert repeat.trade == booked.trade
    assert (await otc.account(desk.key_id, desk.account_id)).balances == before.balances
    # The hedge of the trade booked before the halt goes on: it reduces the desk's risk.
    assert otc.store.inventory()["BTC"] == Decimal("-0.2")
    assert await otc.hedger.run_once() is None
    assert otc.store.trade(booked.trade.trade_id).hedge_state == "HEDGED"
    assert otc.store.inventory().get("BTC", Decimal(0)) == 0
    otc.store.set_halted(None)
    again = await otc.accept(desk.key_id, AcceptQuote(quote=second.quote))
    assert again.trade.from_asset_quantity == Decimal("0.1")


async def test_a_per_trade_maximum_lowered_after_the_quote_refuses_its_accept(otc_desk):
    import dataclasses

    desk = otc_desk
    await _frozen(desk)
    otc = desk.gw.desk
    got = await _buy_btc(desk, "0.5")
    notional = otc.store.quote(got.quote_id).home_notional
    assert notional > 1000
    # The desk's default (this account has none of its own) lowered under the trade's size.
    otc.config = dataclasses.replace(otc.config, max_notional=Decimal(1000))
    before = await otc.account(desk.key_id, desk.account_id)
    with pytest.raises(LimitExceeded) as caught:
        await otc.accept(desk.key_id, AcceptQuote(quote=got.quote))
    assert caught.value.parameter == "quote" and "1000" in caught.value.message
    assert (await otc.account(desk.key_id, desk.account_id)).balances == before.balances
    assert otc.store.quote(got.quote_id).state == "ACTIVE"
    otc.config = dataclasses.replace(otc.config, max_notional=notional)  # at the limit: books
    done = await otc.accept(desk.key_id, AcceptQuote(quote=got.quote))
    assert done.trade.to_asset_quantity == got.quote.to_asset_quantity
    # Lowered again: the owner's retry of the booked accept still gets its trade back.
    otc.config = dataclasses.replace(otc.config, max_notional=Decimal(1000))
    assert (await otc.accept(desk.key_id, AcceptQuote(quote=got.quote))).trade == done.trade


async def test_a_quote_books_only_as_issued_whatever_the_form_of_the_accept(otc_desk):
    desk = otc_desk
    await _frozen(desk)
    otc = desk.gw.desk
    got = await _buy_btc(desk, "0.1")
    q = got.quote
    upper = msgspec.structs.replace(q, signature=q.signature.upper())
    assert upper.signature != q.signature
    with pytest.raises(InvalidQuoteSignature):  # a signature differing only in case
        await otc.accept(desk.key_id, AcceptQuote(quote=upper))
    with pytest.raises(InvalidParameter) as caught:  # a quoteId naming another quote
        await otc.accept(desk.key_id, AcceptQuote(quote=q, quote_id=q.account_id))
    assert caught.value.parameter == "quoteId"
    sibling = desk.otc_account({"USDT": "1000000"})  # the same key's other account
    with pytest.raises(InvalidParameter) as caught:
        await otc.accept(desk.key_id, AcceptQuote(quote=q), account_id=sibling)
    assert caught.value.parameter == "accountId"
    with pytest.raises(Forbidden):  # another key's account named in the path
        await otc.accept(desk.key_id, AcceptQuote(quote=q),
                         account_id=desk.otc_account({}, key_id="someone-else"))
    assert (await otc.converts(desk.key_id, desk.account_id)).converts == []
    assert otc.store.balances(sibling) == {"USDT": Decimal(1000000)}
    # The path form with the quote's own account, twice: one trade.
    one = await otc.accept(desk.key_id, AcceptQuote(quote=q, quote_id=got.quote_id),
                           account_id=desk.account_id)
    two = await otc.accept(desk.key_id, AcceptQuote(quote=q), account_id=desk.account_id)
    assert one.trade == two.trade
    assert len((await otc.converts(desk.key_id, desk.account_id)).converts) == 1


async def test_a_client_selling_btc_is_hedged_whole_and_the_margin_ends_in_usdt(otc_desk):
    """The desk receives BTC; its hedge sells all of it (the spread included), so no BTC is
    left in its inventory and its result, in USDT, is the spread."""
    desk = otc_desk
    await _frozen(desk)
    otc = desk.gw.desk
    dust = Decimal(0)
    for body in ({"to_amount": Decimal("0.3")}, {"from_amount": Decimal("20000")}):
        got = await otc.request_quote(desk.key_id, _req(
            desk, from_asset="USDT", to_asset="BTC", **body))
        done = await otc.accept(desk.key_id, AcceptQuote(quote=got.quote))
        trade = await _hedged(otc, done.trade.trade_id)
        [leg] = otc.store.hedges(trade_id=trade.trade_id)
        assert (leg.side, leg.quantity) == ("SELL", got.quote.to_asset_quantity)
        # All of it but the dust below the venues' lot (0.00001 BTC), which the desk keeps.
        dust += leg.quantity - leg.filled
        assert trade.hedge_state == "HEDGED" and Decimal(0) <= leg.quantity - leg.filled < \
            Decimal("0.00001")
        assert otc.store.inventory().get("BTC", Decimal(0)) == dust
        # Frozen books: the spread (10 bps) is what is earned, give or take the lot's dust
        # and the rounding of the client's amount (in the desk's favour).
        assert Decimal("9.5") < trade.result_bps < Decimal("10.1"), trade


async def test_quotes_never_accepted_are_pruned_an_hour_after_expiry(otc_desk):
    desk = otc_desk
    await _frozen(desk)
    otc = desk.gw.desk
    quotes = [await _buy_btc(desk, "0.01")
        for _ in range(3)]
    booked = await otc.accept(desk.key_id, AcceptQuote(quote=quotes[0].quote))
    assert await otc.prune() == 0  # none has expired an hour ago
    otc.clock = lambda: time.time() + 5 + 3600 + 1
    try:
        assert await otc.prune() == 2
    finally:
        otc.clock = time.time
    assert [otc.store.quote(q.quote_id) is None for q in quotes] == [False, True, True]
    assert otc.store.trade(booked.trade.trade_id).quote_id == quotes[0].quote_id
    issued = {r["quote_id"] for r in otc.store.audit_rows(kind="QUOTE", limit=10)}
    assert {q.quote_id for q in quotes} <= issued  # the audit trail keeps every quote
    with pytest.raises(InvalidQuoteSignature):
        await otc.accept(desk.key_id, AcceptQuote(quote=quotes[1].quote))
