"""The OTC desk's store on real databases: accounts and their ledger, precision, the atomic
accept and every refusal (nothing moves), accept-at-most-once under 50 threads and several
processes, value conservation (property test), the append-only audit trail, hedge legs, the
kill switch.

SQLite files always; PostgreSQL too when ``ASTRA_TEST_POSTGRES_URL`` is set (the order
journal's ``db`` fixture: a throwaway schema per test).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import threading
import uuid
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astra.core import (
    InsufficientBalance,
    InvalidParameter,
    InvalidQuoteSignature,
    LimitExceeded,
    OtcAccountNotFound,
    QuoteAlreadyAccepted,
    QuoteExpired,
)
from astra.store import DuplicateSignature, OtcStore, QuoteRow, open_database
from astra.store.otc_schema import OTC_AUDIT, OTC_BALANCES

from .test_journal import Clock, Db, _script_env, run_race
from .test_journal import db as db  # the fixture, on every backend

DAY = "2026-01-02"
NOW_US = 1_767_312_000_000_000  # 2026-01-02T00:00:00Z
LATER_US = NOW_US + 5_000_000
LEGS = [{"symbol": "SMART-SPOT-BTC-USDT", "side": "BUY", "quantity": "0.01"},
        {"symbol": "SMART-SPOT-ETH-BTC", "side": "SELL", "quantity": "0.3"}]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(db: Db, clock: Clock) -> OtcStore:
    return OtcStore(db.engine, clock_ms=clock)


def new_quote(store: OtcStore, account_id: str, from_asset: str = "BTC",
              to_asset: str = "USDT", from_qty: str = "0.01", to_qty: str = "500", *,
              expiry_us: int = LATER_US, notional: str | None = None,
              hedges: list[dict[str, Any]] | None = None) -> QuoteRow:
    row = QuoteRow(
        quote_id=str(uuid.uuid4()), signature=uuid.uuid4().hex * 2, signing_key_id="k1",
        account_id=account_id, from_asset=from_asset, to_asset=to_asset,
        from_qty=D(from_qty), to_qty=D(to_qty), expiry_us=expiry_us, state="ACTIVE",
        created_ms=1, accepted_ms=None, home_notional=D(notional or to_qty),
        detail={"hedges": LEGS if hedges is None else hedges, "markupBps": "5"})
    store.save_quote(row)
    return row


def accept(store: OtcStore, quote: QuoteRow, account_id: str | None = None,
           **kw: Any) -> tuple[Any, bool]:
    args: dict[str, Any] = {"now_us": NOW_US, "day": DAY, "daily_limit": None,
                            "inventory_limits": {}, "hedge": False} | kw
    return store.accept(quote.quote_id, account_id=account_id or quote.account_id, **args)


def snapshot(store: OtcStore, *accounts: str) -> tuple:
    """Everything an accept may move."""
    return (tuple(store.balances(a) for a in accounts), store.inventory(),
            tuple(store.volume_on(a, DAY) for a in accounts),
            tuple(len(store.trades(a)) for a in accounts), len(store.hedges()),
            len(store.audit_rows(kind="ACCEPT")))


def funded(store: OtcStore, **amounts: str) -> str:
    account = store.create_account("key1").account_id
    for asset, amount in amounts.items():
        store.deposit(account, asset, D(amount))
    return account


# --------------------------------------------------------------------------- accounts, ledger


def test_accounts_are_created_listed_by_key_with_null_defaults(store: OtcStore,
                                                                clock: Clock) -> None:
    a = store.create_account("key1")
    created = clock.now
    clock.now += 1
    b = store.create_account("key1", name="fund b", spread_bps=D("7.5"), max_notional=D(250000),
                             daily_volume=D("1000000.5"))
    c = store.create_account("key2")
    assert uuid.UUID(a.account_id).version == 4 and str(uuid.UUID(a.account_id)) == a.account_id
    assert len({a.account_id, b.account_id, c.account_id}) == 3
    assert (a.key_id, a.name, a.spread_bps, a.max_notional, a.daily_volume, a.created_ms) == (
        "key1", None, None, None, None, created)
    assert (b.name, b.spread_bps, b.max_notional, b.daily_volume) == (
        "fund b", D("7.5"), D(250000), D("1000000.5"))
    assert store.account(b.account_id) == b and store.account("nope") is None
    assert [x.account_id for x in store.accounts("key1")] == [a.account_id, b.account_id]
    assert [x.account_id for x in store.accounts("key2")] == [c.account_id]
    assert store.accounts("key3") == [] and len(store.accounts()) == 3
    with pytest.raises(InvalidParameter) as info:
        store.create_account("key1", max_notional=D(0))
    assert info.value.parameter == "maxNotional"
    with pytest.raises(InvalidParameter, match="spreadBps"):
        store.create_account("key1", spread_bps=D(-1))
    assert len(store.accounts()) == 3
    kinds = [r["kind"] for r in store.audit_rows()]
    assert kinds == ["ACCOUNT_CREATED"] * 3


def test_deposit_and_withdraw_move_one_balance(store: OtcStore) -> None:
    acc = store.create_account("key1").account_id
    assert store.deposit(acc, "BTC", D("1.5")) == D("1.5")
    assert store.deposit(acc, "BTC", D("0.25")) == D("1.75")
    assert store.deposit(acc, "USDT", D(100)) == D(100)
    assert store.deposit(acc, "BTC", D("-0.75")) == D(1)
    with pytest.raises(InsufficientBalance) as info:
        store.deposit(acc, "BTC", D("-1.00000001"))
    assert info.value.parameter == "amount" and "BTC" in info.value.message
    assert "has 1" in info.value.message
    with pytest.raises(InsufficientBalance):
        store.deposit(acc, "ETH", D(-1))  # no balance at all
    assert store.balances(acc) == {"BTC": D(1), "USDT": D(100)}
    assert store.deposit(acc, "USDT", D(-100)) == 0
    assert store.balances(acc) == {"BTC": D(1)}  # zero balances are not listed
    with pytest.raises(OtcAccountNotFound) as missing:
        store.deposit(str(uuid.uuid4()), "BTC", D(1))
    assert missing.value.parameter == "accountId"
    with pytest.raises(InvalidParameter, match="must not be 0"):
        store.deposit(acc, "BTC", D(0))
    with pytest.raises(InvalidParameter, match="asset"):
        store.deposit(acc, "btc", D(1))
    with pytest.raises(InvalidParameter, match="finite"):
        store.deposit(acc, "BTC", D("NaN"))
    rows = store.audit_rows(kind="WITHDRAW")
    assert [r["detail"] for r in rows] == [
        {"amount": "-100", "asset": "USDT", "balance": "0"},
        {"amount": "-0.75", "asset": "BTC", "balance": "1"}]
    assert len(store.audit_rows(kind="DEPOSIT")) == 3


def test_precision_is_fixed_at_first_use_and_enforced(db: Db) -> None:
    first = OtcStore(db.engine, precision={"FOO": 2})
    acc = first.create_account("key1").account_id
    assert first.deposit(acc, "FOO", D("1.23")) == D("1.23")
    with pytest.raises(InvalidParameter) as info:
        first.deposit(acc, "FOO", D("1.234"))
    assert info.value.parameter == "amount" and "FOO amounts have at most 2 decimal" in str(
        info.value)
    assert first.deposit(acc, "FOO", D("1.2300000")) == D("2.46")  # trailing zeros are fine
    later = OtcStore(db.engine, precision={"FOO": 4, "USDT": 2})
    assert later.precision("FOO") == 2  # fixed by the first use, whatever the override
    with pytest.raises(InvalidParameter):
        later.deposit(acc, "FOO", D("0.001"))
    assert later.precision("USDT") == 2  # first use: the override applies
    assert first.precision("USDT") == 2
    assert later.precision("USDC") == 6 and later.precision("BTC") == 8
    assert later.precision("USD") == 4
    with pytest.raises(InvalidParameter):
        later.deposit(acc, "BTC", D("0.000000001"))
    assert later.balances(acc) == {"FOO": D("2.46")}


# ------------------------------------------------------------------------------------ accept


def test_accept_books_everything_in_one_step(store: OtcStore, clock: Clock) -> None:
    acc = funded(store, USDT="1000")
    q = new_quote(store, acc, notional="500.123456789")
    clock.now += 7
    trade, created = accept(store, q, hedge=True)
    assert created is True and uuid.UUID(trade.trade_id).version == 4
    assert (trade.quote_id, trade.account_id, trade.from_asset, trade.to_asset, trade.from_qty,
            trade.to_qty, trade.home_notional, trade.time_ms, trade.hedge_state) == (
        q.quote_id, acc, "BTC", "USDT", D("0.01"), D(500), D("500.123456789"), clock.now,
        "PENDING")
    assert store.balances(acc) == {"BTC": D("0.01"), "USDT": D(500)}  # -to, +from
    assert store.inventory() == {"BTC": D("-0.01"), "USDT": D(500)}  # -from, +to
    assert store.volume_on(acc, DAY) == D("500.12345679")  # rounded up to 8 places
    assert store.volume_on(acc, "2026-01-03") == 0
    saved = store.quote(q.quote_id)
    assert saved.state == "ACCEPTED" and saved.accepted_ms == clock.now
    assert store.trade(trade.trade_id) == trade and store.trades(acc) == [trade]
    legs = store.hedges(trade_id=trade.trade_id)
    assert [(h.leg, h.symbol, h.side, h.quantity, h.state, h.attempts) for h in legs] == [
        (0, "SMART-SPOT-BTC-USDT", "BUY", D("0.01"), "PENDING", 0),
        (1, "SMART-SPOT-ETH-BTC", "SELL", D("0.3"), "PENDING", 0)]
    (row,) = store.audit_rows(kind="ACCEPT")
    assert (row["account_id"], row["quote_id"], row["trade_id"]) == (
        acc, q.quote_id, trade.trade_id)
    assert row["detail"]["fromQuantity"] == "0.01" and row["detail"]["hedgeLegs"] == 2


def test_accept_without_hedge_writes_no_legs(store: OtcStore) -> None:
    acc = funded(store, BTC="1")
    q = new_quote(store, acc, "USDT", "BTC", "25000", "0.5")
    trade, _ = accept(store, q, hedge=False)
    assert trade.hedge_state == "OFF" and store.hedges() == []
    assert store.balances(acc) == {"BTC": D("0.5"), "USDT": D(25000)}
    assert store.inventory() == {"BTC": D("0.5"), "USDT": D(-25000)}


def test_a_second_accept_books_nothing_more(store: OtcStore) -> None:
    acc = funded(store, USDT="2000")
    other = funded(store, USDT="2000")
    q = new_quote(store, acc)
    trade, created = accept(store, q, hedge=True)
    before = snapshot(store, acc, other)
    again, created_again = accept(store, q, hedge=True, now_us=LATER_US + 10**9)  # even expired
    assert (created, created_again) == (True, False) and again == trade
    with pytest.raises(QuoteAlreadyAccepted) as info:
        accept(store, q, other)
    assert info.value.status == 409 and info.value.parameter == "quote"
    assert snapshot(store, acc, other) == before


def test_expired_unknown_and_foreign_quotes_are_refused(store: OtcStore) -> None:
    acc = funded(store, USDT="1000")
    other = funded(store, USDT="1000")
    q = new_quote(store, acc, expiry_us=NOW_US)
    before = snapshot(store, acc, other)
    with pytest.raises(QuoteExpired) as info:
        accept(store, q, now_us=NOW_US + 1)
    assert info.value.status == 410
    with pytest.raises(InvalidQuoteSignature, match="another account"):
        accept(store, q, other)
    with pytest.raises(InvalidQuoteSignature, match="no such quote"):
        store.accept("nope", account_id=acc, now_us=NOW_US, day=DAY, daily_limit=None,
                     inventory_limits={}, hedge=False)
    assert snapshot(store, acc, other) == before and store.quote(q.quote_id).state == "ACTIVE"
    _, created = accept(store, q, now_us=NOW_US)  # expiry is inclusive
    assert created


def test_insufficient_balance_moves_nothing_and_keeps_the_quote(store: OtcStore) -> None:
    acc = funded(store, USDT="499.999999")
    q = new_quote(store, acc)
    before = snapshot(store, acc)
    with pytest.raises(InsufficientBalance) as info:
        accept(store, q, hedge=True)
    assert info.value.parameter == "quote" and info.value.status == 422
    assert "needs 500 USDT" in info.value.message and "has 499.999999" in info.value.message
    assert snapshot(store, acc) == before and store.quote(q.quote_id).state == "ACTIVE"
    store.deposit(acc, "USDT", D("0.000001"))
    _, created = accept(store, q, hedge=True)
    assert created and store.balances(acc) == {"BTC": D("0.01")}


def test_daily_and_inventory_limits_move_nothing(store: OtcStore) -> None:
    acc = funded(store, USDT="5000")
    first = new_quote(store, acc)
    accept(store, first, daily_limit=D(800))
    assert store.volume_on(acc, DAY) == 500
    second = new_quote(store, acc)
    before = snapshot(store, acc)
    with pytest.raises(LimitExceeded) as info:
        accept(store, second, daily_limit=D(800))
    assert "dailyVolume" in info.value.message and "800" in info.value.message
    assert snapshot(store, acc) == before and store.quote(second.quote_id).state == "ACTIVE"
    _, created = accept(store, second, daily_limit=D(800), day="2026-01-03")  # a new day
    assert created and store.volume_on(acc, "2026-01-03") == 500

    third = new_quote(store, acc)  # inventory BTC is -0.02: selling 0.01 more -> -0.03
    before = snapshot(store, acc)
    with pytest.raises(LimitExceeded, match=r"BTC inventory limit of 0\.025") as inv:
        accept(store, third, inventory_limits={"BTC": D("0.025")})
    assert inv.value.parameter == "quote"
    with pytest.raises(LimitExceeded, match="USDT inventory"):
        accept(store, third, inventory_limits={"USDT": D(1400)})
    assert snapshot(store, acc) == before and store.quote(third.quote_id).state == "ACTIVE"
    accept(store, third, inventory_limits={"BTC": D("0.03"), "USDT": D(1500)})
    assert store.inventory() == {"BTC": D("-0.03"), "USDT": D(1500)}
    # Past a (lowered) limit, a trade that brings the position back towards zero still books.
    back = new_quote(store, acc, "USDT", "BTC", "400", "0.01")
    accept(store, back, inventory_limits={"BTC": D("0.001"), "USDT": D(10)})
    assert store.inventory() == {"BTC": D("-0.02"), "USDT": D(1100)}


def test_save_quote_refuses_a_duplicate_signature(store: OtcStore) -> None:
    acc = funded(store)
    q = new_quote(store, acc)
    clash = dataclasses.replace(q, quote_id="other")
    with pytest.raises(DuplicateSignature) as info:
        store.save_quote(clash)
    assert info.value.quote_id == q.quote_id
    assert store.quote("other") is None and store.quote_by_signature(q.signature) == q
    with pytest.raises(OtcAccountNotFound):
        store.save_quote(dataclasses.replace(q, quote_id="x", signature="cd" * 32,
                                             account_id=str(uuid.uuid4())))
    assert store.quote(q.quote_id).detail == {"hedges": LEGS, "markupBps": "5"}


def test_trades_are_listed_newest_first(store: OtcStore, clock: Clock) -> None:
    acc = funded(store, USDT="5000")
    trades = []
    for _ in range(3):
        clock.now += 1000
        trades.append(accept(store, new_quote(store, acc))[0])
    assert store.trades(acc) == trades[::-1]
    assert store.trades(acc, limit=2) == trades[:0:-1]
    assert store.trades(acc, before_ms=trades[2].time_ms) == trades[1::-1]
    assert store.trades(funded(store)) == []


# ------------------------------------------------------------------------------- concurrency


def test_fifty_threads_accepting_one_quote_book_one_trade(store: OtcStore) -> None:
    acc = funded(store, USDT="1000")
    q = new_quote(store, acc)
    barrier = threading.Barrier(50)
    results: list[tuple[Any, bool]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(accept(store, q, hedge=True))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert len(results) == 50 and sum(created for _, created in results) == 1
    assert len({t.trade_id for t, _ in results}) == 1
    assert store.balances(acc) == {"BTC": D("0.01"), "USDT": D(500)}
    assert store.inventory() == {"BTC": D("-0.01"), "USDT": D(500)}
    assert store.volume_on(acc, DAY) == 500 and len(store.hedges()) == 2
    assert len(store.audit_rows(kind="ACCEPT")) == 1


def test_concurrent_accepts_of_opposite_trades_all_book(store: OtcStore) -> None:
    """Accepts that touch the same balances and inventory rows in opposite directions, at
    once: no deadlock, no lost update (rows are locked in one global order)."""
    accounts = [funded(store, USDT="10000", BTC="1") for _ in range(2)]
    quotes = [new_quote(store, accounts[i % 2], *(("BTC", "USDT", "0.01", "500") if i % 4 < 2
                                                    else ("USDT", "BTC", "480", "0.01")))
              for i in range(24)]
    barrier = threading.Barrier(len(quotes))
    errors: list[BaseException] = []

    def worker(q: QuoteRow) -> None:
        try:
            barrier.wait()
            accept(store, q, hedge=True)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(q,)) for q in quotes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    # Each account: 6 buys of 0.01 BTC for 500, 6 sells of 0.01 BTC for 480.
    for acc in accounts:
        assert store.balances(acc) == {"BTC": D(1), "USDT": D(10000 - 6 * 500 + 6 * 480)}
    assert store.inventory() == {"USDT": D(2 * 6 * 20)}
    assert len(store.audit_rows(kind="ACCEPT", limit=1000)) == 24


_ACCEPT_SCRIPT = r"""
import json, sys, threading, time
from pathlib import Path
import sqlalchemy as sa
from astra.store import OtcStore, open_database

url, schema, workdir, name, quote_id, account = sys.argv[1:7]
if schema:
    engine = sa.create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
else:
    engine = open_database(url=url)
store = OtcStore(engine)
work = Path(workdir)
(work / f"ready-{name}").touch()
deadline = time.monotonic() + 60
while not (work / "go").exists():
    if time.monotonic() > deadline:
        sys.exit("no go signal")
    time.sleep(0.001)
results = []

def run():
    try:
        trade, created = store.accept(quote_id, account_id=account, now_us=int(sys.argv[7]),
                                      day="2026-01-02", daily_limit=None, inventory_limits={},
                                      hedge=True)
        results.append([trade.trade_id, created])
    except Exception as exc:
        results.append(["error", repr(exc)])

threads = [threading.Thread(target=run) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
engine.dispose()
print(json.dumps(results))
"""


def test_processes_accepting_one_quote_book_one_trade(db: Db, store: OtcStore,
                                                      tmp_path: Path) -> None:
    acc = funded(store, USDT="1000")
    q = new_quote(store, acc)
    work = tmp_path / "race"
    work.mkdir()
    procs = [subprocess.Popen(
        [sys.executable, "-c", _ACCEPT_SCRIPT, db.url, db.schema, str(work), str(i),
         q.quote_id, acc, str(NOW_US)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_script_env())
        for i in range(3)]
    outs = run_race(procs, work, timeout=120)
    results = [r for out in outs for r in json.loads(out)]
    assert len(results) == 24 and not [r for r in results if r[0] == "error"], results
    assert sum(created for _, created in results) == 1
    assert len({trade_id for trade_id, _ in results}) == 1
    assert store.balances(acc) == {"BTC": D("0.01"), "USDT": D(500)}
    assert store.inventory() == {"BTC": D("-0.01"), "USDT": D(500)}
    assert len(store.hedges()) == 2 and len(store.audit_rows(kind="ACCEPT")) == 1


# ------------------------------------------------------------------------------ conservation

_ASSETS = ("BTC", "ETH", "USDT")
_deposits = st.lists(st.tuples(st.integers(0, 1), st.sampled_from(_ASSETS),
                               st.integers(-5_000, 20_000)), max_size=8)
_quotes = st.lists(st.tuples(st.integers(0, 1), st.sampled_from(_ASSETS),
                             st.sampled_from(_ASSETS), st.integers(1, 9_000),
                             st.integers(1, 9_000), st.booleans()), max_size=10)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(deposits=_deposits, quotes=_quotes, btc_limit=st.none() | st.integers(1, 20_000))
def test_value_is_conserved(deposits: list, quotes: list, btc_limit: int | None) -> None:
    """For every asset: client balances + desk inventory == net deposits, whatever mix of
    deposits, withdrawals and accepted (or refused) quotes; no balance is ever negative."""
    scale = D("0.001")
    with tempfile.TemporaryDirectory() as tmp:
        engine = open_database(data_dir=Path(tmp))
        try:
            store = OtcStore(engine)
            accounts = [store.create_account("key1").account_id for _ in range(2)]
            net = dict.fromkeys(_ASSETS, D(0))
            for who, asset, n in deposits:
                if n == 0:
                    continue
                try:
                    store.deposit(accounts[who], asset, n * scale)
                except InsufficientBalance:
                    continue
                net[asset] += n * scale
            booked = 0
            limits = {} if btc_limit is None else {"BTC": btc_limit * scale}
            for who, fa, ta, fq, tq, other in quotes:
                if fa == ta:
                    continue
                q = new_quote(store, accounts[who], fa, ta, str(fq * scale), str(tq * scale))
                try:
                    _, created = accept(store, q, accounts[1 - who] if other else None,
                                        inventory_limits=limits, hedge=True)
                except (InsufficientBalance, LimitExceeded, InvalidQuoteSignature):
                    assert store.quote(q.quote_id).state == "ACTIVE"
                    continue
                booked += created
            inventory = store.inventory()
            balances = [store.balances(a) for a in accounts]
            for asset in _ASSETS:
                held = sum(b.get(asset, D(0)) for b in balances) + inventory.get(asset, D(0))
                assert held == net[asset], asset
            assert all(v > 0 for b in balances for v in b.values())
            assert sum(len(store.trades(a)) for a in accounts) == booked
            if btc_limit is not None:
                assert abs(inventory.get("BTC", D(0))) <= btc_limit * scale
        finally:
            engine.dispose()


# ------------------------------------------------------------------- audit, hedges, switch


def test_the_audit_trail_is_append_only_in_the_database(db: Db, store: OtcStore) -> None:
    store.audit("REQUEST", account_id="a1", detail={"fromAsset": "BTC"})
    store.audit("QUOTE", quote_id="q1", detail={"n": 1})
    before = store.audit_rows()
    assert [(r["kind"], r["account_id"], r["quote_id"], r["detail"]) for r in before] == [
        ("QUOTE", None, "q1", {"n": 1}), ("REQUEST", "a1", None, {"fromAsset": "BTC"})]
    for stmt in (sa.update(OTC_AUDIT).values(kind="FORGED"), sa.delete(OTC_AUDIT),
                 sa.delete(OTC_AUDIT).where(OTC_AUDIT.c.kind == "QUOTE")):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(stmt)
    if db.schema:  # PostgreSQL: TRUNCATE bypasses row triggers; a statement trigger refuses it
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE otc_audit"))
    assert store.audit_rows() == before
    assert [r["kind"] for r in store.audit_rows(quote_id="q1")] == ["QUOTE"]
    assert len(store.audit_rows(limit=1)) == 1


def test_balances_cannot_go_negative_even_by_hand(db: Db, store: OtcStore) -> None:
    acc = funded(store, BTC="1")
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
        conn.execute(sa.update(OTC_BALANCES).values(units=-1))
    assert store.balances(acc) == {"BTC": D(1)}


def test_hedge_legs_settle_with_the_inventory(store: OtcStore, clock: Clock) -> None:
    acc = funded(store, USDT="1000")
    trade, _ = accept(store, new_quote(store, acc), hedge=True)
    first, second = store.hedges(states=["PENDING"])
    clock.now += 10
    store.update_hedge(first.hedge_id, state="SENT", attempts=1, client_order_id="otc-1-0",
                       sent_quantity=D("0.0100"))
    sent = store.hedges(states=["SENT"])
    assert [(h.hedge_id, h.attempts, h.client_order_id, h.sent_quantity, h.updated_ms)
            for h in sent] == [(first.hedge_id, 1, "otc-1-0", D("0.01"), clock.now)]
    assert [h.hedge_id for h in store.hedges(states=["PENDING"])] == [second.hedge_id]
    with pytest.raises(ValueError, match="filled"):
        store.update_hedge(first.hedge_id, filled=D(1))
    with pytest.raises(ValueError, match="state"):
        store.update_hedge(first.hedge_id, state="LOST")
    with pytest.raises(LookupError):
        store.update_hedge(10**9, attempts=2)
    # The desk bought back 0.01 BTC for 499.9 USDT plus 0.2 USDT of fees (rounded to 6 dp).
    store.settle_hedge(first.hedge_id, state="DONE", filled=D("0.01"),
                       average_price=D("49990"), fees=D("0.2000004"),
                       inventory={"BTC": D("0.01"), "USDT": D("-500.1000004")},
                       parent_order_id="sor-abc")
    done = store.hedges(trade_id=trade.trade_id)[0]
    assert (done.state, done.filled, done.average_price, done.fees, done.parent_order_id,
            done.error) == ("DONE", D("0.01"), D(49990), D("0.2000004"), "sor-abc", None)
    assert store.inventory() == {"USDT": D("-0.1")}
    (row,) = store.audit_rows(kind="HEDGE")
    assert row["trade_id"] == trade.trade_id and row["detail"]["inventory"] == {
        "BTC": "0.01", "USDT": "-500.1"}
    with pytest.raises(LookupError):
        store.settle_hedge(10**9, state="DONE", filled=D(0), average_price=None, fees=D(0),
                           inventory={"BTC": D(5)})
    assert store.inventory() == {"USDT": D("-0.1")}  # rolled back with the missing leg
    store.settle_hedge(second.hedge_id, state="FAILED", filled=D(0), average_price=None,
                       fees=D(0), inventory={}, error="no liquidity")
    assert store.hedges(states=["FAILED"])[0].error == "no liquidity"
    store.finish_trade(trade.trade_id, hedge_state="PARTIAL", hedge_cost=D("500.1"),
                       result_home=D("-0.1"), result_bps=D("-2"))
    got = store.trade(trade.trade_id)
    assert (got.hedge_state, got.hedge_cost, got.result_home, got.result_bps) == (
        "PARTIAL", D("500.1"), D("-0.1"), D(-2))
    assert store.summary() == {"trades": 1, "resultHome": "-0.1",
                               "tradesByHedgeState": {"PARTIAL": 1},
                               "hedgesByState": {"DONE": 1, "FAILED": 1}}
    with pytest.raises(ValueError):
        store.finish_trade(trade.trade_id, hedge_state="MAYBE")
    with pytest.raises(LookupError):
        store.finish_trade("nope", hedge_state="HEDGED")


def test_the_kill_switch(db: Db, store: OtcStore) -> None:
    assert store.halted() is None
    store.set_halted("hedge venue down")
    assert store.halted() == "hedge venue down"
    assert OtcStore(db.engine).halted() == "hedge venue down"  # another process sees it
    store.set_halted("still down")
    assert store.halted() == "still down"
    with pytest.raises(InvalidParameter):
        store.set_halted("  ")
    store.set_halted(None)
    assert store.halted() is None
    store.set_halted(None)  # idempotent
    assert [(r["kind"], r["detail"]) for r in store.audit_rows()] == [
        ("RESUME", {}), ("RESUME", {}), ("HALT", {"reason": "still down"}),
        ("HALT", {"reason": "hedge venue down"})]


def test_a_hedge_leg_is_claimed_and_settled_once_among_concurrent_hedgers(
        store: OtcStore, clock: Clock) -> None:
    # Several gateways' hedgers see the same PENDING leg: a compare-and-set claims it for one;
    # the answer of its order moves the inventory once, however many settle it.
    acc = funded(store, USDT="1000")
    trade, _ = accept(store, new_quote(store, acc), hedge=True)
    leg = store.hedges(trade_id=trade.trade_id)[0]
    assert store.trade_ids("PENDING") == [trade.trade_id] and store.trade_ids("HEDGED") == []
    with pytest.raises(ValueError):
        store.trade_ids("MAYBE")
    start = store.inventory()
    barrier = threading.Barrier(8)
    claims: list[bool] = []

    def claim(i: int) -> None:
        barrier.wait()
        claims.append(store.update_hedge(
            leg.hedge_id, expect={"state": "PENDING", "attempts": 0}, state="SENT",
            attempts=1, client_order_id=f"otc{leg.hedge_id}a1-{i}", sent_quantity=D("0.01")))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claims) == [False] * 7 + [True]
    sent = store.hedges(trade_id=trade.trade_id)[0]
    assert (sent.state, sent.attempts) == ("SENT", 1)
    expect = {"state": "SENT", "client_order_id": sent.client_order_id}
    settled = []

    def settle() -> None:
        barrier.wait()
        settled.append(store.settle_hedge(
            leg.hedge_id, state="DONE", filled=D("0.01"), average_price=D("50000"),
            fees=D("0.2"), inventory={"BTC": D("0.01"), "USDT": D("-500.2")}, expect=expect))

    threads = [threading.Thread(target=settle) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(settled) == [False] * 7 + [True]
    after = store.inventory()
    assert after.get("BTC", D(0)) == start.get("BTC", D(0)) + D("0.01")
    assert after.get("USDT", D(0)) == start.get("USDT", D(0)) - D("500.2")
    assert len(store.audit_rows(kind="HEDGE", trade_id=trade.trade_id)) == 1
    # A stale expectation (another try's id, an old timestamp) changes nothing.
    assert not store.update_hedge(leg.hedge_id, expect={"client_order_id": "other"},
                                  error="x")
    assert not store.update_hedge(leg.hedge_id, expect={"updated_ms": sent.updated_ms - 1},
                                  error="x")
    assert store.hedges(trade_id=trade.trade_id)[0].error is None
    with pytest.raises(ValueError, match="compared"):
        store.update_hedge(leg.hedge_id, expect={"filled": None}, error="x")


@pytest.mark.parametrize(("btc_limit", "expected"), [(D("0.0025"), 2), (None, 3)])
def test_concurrent_accepts_of_many_quotes_stay_inside_the_daily_and_inventory_limits(
        store: OtcStore, btc_limit: D | None, expected: int) -> None:
    # Quotes each inside the limits, issued together, accepted at once: the limits bind the
    # sum (each quote's own check at issue time saw none of the others).
    acc = funded(store, USDT="100000")
    quotes = [new_quote(store, acc, to_qty="30", from_qty="0.001") for _ in range(12)]
    barrier = threading.Barrier(len(quotes))
    booked: list[Any] = []
    refused: list[BaseException] = []

    def worker(q: QuoteRow) -> None:
        barrier.wait()
        try:
            booked.append(accept(store, q, daily_limit=D(100), inventory_limits=(
                {"BTC": btc_limit} if btc_limit is not None else {})))
        except LimitExceeded as exc:
            refused.append(exc)

    threads = [threading.Thread(target=worker, args=(q,)) for q in quotes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(booked) + len(refused) == len(quotes)
    # 0.0025 BTC of inventory binds at two trades, else the daily 100 at three.
    assert len(booked) == expected
    assert store.inventory()["BTC"] == D("-0.001") * expected
    assert store.volume_on(acc, DAY) == 30 * expected
    assert store.balances(acc) == {"BTC": D("0.001") * expected,
                                   "USDT": D(100000 - 30 * expected)}
    states = sorted(store.quote(q.quote_id).state for q in quotes)
    assert states == ["ACCEPTED"] * expected + ["ACTIVE"] * (len(quotes) - expected)
