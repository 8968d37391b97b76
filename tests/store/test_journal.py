"""The order journal on real databases: idempotent intents under races (threads, processes),
the state machine, crash and reconciliation, persistence, and no credentials at rest.

SQLite files under tmp_path always; PostgreSQL too when ``ASTRA_TEST_POSTGRES_URL`` names a
database (each test works in its own throwaway schema, dropped afterwards).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from astra.core import AstraError, Conflict, VenueError, VenueTimeout
from astra.store import (
    CLIENT_ORDER_ID_PREFIX,
    ORDERS_JOURNAL,
    RECONCILE_GRACE_MS,
    ClientOrderIdConflict,
    InvalidTransition,
    JournalEntry,
    JournalState,
    OrderJournal,
    generate_client_order_id,
    is_valid_client_order_id,
    open_database,
)

PG_URL_ENV = "ASTRA_TEST_POSTGRES_URL"
KEY = "abcdefghjk23"
OTHER_KEY = "mnpqrstuvw45"
MARKET = "BINANCE-SPOT-BTC-USDT"
REQUEST = {"market": MARKET, "side": "BUY", "type": "LIMIT", "price": 30000.5, "quantity": 0.01}
S = JournalState


class Clock:
    """Epoch milliseconds, moved by hand."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class Db:
    engine: sa.Engine
    url: str  # with the password, for subprocesses
    schema: str  # "" on SQLite


def _pg_engine(url: str, schema: str) -> sa.Engine:
    return sa.create_engine(url, connect_args={"options": f"-csearch_path={schema}"})


PG_URL = os.environ.get(PG_URL_ENV, "").strip()
# Every test taking ``db`` runs on SQLite, and on PostgreSQL too when PG_URL is set;
# test_postgresql_is_configured reports (once) when it is not.
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


def test_postgresql_is_configured() -> None:
    if not PG_URL:
        pytest.skip(
            f"PostgreSQL variants not run: set {PG_URL_ENV} to a database URL "
            "(e.g. postgresql+psycopg://user:pass@localhost/astra_test; needs a driver)"
        )


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        engine = open_database(data_dir=tmp_path / "data")
        yield Db(engine, engine.url.render_as_string(hide_password=False), "")
        engine.dispose()
        return
    url = PG_URL
    schema = f"astra_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # no driver, no server, no rights: say why
        admin.dispose()
        pytest.skip(f"PostgreSQL at {PG_URL_ENV} is not usable: {exc!r}")
    engine = _pg_engine(url, schema)
    try:
        yield Db(engine, url, schema)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal(db: Db, clock: Clock) -> OrderJournal:
    return OrderJournal(db.engine, clock=clock)


def row_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(ORDERS_JOURNAL)).scalar_one()


class FakeVenue:
    """A venue that keeps orders by client order id and rejects a duplicate id, as they do."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.placed = 0
        self.lose_answer = False  # the order is placed but the answer never comes back
        self._lock = threading.Lock()

    def place(self, client_order_id: str, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if client_order_id in self.orders:
                raise VenueError("BINANCE", "Duplicate order sent.", venue_code=-2010)
            self.placed += 1
            order = {**request, "id": f"V{self.placed}", "clientOrderId": client_order_id}
            self.orders[client_order_id] = order | {"status": "NEW"}
        if self.lose_answer:
            raise VenueTimeout("BINANCE")
        return self.orders[client_order_id]

    def find(self, client_order_id: str) -> dict[str, Any] | None:
        return self.orders.get(client_order_id)


def post_order(
    journal: OrderJournal, venue: FakeVenue, cid: str, request: dict[str, Any], key: str = KEY
) -> tuple[JournalEntry, bool]:
    """What the gateway's ``POST /orders`` does with the journal."""
    entry, created = journal.begin(key, "BINANCE", MARKET, cid, request)
    if not created:
        return entry, False  # a retry: answer with what we have, never send again
    journal.mark_sent(entry.id)
    try:
        order = venue.place(cid, request)
    except VenueTimeout as exc:
        return journal.mark_unknown(entry.id, exc), True
    except VenueError as exc:
        return journal.reject(entry.id, exc), True
    return journal.acknowledge(entry.id, order["id"], order), True


# ------------------------------------------------------------------------------ idempotency


def test_table_is_created_with_a_database_unique_constraint(db: Db, journal: OrderJournal) -> None:
    assert "orders_journal" in sa.inspect(db.engine).get_table_names()
    uniques = sa.inspect(db.engine).get_unique_constraints("orders_journal")
    assert {"key_id", "exchange", "client_order_id"} in [set(u["column_names"]) for u in uniques]
    journal.begin(KEY, "BINANCE", MARKET, "astraDup1", REQUEST)
    row = {
        "key_id": KEY,
        "exchange": "BINANCE",
        "market": MARKET,
        "client_order_id": "astraDup1",
        "request": "{}",
        "state": "INTENT",
        "created_at": 1,
        "updated_at": 1,
    }
    with pytest.raises(IntegrityError), db.engine.begin() as conn:  # the database says no
        conn.execute(sa.insert(ORDERS_JOURNAL).values(**row))


def test_begin_twice_gives_one_row_and_the_same_entry(db: Db, journal: OrderJournal) -> None:
    first, created = journal.begin(KEY, "BINANCE", MARKET, "astraOrder1", REQUEST)
    assert created is True
    assert first.state is S.INTENT and first.request == REQUEST and first.pending
    again, created = journal.begin(KEY, "BINANCE", MARKET, "astraOrder1", dict(REQUEST))
    assert created is False
    assert again == first
    assert row_count(db.engine) == 1


def test_the_same_request_in_another_key_order_or_number_form_is_a_retry(
    journal: OrderJournal,
) -> None:
    journal.begin(KEY, "BINANCE", MARKET, "astraOrder2", {"quantity": 1, "side": "BUY"})
    entry, created = journal.begin(
        KEY, "BINANCE", MARKET, "astraOrder2", {"side": "BUY", "quantity": 1.0}
    )
    assert created is False and entry.request == {"quantity": 1, "side": "BUY"}


def test_same_client_id_with_a_different_request_is_a_conflict(
    db: Db, journal: OrderJournal
) -> None:
    entry, _ = journal.begin(KEY, "BINANCE", MARKET, "astraOrder3", REQUEST)
    with pytest.raises(ClientOrderIdConflict) as info:
        journal.begin(KEY, "BINANCE", MARKET, "astraOrder3", REQUEST | {"quantity": 0.02})
    err = info.value
    assert isinstance(err, Conflict) and err.status == 409 and err.code == "CONFLICT"
    assert err.parameter == "clientOrderId" and "astraOrder3" in err.message
    assert AstraError.from_model(err.to_model()).__class__ is Conflict  # clients re-raise it
    with pytest.raises(ClientOrderIdConflict):  # another market is another order too
        journal.begin(KEY, "BINANCE", "BINANCE-SPOT-ETH-USDT", "astraOrder3", REQUEST)
    assert journal.get_entry(entry.id) == entry and row_count(db.engine) == 1


def test_client_ids_are_scoped_to_owner_and_exchange(db: Db, journal: OrderJournal) -> None:
    a, ca = journal.begin(KEY, "BINANCE", MARKET, "astraShared", REQUEST)
    b, cb = journal.begin(OTHER_KEY, "BINANCE", MARKET, "astraShared", REQUEST)
    c, cc = journal.begin(KEY, "OKX", "OKX-SPOT-BTC-USDT", "astraShared", REQUEST)
    assert ca and cb and cc and len({a.id, b.id, c.id}) == 3
    assert journal.get(OTHER_KEY, "BINANCE", "astraShared") == b
    assert journal.get(KEY, "KRAKEN", "astraShared") is None


def test_posting_the_same_client_id_twice_places_one_venue_order(journal: OrderJournal) -> None:
    venue = FakeVenue()
    first, created = post_order(journal, venue, "astraTwice", REQUEST)
    again, created_again = post_order(journal, venue, "astraTwice", REQUEST)
    assert (created, created_again) == (True, False)
    assert first.state is S.ACKNOWLEDGED and again == first
    assert venue.placed == 1


def test_a_retry_after_a_timeout_does_not_place_a_second_order(journal: OrderJournal) -> None:
    venue = FakeVenue()
    venue.lose_answer = True
    entry, _ = post_order(journal, venue, "astraTimeout", REQUEST)
    assert entry.state is S.UNKNOWN  # status unknown, not a failure
    assert entry.error == {
        "code": "VENUE_TIMEOUT",
        "message": "venue BINANCE timed out",
        "venue": "BINANCE",
    }
    venue.lose_answer = False
    retry, created = post_order(journal, venue, "astraTimeout", REQUEST)
    assert created is False and retry.state is S.UNKNOWN
    assert venue.placed == 1
    found = venue.find("astraTimeout")
    settled = journal.reconcile(entry.id, found, venue_order_id=found["id"])
    assert settled.state is S.ACKNOWLEDGED and settled.venue_order_id == "V1"
    assert settled.error is None and settled.reconciled_at is not None
    assert venue.placed == 1


def test_eight_threads_posting_one_client_id_place_one_venue_order(db: Db) -> None:
    journal = OrderJournal(db.engine)
    venue = FakeVenue()
    barrier = threading.Barrier(8)
    results: list[tuple[JournalEntry, bool]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(post_order(journal, venue, "astraRace8", REQUEST))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(results) == 8
    assert sum(created for _, created in results) == 1
    assert len({entry.id for entry, _ in results}) == 1
    assert venue.placed == 1 and row_count(db.engine) == 1


_RACE_SCRIPT = r"""
import json, signal, sys, time
from pathlib import Path
import sqlalchemy as sa
from astra.store import OrderJournal, open_database

url, schema, workdir, mode = sys.argv[1:5]
work = Path(workdir)
if schema:
    engine = sa.create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
else:
    engine = open_database(url=url)
journal = OrderJournal(engine)
request = json.loads((work / "request.json").read_text())
market = request["market"]
if mode == "race":
    name = sys.argv[5]
    (work / f"ready-{name}").touch()
    deadline = time.monotonic() + 60
    while not (work / "go").exists():
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.001)
    entry, created = journal.begin("abcdefghjk23", "BINANCE", market, "astraProc", request)
    print(json.dumps({"id": entry.id, "created": created}))
elif mode == "crash":
    journal.begin("abcdefghjk23", "BINANCE", market, "astraNeverSent", request)
    sent, _ = journal.begin("abcdefghjk23", "BINANCE", market, "astraSentThenKilled", request)
    journal.mark_sent(sent.id)
    # The request reaches the venue; the process dies before it can journal the answer.
    (work / "venue.json").write_text(json.dumps(
        {"astraSentThenKilled": {**request, "id": "V77", "status": "NEW"}}))
    sys.stdout.flush()
    if hasattr(signal, "SIGKILL"):
        signal.raise_signal(signal.SIGKILL)
    import os
    os._exit(137)
"""


def _script_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _spawn(db: Db, workdir: Path, mode: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _RACE_SCRIPT, db.url, db.schema, str(workdir), mode, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_script_env(),
    )


def run_race(procs: list[subprocess.Popen[str]], work: Path, timeout: float = 60) -> list[str]:
    """Start a race between ``procs`` (each touches ``work/ready-<i>``, then waits for
    ``work/go``): once all are ready, go; their stdouts, each having exited 0. Every process is
    gone afterwards."""
    try:
        deadline = time.monotonic() + 60
        while sum((work / f"ready-{i}").exists() for i in range(len(procs))) < len(procs):
            assert time.monotonic() < deadline, [p.poll() for p in procs]
            time.sleep(0.01)
        (work / "go").touch()
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * len(procs), [err for _, err in outs]
    return [out for out, _ in outs]


def test_processes_posting_one_client_id_create_one_entry(db: Db, tmp_path: Path) -> None:
    OrderJournal(db.engine)  # the table exists before the race
    work = tmp_path / "race"
    work.mkdir()
    (work / "request.json").write_text(json.dumps(REQUEST))
    outs = run_race([_spawn(db, work, "race", str(i)) for i in range(3)], work)
    results = [json.loads(out) for out in outs]
    assert sum(r["created"] for r in results) == 1
    assert len({r["id"] for r in results}) == 1
    assert row_count(db.engine) == 1


# ---------------------------------------------------------------------------- state machine


def test_happy_path_transitions(journal: OrderJournal, clock: Clock) -> None:
    entry, _ = journal.begin(KEY, "BINANCE", MARKET, "astraHappy", REQUEST)
    assert entry.created_at == entry.updated_at == clock.now and entry.sent_at is None
    clock.now += 5
    sent = journal.mark_sent(entry.id)
    assert sent.state is S.SENT and sent.sent_at == clock.now and sent.pending
    clock.now += 5
    order = {"id": "V1", "clientOrderId": "astraHappy", "status": "NEW", "filled": 0.0}
    acked = journal.acknowledge(entry.id, "V1", order)
    assert acked.state is S.ACKNOWLEDGED and not acked.pending
    assert acked.venue_order_id == "V1" and acked.last_order == order
    assert acked.order_status == "NEW" and acked.updated_at == clock.now
    assert journal.acknowledge(entry.id, "V1", order) == acked  # the stream beat the REST answer
    clock.now += 5
    filled = journal.update_order(entry.id, order | {"status": "filled", "filled": 0.01})
    assert filled.state is S.ACKNOWLEDGED and filled.order_status == "FILLED"
    assert journal.by_venue_order(KEY, "BINANCE", "V1") == filled
    assert journal.by_venue_order(OTHER_KEY, "BINANCE", "V1") is None  # owner-scoped
    assert journal.get(KEY, "BINANCE", "astraHappy") == filled


def test_failure_before_sending_and_venue_rejection_are_final(journal: OrderJournal) -> None:
    early, _ = journal.begin(KEY, "BINANCE", MARKET, "astraEarly", REQUEST)
    failed = journal.reject(early.id, {"code": "VENUE_UNAVAILABLE", "message": "no session"})
    assert failed.state is S.REJECTED and failed.error["code"] == "VENUE_UNAVAILABLE"
    venue = FakeVenue()
    venue.place("astraRejected", REQUEST)  # the venue already has this id: it will refuse
    rejected, _ = post_order(journal, venue, "astraRejected", REQUEST)
    assert rejected.state is S.REJECTED
    assert rejected.error == {
        "code": "VENUE_ERROR",
        "message": "Duplicate order sent.",
        "venue": "BINANCE",
        "venueCode": "-2010",
    }
    for op in (
        lambda: journal.mark_unknown(rejected.id, VenueTimeout("BINANCE")),
        lambda: journal.acknowledge(rejected.id, "V9", {"status": "NEW"}),
        lambda: journal.reconcile(rejected.id, None),
        lambda: journal.reconcile(rejected.id, {"status": "NEW"}, venue_order_id="V9"),
    ):
        with pytest.raises(InvalidTransition, match="REJECTED"):
            op()


@pytest.mark.parametrize(
    ("setup", "operation", "message"),
    [
        ([], lambda j, i: j.acknowledge(i, "V1", {}), "acknowledge an order in state INTENT"),
        ([], lambda j, i: j.update_order(i, {}), "update_order an order in state INTENT"),
        (["sent"], lambda j, i: j.mark_sent(i), "mark_sent an order in state SENT"),
        (["sent", "ack"], lambda j, i: j.mark_sent(i), "in state ACKNOWLEDGED"),
        (["sent", "ack"], lambda j, i: j.reject(i, {"code": "X"}), "reject an order in state"),
        (["sent", "ack"], lambda j, i: j.mark_unknown(i, TimeoutError()), "ACKNOWLEDGED"),
        (["sent", "ack"], lambda j, i: j.acknowledge(i, "V2", {}), "already acknowledged as V1"),
        (["sent", "ack"], lambda j, i: j.reconcile(i, None), "the venue had acknowledged it"),
        (
            ["sent", "ack"],
            lambda j, i: j.reconcile(i, {"status": "NEW"}, venue_order_id="V2"),
            "reconcile \\(found\\) an order in state ACKNOWLEDGED",
        ),
    ],
)
def test_invalid_transitions_are_refused(
    journal: OrderJournal, setup: list[str], operation: Any, message: str
) -> None:
    entry, _ = journal.begin(KEY, "BINANCE", MARKET, "astraInvalid", REQUEST)
    if "sent" in setup:
        journal.mark_sent(entry.id)
    if "ack" in setup:
        journal.acknowledge(entry.id, "V1", {"status": "NEW"})
    before = journal.get_entry(entry.id)
    with pytest.raises(InvalidTransition, match=message) as info:
        operation(journal, entry.id)
    assert info.value.entry_id == entry.id and info.value.state is before.state
    assert journal.get_entry(entry.id) == before  # nothing changed


def test_the_sender_still_sends_what_another_process_looked_up_before_it_went_out(
    journal: OrderJournal, clock: Clock
) -> None:
    """Another gateway on the database reconciles an intent before its sender marks it sent
    (not at the venue yet: UNKNOWN): the sender's mark_sent still succeeds, once."""
    entry, created = journal.begin(KEY, "BINANCE", MARKET, "astraRaced", REQUEST)
    assert created
    looked = journal.reconcile(entry.id, None)  # the other process: not found, too young
    assert (looked.state, looked.sent_at, looked.reconcile_attempts) == (S.UNKNOWN, None, 1)
    clock.now += 5
    sent = journal.mark_sent(entry.id)
    assert (sent.state, sent.sent_at) == (S.SENT, clock.now)
    assert journal.acknowledge(entry.id, "V7", {"status": "NEW"}).state is S.ACKNOWLEDGED
    # Sent, then unknown (a timeout): never marked sent again.
    timed_out, _ = journal.begin(KEY, "BINANCE", MARKET, "astraTimedOut", REQUEST)
    journal.mark_sent(timed_out.id)
    before = journal.mark_unknown(timed_out.id, TimeoutError())
    with pytest.raises(InvalidTransition, match="mark_sent an order in state UNKNOWN"):
        journal.mark_sent(timed_out.id)
    assert journal.get_entry(timed_out.id) == before
    # Not placed (the grace period passed): too late to send it.
    late, _ = journal.begin(KEY, "BINANCE", MARKET, "astraTooLate", REQUEST)
    clock.now += RECONCILE_GRACE_MS
    assert journal.reconcile(late.id, None).state is S.NOT_PLACED
    with pytest.raises(InvalidTransition, match="NOT_PLACED"):
        journal.mark_sent(late.id)


def test_unknown_entry_ids_raise_lookup_error(journal: OrderJournal) -> None:
    with pytest.raises(LookupError, match="12345"):
        journal.mark_sent(12345)
    with pytest.raises(LookupError):
        journal.reconcile(12345, None)
    assert journal.get_entry(12345) is None


def test_a_late_answer_after_a_timeout_settles_the_order(journal: OrderJournal) -> None:
    entry, _ = journal.begin(KEY, "BINANCE", MARKET, "astraLate", REQUEST)
    journal.mark_sent(entry.id)
    unknown = journal.mark_unknown(entry.id, TimeoutError("read timed out"))
    assert unknown.error == {"code": "INTERNAL_ERROR", "message": "TimeoutError: read timed out"}
    assert [e.id for e in journal.pending()] == [entry.id]
    acked = journal.acknowledge(entry.id, "V5", {"status": "NEW"})
    assert acked.state is S.ACKNOWLEDGED and acked.error is None
    assert journal.pending() == []


# ----------------------------------------------------------------- crash, restart, reconcile


def test_gateway_killed_between_sent_and_acknowledged_reconciles_on_restart(
    db: Db, tmp_path: Path
) -> None:
    OrderJournal(db.engine)
    work = tmp_path / "crash"
    work.mkdir()
    (work / "request.json").write_text(json.dumps(REQUEST))
    proc = _spawn(db, work, "crash")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, err  # it really died
    venue_orders = json.loads((work / "venue.json").read_text())
    db.engine.dispose()

    # "Restart": a new journal on a new engine over the same database.
    engine = open_database(url=db.url) if not db.schema else _pg_engine(db.url, db.schema)
    try:
        clock = Clock(time.time_ns() // 1_000_000)
        journal = OrderJournal(engine, clock=clock)
        pending = journal.pending()
        assert [(e.client_order_id, e.state) for e in pending] == [
            ("astraNeverSent", S.INTENT),
            ("astraSentThenKilled", S.SENT),
        ]
        outcomes = {}
        for entry in pending:  # what the gateway's startup does, by client order id
            found = venue_orders.get(entry.client_order_id)
            outcomes[entry.client_order_id] = journal.reconcile(
                entry.id, found, venue_order_id=found and found["id"]
            )
        placed = outcomes["astraSentThenKilled"]
        assert placed.state is S.ACKNOWLEDGED and placed.venue_order_id == "V77"
        assert placed.reconciled_at == clock.now
        # Not found, but too young to be sure: still unknown, look again later.
        young = outcomes["astraNeverSent"]
        assert young.state is S.UNKNOWN and young.reconcile_attempts == 1
        assert young.reconciled_at is None
        assert journal.settles_at(young) == young.created_at + RECONCILE_GRACE_MS
        assert [e.client_order_id for e in journal.pending()] == ["astraNeverSent"]
        clock.now = journal.settles_at(young)
        gone = journal.reconcile(young.id, None)
        assert gone.state is S.NOT_PLACED and gone.reconcile_attempts == 2
        assert gone.reconciled_at == clock.now
        assert journal.reconcile(young.id, None) == gone  # repeatable, no change
        assert journal.pending() == []
        # A client retrying after the restart gets the settled orders, nothing is sent again.
        venue = FakeVenue()
        retry, created = post_order(journal, venue, "astraSentThenKilled", REQUEST)
        assert created is False and retry.state is S.ACKNOWLEDGED and venue.placed == 0
        retry, created = post_order(journal, venue, "astraNeverSent", REQUEST)
        assert created is False and retry.state is S.NOT_PLACED and venue.placed == 0
    finally:
        engine.dispose()


def test_not_found_respects_the_grace_period_from_sent_at(
    journal: OrderJournal, clock: Clock
) -> None:
    entry, _ = journal.begin(KEY, "BINANCE", MARKET, "astraGrace", REQUEST)
    clock.now += 10 * RECONCILE_GRACE_MS  # an old intent...
    sent = journal.mark_sent(entry.id)  # ...sent just now: the clock runs from sent_at
    assert journal.reconcile(entry.id, None).state is S.UNKNOWN
    clock.now = sent.sent_at + RECONCILE_GRACE_MS - 1
    assert journal.reconcile(entry.id, None).state is S.UNKNOWN
    clock.now += 1
    assert journal.reconcile(entry.id, None).state is S.NOT_PLACED
    other, _ = journal.begin(KEY, "BINANCE", MARKET, "astraGrace0", REQUEST)
    assert journal.reconcile(other.id, None, grace_ms=0).state is S.NOT_PLACED


def test_an_order_found_after_not_placed_is_acknowledged(journal: OrderJournal) -> None:
    entry, _ = journal.begin(KEY, "BINANCE", MARKET, "astraLateFind", REQUEST)
    assert journal.reconcile(entry.id, None, grace_ms=0).state is S.NOT_PLACED
    found = journal.reconcile(entry.id, {"status": "NEW"}, venue_order_id="V8")
    assert found.state is S.ACKNOWLEDGED and found.venue_order_id == "V8"
    # A second process reconciling the same order later just refreshes it.
    again = journal.reconcile(entry.id, {"status": "FILLED"}, venue_order_id="V8")
    assert again.state is S.ACKNOWLEDGED and again.order_status == "FILLED"
    with pytest.raises(ValueError, match="venue_order_id"):
        journal.reconcile(entry.id, {"status": "NEW"})


def test_everything_survives_a_restart(db: Db, clock: Clock) -> None:
    journal = OrderJournal(db.engine, clock=clock)
    venue = FakeVenue()
    acked, _ = post_order(journal, venue, "astraKeep1", REQUEST)
    journal.update_order(acked.id, venue.find("astraKeep1") | {"status": "PARTIALLY_FILLED"})
    venue.lose_answer = True
    post_order(journal, venue, "astraKeep2", REQUEST)
    intent, _ = journal.begin(KEY, "OKX", "OKX-SPOT-BTC-USDT", "astraKeep3", REQUEST)
    before = journal.list_orders(KEY)
    url = db.url
    db.engine.dispose()
    engine = open_database(url=url) if not db.schema else _pg_engine(url, db.schema)
    try:
        reopened = OrderJournal(engine, clock=clock)
        assert reopened.list_orders(KEY) == before
        assert [e.client_order_id for e in before] == ["astraKeep3", "astraKeep2", "astraKeep1"]
        assert [e.client_order_id for e in reopened.pending()] == ["astraKeep2", "astraKeep3"]
        assert [e.client_order_id for e in reopened.pending("OKX")] == ["astraKeep3"]
        again, created = reopened.begin(KEY, "OKX", "OKX-SPOT-BTC-USDT", "astraKeep3", REQUEST)
        assert created is False and again == intent
    finally:
        engine.dispose()


def test_pending_skips_recently_touched_entries_on_request(
    journal: OrderJournal, clock: Clock
) -> None:
    old, _ = journal.begin(KEY, "BINANCE", MARKET, "astraOld", REQUEST)
    clock.now += 60_000
    journal.begin(KEY, "BINANCE", MARKET, "astraNew", REQUEST)
    assert [e.id for e in journal.pending(older_than_ms=30_000)] == [old.id]
    assert len(journal.pending()) == 2
    assert journal.pending(key_id=OTHER_KEY) == []


def test_list_orders_open_only_and_scoping(journal: OrderJournal) -> None:
    venue = FakeVenue()
    post_order(journal, venue, "astraOpen", REQUEST)
    done, _ = post_order(journal, venue, "astraDone", REQUEST)
    journal.update_order(done.id, {"status": "canceled"})
    journal.begin(KEY, "BINANCE", MARKET, "astraMaybe", REQUEST)
    journal.begin(KEY, "BINANCE", "BINANCE-SPOT-ETH-USDT", "astraEth", REQUEST)
    venue.place("astraRej", REQUEST)
    post_order(journal, venue, "astraRej", REQUEST)  # rejected: duplicate at the venue
    post_order(journal, venue, "astraOther", REQUEST, key=OTHER_KEY)
    ids = [e.client_order_id for e in journal.list_orders(KEY, "BINANCE", MARKET, open_only=True)]
    assert ids == ["astraMaybe", "astraOpen"]
    assert len(journal.list_orders(KEY)) == 5
    assert len(journal.list_orders(KEY, limit=2)) == 2
    assert [e.client_order_id for e in journal.list_orders(OTHER_KEY)] == ["astraOther"]
    assert journal.list_orders(KEY, "OKX") == []


# ---------------------------------------------------------------------- no credentials at rest


@pytest.mark.parametrize(
    "request_body",
    [
        REQUEST | {"secret": "s3cr3tvalue"},
        REQUEST | {"apiKey": "s3cr3tvalue"},
        REQUEST | {"api_key": "s3cr3tvalue"},
        REQUEST | {"privateKey": "s3cr3tvalue"},
        REQUEST | {"passphrase": "s3cr3tvalue"},
        REQUEST | {"API-SECRET": "s3cr3tvalue"},
        REQUEST | {"params": {"nested": [{"walletPrivateKey": "s3cr3tvalue"}]}},
    ],
)
def test_credential_looking_fields_are_refused(
    db: Db, journal: OrderJournal, request_body: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="must not carry credentials") as info:
        journal.begin(KEY, "BINANCE", MARKET, "astraCreds", request_body)
    assert "s3cr3tvalue" not in str(info.value)
    assert row_count(db.engine) == 0


def test_orders_and_errors_keep_no_credentials(db: Db, journal: OrderJournal) -> None:
    entry, _ = journal.begin(KEY, "BINANCE", MARKET, "astraNoCreds", REQUEST)
    journal.mark_sent(entry.id)
    with pytest.raises(ValueError, match="credentials"):
        journal.acknowledge(entry.id, "V1", {"status": "NEW", "info": {"apiSecret": "x"}})
    leaky = VenueError(
        "BINANCE",
        "POST https://api.binance.com/api/v3/order?symbol=BTCUSDT&signature=deadbeef99&"
        "apiKey=AKIAEXAMPLE77 X-MBX-APIKEY: hdrkey55 " + "x" * 1000,
        venue_code=-1022,
    )
    rejected = journal.reject(entry.id, leaky)
    assert set(rejected.error) == {"code", "message", "venue", "venueCode"}
    assert len(rejected.error["message"]) <= 500
    with db.engine.connect() as conn:
        raw = conn.execute(sa.select(ORDERS_JOURNAL.c.error)).scalar_one()
    for secret in ("deadbeef99", "AKIAEXAMPLE77", "hdrkey55"):
        assert secret not in raw
    assert "signature=<redacted>" in raw


def test_a_msgspec_struct_request_is_stored_as_its_json(journal: OrderJournal) -> None:
    class OrderRequest(msgspec.Struct, rename="camel"):
        market: str
        client_order_id: str
        quantity: float

    body = OrderRequest(MARKET, "astraStruct", 1.5)
    entry, _ = journal.begin(KEY, "BINANCE", MARKET, "astraStruct", body)
    assert entry.request == {"market": MARKET, "clientOrderId": "astraStruct", "quantity": 1.5}
    assert journal.begin(KEY, "BINANCE", MARKET, "astraStruct", body)[1] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "BINANCE", MARKET, "astraX"), "key_id"),
        ((KEY, "binance", MARKET, "astraX"), "exchange"),
        ((KEY, "BINANCE", "", "astraX"), "market"),
        ((KEY, "BINANCE", MARKET, "has space"), "client order id"),
        ((KEY, "BINANCE", MARKET, "a" * 65), "client order id"),
        ((KEY, "BINANCE", MARKET, ""), "client order id"),
    ],
)
def test_begin_validates_its_arguments(
    journal: OrderJournal, args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        journal.begin(*args, REQUEST)


# ------------------------------------------------------------------------------ client ids


def test_generated_client_order_ids_suit_every_venue() -> None:
    ids = {generate_client_order_id("BINANCE") for _ in range(5000)}
    assert len(ids) == 5000
    for cid in list(ids)[:200]:
        assert cid.startswith(CLIENT_ORDER_ID_PREFIX) and len(cid) == 32 and cid.isalnum()
        for venue in ("BINANCE", "ASTER", "OKX", "KUCOIN", "HUOBI", "COINBASE", "SIM"):
            assert is_valid_client_order_id(cid, venue), (cid, venue)
        assert not is_valid_client_order_id(cid, "KRAKEN")  # 32 alphanumerics: too long there
    for exchange in ("KRAKEN", None):
        cid = generate_client_order_id(exchange)
        assert cid.startswith(CLIENT_ORDER_ID_PREFIX) and len(cid) == 18 and cid.isalnum()
        for venue in ("BINANCE", "ASTER", "OKX", "KUCOIN", "KRAKEN", "HUOBI", "COINBASE"):
            assert is_valid_client_order_id(cid, venue)
    # The 7 characters after the prefix are a millisecond clock: later ids sort later.
    a = generate_client_order_id("OKX")
    time.sleep(0.002)
    b = generate_client_order_id("OKX")
    assert a[5:12] < b[5:12]


@pytest.mark.parametrize(
    ("value", "exchange", "ok"),
    [
        ("my-order_1", "BINANCE", True),
        ("web:abc/def.1", "BINANCE", True),
        ("a" * 36, "BINANCE", True),
        ("a" * 37, "BINANCE", False),
        ("my-order_1", "OKX", False),  # OKX: letters and digits only
        ("a" * 32, "OKX", True),
        ("a" * 33, "OKX", False),
        ("a-b_c" * 8, "KUCOIN", True),
        ("a" * 41, "KUCOIN", False),
        ("6d1b345e-2821-40e2-ad83-4ecb18a06876", "KRAKEN", True),
        ("6d1b345e282140e2ad834ecb18a06876", "KRAKEN", True),
        ("a" * 18, "KRAKEN", True),
        ("a" * 19, "KRAKEN", False),
        ("a" * 64, "HUOBI", True),
        ("a" * 65, None, False),
        ("with space", None, False),
        ("", None, False),
        (None, None, False),
    ],
)
def test_client_order_id_rules(value: Any, exchange: str | None, ok: bool) -> None:
    assert is_valid_client_order_id(value, exchange) is ok


# --- one commit for the intent, the acknowledgement deferred ------------------------------------


def _state_seen_by(db: Db, entry_id: int) -> str:
    """The row's state as another connection sees it (committed rows only)."""
    other = (sa.create_engine(db.engine.url) if not db.schema
             else _pg_engine(db.url, db.schema))
    try:
        with other.connect() as conn:
            return conn.execute(sa.select(ORDERS_JOURNAL.c.state).where(
                ORDERS_JOURNAL.c.id == entry_id)).scalar_one()
    finally:
        other.dispose()


def test_begin_sent_commits_the_intent_as_sent_at_once(journal: OrderJournal, db: Db,
                                                       clock: Clock) -> None:
    entry, created = journal.begin("k1", "SIM", "SIM-SPOT-BTC-USDT", "s1", {"q": 1}, sent=True)
    assert created and entry.state is JournalState.SENT and entry.sent_at == clock.now
    assert _state_seen_by(db, entry.id) == "SENT"
    assert [e.id for e in journal.pending()] == [entry.id]  # reconciled like any sent order
    again, created = journal.begin("k1", "SIM", "SIM-SPOT-BTC-USDT", "s1", {"q": 1}, sent=True)
    assert not created and again.id == entry.id
    assert journal.acknowledge(entry.id, "9", {"status": "NEW"}).state is (
        JournalState.ACKNOWLEDGED)


def test_a_deferred_acknowledgement_is_seen_by_every_later_call(journal: OrderJournal,
                                                                db: Db) -> None:
    entry, _ = journal.begin("k1", "SIM", "SIM-SPOT-BTC-USDT", "d1", {"q": 1}, sent=True)
    journal.acknowledge_later(entry.id, "77", {"status": "FILLED"})
    # SQLite: inline with no running loop, so at once; PostgreSQL: on the writer thread.
    # Either way another thread's read sees it.
    seen: list[JournalEntry | None] = []
    reader = threading.Thread(target=lambda: seen.append(journal.get_entry(entry.id)))
    reader.start()
    reader.join(10)
    assert seen and seen[0].state is JournalState.ACKNOWLEDGED and seen[0].venue_order_id == "77"
    assert _state_seen_by(db, entry.id) == "ACKNOWLEDGED"


def test_deferred_writes_run_before_the_next_call_of_any_thread(journal: OrderJournal,
                                                                db: Db) -> None:
    entries = [journal.begin("k1", "SIM", "SIM-SPOT-BTC-USDT", f"q{i}", {"q": i}, sent=True)[0]
               for i in range(3)]
    journal._deferred.inline = False  # on the writer thread, whatever the backend

    gate = threading.Event()
    journal._deferred.submit(gate.wait, 10)  # holds the writer until released
    for e in entries:
        journal.acknowledge_later(e.id, str(100 + e.id), {"status": "NEW"})
    assert journal._deferred.pending >= 3
    threading.Timer(0.2, gate.set).start()
    listed = journal.list_orders("k1")  # waits for (or runs) the queued writes first
    assert all(e.state is JournalState.ACKNOWLEDGED for e in listed)
    assert {e.venue_order_id for e in listed} == {str(100 + e.id) for e in entries}


def test_a_failed_deferred_write_leaves_the_entry_pending(journal: OrderJournal) -> None:
    entry, _ = journal.begin("k1", "SIM", "SIM-SPOT-BTC-USDT", "f1", {"q": 1})  # INTENT
    journal.acknowledge_later(entry.id, "5", {"status": "NEW"})  # not allowed from INTENT
    journal.flush()
    got = journal.get_entry(entry.id)
    assert got.state is JournalState.INTENT and got.pending


def test_writes_are_observed_by_operation(db: Db, clock: Clock) -> None:
    from astra.telemetry import Telemetry

    telemetry = Telemetry()
    journal = OrderJournal(db.engine, clock=clock, telemetry=telemetry)
    a, _ = journal.begin("k1", "SIM", "SIM-SPOT-BTC-USDT", "t1", {"q": 1})
    journal.mark_sent(a.id)
    journal.acknowledge_later(a.id, "1", {"status": "NEW"})
    journal.update_order(a.id, {"status": "FILLED"})
    b, _ = journal.begin("k1", "SIM", "SIM-SPOT-BTC-USDT", "t2", {"q": 2}, sent=True)
    journal.reject(b.id, {"code": "INVALID_ORDER", "message": "no"})
    sample = telemetry.registry.get_sample_value
    for operation, count in (("begin", 2), ("sent", 1), ("ack", 1), ("update", 1),
                             ("reject", 1)):
        assert sample("astra_journal_write_seconds_count", {"operation": operation}) == count
