"""The native order path's two restatements of ccxt, against ccxt itself, value for value:

- ``orders.OrderResponse.to_order`` (through ``decode_order``) gives the ``Order`` that
  ``order_from_ccxt(client.parse_order(raw, market))`` gives, for generated Aster answers
  (regular and not: zeros, missing fields, odd types and strings, huge numbers), the same
  exception when ccxt raises, and the simulator's own answers take the direct reading;
- ``AsterNative.order_request`` is ccxt's ``create_order_request``, key for key and in order
  (or the same exception), on the simulator's markets and on Aster's real ones
  (``../shared/fixtures/aster``, skipped when absent).
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astra.core._trading import Order
from astra.sim.admin import parse_deposits
from astra.sim.app import SimExchange
from astra.sim.markets import PERP_ORDER_TYPES
from astra.sim.server import SimServer
from astra.venues.aster.orders import OrderResponse, decode_order
from astra.venues.aster.trading import AsterPrivate
from astra.venues.ccxt_normalize import order_from_ccxt

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "aster"
MARKET = "SIM-SPOT-BTC-USDT"
KEY = "0x" + "11" * 32


def _client(markets: dict | None = None, **options) -> AsterPrivate:
    client = AsterPrivate({"privateKey": KEY, "options": {"builderFee": False, **options}})
    if markets is not None:
        client.set_markets(copy.deepcopy(markets))
    return client


async def _sim_markets_and_answers() -> tuple[dict, list[dict]]:
    """The simulator's ccxt markets, and its answers to a few creates and cancels."""
    from astra.core.credentials import ExchangeCredentials

    answers: list[dict] = []
    async with SimServer(SimExchange(seed=5)) as sim:
        acct = sim.exchange.create_account(parse_deposits("USDT=1000000,BTC=10"))
        creds = ExchangeCredentials(exchange="SIM", private_key=acct.signerPrivateKey)
        client = AsterPrivate(
            {
                **creds.ccxt_config(),
                "enableRateLimit": False,
                "options": {**creds.ccxt_config()["options"], "builderFee": False},
            }
        )
        api = client.urls["api"]
        api["sapiPublic"] = api["sapiPrivate"] = sim.base_url + "/api"
        api["fapiPublic"] = api["fapiPrivate"] = sim.base_url + "/fapi"
        try:
            await client.load_markets()
            native = client.native
            original = native.request

            async def keep(*args):
                data = await original(*args)
                answers.append(data)
                return data

            native.request = keep
            bid = sim.exchange.state("spot", "BTCUSDT").engine.best_bid() / 100
            for symbol in ("BTC/USDT", "BTC/USDT:USDT"):
                price = client.price_to_precision(symbol, bid * 0.99)
                await native.create_order(symbol, "market", "buy", "0.002")
                await native.create_order(symbol, "market", "sell", "0.001")
                placed = await native.create_order(
                    symbol,
                    "limit",
                    "buy",
                    "0.003",
                    price,
                    {"clientOrderId": "t1", "timeInForce": "GTC"},
                )
                await native.cancel_order(placed["id"], symbol)
            return client.markets, answers
        finally:
            await client.close()


@pytest.fixture(scope="module")
def sim_data() -> tuple[dict, list[dict]]:
    return asyncio.run(_sim_markets_and_answers())


def _fixture_markets() -> dict:
    if not FIXTURES.is_dir():
        pytest.skip(f"Aster's exchangeInfo fixtures are not at {FIXTURES}")
    spot = json.loads((FIXTURES / "spot-exchangeInfo.json").read_text())
    perp = json.loads((FIXTURES / "futures-exchangeInfo.json").read_text())

    async def load() -> dict:
        client = _client()

        async def answer(value):
            return value

        client.sapiPublicGetV3ExchangeInfo = lambda params={}: answer(spot)
        client.fapiPublicGetV3ExchangeInfo = lambda params={}: answer(perp)
        client.sign_in = lambda params=None: answer(None)
        client.has["fetchCurrencies"] = False
        try:
            return await client.load_markets()
        finally:
            await client.close()

    return asyncio.run(load())


@pytest.fixture(scope="module")
def aster_markets() -> dict:
    return _fixture_markets()


# --- the order answer --------------------------------------------------------------------------


def _outcome(fn):
    try:
        return "ok", fn()
    except Exception as exc:  # compared by type and text
        return "raised", (type(exc), str(exc))


def _same_order(fast: Order, ref: Order) -> None:
    assert repr(msgspec.to_builtins(fast)) == repr(msgspec.to_builtins(ref))  # (NaN alike)
    assert msgspec.json.encode(fast) == msgspec.json.encode(ref)  # the API's bytes
    for field in Order.__struct_fields__:
        a, b = getattr(fast, field), getattr(ref, field)
        assert type(a) is type(b) and (a == b or repr(a) == repr(b)), field


def _compare(client: AsterPrivate, raw, ccxt_market: dict) -> bool:
    """Both readings of ``raw``; True when the direct one was taken."""
    fell_back = []

    def fallback(answer):
        fell_back.append(answer)
        return order_from_ccxt(client.parse_order(answer, ccxt_market), MARKET)

    fast = _outcome(lambda: decode_order(copy.deepcopy(raw), MARKET, fallback))
    ref = _outcome(
        lambda: order_from_ccxt(client.parse_order(copy.deepcopy(raw), ccxt_market), MARKET)
    )
    assert fast[0] == ref[0], (fast, ref, raw)
    if fast[0] == "ok":
        _same_order(fast[1], ref[1])
    else:
        assert fast[1] == ref[1]
    return not fell_back


ASTER_ORDER_TYPES = list(PERP_ORDER_TYPES)  # the perpetual side's (the spot side's and one)


_MISSING = object()
_ZEROS = st.sampled_from(["0", "0.0", "0.00", "0.00000", "00", "0.000000000000"])
_DECIMALS = st.one_of(
    _ZEROS,
    st.decimals(min_value=0, max_value=10**9, places=8, allow_nan=False).map(
        lambda d: format(d, "f")
    ),
    st.integers(0, 10**20).map(str),
    st.from_regex(r"[0-9]{1,3}\.[0-9]{1,12}", fullmatch=True),
)
_ODD_NUMBERS = st.one_of(
    st.sampled_from(
        ["", "1e-5", "-1", "-0.5", "NaN", "inf", " 1", "1.", ".5", "0x10", "1_000", "١٢"]
    ),
    st.floats(allow_nan=True),
    st.integers(-(10**30), 10**30),
    st.none(),
    st.booleans(),
)
_NUMBER = st.one_of(_DECIMALS, _DECIMALS, _DECIMALS, _ODD_NUMBERS)
_TIMES = st.one_of(
    st.integers(0, 2**53 - 1),
    st.integers(-(2**70), 2**70),
    st.integers(0, 10**15).map(str),
    st.sampled_from(["", "12.5", "1e12", "-5", "17762742195820000000"]),
    st.floats(),
    st.none(),
    st.booleans(),
)
_TEXT = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans())
_FIELDS = {
    "orderId": st.one_of(
        st.integers(0, 2**63),
        st.integers(0, 10**12).map(str),
        st.sampled_from(["", "abc", 0]),
        st.floats(),
        st.none(),
        st.booleans(),
    ),
    "symbol": st.sampled_from(["BTCUSDT", "ETHUSDT", "", None, 5]),
    "status": st.one_of(
        st.sampled_from(
            [
                "NEW",
                "PARTIALLY_FILLED",
                "FILLED",
                "CANCELED",
                "REJECTED",
                "EXPIRED",
                "new",
                "filled",
                "NEW_INSURANCE",
                "",
                "Canceled",
            ]
        ),
        _TEXT,
    ),
    "clientOrderId": st.one_of(st.from_regex(r"[A-Za-z0-9_-]{0,36}", fullmatch=True), _TEXT),
    "price": _NUMBER,
    "avgPrice": _NUMBER,
    "origQty": _NUMBER,
    "executedQty": _NUMBER,
    "cumQuote": _NUMBER,
    "timeInForce": st.one_of(
        st.sampled_from(["GTC", "IOC", "FOK", "GTX", "PO", "gtc", "", "HIDDEN"]), _TEXT
    ),
    "type": st.one_of(
        st.sampled_from(
            [*ASTER_ORDER_TYPES, "limit", "Market", "stop_limit", "take_profit_limit", "", "X"]
        ),
        _TEXT,
    ),
    "origType": st.sampled_from(["LIMIT", "MARKET"]),
    "side": st.one_of(st.sampled_from(["BUY", "SELL", "buy", "Sell", "", "HOLD"]), _TEXT),
    "stopPrice": _NUMBER,
    "time": _TIMES,
    "updateTime": _TIMES,
    "reduceOnly": st.one_of(st.booleans(), st.none(), st.sampled_from(["true", 1])),
    "ro": st.one_of(st.booleans(), st.none(), st.just(0)),
    "positionSide": st.sampled_from(["BOTH", "LONG", "SHORT"]),
    "closePosition": st.booleans(),
}
_OPTIONAL = {
    "reduceOnly",
    "ro",
    "positionSide",
    "closePosition",
    "cumQuote",
    "avgPrice",
    "stopPrice",
    "time",
    "updateTime",
    "timeInForce",
    "origType",
    "symbol",
}


@st.composite
def _answers(draw):
    raw = {}
    for name, values in _FIELDS.items():
        # required fields go missing rarely, optional ones often (both fall back or agree)
        if draw(st.integers(0, 9 if name not in _OPTIONAL else 2)) == 0:
            continue
        raw[name] = draw(values)
    return raw


@st.composite
def _regular_answers(draw):
    """Answers as Aster writes them: what the direct reading must take (and get right)."""
    raw = {
        "orderId": draw(st.integers(0, 2**63)),
        "symbol": "BTCUSDT",
        "status": draw(
            st.sampled_from(
                ["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED"]
            )
        ),
        "clientOrderId": draw(st.from_regex(r"[A-Za-z0-9_-]{0,36}", fullmatch=True)),
        "price": draw(_DECIMALS),
        "avgPrice": draw(_DECIMALS),
        "origQty": draw(_DECIMALS),
        "executedQty": draw(_DECIMALS),
        "timeInForce": draw(st.sampled_from(["GTC", "IOC", "FOK", "GTX"])),
        "type": draw(st.sampled_from(ASTER_ORDER_TYPES)),
        "side": draw(st.sampled_from(["BUY", "SELL"])),
        "stopPrice": draw(_DECIMALS),
        "time": draw(st.integers(0, 2**53 - 1)),
        "updateTime": draw(st.integers(0, 2**53 - 1)),
    }
    if draw(st.booleans()):  # futures
        raw.update(reduceOnly=draw(st.booleans()), positionSide="BOTH", closePosition=False)
    if raw["avgPrice"].strip("0.") != "":
        raw["cumQuote"] = draw(_DECIMALS)  # (zero average with fills: ccxt computes one)
    return raw


_HYPOTHESIS = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_HYPOTHESIS
@given(raw=_answers(), perp=st.booleans())
def test_any_answer_reads_as_ccxt_reads_it(sim_data, raw, perp):
    markets, _ = sim_data
    client = _client(markets)
    _compare(client, raw, client.market("BTC/USDT:USDT" if perp else "BTC/USDT"))


@_HYPOTHESIS
@given(raw=_regular_answers(), perp=st.booleans())
def test_a_regular_answer_is_read_directly_and_alike(sim_data, raw, perp):
    markets, _ = sim_data
    client = _client(markets)
    assert _compare(client, raw, client.market("BTC/USDT:USDT" if perp else "BTC/USDT")), raw


def test_the_simulators_answers_are_read_directly_and_alike(sim_data):
    markets, answers = sim_data
    assert len(answers) == 8
    client = _client(markets)
    for raw in answers:
        market = client.market("BTC/USDT:USDT" if "positionSide" in raw else "BTC/USDT")
        assert _compare(client, raw, market), raw


def test_a_non_object_answer_goes_to_ccxt():
    for raw in (None, [], [1], "text", 5):
        assert decode_order(raw, MARKET, lambda r: ("ccxt", r)) == ("ccxt", raw)


def test_the_struct_names_the_venues_fields():
    # Aster's docs' spot create answer, as the venue writes it (times as strings there)
    doc = {
        "orderId": "417594542",
        "symbol": "ETHUSDT",
        "status": "FILLED",
        "clientOrderId": "web_qnvMAhOJsiVbSyu0BdKG",
        "price": "0",
        "avgPrice": "2351.580000",
        "origQty": "0.0054",
        "executedQty": "0.0054",
        "cumQuote": "12.69853200",
        "timeInForce": "GTC",
        "type": "MARKET",
        "side": "SELL",
        "stopPrice": "0",
        "origType": "MARKET",
        "time": "1776274219582",
        "updateTime": "1776274219609",
        "orderListId": "-1",
    }
    order = msgspec.convert(doc, OrderResponse).to_order("ASTER-SPOT-ETH-USDT")
    assert (
        order.order_id,
        order.status,
        order.type,
        order.quantity,
        order.average_price,
        order.created_at,
        order.updated_at,
    ) == ("417594542", "FILLED", "MARKET", 0.0054, 2351.58, 1776274219582, 1776274219609)


# --- the order request -------------------------------------------------------------------------

_SYMBOLS_SIM = ["BTC/USDT", "BTC/USDT:USDT"]
_AMOUNTS = st.one_of(
    st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False).map(str),
    st.floats(min_value=0, max_value=1e6),
    st.sampled_from(["0", "0.0000001", "1e-3", "abc"]),
    st.integers(0, 10**6),
    st.none(),
)
_PRICES = st.one_of(
    st.none(),
    st.none(),
    st.floats(min_value=0, max_value=1e6),
    st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False).map(str),
    st.sampled_from(["", "0"]),
)
_PARAMS = st.dictionaries(
    st.sampled_from(
        [
            "clientOrderId",
            "timeInForce",
            "postOnly",
            "reduceOnly",
            "stopPrice",
            "newClientOrderId",
            "quoteOrderQty",
            "triggerPrice",
            "positionSide",
        ]
    ),
    st.one_of(
        st.sampled_from(["GTC", "IOC", "FOK", "GTX", "PO", "gtc", "", "astra-1", "x"]),
        st.booleans(),
        st.none(),
        st.integers(0, 10),
        st.floats(0, 100),
    ),
    max_size=3,
)


@st.composite
def _orders(draw, symbols):
    params = draw(
        st.one_of(
            _PARAMS,
            st.fixed_dictionaries(
                {"clientOrderId": st.from_regex(r"[A-Za-z0-9]{1,32}", fullmatch=True)}
            ),
            st.fixed_dictionaries(
                {
                    "clientOrderId": st.from_regex(r"[A-Za-z0-9]{1,32}", fullmatch=True),
                    "timeInForce": st.sampled_from(["GTC", "IOC", "FOK"]),
                }
            ),
        )
    )
    return (
        draw(st.sampled_from(symbols)),
        draw(
            st.sampled_from(
                [
                    "market",
                    "limit",
                    "MARKET",
                    "LIMIT",
                    "Limit",
                    "STOP",
                    "stop_market",
                    "TAKE_PROFIT",
                ]
            )
        ),
        draw(st.sampled_from(["buy", "sell", "BUY"])),
        draw(_AMOUNTS),
        draw(_PRICES),
        params,
        draw(st.booleans()),
    )


_CLIENTS: dict[tuple[int, bool], tuple[dict, AsterPrivate, AsterPrivate]] = {}


def _request_clients(markets: dict, builder: bool) -> tuple[AsterPrivate, AsterPrivate]:
    """A ccxt and a native client on ``markets``, made once per (markets, builder): building
    a request changes neither, and copying every Aster market per example cost ~0.4 s."""
    kept = _CLIENTS.get((id(markets), builder))
    if kept is None or kept[0] is not markets:  # (held: its id cannot be reused meanwhile)
        options = {"builderFee": builder, "builder": "0xbuilder", "builderRate": "0.0001"}
        kept = _CLIENTS[(id(markets), builder)] = (
            markets, _client(markets, **options), _client(markets, **options))
    return kept[1], kept[2]


def _same_request(markets: dict, symbol, kind, side, amount, price, params, builder) -> bool:
    """Both builders on one order; True when the native one built it itself."""
    ccxt_client, native_client = _request_clients(markets, builder)
    native = native_client.native
    built_here = native._plain(
        native_client.market(symbol),
        kind.upper(),
        side,
        price,
        params,
        params.get("timeInForce"),
        params.get("clientOrderId"),
    )
    ref = _outcome(
        lambda: list(
            ccxt_client.create_order_request(
                symbol, kind, side, amount, price, dict(params)
            ).items()
        )
    )
    fast = _outcome(
        lambda: list(
            native.order_request(
                native_client.market(symbol), symbol, kind, side, amount, price, dict(params)
            ).items()
        )
    )
    assert fast == ref, (symbol, kind, side, amount, price, params)
    return built_here


@_HYPOTHESIS
@given(order=_orders(_SYMBOLS_SIM))
def test_the_request_is_ccxts_on_the_simulators_markets(sim_data, order):
    _same_request(sim_data[0], *order)


def test_plain_orders_are_built_natively(sim_data):
    markets = sim_data[0]
    for symbol in _SYMBOLS_SIM:
        for builder in (False, True):
            assert _same_request(
                markets,
                symbol,
                "market",
                "buy",
                "0.001",
                None,
                {"clientOrderId": "astraX"},
                builder,
            )
            assert _same_request(
                markets,
                symbol,
                "limit",
                "sell",
                "0.010",
                "65000.1",
                {"clientOrderId": "astraY", "timeInForce": "GTC"},
                builder,
            )
            assert not _same_request(
                markets,
                symbol,
                "limit",
                "sell",
                "0.010",
                "65000.1",
                {"clientOrderId": "astraZ"},
                builder,
            )  # ccxt's default tif


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_the_request_is_ccxts_on_asters_markets(aster_markets, data):
    symbols = sorted(aster_markets)
    _same_request(aster_markets, *data.draw(_orders(symbols)))
