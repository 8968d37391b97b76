"""The deferred acknowledgement (``journal.acknowledge_later``) across a killed process: a
real child process journals orders on the event loop's inline SQLite path and is killed
(SIGKILL) while acknowledgements wait; the journal reopened afterwards has every intent,
the acknowledgement that rode in a later intent's commit, and the one still waiting is
``SENT`` (pending, settled by reconciliation), never lost nor placed twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from astra.store import JournalState, OrderJournal, open_database

MARKET = "SIM-SPOT-BTC-USDT"

_CHILD = textwrap.dedent("""
    import asyncio, os, signal, sys
    from pathlib import Path
    from astra.store import OrderJournal, open_database

    async def main(data_dir):
        journal = OrderJournal(open_database(data_dir=Path(data_dir)))
        assert journal.inline_writes
        journal._deferred.delay = 60.0  # nothing but the next intent commits an ack
        a, _ = journal.inline(journal.begin, "k", "SIM", "{market}", "rides", {{"q": 1}},
                              sent=True)
        journal.acknowledge_later(a.id, "V1", {{"status": "NEW"}})
        b, _ = journal.inline(journal.begin, "k", "SIM", "{market}", "waits", {{"q": 2}},
                              sent=True)
        journal.acknowledge_later(b.id, "V2", {{"status": "NEW"}})
        assert journal._deferred.pending == 1
        print("journaled", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # before the waiting ack is written

    asyncio.run(main(sys.argv[1]))
""").format(market=MARKET)


def test_a_process_killed_with_an_acknowledgement_waiting_loses_no_order(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(data)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr  # it really was killed
    assert proc.stdout.strip() == "journaled"
    engine = open_database(data_dir=data)
    try:
        journal = OrderJournal(engine)
        rides = journal.get("k", "SIM", "rides")
        waits = journal.get("k", "SIM", "waits")
        assert rides is not None and waits is not None
        assert (rides.state, rides.venue_order_id) == (JournalState.ACKNOWLEDGED, "V1")
        assert (waits.state, waits.venue_order_id) == (JournalState.SENT, None)
        assert [e.client_order_id for e in journal.pending()] == ["waits"]
        # A retry of either is answered from the journal, never sent again.
        for cid, q in (("rides", 1), ("waits", 2)):
            again, created = journal.begin("k", "SIM", MARKET, cid, {"q": q}, sent=True)
            assert created is False and again.client_order_id == cid
        # Reconciliation finds it at the venue by client order id: acknowledged, once.
        settled = journal.reconcile(waits.id, {"status": "NEW"}, venue_order_id="V2")
        assert (settled.state, settled.venue_order_id) == (JournalState.ACKNOWLEDGED, "V2")
        assert journal.pending() == []
        journal.close()
    finally:
        engine.dispose()
