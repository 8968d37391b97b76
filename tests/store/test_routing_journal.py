"""The routed-order journal on real SQLite: one parent per (key, clientOrderId) even under
concurrent writers, children journaled once per (parent, round, leg), states as written."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.exc import IntegrityError

from astra.store import ClientOrderIdConflict
from astra.store.routing_journal import ChildIntent, RoutingJournal, new_parent_id

from .test_journal import Db
from .test_journal import db as db  # the fixture, on every backend

REQUEST = {"market": "SMART-SPOT-BTC-USDT", "side": "BUY", "type": "MARKET", "quantity": 1.0,
           "clientOrderId": "p1"}


def _child(round_: int, leg: int, venue: str = "SIM") -> ChildIntent:
    cid = f"p1-{round_}{leg:02d}"
    return ChildIntent(round=round_, leg=leg, venue=venue, market=f"{venue}-SPOT-BTC-USDT",
                       client_order_id=cid, fee_rate=0.0004, request={
                           "market": f"{venue}-SPOT-BTC-USDT", "side": "BUY", "type": "LIMIT",
                           "quantity": 0.5, "price": 100.0, "timeInForce": "IOC",
                           "clientOrderId": cid})


@pytest.fixture
def journal(db: Db) -> RoutingJournal:
    """On SQLite; on PostgreSQL too when ASTRA_TEST_POSTGRES_URL is set (the order journal's
    ``db`` fixture: a schema of its own, dropped after)."""
    return RoutingJournal(db.engine)


def test_begin_writes_parent_and_children_and_a_retry_finds_them(journal):
    pid = new_parent_id()
    parent, created = journal.begin("k1", "SMART-SPOT-BTC-USDT", "p1", REQUEST, pid,
                                    {"arrivalMid": "100"}, [_child(1, 0), _child(1, 1, "SIM2")])
    assert created and parent.parent_id == pid and parent.state == "EXECUTING"
    assert [(c.round, c.leg, c.venue, c.state) for c in parent.children] == [
        (1, 0, "SIM", "INTENT"), (1, 1, "SIM2", "INTENT")]
    again, created = journal.begin("k1", "SMART-SPOT-BTC-USDT", "p1", REQUEST, new_parent_id(),
                                   {}, [_child(1, 0)])
    assert not created and again.parent_id == pid and len(again.children) == 2
    with pytest.raises(ClientOrderIdConflict):
        journal.begin("k1", "SMART-SPOT-BTC-USDT", "p1", {**REQUEST, "quantity": 2.0},
                      new_parent_id(), {}, [])
    # Another key may use the same client order id.
    _, created = journal.begin("k2", "SMART-SPOT-BTC-USDT", "p1", REQUEST, new_parent_id(),
                               {}, [])
    assert created


def test_concurrent_begins_create_one_parent(journal):
    def attempt(_: int):
        return journal.begin("k1", "SMART-SPOT-BTC-USDT", "p1", REQUEST, new_parent_id(), {},
                             [_child(1, 0)])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(16)))
    assert sum(created for _, created in results) == 1
    assert len({p.parent_id for p, _ in results}) == 1
    assert len(journal.live("k1")) == 1 and len(results[0][0].children) == 1


def test_a_child_leg_is_journaled_once_and_states_move_as_written(journal):
    pid = new_parent_id()
    parent, _ = journal.begin("k1", "SMART-SPOT-BTC-USDT", "p1", REQUEST, pid, {},
                              [_child(1, 0)])
    with pytest.raises(IntegrityError):
        journal.add_children(pid, [_child(1, 0)])
    journal.add_children(pid, [_child(2, 0, "SIM3")])
    child = parent.children[0]
    journal.mark_sent([child.id])
    journal.settle_child(child.id, "DONE", {"status": "FILLED", "filledQuantity": 0.5},
                         latency_ms=12.5)
    journal.update_parent(pid, state="DONE", status="FILLED")
    done = journal.get("k1", pid)
    assert done.state == "DONE" and done.status == "FILLED" and journal.live("k1") == []
    assert [(c.round, c.state) for c in done.children] == [(1, "DONE"), (2, "INTENT")]
    assert done.children[0].last_order["filledQuantity"] == 0.5
    assert done.children[0].latency_ms == 12.5
    assert journal.get("other-key", pid) is None  # owners only
    with pytest.raises(ValueError):
        journal.begin("k1", "SMART-SPOT-BTC-USDT", "p9", {**REQUEST, "apiSecret": "x"},
                      new_parent_id(), {}, [])


def test_add_children_and_update_parent_return_what_a_read_would_show(db: Db):
    """The router sends a later round's children and answers with the parent's final state
    from these returns, without reading the parent again: they must equal a fresh read."""
    ticks = iter(range(1_000, 2_000, 7))
    journal = RoutingJournal(db.engine, clock=lambda: next(ticks))
    pid = new_parent_id()
    journal.begin("k1", "SMART-SPOT-BTC-USDT", "p1", REQUEST, pid, {}, [_child(1, 0)])
    added = journal.add_children(pid, [_child(2, 1, "SIM3"), _child(2, 0, "SIM2")])
    assert journal.add_children(pid, []) == []
    at = journal.update_parent(pid, state="OPEN", status="PARTIALLY_FILLED")
    fresh = journal.get("k1", pid)
    assert added == [c for c in fresh.children if c.round == 2]
    assert [(c.leg, c.venue, c.state) for c in added] == [(0, "SIM2", "INTENT"),
                                                          (1, "SIM3", "INTENT")]
    assert at == fresh.updated_at > fresh.created_at
    assert (fresh.state, fresh.status) == ("OPEN", "PARTIALLY_FILLED")
