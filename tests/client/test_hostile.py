"""The SDK and ``astra book`` attacked with bad input against a real ``astra serve``: bad
numbers and depths come back as the server's 4xx error naming the parameter (never a
TransportError or a hang); an id cannot reach another route; a closed client stays closed
(a running watch ends instead of reopening a session nobody closes); the sync client works
from inside a running event loop; ``astra book`` says what is wrong and exits non-zero."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from astra.client import Astra, AsyncAstra, ClientClosed
from astra.core import AstraError

SPOT = "SIM-SPOT-BTC-USDT"
BOUND = 60  # seconds any one scenario may take


@pytest.mark.parametrize(("call", "parameter"), [
    (lambda c: c.place_order(SPOT, "BUY", "LIMIT", math.nan, 100.0), "quantity"),
    (lambda c: c.place_order(SPOT, "BUY", "LIMIT", -1.0, 100.0), "quantity"),
    (lambda c: c.place_order(SPOT, "BUY", "LIMIT", 1e300, 100.0), "quantity"),
    (lambda c: c.place_order("", "BUY", "LIMIT", 1.0, 100.0), "market"),
    (lambda c: c.orderbook(SPOT, depth=0), "depth"),
    (lambda c: c.orderbook(SPOT, depth=10**9), "depth"),
    (lambda c: c.request_quote("any", "BTC", "USDT", from_amount=math.nan), "fromAmount"),
    (lambda c: c.request_quote("any", "BTC", "USDT", to_amount=float("inf")), "toAmount"),
    # An id is one path segment: never another route (GET /api-keys), never a query.
    (lambda c: c.order("../api-keys", SPOT), "orderId"),
    (lambda c: c.order("1?market=SIM-SPOT-ETH-USDT", SPOT), "orderId"),
    (lambda c: c.order("..", SPOT), "orderId"),
    (lambda c: c.converts("../../api-keys"), "accountId"),
    (lambda c: c.otc_account("."), "accountId"),
    (lambda c: c.revoke_api_key("../orders?market=SIM-SPOT-BTC-USDT"), "keyId"),
])
def test_bad_input_is_a_4xx_naming_its_parameter(served, call, parameter):
    async def scenario():
        async with AsyncAstra(served.base, served.token, timeout=20) as client:
            with pytest.raises(AstraError) as caught:
                await call(client)
            return caught.value

    err = asyncio.run(asyncio.wait_for(scenario(), BOUND))
    assert 400 <= err.status < 500, err
    assert err.parameter == parameter, err


def test_a_revoke_with_a_crafted_id_cancels_nothing(served):
    async def scenario():
        async with AsyncAstra(served.base, served.token, timeout=20) as client:
            book = await client.orderbook(SPOT, depth=1)
            order = await client.place_order(SPOT, "BUY", "LIMIT", 0.001,
                                             round(book.bids[0].price * 0.5, 1),
                                             time_in_force="GTC")
            with pytest.raises(AstraError):
                await client.revoke_api_key(f"../orders?market={SPOT}")
            still = await client.order(order.order_id, SPOT)
            await client.cancel_order(SPOT, order.order_id)
            return still

    still = asyncio.run(asyncio.wait_for(scenario(), BOUND))
    assert still.status in ("NEW", "PARTIALLY_FILLED"), still


def test_watch_orderbook_refuses_a_depth_below_one(served):
    client = AsyncAstra(served.base, served.token)
    for depth in (0, -3, 2.5):
        with pytest.raises(AstraError) as caught:
            client.watch_orderbook(SPOT, depth)
        assert caught.value.parameter == "depth"


def test_closing_the_client_ends_a_running_watch(served):
    async def scenario():
        client = AsyncAstra(served.base, served.token, timeout=10)
        books = client.watch_orderbook(SPOT, 5)
        first = await anext(books)
        assert first.synced
        await client.close()
        with pytest.raises(ClientClosed):
            async for _ in books:  # a few buffered updates at most, then the end
                pass
        with pytest.raises(ClientClosed):
            await client.markets("SIM")
        return client.transport._session

    session = asyncio.run(asyncio.wait_for(scenario(), BOUND))
    assert session is None  # no new session was opened after close()


def test_the_sync_client_works_inside_a_running_event_loop(served):
    async def scenario():
        with Astra(served.base, served.token, timeout=20) as client:
            return [m.symbol for m in client.markets("SIM")]

    symbols = asyncio.run(asyncio.wait_for(scenario(), BOUND))
    assert SPOT in symbols


def _book(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    env.pop("ASTRA_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "astra", "book", *args], capture_output=True,
                          text=True, timeout=BOUND, env=env)


def test_astra_book_says_what_is_wrong_and_exits_non_zero(served):
    wrong_key = _book(SPOT, "--url", served.base, "--key", "astra_wrong", "--count", "1")
    assert wrong_key.returncode == 1
    assert wrong_key.stderr.startswith("astra book: UNAUTHORIZED"), wrong_key.stderr
    unknown = _book("SIM-SPOT-NOPE-USDT", "--url", served.base, "--key", served.token,
                    "--count", "1")
    assert unknown.returncode == 1
    assert "MARKET_NOT_FOUND" in unknown.stderr, unknown.stderr
    # Port 9 on loopback: nothing listens (the discard port needs root to serve).
    unreachable = _book(SPOT, "--url", "http://127.0.0.1:9", "--key", served.token,
                        "--count", "1")
    assert unreachable.returncode == 1
    assert "TRANSPORT_ERROR" in unreachable.stderr and "cannot connect" in unreachable.stderr
    assert unreachable.stdout == ""  # no ladder of an empty, "disconnected" book
    depth = _book(SPOT, "--url", served.base, "--key", served.token, "--depth", "0",
                  "--count", "1")
    assert depth.returncode == 2 and "--depth" in depth.stderr
    for result in (wrong_key, unknown, unreachable, depth):
        assert "Traceback" not in result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_watch_orderbook_survives_a_gateway_restart(tmp_path):
    """``astra serve`` stopped (Ctrl-C) and started again on the same data dir and port: the
    watch yields a disconnected book meanwhile, never raises, and is synced again after."""
    from tests.serve_process import ServedAstra

    port = _free_port()
    server = ServedAstra(tmp_path / "data", "--port", str(port)).start()
    seen: list[tuple[str, int | None]] = []

    async def scenario():
        async with AsyncAstra(server.base, server.token, timeout=10, max_backoff=0.5) as client:
            books = client.watch_orderbook(SPOT, 5, yield_resyncs=True)
            async for book in books:
                if book.synced:
                    break
            seen.append(("synced", book.update_id))
            await asyncio.to_thread(server.stop)
            async for book in books:
                if not book.synced:
                    break
            seen.append((book.state, None))
            await asyncio.to_thread(server.start)
            async for book in books:
                if book.synced and book.bids and book.asks:
                    break
            seen.append(("synced", book.update_id))
            await books.aclose()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 4 * BOUND))
    finally:
        server.stop()
    assert [state for state, _ in seen] == ["synced", "disconnected", "synced"], seen
    assert server.base == f"http://127.0.0.1:{port}"
