"""``GET /openapi.json`` is a valid OpenAPI 3.1 document whose constraints are the server's:
its enums are the server's lists, and what its schemas allow for depth, limit, since and
market symbols is exactly what the server's validators accept."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from astra.core import (
    MAX_MARKET_LENGTH,
    AstraError,
    Exchange,
    InvalidMarket,
    InvalidParameter,
    UnknownExchange,
    parse_market,
)
from astra.server.openapi import openapi_document
from astra.server.params import WS_DATA_TYPES, int_param
from astra.venues.base import BALANCE_ACCOUNTS

DOC = openapi_document()
SPOT = "SIM-SPOT-BTC-USDT"


def _schema(path: str, name: str, method: str = "get") -> dict:
    (param,) = [p for p in DOC["paths"][path][method]["parameters"] if p["name"] == name]
    return param["schema"]


def test_the_document_is_valid_openapi_3_1():
    validate(DOC)
    assert DOC["openapi"].startswith("3.1")


ORDER = {"market": SPOT, "side": "BUY", "quantity": 0.01}


@pytest.mark.parametrize(
    ("change", "parameter"),
    [
        ({"type": "LIMIT"}, "price"),
        ({"type": "MARKET", "price": 100.0}, "price"),
        ({"type": "STOP_LIMIT", "price": 100.0}, "stopPrice"),
        ({"type": "LIMIT", "price": 100.0, "stopPrice": 90.0}, "stopPrice"),
        ({"type": "MARKET", "stopPrice": 90.0}, "stopPrice"),
        ({"type": "MARKET", "postOnly": True}, "postOnly"),
        ({"type": "LIMIT", "price": 100.0}, None),
        ({"type": "STOP_MARKET", "stopPrice": 90.0}, None),
        ({"type": "TAKE_PROFIT_LIMIT", "price": 100.0, "stopPrice": 90.0}, None),
    ],
)
def test_order_type_rules_in_the_schema_are_check_orders(change, parameter):
    """The document's price/stopPrice/postOnly rules per order type are the server's."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

    from astra.core import MarketMetadata
    from astra.core._trading import PlaceOrder
    from astra.trading.service import check_order
    from astra.venues.base import VenueMarket

    body = {**ORDER, **change}
    schema = {**DOC["components"]["schemas"]["PlaceOrder"],
              "$defs": DOC["components"]["schemas"]}
    schema = json.loads(json.dumps(schema).replace("#/components/schemas/", "#/$defs/"))
    market = VenueMarket(SPOT, "BTCUSDT", "spot", MarketMetadata(
        symbol=SPOT, asset_type="SPOT", base_asset="BTC", quote_asset="USDT"))
    order = msgspec.convert(body, PlaceOrder)
    if parameter is None:
        Draft202012Validator(schema).validate(body)
        check_order(order, market)
    else:
        with pytest.raises(ValidationError):
            Draft202012Validator(schema).validate(body)
        with pytest.raises(AstraError) as err:
            check_order(order, market)
        assert err.value.parameter == parameter and 400 <= err.value.status < 500


def test_enums_are_the_servers_own_lists():
    exchanges = [e.value for e in Exchange]
    for path in ("/markets", "/balances", "/positions", "/ws"):
        assert _schema(path, "exchange")["enum"] == exchanges
    # the codes parse_market and UnknownExchange know, in the same order
    assert ", ".join(exchanges) in UnknownExchange("X").message
    for code in exchanges:
        assert parse_market(f"{code}-SPOT-BTC-USDT").exchange == code
    assert _schema("/ws", "dataType")["enum"] == list(WS_DATA_TYPES)
    assert _schema("/balances", "account")["enum"] == list(BALANCE_ACCOUNTS)
    schemas = DOC["components"]["schemas"]
    order = schemas["PlaceOrder"]
    assert order["required"] == ["market", "side", "type", "quantity"]
    assert set(schemas["Side"]["enum"]) == {"BUY", "SELL"}
    assert order["properties"]["market"]["pattern"] == _schema("/orderbook", "market")["pattern"]


def _in_schema(schema: dict, text: str) -> bool:
    """Whether a query value (text) is an integer the schema allows."""
    if re.fullmatch(r"-?[0-9]+", text) is None:
        return False
    return schema["minimum"] <= int(text) <= schema["maximum"]


INTEGER_TEXT = st.one_of(
    st.integers(-10, 10**6).map(str),
    st.integers(0, 10**40).map(str),
    st.integers(0, 6000).map(lambda n: "00" + str(n)),
    st.sampled_from(["-0", "-00", "-", "--1", "0-1"]),
    st.text(alphabet="0123456789+-.eE xN²", max_size=12),
    st.text(max_size=8),
)


@pytest.mark.parametrize(
    ("path", "name", "default"),
    [("/orderbook", "depth", None), ("/trades", "limit", 100), ("/fills", "since", None)],
)
@settings(max_examples=300, deadline=None)
@given(text=INTEGER_TEXT)
def test_integer_parameters_accept_exactly_what_the_schema_allows(path, name, default, text):
    schema = _schema(path, name)
    minimum, maximum = schema["minimum"], schema["maximum"]
    if _in_schema(schema, text):
        assert int_param({name: text}, name, default, maximum, minimum) == int(text)
    else:
        with pytest.raises(InvalidParameter) as err:
            int_param({name: text}, name, default, maximum, minimum)
        assert err.value.parameter == name and err.value.status == 400
    assert int_param({}, name, default, maximum, minimum) == schema.get("default", default)


MARKET = _schema("/orderbook", "market")


def _allowed_market(text: str) -> bool:
    return len(text) <= MARKET["maxLength"] and re.fullmatch(MARKET["pattern"], text) is not None


def _mutate(text: str, data: st.DataObject) -> str:
    i = data.draw(st.integers(0, len(text)))
    kind = data.draw(st.sampled_from(["drop", "insert", "replace"]))
    char = data.draw(st.sampled_from("ACP0129-.xZ_ "))
    if kind == "drop":
        return text[:i] + text[i + 1 :]
    if kind == "insert":
        return text[:i] + char + text[i:]
    return text[:i] + char + text[i + 1 :]


@settings(max_examples=500, deadline=None)
@given(st.from_regex(MARKET["pattern"], fullmatch=True), st.data())
def test_market_pattern_is_exactly_what_parse_market_accepts(symbol, data):
    assert MARKET["maxLength"] == MAX_MARKET_LENGTH
    if len(symbol) <= MAX_MARKET_LENGTH:  # (the pattern alone has no length bound)
        assert str(parse_market(symbol)) == symbol
    mutated = _mutate(symbol, data)
    if _allowed_market(mutated):
        parse_market(mutated)
    else:
        with pytest.raises(InvalidMarket) as err:
            parse_market(mutated)
        assert err.value.parameter == "market"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ABCDEFIKMNOPRSTUXYZ0123456789-.", max_size=40))
def test_random_text_outside_the_pattern_is_refused(text):
    if _allowed_market(text):
        parse_market(text)
    else:
        with pytest.raises(InvalidMarket):
            parse_market(text)


async def test_the_server_agrees_with_the_documents_bounds(gateway):
    """The documented boundaries, and one step past them, through the real gateway."""
    gw, token = gateway
    depth, limit = _schema("/orderbook", "depth"), _schema("/trades", "limit")
    probes = [
        ("/orderbook", "depth", depth["minimum"], 200),
        ("/orderbook", "depth", depth["maximum"], 200),
        ("/orderbook", "depth", depth["minimum"] - 1, 400),
        ("/orderbook", "depth", depth["maximum"] + 1, 400),
        ("/trades", "limit", limit["minimum"], 200), ("/trades", "limit", limit["maximum"], 200),
        ("/trades", "limit", limit["minimum"] - 1, 400),
        ("/trades", "limit", limit["maximum"] + 1, 400),
    ]
    headers = {"x-astra-api-key": f"Bearer {token}"}
    async with aiohttp.ClientSession(gw.base_url, headers=headers) as http:
        for path, name, value, status in probes:
            async with asyncio.timeout(20), http.get(path, params={"market": SPOT,
                                                                    name: str(value)}) as resp:
                body = await resp.json()
            assert resp.status == status, (path, name, value, body)
            if status == 400:
                assert body["parameter"] == name
        for data_type in WS_DATA_TYPES:  # every documented data type passes validation
            params = {"dataType": data_type, "market": SPOT, "exchange": "SIM"}
            async with asyncio.timeout(20), http.get("/ws", params=params) as resp:
                body = await resp.json()
            # a plain GET: refused for want of the WebSocket handshake (or, for the account
            # streams, of exchange credentials), never for its dataType
            assert body.get("parameter") != "dataType", body
            assert body["code"] in ("WEBSOCKET_UPGRADE_REQUIRED",
                                    "EXCHANGE_CREDENTIALS_REQUIRED"), body
        async with asyncio.timeout(20), http.get("/openapi.json") as resp:
            served = await resp.json()
    # The gateway's own document: narrowed to the venues it serves.
    assert served == openapi_document(gw.engine.venues) and served != DOC
    validate(served)
    sim = gw.engine.venues["SIM"]
    parameters = {p["name"]: p["schema"] for p in served["paths"]["/balances"]["get"]["parameters"]}
    assert parameters["exchange"]["enum"] == sorted(gw.engine.venues) == ["SIM"]
    assert parameters["account"]["enum"] == list(sim.balance_accounts) == ["spot", "swap"]
    (order_id,) = [p["schema"] for p in served["paths"]["/orders/{orderId}"]["get"]["parameters"]
                   if p["name"] == "orderId"]
    assert re.fullmatch(order_id["pattern"], "12345") and not re.search(order_id["pattern"], "ab")
    market = served["paths"]["/orderbook"]["get"]["parameters"][0]["schema"]["pattern"]
    assert re.fullmatch(market, SPOT) and not re.fullmatch(market, "OKX-SPOT-BTC-USDT")
