from datetime import date
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from astra.core import (
    MAX_MARKET_LENGTH,
    AssetType,
    Exchange,
    InvalidMarket,
    MarketSymbol,
    OptionType,
    is_valid_market,
    parse_market,
)

# The seed's "Market Symbol Example" table.
SEED_EXAMPLES = [
    "BINANCE-SPOT-BTC-USDT",
    "BINANCE-PERP-BTC-USDT",
    "BINANCE-PERP-BTC-USD-COINM",
    "COINBASE-SPOT-BTC-USD",
    "OKX-FUT-BTC-USDT-210625",
    "BINANCE-OPT-BTC-USDT-210625-50000-C",
]

OTHER_VALID = [
    "KRAKEN-SPOT-XBT-USD",
    "BINANCE-PERP-1000PEPE-USDT",
    "BINANCE-FUT-BTC-USD-210625-COINM",
    "OKX-OPT-BTC-USD-240329-2.5-P",
    "OKX-OPT-ETH-USD-240329-0.05-C-COINM",
    "SIM-SPOT-BTC-USDT",
    "ASTER-PERP-BTC-USDT",
    "HUOBI-FUT-BTC-USD-240229",  # leap day
]


@pytest.mark.parametrize("text", SEED_EXAMPLES + OTHER_VALID)
def test_valid_symbols_round_trip(text):
    market = parse_market(text)
    assert str(market) == text
    assert parse_market(str(market)) == market
    assert is_valid_market(text)


def test_parsed_fields():
    opt = parse_market("BINANCE-OPT-BTC-USDT-210625-50000-C")
    assert opt.exchange is Exchange.BINANCE
    assert opt.asset_type is AssetType.OPT
    assert (opt.base, opt.quote) == ("BTC", "USDT")
    assert opt.expiry == "210625"
    assert opt.expiry_date == date(2021, 6, 25)
    assert opt.strike == Decimal("50000")
    assert opt.option_type is OptionType.CALL
    assert opt.disambiguator is None
    assert opt.is_derivative

    perp = parse_market("BINANCE-PERP-BTC-USD-COINM")
    assert perp.disambiguator == "COINM"
    assert perp.is_coin_margined
    assert perp.expiry is None and perp.expiry_date is None and perp.strike is None

    spot = parse_market("COINBASE-SPOT-BTC-USD")
    assert not spot.is_derivative and not spot.is_coin_margined


def test_parse_is_memoized_and_hashable():
    a = parse_market("BINANCE-SPOT-BTC-USDT")
    assert parse_market("BINANCE-SPOT-BTC-USDT") is a
    assert {a: 1}[parse_market("BINANCE-SPOT-BTC-USDT")] == 1


@pytest.mark.parametrize(
    ("text", "position", "fragments"),
    [
        ("FOO-SPOT-BTC-USDT", 1, ["unknown exchange 'FOO'", "(part 1)", "BINANCE"]),
        ("BINANCE-SWAP-BTC-USDT", 2, ["unknown type 'SWAP'", "(part 2)"]),
        (
            "OKX-FUT-BTC-USDT-210231",
            5,
            ["invalid expiry '210231'", "in market 'OKX-FUT-BTC-USDT-210231'", "YYMMDD"],
        ),
        ("OKX-FUT-BTC-USDT-21062", 5, ["invalid expiry '21062'"]),
        ("OKX-FUT-BTC-USDT-251301", 5, ["invalid expiry '251301'"]),
        ("OKX-FUT-BTC-USDT", 5, ["missing expiry", "(part 5)"]),
        ("OKX-FUT-BTC-USDT-COINM", 5, ["invalid expiry 'COINM'"]),
        ("BINANCE-OPT-BTC-USDT-210625", 6, ["missing strike", "(part 6)"]),
        ("BINANCE-OPT-BTC-USDT-210625-C", 6, ["missing strike", "(part 6)"]),
        ("BINANCE-OPT-BTC-USDT-210625-50000", 7, ["missing option type C or P", "(part 7)"]),
        ("BINANCE-OPT-BTC-USDT-210625-50000-X", 7, ["invalid option type 'X'", "C or P"]),
        ("BINANCE-OPT-BTC-USDT-210625-50000-c", 7, ["invalid option type 'c'", "uppercase"]),
        ("BINANCE-OPT-BTC-USDT-210625-0-C", 6, ["invalid strike '0'"]),
        ("BINANCE-OPT-BTC-USDT-210625-5E4-C", 6, ["invalid strike '5E4'"]),
        ("BINANCE-OPT-BTC-USDT-210625-+5-C", 6, ["invalid strike '+5'"]),
        ("BINANCE-OPT-BTC-USDT-210625-2.50-C", 6, ["invalid strike '2.50'"]),
        ("BINANCE-OPT-BTC-USDT-210625-050-C", 6, ["invalid strike '050'"]),
        ("BINANCE-OPT-BTC-USDT-210625-.5-C", 6, ["invalid strike '.5'"]),
        ("binance-spot-btc-usdt", 1, ["invalid exchange 'binance'", "uppercase"]),
        ("BINANCE-spot-BTC-USDT", 2, ["invalid type 'spot'", "uppercase"]),
        ("BINANCE-SPOT-btc-USDT", 3, ["invalid base 'btc'", "uppercase"]),
        ("BINANCE-SPOT-BTC-usdt", 4, ["invalid quote 'usdt'", "uppercase"]),
        ("BINANCE-PERP-BTC-USD-coinm", 5, ["invalid disambiguator 'coinm'", "uppercase"]),
        ("BINANCE-SPOT-BTC/X-USDT", 3, ["invalid base 'BTC/X'"]),
        ("BINANCE--BTC-USDT", 2, ["empty type", "(part 2)"]),
        ("-SPOT-BTC-USDT", 1, ["empty exchange", "(part 1)"]),
        ("BINANCE-SPOT--USDT", 3, ["empty base"]),
        ("BINANCE-SPOT-BTC-USDT-", 5, ["empty disambiguator", "(part 5)"]),
        ("BINANCE-SPOT-BTC", 4, ["too few parts", "missing quote", "(part 4)"]),
        ("BINANCE", 2, ["too few parts", "missing type"]),
        ("BINANCE-SPOT-BTC-USDT-COINM-X", 6, ["too many parts", "at most 5"]),
        ("OKX-FUT-BTC-USDT-210625-COINM-X", 7, ["too many parts", "at most 6"]),
        ("BINANCE-OPT-BTC-USDT-210625-50000-C-COINM-X", 9, ["too many parts", "at most 8"]),
        # A SPOT/PERP 5th part is a disambiguator, which must start with a letter, so an
        # expiry-looking part is an error rather than a silent disambiguator.
        ("BINANCE-SPOT-BTC-USDT-210625", 5, ["unexpected expiry '210625'", "SPOT"]),
        ("BINANCE-PERP-BTC-USDT-210625", 5, ["unexpected expiry '210625'", "PERP"]),
        ("BINANCE-PERP-BTC-USDT-1W", 5, ["invalid disambiguator '1W'"]),
        ("", 1, ["empty market symbol"]),
    ],
)
def test_invalid_symbols_name_the_bad_part(text, position, fragments):
    with pytest.raises(InvalidMarket) as info:
        parse_market(text)
    err = info.value
    for fragment in fragments:
        assert fragment in err.message
    assert err.position == position
    assert err.code == "INVALID_MARKET" and err.status == 400
    assert err.parameter == "market"
    assert not is_valid_market(text)


def test_invalid_expiry_message_exact():
    with pytest.raises(InvalidMarket) as info:
        parse_market("OKX-FUT-BTC-USDT-210231")
    assert str(info.value) == (
        "invalid expiry '210231' (part 5) in market 'OKX-FUT-BTC-USDT-210231': "
        "expected a date YYMMDD"
    )


def test_too_long_and_non_string():
    with pytest.raises(InvalidMarket, match="too long"):
        parse_market("BINANCE-SPOT-" + "A" * MAX_MARKET_LENGTH + "-USDT")
    with pytest.raises(InvalidMarket, match="must be a string"):
        parse_market(None)  # type: ignore[arg-type]


def test_construction_coerces_and_validates():
    m = MarketSymbol(
        exchange="OKX",
        asset_type="OPT",
        base="BTC",
        quote="USD",
        expiry="240329",
        strike="2.50",
        option_type="P",
    )
    assert m.exchange is Exchange.OKX and m.option_type is OptionType.PUT
    assert str(m) == "OKX-OPT-BTC-USD-240329-2.5-P"
    assert parse_market(str(m)) == m
    assert str(MarketSymbol(**{**_fields(m), "strike": 50000})) == "OKX-OPT-BTC-USD-240329-50000-P"
    assert str(MarketSymbol(**{**_fields(m), "strike": Decimal("5E+4")})).endswith("-50000-P")

    bad = [
        {"exchange": "FOO", "asset_type": "SPOT", "base": "BTC", "quote": "USDT"},
        {"exchange": "OKX", "asset_type": "SPOT", "base": "btc", "quote": "USDT"},
        {
            "exchange": "OKX",
            "asset_type": "SPOT",
            "base": "BTC",
            "quote": "USDT",
            "expiry": "210625",
        },
        {"exchange": "OKX", "asset_type": "FUT", "base": "BTC", "quote": "USDT"},
        {
            "exchange": "OKX",
            "asset_type": "FUT",
            "base": "BTC",
            "quote": "USDT",
            "expiry": "210231",
        },
        {
            "exchange": "OKX",
            "asset_type": "OPT",
            "base": "BTC",
            "quote": "USDT",
            "expiry": "210625",
        },
        {**_fields(m), "strike": "-1"},
        {**_fields(m), "strike": "abc"},
        {**_fields(m), "disambiguator": "1W"},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidMarket):
            MarketSymbol(**kwargs)


def _fields(m: MarketSymbol) -> dict:
    return {f: getattr(m, f) for f in m.__struct_fields__}


def test_msgspec_decode_validates():
    raw = (
        b'{"exchange":"BINANCE","asset_type":"PERP","base":"BTC","quote":"USD",'
        b'"disambiguator":"COINM"}'
    )
    m = msgspec.json.decode(raw, type=MarketSymbol)
    assert str(m) == "BINANCE-PERP-BTC-USD-COINM"
    with pytest.raises(InvalidMarket):
        msgspec.json.decode(raw.replace(b'"PERP"', b'"FUT"'), type=MarketSymbol)


# --- property: any valid MarketSymbol formats to text that parses back to it ---------------

_assets = st.from_regex(r"[A-Z0-9]{1,10}", fullmatch=True)
_disambiguators = st.none() | st.from_regex(r"[A-Z][A-Z0-9]{0,7}", fullmatch=True)
_expiries = st.dates(date(2000, 1, 1), date(2099, 12, 31)).map(lambda d: d.strftime("%y%m%d"))
_strikes = st.decimals(
    min_value=Decimal("0.0001"), max_value=Decimal(10**9), places=4, allow_nan=False
)


@st.composite
def market_symbols(draw):
    asset_type = draw(st.sampled_from(AssetType))
    derivative = asset_type in (AssetType.FUT, AssetType.OPT)
    option = asset_type is AssetType.OPT
    return MarketSymbol(
        exchange=draw(st.sampled_from(Exchange)),
        asset_type=asset_type,
        base=draw(_assets),
        quote=draw(_assets),
        expiry=draw(_expiries) if derivative else None,
        strike=draw(_strikes) if option else None,
        option_type=draw(st.sampled_from(OptionType)) if option else None,
        disambiguator=draw(_disambiguators),
    )


@given(market_symbols())
def test_format_then_parse_gives_it_back(market):
    text = str(market)
    parsed = parse_market(text)
    assert parsed == market
    assert str(parsed) == text
    if market.expiry is not None:
        assert parsed.expiry_date.strftime("%y%m%d") == market.expiry


_symbol_chars = st.sampled_from("ABCOPTXSIMNU0123456789-.+cpé_ ")


@given(st.text(_symbol_chars, max_size=40) | st.builds("-".join, st.lists(_assets, max_size=9)))
def test_any_text_parses_canonically_or_raises_invalid_market(text):
    try:
        market = parse_market(text)
    except InvalidMarket as err:
        assert err.code == "INVALID_MARKET"
    else:
        assert str(market) == text
