"""The OTC desk's HTTP and WebSocket routes through a real gateway on loopback, over the three
simulated venues (the ``otc_desk`` fixture): the reference's request-quote and accept-quote
shapes (amounts as JSON numbers, ``expiryTime`` in microseconds, a 64-hex signature), the
GET and path forms, converts newest first, accounts and their owner, the quote stream, and
every malformed input a 400 naming the field, never a 500."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
import uuid
from collections import Counter
from decimal import Decimal

import aiohttp
import msgspec
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from astra.server.errors import error_middleware
from astra.server.openapi import openapi_document
from astra.server.otc import otc_routes
from astra.server.sessions import REVOKED_CLOSE_CODE, REVOKED_REASON

SMART = "SMART-SPOT-BTC-USDT"
HEX64 = re.compile(r"[0-9a-f]{64}")
QUOTE_FIELDS = {"accountId", "fromAsset", "toAsset", "fromAssetQuantity", "toAssetQuantity",
                "expiryTime", "signature"}


def _json(text: str):
    # Decimal for every non-integer number: amounts compare exactly, and a string would stay
    # a str (so "number, not string" is checkable).
    return json.loads(text, parse_float=Decimal)


async def call(http, method: str, path: str, **kw) -> tuple[int, object, str]:
    async with asyncio.timeout(30), http.request(method, path, **kw) as resp:
        text = await resp.text()
    return resp.status, _json(text), text


_ENCODER = msgspec.json.Encoder(decimal_format="number")


def _dumps(body) -> str:
    # What a client sends back is what it received: Decimals as JSON numbers, digit for digit.
    return _ENCODER.encode(body).decode()


def _session(desk, token: str | None = None) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        desk.gw.base_url, headers={"x-astra-api-key": f"Bearer {token or desk.token}"},
        json_serialize=_dumps)


async def _handshake(http, path: str) -> tuple[int, dict]:
    """A WebSocket handshake refused: its status and JSON body (``ws_connect`` keeps only
    the status)."""
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    async with asyncio.timeout(30), http.get(path, headers=headers) as resp:
        assert resp.status != 101, "the handshake was accepted"
        return resp.status, _json(await resp.text())


async def _synced(desk, market: str = SMART) -> None:
    """Every member book of ``market`` synced in the gateway (quotes need them)."""
    async with asyncio.timeout(30):
        while True:
            books = await desk.gw.engine.member_books(market)
            if books.members and all(m.state == "synced" for m in books.members):
                return
            await asyncio.sleep(0.05)


def _is_number(value) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def _check_quote(answer: dict, desk, account_id: str, before: float, after: float) -> dict:
    """The reference's shape, with this desk's TTL; returns the quote."""
    assert set(answer) == {"quote", "quoteId"}, answer
    assert uuid.UUID(answer["quoteId"])
    quote = answer["quote"]
    assert set(quote) == QUOTE_FIELDS, quote
    assert quote["accountId"] == account_id
    assert _is_number(quote["fromAssetQuantity"]) and _is_number(quote["toAssetQuantity"])
    assert quote["fromAssetQuantity"] > 0 and quote["toAssetQuantity"] > 0
    assert isinstance(quote["expiryTime"], int) and HEX64.fullmatch(quote["signature"])
    ttl_us = int(desk.gw.desk.config.quote_ttl * 1_000_000)
    # Microseconds: priced between the two clock reads, then the TTL (a few µs less when two
    # equal quotes met in one microsecond).
    assert int(before * 1e6) + ttl_us - 10 <= quote["expiryTime"] <= int(after * 1e6) + ttl_us
    return quote


async def _quote(http, desk, account_id: str, **amount) -> dict:
    body = {"accountId": account_id, "fromAsset": "BTC", "toAsset": "USDT", **amount}
    status, answer, _ = await call(http, "POST", "/request-quote", json=body)
    assert status == 200, answer
    return answer


async def _balances(http, account_id: str) -> dict[str, Decimal]:
    status, account, _ = await call(http, "GET", f"/otc/accounts/{account_id}")
    assert status == 200, account
    return {a: Decimal(str(v)) for a, v in account["balances"].items()}


# -- request-quote --------------------------------------------------------------------------


async def test_post_and_get_answer_the_references_shape(otc_desk):
    desk = otc_desk
    await _synced(desk)
    async with _session(desk) as http:
        before = time.time()
        status, answer, text = await call(http, "POST", "/request-quote", json={
            "accountId": desk.account_id, "fromAsset": "BTC", "toAsset": "USDT",
            "fromAmount": 0.01})
        after = time.time()
        assert status == 200, answer
        quote = _check_quote(answer, desk, desk.account_id, before, after)
        assert quote["fromAsset"] == "BTC" and quote["toAsset"] == "USDT"
        assert quote["fromAssetQuantity"] == Decimal("0.01")  # the exact size asked for
        assert '"fromAssetQuantity":0.01,' in text  # a JSON number, the Decimal's own digits
        assert -quote["toAssetQuantity"].as_tuple().exponent <= 6  # USDT's precision
        # GET: the same names as query parameters, the other amount (exact input).
        before = time.time()
        status, answer, text = await call(http, "GET", "/request-quote", params={
            "accountId": desk.account_id, "fromAsset": "BTC", "toAsset": "USDT",
            "toAmount": "250.5"})
        after = time.time()
        assert status == 200, answer
        quote2 = _check_quote(answer, desk, desk.account_id, before, after)
        assert quote2["toAssetQuantity"] == Decimal("250.5") and '"toAssetQuantity":250.5' in text
        assert -quote2["fromAssetQuantity"].as_tuple().exponent <= 8  # BTC's precision
        assert quote2["signature"] != quote["signature"]
        # A decimal string is accepted as the same amount.
        status, answer, _ = await call(http, "POST", "/request-quote", json={
            "accountId": desk.account_id, "fromAsset": "BTC", "toAsset": "USDT",
            "fromAmount": "0.0100"})
        assert status == 200 and answer["quote"]["fromAssetQuantity"] == Decimal("0.01"), answer


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize(("amounts", "parameter"), [
    ({"fromAmount": "0.01", "toAmount": "100"}, "toAmount"),  # both: the second is named
    ({}, "fromAmount"),  # neither
])
async def test_exactly_one_amount(otc_desk, method, amounts, parameter):
    desk = otc_desk
    fields = {"accountId": desk.account_id, "fromAsset": "BTC", "toAsset": "USDT", **amounts}
    kw = {"json": fields} if method == "POST" else {"params": fields}
    async with _session(desk) as http:
        status, err, _ = await call(http, method, "/request-quote", **kw)
    assert status == 400 and err["parameter"] == parameter, err
    assert "exactly one of fromAmount and toAmount" in err["message"]


BASE = {"fromAsset": "BTC", "toAsset": "USDT"}


@pytest.mark.parametrize(("body", "parameter"), [
    ({**BASE, "fromAmmount": 1}, "fromAmmount"),  # a misspelt field: not a quote for another size
    ({**BASE, "fromAmount": "abc"}, "fromAmount"),
    ({**BASE, "fromAmount": "NaN"}, "fromAmount"),
    ({**BASE, "fromAmount": "Infinity"}, "fromAmount"),
    ({**BASE, "fromAmount": "-0.5"}, "fromAmount"),
    ({**BASE, "fromAmount": -0.5}, "fromAmount"),
    ({**BASE, "fromAmount": 0}, "fromAmount"),
    ({**BASE, "toAmount": "1e400"}, "toAmount"),  # huge
    ({**BASE, "toAmount": "1e999999999"}, "toAmount"),  # absurd exponent
    ({**BASE, "toAmount": "1" * 5000}, "toAmount"),  # 5000 digits
    ({**BASE, "fromAmount": 0.123456789}, "fromAmount"),  # past BTC's 8 decimal places
    ({**BASE, "toAmount": 1.1234567}, "toAmount"),  # past USDT's 6
    ({**BASE, "fromAmount": True}, "fromAmount"),
    ({**BASE, "fromAmount": [1]}, "fromAmount"),
    ({"fromAsset": "btc", "toAsset": "USDT", "fromAmount": 1}, "fromAsset"),  # lower case
    ({"fromAsset": "BTC", "toAsset": "X" * 17, "fromAmount": 1}, "toAsset"),
    ({"fromAsset": "BTC", "toAsset": 5, "fromAmount": 1}, "toAsset"),
    ({"toAsset": "USDT", "fromAmount": 1}, "fromAsset"),  # missing
])
async def test_bad_request_bodies_are_400_naming_the_field(otc_desk, body, parameter):
    desk = otc_desk
    async with _session(desk) as http:
        status, err, _ = await call(http, "POST", "/request-quote",
                                    json={"accountId": desk.account_id, **body})
    assert status == 400 and err["parameter"] == parameter, err
    assert err["code"] in ("INVALID_PARAMETER", "MISSING_PARAMETER"), err


@pytest.mark.parametrize(("raw", "parameter"), [
    (b"{not json", "body"),
    (b"[1, 2]", "body"),
    (b"", "body"),
    (b'{"accountId": 7, "fromAsset": "BTC", "toAsset": "USDT", "fromAmount": 1}', "accountId"),
])
async def test_malformed_json_is_400(otc_desk, raw, parameter):
    async with _session(otc_desk) as http:
        status, err, _ = await call(http, "POST", "/request-quote", data=raw,
                                    headers={"content-type": "application/json"})
    assert status == 400 and err["parameter"] == parameter, err


@pytest.mark.parametrize("number", ["1e400", "1" + "0" * 400, "-1e400", "1e-400", "0.0"])
async def test_json_numbers_out_of_range_are_400(otc_desk, number):
    """Raw JSON numbers a float could not hold: decoded exactly, refused by value."""
    desk = otc_desk
    raw = (f'{{"accountId": "{desk.account_id}", "fromAsset": "BTC", "toAsset": "USDT", '
           f'"fromAmount": {number}}}').encode()
    async with _session(desk) as http:
        status, err, _ = await call(http, "POST", "/request-quote", data=raw,
                                    headers={"content-type": "application/json"})
    assert (status, err["parameter"]) == (400, "fromAmount"), err


@pytest.mark.parametrize(("query", "parameter"), [
    ({"fromAmount": "abc"}, "fromAmount"),
    ({"fromAmount": "NaN"}, "fromAmount"),
    ({"fromAmount": "-1"}, "fromAmount"),
    ({"fromAmount": ""}, "fromAmount"),
    ({"toAmount": "1e400"}, "toAmount"),
    ({"fromAmount": "1", "colour": "red"}, "colour"),  # unknown parameter
])
async def test_bad_query_parameters_are_400_naming_them(otc_desk, query, parameter):
    desk = otc_desk
    params = {"accountId": desk.account_id, **BASE, **query}
    async with _session(desk) as http:
        status, err, _ = await call(http, "GET", "/request-quote", params=params)
        assert status == 400 and err["parameter"] == parameter, err
        # A name given twice: which would count? Refused.
        status, err, _ = await call(http, "GET", "/request-quote", params=[
            ("accountId", desk.account_id), ("fromAsset", "BTC"), ("toAsset", "USDT"),
            ("fromAmount", "1"), ("fromAmount", "2")])
        assert status == 400 and err["parameter"] == "fromAmount", err


async def test_unknown_and_foreign_accounts(otc_desk):
    desk = otc_desk
    await _synced(desk)
    other_token = desk.key_store.create("other").token
    async with _session(desk) as mine, _session(desk, other_token) as theirs:
        body = {"accountId": str(uuid.uuid4()), **BASE, "fromAmount": 0.01}
        status, err, _ = await call(mine, "POST", "/request-quote", json=body)
        assert (status, err["code"], err["parameter"]) == (404, "ACCOUNT_NOT_FOUND", "accountId")
        body["accountId"] = desk.account_id
        status, err, _ = await call(theirs, "POST", "/request-quote", json=body)
        assert (status, err["code"], err["parameter"]) == (403, "FORBIDDEN", "accountId"), err
        for path in (f"/otc/accounts/{desk.account_id}", f"/converts/{desk.account_id}"):
            status, err, _ = await call(theirs, "GET", path)
            assert (status, err["code"]) == (403, "FORBIDDEN"), (path, err)
        status, listed, _ = await call(theirs, "GET", "/otc/accounts")
        assert status == 200 and listed == {"accounts": []}
        # A quote of mine, accepted with their key: refused, nothing booked.
        answer = await _quote(mine, desk, desk.account_id, fromAmount="0.01")
        status, err, _ = await call(theirs, "POST", "/accept-quote", json=answer)
        assert (status, err["code"]) == (403, "FORBIDDEN"), err
        status, converts, _ = await call(mine, "GET", f"/converts/{desk.account_id}")
        assert status == 200 and converts == {"converts": []}


# -- accept-quote ---------------------------------------------------------------------------


async def test_accept_books_the_trade_once(otc_desk):
    desk = otc_desk
    await _synced(desk)
    async with _session(desk) as http:
        start = await _balances(http, desk.account_id)
        answer = await _quote(http, desk, desk.account_id, fromAmount=0.01)
        quote = answer["quote"]
        before = time.time()
        status, accepted, text = await call(http, "POST", "/accept-quote",
                                            json={"quote": quote})  # as the reference sends it
        after = time.time()
        assert status == 200, accepted
        trade = accepted["trade"]
        assert trade["quoteId"] == answer["quoteId"] and trade["accountId"] == desk.account_id
        assert (trade["fromAsset"], trade["toAsset"]) == ("BTC", "USDT")
        assert trade["fromAssetQuantity"] == quote["fromAssetQuantity"]
        assert trade["toAssetQuantity"] == quote["toAssetQuantity"]
        assert _is_number(trade["price"]) and '"price":' in text and '"price":"' not in text
        assert abs(trade["price"] * quote["fromAssetQuantity"] - quote["toAssetQuantity"]) \
            <= quote["toAssetQuantity"] * Decimal("1e-11")
        assert int(before * 1000) <= trade["time"] <= int(after * 1000) + 1
        assert uuid.UUID(trade["tradeId"])
        after_balances = await _balances(http, desk.account_id)
        assert after_balances["BTC"] == start["BTC"] + quote["fromAssetQuantity"]
        assert after_balances["USDT"] == start["USDT"] - quote["toAssetQuantity"]
        # The same account again (the whole request-quote answer this time): the same trade.
        status, again, _ = await call(http, "POST", "/accept-quote", json=answer)
        assert status == 200 and again == accepted
        assert await _balances(http, desk.account_id) == after_balances
        # A field changed after signing: refused.
        tampered = {**quote, "toAssetQuantity": quote["toAssetQuantity"] - 1}
        status, err, _ = await call(http, "POST", "/accept-quote", json={"quote": tampered})
        assert (status, err["code"]) == (400, "INVALID_QUOTE_SIGNATURE"), err


async def test_the_path_form_takes_a_bare_quote_or_the_body(otc_desk):
    desk = otc_desk
    await _synced(desk)
    async with _session(desk) as http:
        other_account = desk.otc_account({"USDT": "1000"})
        first = await _quote(http, desk, desk.account_id, fromAmount=0.01)
        # The quote's account must be the path's.
        status, err, _ = await call(http, "POST", f"/otc/accept-quote/{other_account}",
                                    json=first["quote"])
        assert (status, err["parameter"]) == (400, "accountId"), err
        status, bare, _ = await call(http, "POST", f"/otc/accept-quote/{desk.account_id}",
                                     json=first["quote"])
        assert status == 200 and bare["trade"]["quoteId"] == first["quoteId"], bare
        second = await _quote(http, desk, desk.account_id, toAmount=100)
        status, wrapped, _ = await call(http, "POST", f"/otc/accept-quote/{desk.account_id}",
                                        json=second)
        assert status == 200 and wrapped["trade"]["quoteId"] == second["quoteId"], wrapped
        assert wrapped["trade"]["toAssetQuantity"] == Decimal(100)
        status, err, _ = await call(http, "POST", f"/otc/accept-quote/{desk.account_id}",
                                    json={**second["quote"], "extra": 1})
        assert (status, err["parameter"]) == (400, "extra"), err


@pytest.mark.parametrize(("change", "parameter"), [
    ({"expiryTime": 1.5}, "quote.expiryTime"),
    ({"fromAssetQuantity": "abc"}, "quote.fromAssetQuantity"),
    ({"signature": None}, "quote.signature"),
    ({"colour": "red"}, "quote.colour"),
])
async def test_bad_accept_bodies_name_the_field(otc_desk, change, parameter):
    desk = otc_desk
    await _synced(desk)
    async with _session(desk) as http:
        quote = (await _quote(http, desk, desk.account_id, fromAmount=0.01))["quote"]
        status, err, _ = await call(http, "POST", "/accept-quote",
                                    json={"quote": {**quote, **change}})
        assert (status, err["parameter"]) == (400, parameter), err
        missing = {k: v for k, v in quote.items() if k != "signature"}
        status, err, _ = await call(http, "POST", "/accept-quote", json={"quote": missing})
        assert (status, err["code"], err["parameter"]) == (
            400, "MISSING_PARAMETER", "quote.signature"), err


@pytest.mark.parametrize("value", ["NaN", "-Infinity", "1e999999999", -1, 0, "1e-99999"])
async def test_absurd_quantities_with_a_real_signature_are_refused_not_500(otc_desk, value):
    """The signature is the desk's own; the quantity beside it is no number the desk signed:
    a 400 naming it (or the signature), nothing booked, on both accept forms."""
    desk = otc_desk
    await _synced(desk)
    async with _session(desk) as http:
        answer = await _quote(http, desk, desk.account_id, fromAmount=0.01)
        for field in ("fromAssetQuantity", "toAssetQuantity"):
            quote = {**answer["quote"], field: value}
            for path, body in (("/accept-quote", {"quote": quote}),
                               (f"/otc/accept-quote/{desk.account_id}", quote)):
                status, err, _ = await call(http, "POST", path, json=body)
                assert status == 400, (path, field, err)
                assert (err["code"], err["parameter"]) in (
                    ("INVALID_PARAMETER", f"quote.{field}"),
                    ("INVALID_QUOTE_SIGNATURE", "quote")), (path, field, err)
        status, converts, _ = await call(http, "GET", f"/converts/{desk.account_id}")
        assert converts == {"converts": []}


async def test_converts_newest_first_with_limit_and_before(otc_desk):
    desk = otc_desk
    await _synced(desk)
    async with _session(desk) as http:
        trades = []
        for size in ("0.01", "0.02", "0.03"):
            answer = await _quote(http, desk, desk.account_id, fromAmount=size)
            status, accepted, _ = await call(http, "POST", "/accept-quote", json=answer)
            assert status == 200, accepted
            trades.append(accepted["trade"])
            await asyncio.sleep(0.005)  # distinct milliseconds, so "newest" is one trade
        path = f"/converts/{desk.account_id}"
        status, converts, text = await call(http, "GET", path)
        assert status == 200 and converts == {"converts": trades[::-1]}, converts
        assert '"fromAssetQuantity":0.03' in text
        status, converts, _ = await call(http, "GET", path, params={"limit": "1"})
        assert converts == {"converts": [trades[-1]]}
        status, converts, _ = await call(http, "GET", path,
                                         params={"before": str(trades[-1]["time"])})
        assert converts == {"converts": trades[-2::-1]}
        for name, value in (("limit", "0"), ("limit", "1001"), ("limit", "x"), ("before", "-1"),
                            ("before", "1" * 40)):
            status, err, _ = await call(http, "GET", path, params={name: value})
            assert (status, err["parameter"]) == (400, name), (name, value, err)
        status, err, _ = await call(http, "GET", f"/converts/{uuid.uuid4()}")
        assert (status, err["code"]) == (404, "ACCOUNT_NOT_FOUND")


async def test_accounts_list_the_keys_own_with_balances(otc_desk):
    desk = otc_desk
    second = desk.otc_account({"USDT": "12.5"})
    desk.otc_account({"USDT": "1"}, key_id=desk.key_store.create("else").token.split(".")[0])
    async with _session(desk) as http:
        status, listed, text = await call(http, "GET", "/otc/accounts")
        assert status == 200
        by_id = {a["accountId"]: a for a in listed["accounts"]}
        assert set(by_id) == {desk.account_id, second}  # not the other key's
        assert by_id[second]["balances"] == {"USDT": Decimal("12.5")}
        assert '"USDT":12.5' in text  # a number
        first = by_id[desk.account_id]
        assert {a: str(v) for a, v in first["balances"].items()} == {
            "USDT": "100000", "USD": "100000", "BTC": "2", "ETH": "20"}
        assert _is_number(first["spreadBps"]) and first["volumeToday"] == 0
        status, one, _ = await call(http, "GET", f"/otc/accounts/{second}")
        assert status == 200 and one == by_id[second]
        status, err, _ = await call(http, "GET", f"/otc/accounts/{uuid.uuid4()}")
        assert (status, err["code"], err["parameter"]) == (404, "ACCOUNT_NOT_FOUND", "accountId")


async def test_no_quote_for_a_head_and_a_body_that_never_comes_is_408(otc_desk):
    desk = otc_desk
    async with _session(desk) as http:
        async with asyncio.timeout(30), http.head("/request-quote", params={
                "accountId": desk.account_id, **BASE, "fromAmount": "0.01"}) as resp:
            assert resp.status == 405  # HEAD would issue a quote nobody reads
    assert await asyncio.to_thread(desk.gw.desk.store.audit_rows, kind="QUOTE") == []
    # The routes on their own app, with a short body timeout: a client announcing a body it
    # never sends gets a 408 and the connection closes.
    app = web.Application(middlewares=[error_middleware(Counter())])
    app.add_routes(otc_routes(desk.gw.desk, body_timeout=0.3))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /accept-quote HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        async with asyncio.timeout(30):
            answer = await reader.read()  # to EOF: the server closed the connection
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer
        assert _json(body.decode())["code"] == "REQUEST_TIMEOUT"
    finally:
        await runner.cleanup()


# -- the quote stream -----------------------------------------------------------------------


def _stream_path(account_id: str, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"from": "BTC", "to": "USDT", **params}.items())
    return f"/ws/stream-otc-quotes/{account_id}?{query}"


async def _frame(ws) -> dict:
    async with asyncio.timeout(30):
        msg = await ws.receive()
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return _json(msg.data)


async def test_the_stream_pushes_fresh_signed_quotes_and_errors_go_on(otc_desk):
    desk = otc_desk
    await _synced(desk)
    store = desk.gw.desk.store
    async with _session(desk) as http:
        opened = time.time()  # every streamed quote is priced after this
        async with http.ws_connect(_stream_path(desk.account_id, fromQty="0.01")) as ws:
            quotes = []
            while len({q["quote"]["signature"] for q in quotes}) < 2:
                frame = await _frame(ws)
                _check_quote(frame, desk, desk.account_id, opened, time.time())
                assert frame["quote"]["fromAssetQuantity"] == Decimal("0.01")
                quotes.append(frame)
            assert len({q["quoteId"] for q in quotes}) == len(quotes)
            # A refusal mid-stream, for real: the kill switch. An error frame, and the stream
            # goes on once the desk resumes.
            await asyncio.to_thread(store.set_halted, "maintenance")
            while "type" not in (frame := await _frame(ws)):
                pass
            assert frame["type"] == "error" and frame["code"] == "DESK_HALTED", frame
            assert "maintenance" in frame["message"]
            await asyncio.to_thread(store.set_halted, None)
            while "quote" not in (frame := await _frame(ws)):
                assert frame["code"] == "DESK_HALTED"
            quotes.append(frame)
            assert not ws.closed
        # Each streamed quote is a real one: accepting one books it.
        status, accepted, _ = await call(http, "POST", "/accept-quote", json=quotes[-1])
        assert status == 200 and accepted["trade"]["quoteId"] == quotes[-1]["quoteId"], accepted
        status, accepted, _ = await call(http, "POST", "/accept-quote", json=quotes[0])
        assert status == 200 and accepted["trade"]["quoteId"] == quotes[0]["quoteId"], accepted


@pytest.mark.parametrize(("params", "status", "parameter"), [
    ({"fromQty": "abc"}, 400, "fromQty"),
    ({"fromQty": "NaN"}, 400, "fromQty"),
    ({"toQty": "-5"}, 400, "toQty"),
    ({"fromQty": "0.01", "toQty": "100"}, 400, "toQty"),
    ({}, 400, "fromQty"),
    ({"fromQty": "0.123456789"}, 400, "fromQty"),  # past BTC's precision
    ({"from": "btc", "fromQty": "0.01"}, 400, "from"),
    ({"fromQty": "5000"}, 422, "fromQty"),  # more BTC than the venues' books hold
])
async def test_bad_stream_parameters_are_http_errors_before_the_upgrade(
        otc_desk, params, status, parameter):
    desk = otc_desk
    await _synced(desk)
    path = _stream_path(desk.account_id, **params)
    async with _session(desk) as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(path)
        assert refused.value.status == status
        # The refusal's body names the stream's own parameter.
        got, err = await _handshake(http, path)
        assert (got, err["parameter"]) == (status, parameter), err
        assert not re.search(r"'(fromAsset|toAsset|fromAmount|toAmount)'", err["message"]), err


async def test_stream_refusals_for_accounts_and_plain_gets(otc_desk):
    desk = otc_desk
    await _synced(desk)
    other_token = desk.key_store.create("other").token
    async with _session(desk) as mine, _session(desk, other_token) as theirs:
        for http, account, status in ((mine, str(uuid.uuid4()), 404),
                                      (theirs, desk.account_id, 403)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(_stream_path(account, fromQty="0.01"))
            assert refused.value.status == status
        # Good parameters, but no handshake: no quote priced, a 400 that says why.
        got, err, _ = await call(mine, "GET", _stream_path(desk.account_id, fromQty="0.01"))
        assert (got, err["code"]) == (400, "WEBSOCKET_UPGRADE_REQUIRED"), err


async def test_the_stream_takes_the_key_in_the_url_and_closes_on_revocation(otc_desk):
    desk = otc_desk
    await _synced(desk)
    token = desk.key_store.create("browser").token
    account = desk.otc_account({"USDT": "10000"}, key_id=token.split(".")[0])
    async with aiohttp.ClientSession(desk.gw.base_url) as http:
        # As a browser may: ?apiKey= on the handshake (a REST request may not).
        path = _stream_path(account, fromQty="0.01") + f"&apiKey={token}"
        async with http.ws_connect(path) as ws:
            frame = await _frame(ws)
            assert frame["quote"]["accountId"] == account
            await asyncio.to_thread(desk.key_store.revoke, token.split(".")[0])
            async with asyncio.timeout(30):
                while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                    pass
            # (the close frame's own code: the server may drop the connection before the
            # client's reply, which the client then counts as 1006)
            assert msg.type == aiohttp.WSMsgType.CLOSE, msg
            assert (msg.data, msg.extra) == (REVOKED_CLOSE_CODE, REVOKED_REASON)


# -- the document ---------------------------------------------------------------------------


async def test_openapi_lists_the_otc_paths(otc_desk):
    async with _session(otc_desk) as http, asyncio.timeout(30), \
            http.get("/openapi.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    validate(doc)
    paths = doc["paths"]
    assert set(paths["/request-quote"]) == {"get", "post"}
    for path in ("/accept-quote", "/otc/accept-quote/{accountId}"):
        assert paths[path]["post"]["responses"]["200"]["content"]["application/json"][
            "schema"] == {"$ref": "#/components/schemas/AcceptedQuote"}
    for path in ("/converts/{accountId}", "/otc/accounts", "/otc/accounts/{accountId}",
                 "/ws/stream-otc-quotes/{accountId}"):
        assert "get" in paths[path], path
    schemas = doc["components"]["schemas"]
    assert set(schemas["Quote"]["required"]) == QUOTE_FIELDS
    # Amounts are documented as what the server sends: JSON numbers.
    assert schemas["Convert"]["properties"]["price"] == {"type": "number"}
    assert doc == json.loads(json.dumps(openapi_document(otc_desk.gw.engine.venues)))
