"""Asset names and amounts: what is refused (naming the field), and printing by value."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from astra.core import InvalidParameter
from astra.otc.assets import (
    DECIMAL_TEXT,
    check_amount,
    check_asset,
    normal,
    plain,
    quantize_down,
    quantize_up,
)

D = Decimal


@pytest.mark.parametrize("name", ["BTC", "USDT", "1INCH", "A", "ABCDEFGHIJKLMNOP"])
def test_asset_accepted_as_sent(name):
    assert check_asset(name, "fromAsset") == name


@pytest.mark.parametrize(
    "name",
    ["btc", "Btc", "", "ABCDEFGHIJKLMNOPQ", "BTC-USDT", "BT C", "BTC\n", " BTC", "ÉTH", 5, None],
)
def test_asset_refused_naming_the_field(name):
    with pytest.raises(InvalidParameter) as e:
        check_asset(name, "toAsset")
    assert e.value.parameter == "toAsset"
    assert "toAsset" in e.value.message


@pytest.mark.parametrize(
    ("value", "precision", "expected"),
    [
        (D("1.25"), 8, "1.25"),
        (D("1.250000"), 2, "1.25"),  # places are counted by value
        (D("1E+2"), 0, "100"),
        (D("100.000"), 0, "100"),
        (D("0.00000001"), 8, "0.00000001"),
        (D("1000000000000"), 8, "1000000000000"),
        (D("1E+12"), 4, "1000000000000"),
        (D("999999999999.999999"), 6, "999999999999.999999"),
    ],
)
def test_amount_normalized(value, precision, expected):
    out = check_amount(value, precision, "fromAmount")
    assert out == value
    assert plain(out) == expected
    # No trailing zeros and no positive exponent: the digits are the value's own.
    assert out.as_tuple().exponent == -len(expected.partition(".")[2])


@pytest.mark.parametrize(
    ("value", "precision", "why"),
    [
        (D(0), 8, "greater than 0"),
        (D("-0"), 8, "greater than 0"),
        (D("-1"), 8, "greater than 0"),
        (D("1000000000000.00000001"), 8, "at most 1000000000000"),
        (D("1E+13"), 8, "at most 1000000000000"),
        (D("NaN"), 8, "finite"),
        (D("sNaN"), 8, "finite"),
        (D("Infinity"), 8, "finite"),
        (D("0.000000001"), 8, "at most 8 decimal places"),
        (D("1.0000001"), 6, "at most 6 decimal places"),
        (D("1.00001"), 4, "precision"),
        # 29 significant digits: a context-rounding normalize() would have made this 1.
        (D("1.0000000000000000000000000001"), 8, "at most 8 decimal places"),
        (D("1E-1000000"), 8, "at most 8 decimal places"),
        (1, 8, "decimal number"),
        (1.5, 8, "decimal number"),
        ("1.5", 8, "decimal number"),
        (True, 8, "decimal number"),
    ],
)
def test_amount_refused_naming_the_field(value, precision, why):
    with pytest.raises(InvalidParameter) as e:
        check_amount(value, precision, "toAmount")
    assert e.value.parameter == "toAmount"
    assert why in e.value.message


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (D("100"), "100"),
        (D("1E+2"), "100"),
        (D("1.25"), "1.25"),
        (D("1.2500"), "1.25"),
        (D("0.00000001"), "0.00000001"),
        (D("1E-8"), "0.00000001"),
        (D("0E-8"), "0"),
        (D("-0"), "0"),
        (D("-1.50"), "-1.5"),
        (D("123456789012.123456789"), "123456789012.123456789"),
        (D("1.0000000000000000000000000000001"), "1.0000000000000000000000000000001"),
    ],
)
def test_plain(value, text):
    assert plain(value) == text
    assert normal(value) == value


@pytest.mark.parametrize("bad", [D("NaN"), D("Infinity"), D("-Infinity")])
def test_plain_refuses_non_finite(bad):
    with pytest.raises(ValueError):
        plain(bad)


@pytest.mark.parametrize(
    ("x", "dp", "down", "up"),
    [
        (D("1.234567891"), 8, D("1.23456789"), D("1.23456790")),
        (D("1.23456789"), 8, D("1.23456789"), D("1.23456789")),  # on the step: unchanged
        (D("0.0000000001"), 8, D(0), D("0.00000001")),
        (D("150.8011505"), 6, D("150.80115"), D("150.801151")),
        (D("2.5"), 0, D(2), D(3)),
        (D("999999999999.9999999999"), 6, D("999999999999.999999"), D("1000000000000")),
        (D("1E+12"), 8, D("1E+12"), D("1E+12")),
    ],
)
def test_quantize(x, dp, down, up):
    assert quantize_down(x, dp) == down
    assert quantize_up(x, dp) == up
    assert quantize_down(x, dp).as_tuple().exponent == -dp


@given(
    st.decimals(min_value=D("0.00000001"), max_value=D("1e12"), places=12, allow_nan=False),
    st.integers(0, 10),
)
def test_quantize_brackets(x, dp):
    unit = D(1).scaleb(-dp)
    lo, hi = quantize_down(x, dp), quantize_up(x, dp)
    assert lo <= x <= hi
    assert hi - lo in (0, unit)
    assert (hi - lo == 0) == (x == lo)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=10, max_value=D("1e12"),
                   min_value=D("-1e12")))
def test_plain_is_by_value(x):
    # The same number spelt with extra zeros prints the same, and reads back to itself.
    padded = x.quantize(D("1E-14"))
    assert plain(padded) == plain(x)
    assert D(plain(x)) == x
    assert "E" not in plain(x) and "e" not in plain(x)


@pytest.mark.parametrize("text", ["1", "0.01", "-0.5", ".5", "5.", "1e-2", "1E+2", "0E-10",
                                  "100000000000000000000", "1e999999999"])
def test_decimal_text_takes_what_a_json_number_may_look_like(text):
    assert DECIMAL_TEXT.fullmatch(text)
    Decimal(text)  # and Decimal agrees it is a number


@pytest.mark.parametrize("text", [
    "1_000", " 1", "1 ", "1\n", "+1", "\u0661", "\uff11", "1.2.3", ".", "", "e5", "1e",
    "0x10", "NaN", "Infinity", "-inf", "1,5", "\u00b2",
])
def test_decimal_text_refuses_what_only_decimal_would_take(text):
    assert DECIMAL_TEXT.fullmatch(text) is None


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_every_finite_decimal_prints_as_decimal_text(x):
    assert DECIMAL_TEXT.fullmatch(str(x)) and DECIMAL_TEXT.fullmatch(plain(x))
