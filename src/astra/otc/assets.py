"""Asset names and amounts on the OTC desk: checked as sent, compared and printed by value.

Invariants:
- An asset is taken exactly as the client sent it and must match ``ASSET_RE`` (1..16 of
  ``A-Z0-9``); nothing is upper-cased, so the signed string is the string that was checked.
- An amount is a finite Decimal, > 0, <= ``MAX_AMOUNT``, with at most the asset's precision
  of decimal places counted BY VALUE (``1.2500`` has two). ``check_amount`` returns it
  normalized without exponent notation (``Decimal("1E+2")`` -> ``Decimal("100")``).
- ``normal`` and ``plain`` never round: they rebuild the digits from ``as_tuple()`` instead of
  calling ``Decimal.normalize()``, which would round to the context's 28 digits.

Integrity rule: two amounts that are equal as numbers have the same ``plain`` text, so a
signature over ``plain`` covers the value and not its spelling.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext

from astra.core import InvalidParameter

__all__ = [
    "ACCOUNT_ID_RE",
    "ASSET_RE",
    "DECIMAL_TEXT",
    "MAX_AMOUNT",
    "MAX_PLACES",
    "check_amount",
    "check_asset",
    "normal",
    "plain",
    "quantize_down",
    "quantize_up",
]

ASSET_RE = re.compile(r"^[A-Z0-9]{1,16}$")
# An OTC account id (a UUID as issued; any 1..64 of these in a request): use with fullmatch.
ACCOUNT_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# A number written as text, as strictly as a JSON number (ASCII digits, one point, an optional
# exponent; ".5" and "5." too): Decimal() alone also takes "1_000", " 1 ", "+1", "Infinity" and
# other scripts' digits ("\u0661" is one), each a surprise in an amount. Use with fullmatch.
DECIMAL_TEXT = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MAX_AMOUNT = Decimal(10) ** 12
# The most decimal places an asset's amounts may have ([otc.precision] is 0..MAX_PLACES): no
# amount the desk quotes has more, so a longer one is no quote's (and is not printed: plain()
# of 1E-999999999 would be a billion digits).
MAX_PLACES = 18
# Enough digits for any quantize of an amount up to 1e12 at any sane precision: quantize
# raises InvalidOperation when the result would need more digits than the context has.
_PREC = 80


def check_asset(value: object, name: str) -> str:
    """``value`` when it is an asset name (see ``ASSET_RE``), else ``InvalidParameter(name)``."""
    if not isinstance(value, str) or ASSET_RE.fullmatch(value) is None:
        raise InvalidParameter(name, "an asset is 1 to 16 characters A-Z or 0-9 (upper case)")
    return value


def check_amount(value: object, precision: int, name: str) -> Decimal:
    """``value`` normalized, when it is a Decimal, finite, > 0, <= 1e12, with at most
    ``precision`` decimal places; else ``InvalidParameter(name)`` saying why."""
    if type(value) is not Decimal:
        raise InvalidParameter(name, "must be a decimal number")
    if not value.is_finite():
        raise InvalidParameter(name, "must be a finite number")
    if value <= 0:
        raise InvalidParameter(name, "must be greater than 0")
    if value > MAX_AMOUNT:
        raise InvalidParameter(name, "must be at most 1000000000000")
    value = normal(value)
    places = -value.as_tuple().exponent
    if places > precision:
        raise InvalidParameter(
            name, f"at most {precision} decimal places (the asset's precision), got {places}"
        )
    return value


def normal(x: Decimal) -> Decimal:
    """``x`` with its trailing zeros stripped and no positive exponent, exactly (no rounding):
    ``1.2500`` -> ``1.25``, ``1E+2`` -> ``100``, ``0E-8`` -> ``0``."""
    if not x.is_finite():
        raise ValueError(f"not a finite number: {x}")
    sign, digits, exp = x.as_tuple()
    assert isinstance(exp, int)
    if not any(digits):
        return Decimal(0)
    n = len(digits)
    while n > 1 and digits[n - 1] == 0 and exp < 0:
        n -= 1
        exp += 1
    digits = digits[:n]
    if exp > 0:
        digits = digits + (0,) * exp
        exp = 0
    return Decimal((sign, digits, exp))


def plain(x: Decimal) -> str:
    """``x`` as text by value, never in exponent notation: "100", "1.25", "0.00000001"."""
    return format(normal(x), "f")


def quantize_down(x: Decimal, dp: int) -> Decimal:
    """``x`` rounded toward -infinity to ``dp`` decimal places (what the client receives)."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        return x.quantize(Decimal(1).scaleb(-dp), rounding=ROUND_FLOOR)


def quantize_up(x: Decimal, dp: int) -> Decimal:
    """``x`` rounded toward +infinity to ``dp`` decimal places (what the client pays)."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        return x.quantize(Decimal(1).scaleb(-dp), rounding=ROUND_CEILING)
