"""The order path's cheaper pieces hold what the ones they replace held: a client order id's
random suffix is uniform over its 62**20 values, a lease is given back on an error, and an
acknowledgement waiting rides in the next intent's commit."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from astra.core.credentials import ExchangeCredentials
from astra.store import journal_payloads as payloads
from astra.store import open_database
from astra.store.journal import JournalState, OrderJournal
from astra.trading.clients import ClientCache


def test_long_suffix_is_a_uniform_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    space, limit = payloads._LONG_SPACE, payloads._LONG_DRAW_LIMIT
    assert limit % space == 0 and (1 << 128) - limit < space  # the largest multiple
    # a draw at or over the limit is drawn again; one just under it is kept, modulo 62**20
    draws = iter(
        [
            limit.to_bytes(16, "big"),
            ((1 << 128) - 1).to_bytes(16, "big"),
            (limit - 1).to_bytes(16, "big"),
        ]
    )
    monkeypatch.setattr(payloads, "_urandom", lambda n: next(draws))
    assert payloads._long_suffix() == space - 1
    monkeypatch.undo()
    # every digit of the suffix is drawn (no constant position), in 20 base-62 digits
    ids = [payloads.generate_client_order_id("SIM") for _ in range(3000)]
    for position in range(12, 32):
        assert len({cid[position] for cid in ids}) > 40, position
    assert len(set(ids)) == len(ids)


def test_the_stamp_follows_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000_000_000_000]
    monkeypatch.setattr(payloads.time, "time_ns", lambda: now[0])
    a = payloads.generate_client_order_id("SIM")
    now[0] += 1_000_000  # one millisecond later
    b = payloads.generate_client_order_id("SIM")
    assert a[5:12] == payloads._base62(1_700_000_000_000, 7)
    assert b[5:12] == payloads._base62(1_700_000_000_001, 7)


class _Client:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_a_lease_is_given_back_when_its_block_raises() -> None:
    cache = ClientCache(max_clients=1)
    c = ExchangeCredentials(
        exchange="BINANCE", api_key="key-0001-abcdef", secret="secret-0001-0123456789"
    )
    client = _Client()
    with pytest.raises(RuntimeError, match="boom"):
        async with cache.lease("BINANCE", c, lambda: client) as held:
            assert held is client
            raise RuntimeError("boom")
    entry = next(iter(cache._entries.values()))
    assert entry.leases == 0
    other = ExchangeCredentials(
        exchange="BINANCE", api_key="key-0002-abcdef", secret="secret-0002-0123456789"
    )
    async with cache.lease("BINANCE", other, _Client):
        pass  # evicts the first, no longer leased: it closes
    await asyncio.sleep(0.01)
    assert client.closed
    await cache.close()


def test_an_intent_with_no_acknowledgement_waiting_is_one_insert() -> None:
    journal = OrderJournal(open_database(data_dir=Path(tempfile.mkdtemp())))
    try:
        request = {
            "market": "SIM-SPOT-BTC-USDT",
            "side": "BUY",
            "type": "MARKET",
            "quantity": 0.001,
        }
        first, created = journal.inline(
            journal.begin, "k1", "SIM", "SIM-SPOT-BTC-USDT", "cid-1", request, sent=True
        )
        assert created and first.state is JournalState.SENT
        assert journal._deferred.pending == 0
        # an acknowledgement waiting rides in the next intent's commit
        journal._deferred.submit(
            journal._acknowledge_soon, first.id, "77", {"orderId": "77", "status": "FILLED"}
        )
        second, _ = journal.inline(
            journal.begin, "k1", "SIM", "SIM-SPOT-BTC-USDT", "cid-2", request, sent=True
        )
        assert journal._deferred.pending == 0
        assert journal.get_entry(first.id).state is JournalState.ACKNOWLEDGED
        assert journal.get_entry(second.id).state is JournalState.SENT
        # a retry of the first is answered from the journal, not inserted again
        again, created = journal.inline(
            journal.begin, "k1", "SIM", "SIM-SPOT-BTC-USDT", "cid-1", request, sent=True
        )
        assert not created and again.id == first.id
    finally:
        journal.close()
