"""KuCoin futures user data (``KucoinVenue.run_user_stream`` with futures markets loaded)
against two fake KuCoin REST bases on 127.0.0.1, one per side, each with its own private
WebSocket (``FakeKucoin`` of ``test_user_stream.py``): the spot one (``api.kucoin.com``'s role)
and the futures one (``api-futures.kucoin.com``'s), so a token is known to come from the base
that should hand it out.

The futures connect token is ``POST /api/v1/bullet-private`` on the futures base (ccxt.pro's
``negotiate(privateChannel=True, isFuturesMethod=True)`` -> ``futuresPrivatePostBulletPrivate``),
signed with KuCoin's v2 API-key scheme, recomputed here from the test secret. The futures
WebSocket (``connectId=privateFutures``) is subscribed to ``/contractMarket/tradeOrders``
(orders and fills) and ``/contractAccount/wallet`` (balances) with ``privateChannel: true`` and
pushes messages shaped as KuCoin's futures "Private Channels" docs show them: ``orderChange``
of an order ``open`` -> ``match`` -> ``match`` -> ``filled`` (``XBTUSDTM``, sizes in lots,
times in nanoseconds) and the wallet's ``walletBalance.change`` and (deprecated, still sent to
accounts that never switched margin mode) ``availableBalance.change``/``orderMargin.change``/
``withdrawHold.change``.

Checked: the normalized Order, Fill and Balance values (``KUCOIN-PERP-XBT-USDT``, quantities
in lots: the gateway converts to base units later), a dropped futures connection leading to
``on_resync`` and a whole new client (fresh tokens from both bases, both sides subscribed
again, the old spot connection closed), a spot and a futures event arriving together each
delivered once (ccxt.pro shares its order and trade caches between the two sides: see
``astra.venues.kucoin.userdata``), ``futures_user_stream = false`` opening no futures
connection, and the secret and passphrase never on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.venues.kucoin.test_user_stream import (
    BALANCE,
    SPOT_TOPICS,
    FakeKucoin,
    _b64_hmac,
)
from tests.venues.loopback import UserSink, until

from astra.core._trading import Balance, Fill, Liquidity, OrderStatus, OrderType
from astra.core.credentials import ExchangeCredentials
from astra.venues.kucoin import KucoinUrls, KucoinVenue
from astra.venues.kucoin.symbols import parse_ccxt_markets

DATA = Path(__file__).parent / "data"
PERP = "KUCOIN-PERP-XBT-USDT"
FUTURES_TOPICS = frozenset({"/contractMarket/tradeOrders", "/contractAccount/wallet"})
ORDERS, WALLET = "/contractMarket/tradeOrders", "/contractAccount/wallet"
FOID = "247822202957807616"
CID = "astraFuturesStream01"
T0 = 1731898619520000000  # nanoseconds, as KuCoin futures sends its times

# /contractMarket/tradeOrders, subject "orderChange" (KuCoin futures docs): a limit sell of
# 5 lots (XBTUSDTM: 0.001 XBT a lot) resting, matched for 2 then 3 lots, then done.
ORDER_OPEN = {
    "orderId": FOID, "symbol": "XBTUSDTM", "type": "open", "status": "open",
    "orderType": "limit", "side": "sell", "price": "90500.0", "size": "5",
    "remainSize": "5", "filledSize": "0", "canceledSize": "0", "clientOid": CID,
    "orderTime": T0, "ts": T0 + 1_000_000, "marginMode": "ISOLATED", "tradeType": "trade",
    "positionSide": "BOTH",
}
ORDER_MATCH_1 = {  # a maker match: status stays "open"; liquidity/feeType on matches only
    **ORDER_OPEN, "type": "match", "status": "open", "matchSize": "2", "matchPrice": "90500.0",
    "tradeId": "1794100537695", "liquidity": "maker", "feeType": "makerFee",
    "remainSize": "3", "filledSize": "2", "ts": T0 + 2_000_000_000,
}
ORDER_MATCH_2 = {
    **ORDER_MATCH_1, "matchSize": "3", "matchPrice": "90500.0", "tradeId": "1794100537702",
    "remainSize": "0", "filledSize": "5", "ts": T0 + 3_000_000_000,
}
ORDER_FILLED = {  # "filled": the order is done; no trade in it
    **ORDER_OPEN, "type": "filled", "status": "done", "remainSize": "0", "filledSize": "5",
    "ts": T0 + 3_000_100_000,
}
WALLET_BALANCE = {  # subject "walletBalance.change" (isolated margin: 20.7308 USDT in positions)
    "currency": "USDT", "walletBalance": "49.40260236", "availableBalance": "28.67180236",
    "holdBalance": "0", "isolatedOrderMargin": "0", "isolatedPosMargin": "20.7308",
    "isolatedUnPnl": "0.0979", "isolatedFundingFeeMargin": "0", "crossOrderMargin": "0",
    "crossPosMargin": "0", "crossUnPnl": "0", "equity": "49.50050236",
    "totalCrossMargin": "28.67180236", "maxWithdrawAmount": "28.67180236",
    "availableMargin": "28.67180236", "version": "2874", "timestamp": "1731898622520",
}
AVAILABLE_BALANCE = {  # subject "availableBalance.change" (deprecated; its doc shape)
    "availableBalance": 5923, "holdBalance": 2312, "currency": "USDT", "timestamp": 1553842862614,
}
ORDER_MARGIN = {"orderMargin": 5923, "currency": "USDT", "timestamp": 1553842862614}
WITHDRAW_HOLD = {"withdrawHold": 5923, "currency": "USDT", "timestamp": 1553842862614}


@dataclass
class Env:
    spot: FakeKucoin
    futures: FakeKucoin
    creds: ExchangeCredentials
    sink: UserSink
    task: asyncio.Task


def _creds() -> ExchangeCredentials:
    return ExchangeCredentials(  # test credentials made here
        exchange="KUCOIN", api_key=secrets.token_hex(12), secret=secrets.token_hex(18),
        passphrase="pass-" + secrets.token_urlsafe(12))


@contextlib.asynccontextmanager
async def streaming(**options) -> AsyncIterator[Env]:
    """Both fakes up, the venue's user stream running into a fresh sink; everything stopped
    and closed afterwards."""
    creds = _creds()
    symbols = json.loads((DATA / "private_rest.json").read_text())["symbols"]
    contracts = json.loads((DATA / "contracts_active.json").read_text())

    async def markets():
        return parse_ccxt_markets(symbols, contracts)

    spot, futures = FakeKucoin(creds), FakeKucoin(creds, FUTURES_TOPICS)
    async with spot.running(), futures.running():
        urls = KucoinUrls(spot_rest=spot.url, futures_rest=futures.url)
        venue = KucoinVenue(urls=urls, markets_source=markets, **options)
        sink = UserSink()
        task = asyncio.create_task(venue.run_user_stream(creds.ccxt_config(), sink))
        try:
            yield Env(spot, futures, creds, sink, task)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await venue.close()
    for fake in (spot, futures):
        for text in fake.wire:
            assert creds.secret not in text and creds.passphrase not in text


async def _wait(*events: asyncio.Event) -> None:
    async with asyncio.timeout(5):
        for event in events:
            await event.wait()


def _balances(sink: UserSink) -> list[Balance]:
    return [b for message in sink.balances for b in message]


def _check_signed(fake: FakeKucoin, creds: ExchangeCredentials) -> None:
    """Every bullet-private call carried KuCoin's v2 signature, recomputed here."""
    assert fake.bullets
    for headers, (path, body) in zip(fake.bullets, fake.bullet_requests, strict=True):
        assert path == "/api/v1/bullet-private"
        assert headers["KC-API-KEY"] == creds.api_key
        assert headers["KC-API-KEY-VERSION"] == "2"
        assert headers["KC-API-SIGN"] == _b64_hmac(
            creds.secret, headers["KC-API-TIMESTAMP"] + "POST" + path + body)
        assert headers["KC-API-PASSPHRASE"] == _b64_hmac(creds.secret, creds.passphrase)


async def test_futures_orders_fills_and_wallet_are_normalized():
    async with streaming() as env:
        spot, futures, creds, sink = env.spot, env.futures, env.creds, env.sink
        await _wait(spot.subscribed, futures.subscribed)
        assert sink.resyncs == ["user stream (re)connecting"]

        # One signed futures token, from the futures base, used once on the futures socket.
        assert len(futures.bullets) == 1 and len(futures.connects) == 1
        _check_signed(futures, creds)
        _check_signed(spot, creds)
        connect = futures.connects[0]
        assert (connect["token"], connect["connectId"], connect["privateChannel"]) == (
            "tok1", "privateFutures", "true")
        assert spot.connects[0]["connectId"] == "private"
        subs = futures.subscribes[0]
        assert {s["topic"] for s in subs} == FUTURES_TOPICS  # nothing spot on this socket
        assert {s["topic"] for s in spot.subscribes[0]} == SPOT_TOPICS
        for s in subs:
            assert (s["type"], s["privateChannel"], s["response"]) == ("subscribe", True, True)
            assert set(s) == {"id", "type", "topic", "response", "privateChannel"}

        # open: a new order, its size in lots, its nanosecond time in milliseconds.
        await futures.push(ORDERS, "orderChange", ORDER_OPEN)
        await until(lambda: sink.orders, sink.changed)
        order = sink.orders[-1]
        assert (order.order_id, order.client_order_id, order.market) == (FOID, CID, PERP)
        assert (order.side, order.type, order.status) == ("SELL", OrderType.LIMIT,
                                                          OrderStatus.NEW)
        assert (order.quantity, order.filled_quantity, order.price) == (5.0, 0.0, 90500.0)
        assert order.created_at == T0 // 1_000_000
        assert not sink.fills

        # match: a fill (price, lots, maker, trade id) and the order partially filled.
        await futures.push(ORDERS, "orderChange", ORDER_MATCH_1)
        await until(lambda: sink.fills and len(sink.orders) >= 2, sink.changed)
        assert sink.fills == [Fill(
            fill_id="1794100537695", order_id=FOID, market=PERP, side="SELL", price=90500.0,
            quantity=2.0, time=(T0 + 2_000_000_000) // 1_000_000, fee=None, fee_asset=None,
            liquidity=Liquidity.MAKER)]
        order = sink.orders[-1]
        assert (order.order_id, order.status) == (FOID, OrderStatus.PARTIALLY_FILLED)
        assert (order.quantity, order.filled_quantity, order.average_price) == (5.0, 2.0, 90500.0)

        await futures.push(ORDERS, "orderChange", ORDER_MATCH_2)
        await until(lambda: len(sink.fills) >= 2 and len(sink.orders) >= 3, sink.changed)
        fill = sink.fills[-1]
        assert (fill.fill_id, fill.quantity, fill.price, fill.liquidity) == (
            "1794100537702", 3.0, 90500.0, Liquidity.MAKER)
        assert sink.orders[-1].filled_quantity == 5.0

        # filled: the order done (FILLED), no further fill.
        await futures.push(ORDERS, "orderChange", ORDER_FILLED)
        await until(lambda: len(sink.orders) >= 4, sink.changed)
        order = sink.orders[-1]
        assert (order.status, order.quantity, order.filled_quantity) == (
            OrderStatus.FILLED, 5.0, 5.0)
        assert [o.status for o in sink.orders] == [
            OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED, OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED]
        assert len(sink.fills) == 2 and {o.market for o in sink.orders} == {PERP}

        # The wallet: free is the available balance, locked the held funds and the isolated
        # position margin (ccxt's reading), total their sum: here the wallet balance.
        await futures.push(WALLET, "walletBalance.change", WALLET_BALANCE)
        await until(lambda: sink.balances, sink.changed)
        assert sink.balances[-1] == [Balance(asset="USDT", free=28.67180236,
                                             locked=20.7308, total=49.40260236, account="future")]

        # The deprecated events: availableBalance.change carries free and held funds; an
        # order margin or withdrawal hold alone says nothing of the balance.
        await futures.push(WALLET, "availableBalance.change", AVAILABLE_BALANCE)
        await until(lambda: len(sink.balances) >= 2, sink.changed)
        assert sink.balances[-1] == [Balance(asset="USDT", free=5923.0, locked=2312.0,
                                             total=8235.0, account="future")]
        for subject, data in (("orderMargin.change", ORDER_MARGIN),
                              ("withdrawHold.change", WITHDRAW_HOLD)):
            await futures.push(WALLET, subject, data)
            await asyncio.sleep(0.3)  # time to be (wrongly) delivered, one at a time
        await futures.push(WALLET, "walletBalance.change", {**WALLET_BALANCE,
                                                            "availableBalance": "30"})
        await until(lambda: _balances(sink)[-1].free == 30.0, sink.changed)
        assert len(sink.balances) == 3, sink.balances
        assert _balances(sink)[-1] == Balance(asset="USDT", free=30.0, locked=20.7308,
                                              total=50.7308, account="future")
        assert sink.resyncs == ["user stream (re)connecting"]  # nothing dropped meanwhile


async def test_a_dropped_futures_connection_resyncs_and_reconnects_with_fresh_tokens():
    async with streaming() as env:
        spot, futures, sink = env.spot, env.futures, env.sink
        await _wait(spot.subscribed, futures.subscribed)
        await futures.push(ORDERS, "orderChange", ORDER_OPEN)
        await until(lambda: sink.orders, sink.changed)

        spot.subscribed.clear()
        futures.subscribed.clear()
        await futures.sockets[-1].close()  # the venue drops the futures connection
        await _wait(spot.subscribed, futures.subscribed)
        # The stream said it lost events and started over before anything new streamed.
        assert sink.resyncs == ["user stream (re)connecting", "user stream lost",
                                "user stream (re)connecting"]
        # A whole new client: a fresh token from each base, each used once.
        assert len(futures.bullets) == 2 and len(spot.bullets) == 2
        _check_signed(futures, env.creds)
        assert [c["token"] for c in futures.connects] == ["tok1", "tok2"]
        assert [c["token"] for c in spot.connects] == ["tok1", "tok2"]
        assert {s["topic"] for s in futures.subscribes[-1]} == FUTURES_TOPICS
        assert {s["topic"] for s in spot.subscribes[-1]} == SPOT_TOPICS
        # The old spot connection was closed by the client, not left open beside the new one.
        await until(lambda: spot.closed == 1, sink.changed)
        assert not spot.sockets[-1].closed and spot.sockets[0].closed

        # Both sides stream again on their new connections.
        await futures.push(ORDERS, "orderChange", ORDER_MATCH_1)
        await until(lambda: sink.fills, sink.changed)
        assert (sink.fills[-1].market, sink.fills[-1].quantity) == (PERP, 2.0)
        assert sink.orders[-1].status == OrderStatus.PARTIALLY_FILLED
        await spot.push("/account/balance", "account.balance", BALANCE)
        await until(lambda: sink.balances, sink.changed)
        assert sink.balances[-1] == [Balance(asset="USDT", free=88.5, locked=360.0,
                                             total=448.5, account="spot")]


async def test_no_futures_connection_when_the_futures_stream_is_off():
    async with streaming(futures_user_stream=False) as env:
        await _wait(env.spot.subscribed)
        await env.spot.push("/account/balance", "account.balance", BALANCE)
        await until(lambda: env.sink.balances, env.sink.changed)
        assert env.futures.bullets == [] and env.futures.connects == []
        assert {s["topic"] for s in env.spot.subscribes[0]} == SPOT_TOPICS


@pytest.mark.parametrize("first", ["spot", "futures"])
async def test_spot_and_futures_events_at_once_are_each_delivered_once(first):
    """The spot and futures watches of one ccxt client share its order and trade caches: an
    order or fill of either side arriving together with one of the other is still delivered
    once, by its own side's loop."""
    spot_match = {  # /spotMarket/tradeOrders "match" (KuCoin docs)
        "symbol": "BTC-USDT", "orderType": "limit", "side": "buy", "liquidity": "taker",
        "orderId": "5efab07953bdea00089965d2", "type": "match", "orderTime": 1593487481683297666,
        "size": "0.1", "filledSize": "0.04", "price": "9000.0", "matchPrice": "9000.0",
        "matchSize": "0.04", "tradeId": "5efab07a4ee4c7000a82d6d9", "clientOid": "spot01",
        "remainSize": "0.06", "status": "match", "ts": 1593487482038606180,
    }
    async with streaming() as env:
        spot, futures, sink = env.spot, env.futures, env.sink
        await _wait(spot.subscribed, futures.subscribed)
        pushes = [spot.push("/spotMarket/tradeOrders", "orderChange", spot_match),
                  futures.push(ORDERS, "orderChange", ORDER_MATCH_1)]
        await asyncio.gather(*(pushes if first == "spot" else pushes[::-1]))
        await until(lambda: len(sink.fills) >= 2 and len(sink.orders) >= 2, sink.changed)
        await asyncio.sleep(0.3)  # anything delivered twice would be here by now
        assert sorted(f.fill_id for f in sink.fills) == ["1794100537695",
                                                         "5efab07a4ee4c7000a82d6d9"]
        assert sorted(o.market for o in sink.orders) == [PERP, "KUCOIN-SPOT-BTC-USDT"]
