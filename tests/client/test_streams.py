"""The SDK's WebSocket streams against a real ``astra serve``: trades, the private ORDERS /
FILLS / BALANCES streams, the OTC quote stream; handshake refusals raised as the server's
errors (parameter, scope); a revoked key ends its streams with ``Unauthorized``."""

from __future__ import annotations

import asyncio

import pytest

from astra.client import AsyncAstra
from astra.core import AstraError, Forbidden, InvalidParameter, MarketNotFound, Unauthorized
from astra.core._otc import QuoteResponse
from astra.core._trading import BalancesMessage, FillsMessage, OrdersMessage, ResyncMessage

from .helpers import BOUND

SPOT = "SIM-SPOT-BTC-USDT"


async def _first(stream, accept) -> object:
    """The first message of ``stream`` that ``accept`` takes."""
    async for msg in stream:
        if accept(msg):
            return msg
    raise AssertionError("the stream ended")


async def test_watch_trades_yields_batches_of_the_market(served):
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND):
        stream = client.watch_trades(SPOT)
        batch = await _first(stream, lambda m: getattr(m, "trades", None))
        assert all(t.price > 0 and t.quantity > 0 for t in batch.trades)
        recent = {t.trade_id for t in await client.trades(SPOT, 1000)}
        assert batch.trades[0].trade_id in recent
        await stream.aclose()


async def test_private_streams_report_an_order_its_fills_and_balances(served):
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND * 2):
        orders = client.watch_orders("SIM")
        fills = client.watch_fills("SIM")
        balances = client.watch_balances("SIM")
        # Each stream opens with the gateway's resync (the user stream (re)connected):
        # from then on nothing is missed.
        for stream in (orders, fills, balances):
            first = await anext(stream)
            assert type(first) is ResyncMessage and first.exchange == "SIM"
        order = await client.place_order(SPOT, "BUY", "MARKET", 0.001)
        seen = await _first(orders, lambda m: isinstance(m, OrdersMessage) and any(
            o.order_id == order.order_id for o in m.orders))
        assert next(o for o in seen.orders if o.order_id == order.order_id).market == SPOT
        filled = await _first(fills, lambda m: isinstance(m, FillsMessage) and any(
            f.order_id == order.order_id for f in m.fills))
        assert sum(f.quantity for f in filled.fills if f.order_id == order.order_id) > 0
        update = await _first(balances, lambda m: isinstance(m, BalancesMessage))
        assert update.exchange == "SIM" and {"BTC", "USDT"} & {b.asset for b in
                                                              update.balances}
        for stream in (orders, fills, balances):
            await stream.aclose()


async def test_watch_quotes_streams_fresh_signed_quotes(served):
    account = served.otc_account
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND):
        stream = client.watch_quotes(account, "BTC", "USDT", from_amount="0.01")
        first, second = await anext(stream), await anext(stream)
        await stream.aclose()
        for answer in (first, second):
            assert type(answer) is QuoteResponse and answer.quote.account_id == account
            assert str(answer.quote.from_asset_quantity) == "0.01"
        assert second.quote.expiry_time > first.quote.expiry_time
        assert first.quote_id != second.quote_id
        # A streamed quote is a quote like any other: it can be accepted.
        trade = (await client.accept_quote(second)).trade
        assert trade.quote_id == second.quote_id


async def test_handshake_refusals_raise_the_servers_error(served):
    async with AsyncAstra(served.base, served.token) as client, asyncio.timeout(BOUND):
        with pytest.raises(MarketNotFound) as caught:
            await anext(client.watch_orderbook("SIM-SPOT-NOPE-USDT"))
        assert (caught.value.status, caught.value.parameter) == (404, "market")
        with pytest.raises(InvalidParameter) as caught:
            await anext(client.watch_quotes(served.otc_account, "BTC", "USDT"))
        assert caught.value.parameter == "fromQty"
        reader = await client.create_api_key(["read"], "sdk-stream-reader")
        async with AsyncAstra(served.base, reader.token) as limited:
            with pytest.raises(Forbidden) as caught:
                await anext(limited.watch_orders("SIM"))
            assert caught.value.status == 403 and "'trade'" in caught.value.message
        await client.revoke_api_key(reader.key_id)


async def test_revoking_a_key_ends_its_open_stream(served):
    async with AsyncAstra(served.base, served.token) as admin, asyncio.timeout(BOUND):
        key = await admin.create_api_key(["read"], "sdk-revoked")
        async with AsyncAstra(served.base, key.token) as client:
            books = client.watch_orderbook(SPOT)
            assert (await anext(books)).synced
            await admin.revoke_api_key(key.key_id)
            with pytest.raises(Unauthorized) as caught:
                while True:  # updates already on the way, then the close (1008)
                    await anext(books)
            assert isinstance(caught.value, AstraError)
            assert caught.value.code == "UNAUTHORIZED"
