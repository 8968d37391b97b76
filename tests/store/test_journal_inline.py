"""The journal's inline SQLite path (``astra.store.journal_inline``): plain SQL on one kept
connection, acknowledgements in the next intent's commit, WAL checkpoints off the loop.

Async tests for the running loop the inline path schedules on; no network here."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from astra.store import open_database
from astra.store.journal import JournalState, OrderJournal
from astra.store.journal_inline import CHECKPOINT_EVERY

MARKET = "SIM-SPOT-BTC-USDT"


def _witness_states(engine: sa.Engine) -> dict[str, tuple[str, str | None]]:
    witness = sa.create_engine(engine.url)  # another connection: sees committed rows only
    try:
        with witness.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT client_order_id, state, venue_order_id FROM orders_journal"))
            return {cid: (state, venue) for cid, state, venue in rows}
    finally:
        witness.dispose()


async def test_acknowledgements_ride_in_the_next_intents_commit(tmp_path: Path) -> None:
    engine = open_database(data_dir=tmp_path)
    journal = OrderJournal(engine)
    journal._deferred.delay = 60.0  # no timer in the test: only the next intent commits them
    a, _ = journal.inline(journal.begin, "k", "SIM", MARKET, "a1", {"q": 1}, sent=True)
    journal.acknowledge_later(a.id, "101", {"status": "NEW"})
    b, _ = journal.inline(journal.begin, "k", "SIM", MARKET, "b1", {"q": 2}, sent=True)
    journal.acknowledge_later(b.id, "102", {"status": "FILLED"})
    assert _witness_states(engine) == {"a1": ("ACKNOWLEDGED", "101"), "b1": ("SENT", None)}
    # a taken client order id: nothing committed, the waiting acknowledgement kept
    again, created = journal.inline(journal.begin, "k", "SIM", MARKET, "a1", {"q": 1},
                                    sent=True)
    assert not created and again.id == a.id
    assert journal.get_entry(b.id).state is JournalState.ACKNOWLEDGED  # (read settles it)
    assert _witness_states(engine)["b1"] == ("ACKNOWLEDGED", "102")
    assert journal._deferred.pending == 0
    journal.close()


async def test_an_acknowledgement_that_does_not_apply_changes_nothing(tmp_path: Path) -> None:
    engine = open_database(data_dir=tmp_path)
    journal = OrderJournal(engine)
    journal._deferred.delay = 60.0
    intent, _ = journal.inline(journal.begin, "k", "SIM", MARKET, "i1", {"q": 1})  # INTENT
    journal.acknowledge_later(intent.id, "5", {"status": "NEW"})  # not allowed from INTENT
    journal.inline(journal.begin, "k", "SIM", MARKET, "i2", {"q": 2}, sent=True)
    assert journal.get_entry(intent.id).state is JournalState.INTENT
    assert _witness_states(engine)["i1"] == ("INTENT", None)
    journal.close()


async def test_checkpoints_run_off_the_loop_and_not_on_its_connection(tmp_path: Path) -> None:
    engine = open_database(data_dir=tmp_path)
    journal = OrderJournal(engine)
    for i in range(CHECKPOINT_EVERY * 2):
        journal.inline(journal.begin, "k", "SIM", MARKET, f"c{i}", {"q": i}, sent=True)
    writer = journal._writer
    assert writer is not None
    with writer.lock:
        autocheckpoint = writer._driver().execute("PRAGMA wal_autocheckpoint").fetchone()
    assert autocheckpoint == (0,)
    journal.close()  # waits for the checkpoint thread
    assert writer.checkpoints >= 1
    assert len(_witness_states(engine)) == CHECKPOINT_EVERY * 2
