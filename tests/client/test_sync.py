"""The blocking client ``Astra`` against a real ``astra serve``: its methods are
``AsyncAstra``'s run on its own loop thread (same answers, same exceptions, raised in the
caller's thread), ``watch_orderbook`` as a blocking iterator, and ``close()`` stops the
thread."""

from __future__ import annotations

import inspect
import threading
import uuid

import pytest

from astra.client import Astra, AsyncAstra
from astra.core import MarketNotFound, OrderBook

from .helpers import levels

SPOT = "SIM-SPOT-BTC-USDT"


def test_every_async_method_has_its_blocking_twin():
    for name, method in vars(AsyncAstra).items():
        if name.startswith("_") or name == "close" or not callable(method):
            continue
        twin = getattr(Astra, name)
        assert inspect.signature(twin) == inspect.signature(method), name
        assert twin.__doc__ == method.__doc__


def test_blocking_calls_answer_and_raise_as_the_async_ones(served):
    with Astra(served.base, served.token, timeout=30) as astra:
        book = astra.orderbook(SPOT, 2)
        assert type(book) is OrderBook and book.market == SPOT and len(book.bids) == 2
        assert [m.symbol for m in astra.markets("SIM")][:1] == ["SIM-SPOT-BTC-USDT"]
        far = round(book.bids[0].price * 0.8)
        cid = f"sync-{uuid.uuid4().hex[:12]}"
        order = astra.place_order(SPOT, "BUY", "LIMIT", 0.001, far, client_order_id=cid)
        assert astra.order(order.order_id, SPOT).client_order_id == cid
        assert astra.cancel_order(SPOT, order.order_id).status == "CANCELED"
        with pytest.raises(MarketNotFound) as caught:
            astra.orderbook("SIM-SPOT-NOPE-USDT")
        assert caught.value.parameter == "market" and caught.value.status == 404
        thread = astra._thread
        assert thread.is_alive() and thread is not threading.current_thread()
    assert not thread.is_alive()


def test_watch_orderbook_as_a_blocking_iterator(served):
    with Astra(served.base, served.token, timeout=30) as astra:
        with astra.watch_orderbook(SPOT) as books:
            ids = []
            for book in books:
                ids.append(book.update_id)
                if len(ids) == 5:
                    break
            assert ids == sorted(set(ids)) and book.synced
            # The same book, a little later, equals the REST book at the same updateId.
            for _ in range(10):
                rest = astra.orderbook(SPOT)
                while book.update_id < rest.update_id:
                    book = next(books)
                if book.update_id == rest.update_id:
                    break
            assert book.update_id == rest.update_id
            assert (book.bids, book.asks) == levels(rest)
