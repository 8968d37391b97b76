"""The OTC desk's routes under hostile input and real clients, through a real gateway on
loopback over the three simulated venues: amounts as text read as strictly as JSON numbers,
a quote stream that refuses parameters it does not take and counts against the per-key
WebSocket cap, account ids that are no account's (upper case, traversal, control characters),
100 concurrent quotes, a JavaScript-like client's float round trip, the configured signing
secret never in a log line or an answer, and the OpenAPI document against what the routes
really send. Every refusal is a 4xx ``{"code","message","parameter"}`` naming the parameter."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import urllib.parse
import uuid
from decimal import Decimal

import aiohttp
import jsonschema
import msgspec
import pytest
from tests.conftest import OTC_CLIENT_DEPOSIT, SorDesk
from tests.store.test_journal import Db
from tests.store.test_journal import db as db  # the fixture, on every backend

from astra.core._otc import QuoteRequest
from astra.otc import OtcConfig
from astra.server.gateway import Gateway
from astra.server.otc import STREAM_PARAMETERS
from astra.store import ApiKeyStore

SMART = "SMART-SPOT-BTC-USDT"
SECRET = "5e" * 20 + "a7" * 20  # the configured signing key (40 bytes)
WS_CAP = 2  # WebSocket sessions per API key on this gateway


@contextlib.asynccontextmanager
async def _keyed_desk(sims, key_store: ApiKeyStore):
    """A gateway whose desk signs with the configured ``SECRET`` (key id ``k1``), hedging off,
    streaming every 0.2 s, at most ``WS_CAP`` WebSockets per key; ``desk.account_id`` funded
    with ``OTC_CLIENT_DEPOSIT``. Its OTC tables are in the key store's database."""
    desk = SorDesk(sims, key_store)
    config = OtcConfig.from_config({"hedge": "off", "signing_key_id": "k1",
                                    "signing_keys": {"k1": SECRET}, "stream_interval": 0.2})
    try:
        desk.gw = await Gateway(desk.venues(), key_store, port=0, metrics_port=0, linger=600.0,
                                otc=config, ws_connections_per_key=WS_CAP).start()
        desk.account_id = desk.otc_account(OTC_CLIENT_DEPOSIT)
        async with asyncio.timeout(30):  # every member book synced: quotes need them
            while True:
                books = await desk.gw.engine.member_books(SMART)
                if books.members and all(m.state == "synced" for m in books.members):
                    break
                await asyncio.sleep(0.05)
        yield desk
    finally:
        await desk.close()


@pytest.fixture
async def keyed(sor_sims, key_store):
    async with _keyed_desk(sor_sims, key_store) as desk:
        yield desk


@pytest.fixture
async def keyed_db(sor_sims, db: Db):
    """``keyed`` on each database backend (PostgreSQL too when configured)."""
    async with _keyed_desk(sor_sims, ApiKeyStore(db.engine)) as desk:
        yield desk


_ENCODER = msgspec.json.Encoder(decimal_format="number")


def _session(desk, token: str | None = None) -> aiohttp.ClientSession:
    # What a client sends back is what it received: Decimals as JSON numbers, digit for digit.
    return aiohttp.ClientSession(
        desk.gw.base_url, headers={"x-astra-api-key": f"Bearer {token or desk.token}"},
        json_serialize=lambda body: _ENCODER.encode(body).decode())


async def call(http, method: str, path: str, **kw) -> tuple[int, object, str]:
    async with asyncio.timeout(30), http.request(method, path, **kw) as resp:
        text = await resp.text()
    return resp.status, json.loads(text, parse_float=Decimal), text


async def _handshake(http, path: str) -> tuple[int, dict]:
    """A WebSocket handshake the server refuses: its status and JSON body."""
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    async with asyncio.timeout(30), http.get(path, headers=headers) as resp:
        assert resp.status != 101, f"the handshake was accepted: {path}"
        return resp.status, json.loads(await resp.text())


def _stream(account_id: str, params: list[tuple[str, str]] | None = None) -> str:
    query = urllib.parse.urlencode(params if params is not None
                                   else [("from", "BTC"), ("to", "USDT"), ("fromQty", "0.01")])
    return f"/ws/stream-otc-quotes/{account_id}?{query}"


def _refused(status: int, err: object, parameter: str, expected: int = 400) -> None:
    assert status == expected and isinstance(err, dict), (status, err)
    assert set(err) == {"code", "message", "parameter"} and err["parameter"] == parameter, err


# -- amounts as text ------------------------------------------------------------------------

# Each of these is 0.01 to Python's Decimal(): accepted, it would quote 0.01 BTC.
LENIENT = ["0_0.01", " 0.01", "0.01 ", "+0.01", "\u0660.01", "0.01\n", "\uff10.01"]


async def test_amounts_as_text_are_read_as_strictly_as_json_numbers(keyed):
    desk = keyed
    base = {"accountId": desk.account_id, "fromAsset": "BTC", "toAsset": "USDT"}
    async with _session(desk) as http:
        for text in LENIENT:
            status, err, _ = await call(http, "POST", "/request-quote",
                                        json={**base, "fromAmount": text})
            _refused(status, err, "fromAmount")
            status, err, _ = await call(http, "POST", "/request-quote",
                                        json={**base, "toAmount": text.replace("0.01", "100")})
            _refused(status, err, "toAmount")
            status, err, _ = await call(http, "GET", "/request-quote",
                                        params={**base, "fromAmount": text})
            _refused(status, err, "fromAmount")
            status, err = await _handshake(http, _stream(desk.account_id, [
                ("from", "BTC"), ("to", "USDT"), ("fromQty", text)]))
            _refused(status, err, "fromQty")
        # What a number may look like as text: the same 0.01 BTC.
        for text in ("0.01", "0.0100", ".01", "1e-2", "1E-2", "0.001e1"):
            status, answer, _ = await call(http, "POST", "/request-quote",
                                           json={**base, "fromAmount": text})
            assert status == 200 and answer["quote"]["fromAssetQuantity"] == Decimal("0.01"), (
                text, answer)
            status, answer, _ = await call(http, "GET", "/request-quote",
                                           params={**base, "fromAmount": text})
            assert status == 200 and answer["quote"]["fromAssetQuantity"] == Decimal("0.01"), (
                text, answer)
    audit = await asyncio.to_thread(desk.gw.desk.store.audit_rows, kind="QUOTE", limit=1000)
    assert len(audit) == 12  # the refused ones issued nothing


# -- the quote stream -----------------------------------------------------------------------


async def test_the_stream_refuses_parameters_it_does_not_take(keyed):
    desk = keyed
    good = [("from", "BTC"), ("to", "USDT"), ("fromQty", "0.01")]
    async with _session(desk) as http:
        for extra, named in (([("fromAsset", "ETH")], "fromAsset"),  # not a stream of ETH
                             ([("toAmount", "100")], "toAmount"),  # the REST name
                             ([("colour", "red")], "colour"),
                             ([("from", "ETH")], "from"),  # twice: which one?
                             ([("x" * 300, "1")], "x" * 40)):
            path = _stream(desk.account_id, good + extra)
            status, err = await _handshake(http, path)
            _refused(status, err, named)
            # A plain GET is refused for the same reason (before the upgrade question).
            status, err, _ = await call(http, "GET", path)
            _refused(status, err, named)
        # The REST names instead of the stream's: the stream's own name is asked for.
        status, err = await _handshake(http, _stream(desk.account_id, [
            ("from", "BTC"), ("to", "USDT"), ("fromAmount", "0.01")]))
        _refused(status, err, "fromAmount")
    # ?apiKey= is the handshake's key, not an unknown parameter.
    async with aiohttp.ClientSession(desk.gw.base_url) as http, http.ws_connect(
            _stream(desk.account_id, [*good, ("apiKey", desk.token)])) as ws:
        async with asyncio.timeout(30):
            frame = json.loads((await ws.receive()).data, parse_float=Decimal)
        assert frame["quote"]["fromAssetQuantity"] == Decimal("0.01"), frame


async def test_quote_streams_count_against_the_keys_websocket_cap(keyed):
    desk = keyed
    async with _session(desk) as http:
        open_ = [await http.ws_connect(_stream(desk.account_id)) for _ in range(WS_CAP)]
        try:
            for ws in open_:
                async with asyncio.timeout(30):
                    assert "quote" in json.loads((await ws.receive()).data)
            status, err = await _handshake(http, _stream(desk.account_id))
            assert (status, err["code"]) == (429, "RATE_LIMITED"), err
            # One cap for every WebSocket of the key: the market data stream too.
            status, err = await _handshake(http, f"/ws?dataType=BBO&market={SMART}")
            assert (status, err["code"]) == (429, "RATE_LIMITED"), err
            # Another key has its own.
            other = desk.key_store.create("other").token
            account = desk.otc_account({"USDT": "1000"}, key_id=other.split(".")[0])
            async with _session(desk, other) as theirs, theirs.ws_connect(
                    _stream(account)) as ws:
                async with asyncio.timeout(30):
                    assert "quote" in json.loads((await ws.receive()).data)
        finally:
            for ws in open_:
                await ws.close()
        async with asyncio.timeout(30):  # the sessions end with their handlers
            while True:
                if not desk.gw.sessions.count(desk.key_id):
                    break
                await asyncio.sleep(0.02)
        async with http.ws_connect(_stream(desk.account_id)) as ws, asyncio.timeout(30):
            assert "quote" in json.loads((await ws.receive()).data)


# -- account ids ----------------------------------------------------------------------------


async def test_account_ids_that_are_no_account_are_4xx_naming_it(keyed_db):
    """On SQLite and PostgreSQL alike (which refuses a NUL in a text parameter: a 500 if the
    id reached it): an id of an account's shape that no account has is a 404, any other
    text a 400, on every route that takes one, and nothing is booked."""
    desk = keyed_db
    upper = desk.account_id.upper()  # the same UUID, another string: not the account's id
    quote_body = {"fromAsset": "BTC", "toAsset": "USDT", "fromAmount": "0.01"}
    async with _session(desk) as http:
        status, answer, _ = await call(http, "POST", "/request-quote",
                                       json={"accountId": desk.account_id, **quote_body})
        assert status == 200, answer
        for account, expected in (("a%00b", 400), ("%00", 400), (upper, 404),
                                  (str(uuid.uuid4()), 404), ("..%2F..%2Fetc%2Fpasswd", 400),
                                  ("%F0%9F%98%80", 400), ("a%0Ab", 400),
                                  ("a" * 65, 400), ("%E2%80%AE" + "b" * 10, 400)):
            for method, path, kw in (
                    ("GET", f"/otc/accounts/{account}", {}),
                    ("GET", f"/converts/{account}", {}),
                    ("POST", f"/otc/accept-quote/{account}", {"json": answer["quote"]})):
                status, err, _ = await call(http, method, path, **kw)
                _refused(status, err, "accountId", expected)
            status, err = await _handshake(http, _stream(account))
            _refused(status, err, "accountId", expected)
            raw = urllib.parse.unquote(account)
            for method, kw in (("POST", {"json": {"accountId": raw, **quote_body}}),
                               ("GET", {"params": {"accountId": raw, **quote_body}})):
                status, err, _ = await call(http, method, "/request-quote", **kw)
                _refused(status, err, "accountId", expected)
        # The quote's own fields changed: its account id (to its upper case, to a NUL) or
        # its signature (to no hex): never the signed quote.
        for change, code, parameter in (
                ({"accountId": upper}, "INVALID_QUOTE_SIGNATURE", "quote"),
                ({"accountId": "a\x00b"}, "INVALID_PARAMETER", "quote.accountId"),
                ({"signature": "\x00" * 64}, "INVALID_QUOTE_SIGNATURE", "quote"),
                ({"signature": answer["quote"]["signature"].upper()},
                 "INVALID_QUOTE_SIGNATURE", "quote")):
            for path, body in (("/accept-quote", {"quote": {**answer["quote"], **change}}),
                               (f"/otc/accept-quote/{desk.account_id}",
                                {**answer["quote"], **change})):
                status, err, _ = await call(http, "POST", path, json=body)
                assert (status, err["code"], err["parameter"]) == (400, code, parameter), (
                    change, err)
        status, converts, _ = await call(http, "GET", f"/converts/{desk.account_id}")
        assert converts == {"converts": []}


async def test_a_quantity_no_quote_has_beside_a_real_signature_is_400(keyed):
    """1E-999999999 is finite, > 0 and under MAX_AMOUNT, but has a billion decimal places: it
    is refused before the signature check would print it (a gigabyte), on both accept
    forms; so is one place past MAX_PLACES."""
    desk = keyed
    async with _session(desk) as http:
        status, answer, _ = await call(http, "POST", "/request-quote", json={
            "accountId": desk.account_id, "fromAsset": "BTC", "toAsset": "USDT",
            "fromAmount": "0.01"})
        assert status == 200, answer
        text = json.dumps(answer["quote"], default=str)
        for field in ("fromAssetQuantity", "toAssetQuantity"):
            for number in ("1e-999999999", "1E-19", "0." + "0" * 18 + "1"):
                quote = json.loads(text)
                quote[field] = "@"
                raw = json.dumps(quote).replace('"@"', number)
                for path, body in (("/accept-quote", f'{{"quote": {raw}}}'),
                                   (f"/otc/accept-quote/{desk.account_id}", raw)):
                    status, err, _ = await call(http, "POST", path, data=body,
                                                headers={"content-type": "application/json"})
                    _refused(status, err, f"quote.{field}")
        status, accepted, _ = await call(http, "POST", "/accept-quote", json=answer)
        assert status == 200, accepted  # the quote itself is still good


async def test_converts_refuses_a_parameter_twice_or_one_it_does_not_take(keyed):
    desk = keyed
    path = f"/converts/{desk.account_id}"
    async with _session(desk) as http:
        for query, named in (([("limit", "1"), ("limit", "1000")], "limit"),  # which one?
                             ([("limt", "5")], "limt"),  # no limit of 5
                             ([("before", "1"), ("before", "2")], "before"),
                             ([("limit", "\u0665")], "limit")):  # another script's 5
            status, err, _ = await call(http, "GET", path, params=query)
            _refused(status, err, named)
        status, answer, _ = await call(http, "GET", path, params={"limit": "5", "before": "1"})
        assert (status, answer) == (200, {"converts": []})


# -- many clients at once -------------------------------------------------------------------


async def test_100_concurrent_quotes_are_100_distinct_signed_quotes(keyed):
    desk = keyed
    body = {"accountId": desk.account_id, "fromAsset": "BTC", "toAsset": "USDT",
            "fromAmount": "0.001"}
    async with _session(desk) as http:
        answers = await asyncio.gather(*(call(http, "POST", "/request-quote", json=body)
                                         for _ in range(100)))
        assert [s for s, _, _ in answers] == [200] * 100, [a for s, a, _ in answers if s != 200]
        quotes = [a for _, a, _ in answers]
        assert len({q["quoteId"] for q in quotes}) == 100
        assert len({q["quote"]["signature"] for q in quotes}) == 100
        store = desk.gw.desk.store
        for q in quotes:
            row = await asyncio.to_thread(store.quote, q["quoteId"])
            assert row is not None and row.signature == q["quote"]["signature"]
            assert row.to_qty == q["quote"]["toAssetQuantity"]
        # One of them, accepted 30 times at once: one trade, the same one for every answer.
        accepted = await asyncio.gather(*(call(http, "POST", "/accept-quote", json=quotes[7])
                                          for _ in range(30)))
        assert {s for s, _, _ in accepted} == {200}
        assert len({a["trade"]["tradeId"] for _, a, _ in accepted}) == 1
        _, converts, _ = await call(http, "GET", f"/converts/{desk.account_id}")
        assert [c["quoteId"] for c in converts["converts"]] == [quotes[7]["quoteId"]]


async def test_a_javascript_clients_float_round_trip_is_accepted(keyed):
    """A client that parses the quote into floats and serializes them back (JSON.parse then
    JSON.stringify; Python's json module alike) sends the same values: the quote books."""
    desk = keyed
    base = {"accountId": desk.account_id, "fromAsset": "BTC", "toAsset": "USDT"}
    async with _session(desk) as http:
        for amount in ({"fromAmount": "0.00000001"}, {"fromAmount": "0.0123"},
                       {"toAmount": "1234.5678"}, {"toAmount": "0.3"}):
            status, answer, text = await call(http, "POST", "/request-quote",
                                              json={**base, **amount})
            assert status == 200, answer
            as_floats = json.loads(text)  # every amount a float now
            assert isinstance(as_floats["quote"]["toAssetQuantity"], float)
            resent = json.dumps(as_floats)  # 1e-08, 1234.5678, ...
            status, accepted, _ = await call(http, "POST", "/accept-quote", data=resent,
                                             headers={"content-type": "application/json"})
            assert status == 200, (amount, resent, accepted)
            trade = accepted["trade"]
            assert trade["fromAssetQuantity"] == answer["quote"]["fromAssetQuantity"]
            assert trade["toAssetQuantity"] == answer["quote"]["toAssetQuantity"]
        # The float's arithmetic is not the quote's: 0.1 + 0.2 is no quantity it signed.
        status, answer, _ = await call(http, "POST", "/request-quote",
                                       json={**base, "toAmount": "0.3"})
        quote = {**json.loads(json.dumps(answer["quote"], default=float)),
                 "toAssetQuantity": 0.1 + 0.2}
        status, err, _ = await call(http, "POST", "/accept-quote", json={"quote": quote})
        assert (status, err["code"]) == (400, "INVALID_QUOTE_SIGNATURE"), err


# -- the signing secret ---------------------------------------------------------------------


async def test_the_signing_secret_is_in_no_log_line_and_no_answer(keyed, caplog):
    desk = keyed
    caplog.set_level(logging.DEBUG)
    forms = (SECRET, SECRET.upper(), base64.b64encode(bytes.fromhex(SECRET)).decode())
    seen: list[str] = []
    base = {"accountId": desk.account_id, "fromAsset": "BTC", "toAsset": "USDT"}
    async with _session(desk) as http:
        for method, path, kw in (
                ("POST", "/request-quote", {"json": {**base, "fromAmount": "0.01"}}),
                ("POST", "/request-quote", {"json": {**base, "fromAmount": "x"}}),
                ("POST", "/accept-quote", {"data": b"{"}),
                ("GET", "/otc/accounts", {}),
                ("GET", "/openapi.json", {})):
            _, _, text = await call(http, method, path, **kw)
            seen.append(text)
        answer = json.loads(seen[0])
        for change in ({"signature": "0" * 64}, {"toAssetQuantity": 1}, {}):
            _, _, text = await call(http, "POST", "/accept-quote",
                                    json={"quote": {**answer["quote"], **change}})
            seen.append(text)
        async with http.ws_connect(_stream(desk.account_id)) as ws, asyncio.timeout(30):
            seen.append((await ws.receive()).data)
        async with asyncio.timeout(30), http.get(
                f"http://127.0.0.1:{desk.gw.metrics_port}/metrics") as resp:
            seen.append(await resp.text())
    assert json.loads(seen[-2])["quote"]["accountId"] == desk.account_id  # it did sign
    seen += [caplog.text, repr(desk.gw.desk.signer), str(desk.gw.desk.signer),
             repr(desk.gw.desk.config)]
    rows = await asyncio.to_thread(desk.gw.desk.store.audit_rows, limit=1000)
    seen.append(json.dumps(rows, default=str))
    for text in seen:
        for form in forms:
            assert form not in text


# -- the document against the routes --------------------------------------------------------


async def test_the_openapi_document_describes_what_the_routes_send(keyed):
    desk = keyed
    async with _session(desk) as http:
        status, doc, _ = await call(http, "GET", "/openapi.json")
        assert status == 200
        doc = json.loads(json.dumps(doc, default=float))
        paths = doc["paths"]

        def check(value: object, schema: dict) -> None:
            # The document is the root: its #/components/schemas/... references resolve.
            jsonschema.Draft202012Validator(
                {**schema, "components": doc["components"]}).validate(value)

        def response(path: str, method: str, status: str = "200") -> dict:
            return paths[path][method]["responses"][status]["content"]["application/json"][
                "schema"]

        def as_json(text: str) -> object:
            return json.loads(text)  # numbers as JSON numbers (floats), as a validator sees

        # The names each route takes are the ones documented.
        assert {p["name"] for p in paths["/request-quote"]["get"]["parameters"]} == set(
            QuoteRequest.__struct_encode_fields__)
        stream = paths["/ws/stream-otc-quotes/{accountId}"]["get"]
        assert {p["name"] for p in stream["parameters"]} == {"accountId", *STREAM_PARAMETERS}
        body = {"accountId": desk.account_id, "fromAsset": "BTC", "toAsset": "USDT",
                "fromAmount": "0.00000001"}
        check(body, paths["/request-quote"]["post"]["requestBody"]["content"][
            "application/json"]["schema"])
        status, _, text = await call(http, "POST", "/request-quote", json=body)
        assert status == 200
        check(as_json(text), response("/request-quote", "post"))
        quote = as_json(text)
        accept_body = paths["/accept-quote"]["post"]["requestBody"]["content"][
            "application/json"]["schema"]
        check(quote, accept_body)  # what request-quote answered may be sent back whole
        status, _, text = await call(http, "POST", "/accept-quote", json=quote)
        assert status == 200
        check(as_json(text), response("/accept-quote", "post"))
        status, _, text = await call(http, "GET", f"/converts/{desk.account_id}")
        check(as_json(text), response("/converts/{accountId}", "get"))
        assert as_json(text)["converts"]
        status, _, text = await call(http, "GET", "/otc/accounts")
        check(as_json(text), response("/otc/accounts", "get"))
        status, _, text = await call(http, "GET", f"/otc/accounts/{desk.account_id}")
        check(as_json(text), response("/otc/accounts/{accountId}", "get"))
        # Refusals: the documented status, an Error.
        for method, path, kw, code in (
                ("POST", "/request-quote", {"json": {**body, "fromAmount": "x"}}, "400"),
                ("GET", f"/otc/accounts/{uuid.uuid4()}", {}, "404"),
                ("POST", "/accept-quote", {"json": quote}, None)):
            status, _, text = await call(http, method, path, **kw)
            route = path if "accounts/" not in path else "/otc/accounts/{accountId}"
            assert code is None or str(status) == code
            check(as_json(text), response(route, method.lower(), str(status)))
        # The stream's frames: a quote, and an error frame while the desk is halted.
        async with http.ws_connect(_stream(desk.account_id)) as ws:
            async with asyncio.timeout(30):
                check(json.loads((await ws.receive()).data), response(
                    "/ws/stream-otc-quotes/{accountId}", "get"))
                await asyncio.to_thread(desk.gw.desk.store.set_halted, "test")
                while "type" not in (frame := json.loads((await ws.receive()).data)):
                    pass
            check(frame, response("/ws/stream-otc-quotes/{accountId}", "get"))
        await asyncio.to_thread(desk.gw.desk.store.set_halted, None)
        status, err = await _handshake(http, _stream(desk.account_id, [("from", "btc")]))
        check(err, response("/ws/stream-otc-quotes/{accountId}", "get", str(status)))
        assert "429" in stream["responses"]  # the per-key WebSocket cap
    # The documented text of an amount and of an account id is what the routes take.
    amount = {p["name"]: p["schema"] for p in paths["/request-quote"]["get"]["parameters"]}[
        "fromAmount"]
    # (not "0.01\n": Python's re, which this validator uses, lets "$" match before a final
    # newline; ECMA-262's "$", which the document's patterns follow, does not)
    for text in (t for t in LENIENT if not t.endswith("\n")):
        with pytest.raises(jsonschema.ValidationError):
            check(text, amount)
    for text in ("0.01", ".01", "1e-2", "5."):
        check(text, amount)
    account = stream["parameters"][0]
    assert account["name"] == "accountId"
    check(desk.account_id.upper(), account["schema"])  # a 404, not a 400
    for text in ("../../etc/passwd", "a\x00b", "\u202eb", "a" * 65):
        with pytest.raises(jsonschema.ValidationError):
            check(text, account["schema"])
