"""Astra market symbols.

Format: ``{EXCHANGE}-{TYPE}-{BASE}-{QUOTE}[-{EXPIRY}][-{STRIKE}-{C|P}][-{DISAMBIGUATOR}]``.

Grammar (parts are separated by ``-``; positions below are 1-based part numbers):

    1 EXCHANGE       an ``Exchange`` value: BINANCE COINBASE OKX HUOBI KUCOIN KRAKEN ASTER SIM
    2 TYPE           SPOT | PERP | FUT | OPT
    3 BASE, 4 QUOTE  the venue's own asset names: ``[A-Z0-9]+`` (``XBT``, ``1000PEPE``)
    FUT, OPT:   5 EXPIRY   ``YYMMDD``, a real calendar date in 2000-2099
    OPT only:   6 STRIKE   positive decimal in canonical form: ``0|[1-9][0-9]*`` then optionally
                           ``.`` and digits not ending in 0 (``50000``, ``2.5``, ``0.05``);
                           no sign, no exponent, no leading or trailing zeros
                7 C | P    option type
    last, optional: DISAMBIGUATOR ``[A-Z][A-Z0-9]*`` (``COINM``)

So SPOT/PERP have 4 or 5 parts, FUT 5 or 6, OPT 7 or 8. Because a disambiguator must start
with a letter, ``BINANCE-SPOT-BTC-USDT-210625`` is rejected ("unexpected expiry") rather
than read as a disambiguator: each valid text has exactly one reading.

Invariants:
- ``str(parse_market(s)) == s`` for every valid ``s`` (the text form is canonical).
- ``parse_market(str(m)) == m`` for every ``MarketSymbol`` ``m`` (construction validates too;
  a strike given as ``Decimal("2.50")`` formats as ``2.5`` and compares equal to it).
- Invalid text raises ``InvalidMarket`` whose message names the bad part, its 1-based
  position, and the whole symbol; ``err.position`` carries the position.
- ``parse_market`` compiles nothing per call and memoizes valid results (``MarketSymbol`` is
  immutable, so sharing one instance between callers is safe).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache

import msgspec
from msgspec.structs import force_setattr

from ._errors import InvalidMarket
from ._models import AssetType, Exchange, OptionType

__all__ = [
    "MARKET_PATTERN",
    "MAX_MARKET_LENGTH",
    "MarketSymbol",
    "is_valid_market",
    "market_pattern",
    "parse_market",
]

# Longest real symbols are ~50 chars; the cap keeps junk out of the cache and error messages.
MAX_MARKET_LENGTH = 96


def market_pattern(exchanges: Iterable[str] | None = None) -> str:
    """The grammar above as one regular expression (ECMA-262 and Python alike), for the
    OpenAPI document: together with ``MAX_MARKET_LENGTH`` it accepts exactly what
    ``parse_market`` accepts (a property test holds the two together), so clients and fuzzers
    generated from the document send what the server takes. ``exchanges`` narrows part 1 to
    those codes (a gateway's served venues); codes that are no ``Exchange`` are left out."""
    asset = "[A-Z0-9]+"
    day28, day30, day31 = "(?:0[1-9]|1[0-9]|2[0-8])", "(?:29|30)", "31"
    # Every YYMMDD of 2000-2099: 2000 is a leap year, so YY divisible by 4 has 29 February.
    expiry = (
        f"(?:[0-9]{{2}}(?:(?:0[1-9]|1[0-2]){day28}|(?:0[13-9]|1[0-2]){day30}"
        f"|(?:0[13578]|1[02]){day31})|(?:[02468][048]|[13579][26])0229)"
    )
    strike = "(?:[1-9][0-9]*(?:\\.[0-9]*[1-9])?|0\\.[0-9]*[1-9])"
    tail = "(?:-[A-Z][A-Z0-9]*)?"  # the disambiguator starts with a letter: never an expiry
    wanted = None if exchanges is None else set(exchanges)
    codes = "|".join(e.value for e in Exchange if wanted is None or e.value in wanted)
    return (
        f"^(?:{codes})-(?:(?:SPOT|PERP)-{asset}-{asset}|FUT-{asset}-{asset}-{expiry}"
        f"|OPT-{asset}-{asset}-{expiry}-{strike}-[CP]){tail}$"
    )


MARKET_PATTERN = market_pattern()

# Hot-path constants: Enum class attribute access (AssetType.FUT) costs ~0.2us each on 3.11,
# and Enum hashing is a Python-level call, so lookups are keyed by plain strings.
_SPOT, _PERP, _FUT, _OPT = AssetType.SPOT, AssetType.PERP, AssetType.FUT, AssetType.OPT
_EXCHANGES = {e.value: e for e in Exchange}
_OPTION_TYPES = {o.value: o for o in OptionType}
# type -> (member, most parts allowed, layout for "too many parts" messages)
_TYPES = {
    "SPOT": (_SPOT, 5, "EXCHANGE-SPOT-BASE-QUOTE[-DISAMBIGUATOR]"),
    "PERP": (_PERP, 5, "EXCHANGE-PERP-BASE-QUOTE[-DISAMBIGUATOR]"),
    "FUT": (_FUT, 6, "EXCHANGE-FUT-BASE-QUOTE-EXPIRY[-DISAMBIGUATOR]"),
    "OPT": (_OPT, 8, "EXCHANGE-OPT-BASE-QUOTE-EXPIRY-STRIKE-C|P[-DISAMBIGUATOR]"),
}
# Explicit ASCII classes: \d would accept non-ASCII digits.
_EXPIRY_RE = re.compile(r"[0-9]{6}")
_STRIKE_RE = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]*[1-9])?")
_EXPECT_ASSET = "expected uppercase letters A-Z and digits 0-9"
_EXPECT_EXPIRY = "expected a date YYMMDD"
_EXPECT_STRIKE = "expected a positive number like 50000 or 2.5 (no sign, exponent or extra zeros)"
_EXPECT_DISAMBIGUATOR = "expected uppercase letters and digits, starting with a letter"
_UPPERCASE = "market symbols are uppercase"


@lru_cache(maxsize=4096)  # few distinct expiries exist; date() + int() cost more than a lookup
def _expiry_to_date(text: str) -> date | None:
    """The date of a ``YYMMDD`` string, or None if it is not a real date."""
    if _EXPIRY_RE.fullmatch(text) is None:
        return None
    try:
        return date(2000 + int(text[:2]), int(text[2:4]), int(text[4:]))
    except ValueError:
        return None


def _format_strike(strike: Decimal) -> str:
    text = format(strike, "f")  # "f" never uses an exponent, even for Decimal("5E+4")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _is_asset(text: str) -> bool:
    """``[A-Z0-9]+``, with str methods: ~3x faster than a compiled regex's fullmatch."""
    return text.isascii() and text.isalnum() and (text.isupper() or text.isdigit())


def _is_disambiguator(text: str) -> bool:
    """``[A-Z][A-Z0-9]*``."""
    return text[:1].isalpha() and _is_asset(text)


def _asset_problem(text: str) -> str | None:
    if _is_asset(text):
        return None
    return _UPPERCASE if text.upper() != text else _EXPECT_ASSET


def _invalid(reason: str) -> InvalidMarket:
    return InvalidMarket(f"invalid market symbol: {reason}")


def _coerce(symbol: MarketSymbol, name: str, enum: type) -> None:
    value = getattr(symbol, name)
    try:
        force_setattr(symbol, name, enum(value))
    except ValueError:
        raise _invalid(f"unknown {name} {value!r}") from None


class MarketSymbol(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A parsed market symbol; ``str()`` gives its canonical text.

    Direct construction validates and coerces: ``exchange``/``asset_type``/``option_type``
    accept their string values, ``strike`` accepts ``int``/``str``/``float``/``Decimal``.
    """

    exchange: Exchange
    asset_type: AssetType
    base: str
    quote: str
    expiry: str | None = None  # YYMMDD
    strike: Decimal | None = None
    option_type: OptionType | None = None
    disambiguator: str | None = None

    def __post_init__(self) -> None:
        # Runs on every construction (parser, msgspec decode, direct calls); the checks are
        # ordered so the common case (enums already enums, Decimal strike) does no coercion.
        if type(self.exchange) is not Exchange:
            _coerce(self, "exchange", Exchange)
        if type(self.asset_type) is not AssetType:
            _coerce(self, "asset_type", AssetType)
        if self.option_type is not None and type(self.option_type) is not OptionType:
            _coerce(self, "option_type", OptionType)
        if self.strike is not None and type(self.strike) is not Decimal:
            try:
                # str() first: Decimal(2.5) is exact binary, Decimal("2.5") is what was meant.
                force_setattr(self, "strike", Decimal(str(self.strike)))
            except InvalidOperation:
                raise _invalid(f"strike {self.strike!r}: {_EXPECT_STRIKE}") from None

        if type(self.base) is not str or not _is_asset(self.base):
            raise _invalid(f"base {self.base!r}: {_EXPECT_ASSET}")
        if type(self.quote) is not str or not _is_asset(self.quote):
            raise _invalid(f"quote {self.quote!r}: {_EXPECT_ASSET}")
        kind = self.asset_type
        is_option = kind is _OPT
        if (self.expiry is None) == (is_option or kind is _FUT):
            raise _invalid(
                f"{kind} markets {'need an' if self.expiry is None else 'take no'} expiry"
            )
        if (self.strike is None or self.option_type is None) == is_option:
            what = "need a strike and option_type" if is_option else "take no strike/option_type"
            raise _invalid(f"{kind} markets {what}")
        if self.expiry is not None and (
            type(self.expiry) is not str or _expiry_to_date(self.expiry) is None
        ):
            raise _invalid(f"expiry {self.expiry!r}: {_EXPECT_EXPIRY}")
        if self.strike is not None and (not self.strike.is_finite() or self.strike <= 0):
            raise _invalid(f"strike {self.strike!r}: {_EXPECT_STRIKE}")
        if self.disambiguator is not None and (
            type(self.disambiguator) is not str or not _is_disambiguator(self.disambiguator)
        ):
            raise _invalid(f"disambiguator {self.disambiguator!r}: {_EXPECT_DISAMBIGUATOR}")

    def __str__(self) -> str:
        parts = [self.exchange, self.asset_type, self.base, self.quote]
        if self.expiry is not None:
            parts.append(self.expiry)
        if self.strike is not None and self.option_type is not None:
            parts.append(_format_strike(self.strike))
            parts.append(self.option_type)
        if self.disambiguator is not None:
            parts.append(self.disambiguator)
        return "-".join(parts)

    @property
    def expiry_date(self) -> date | None:
        """Expiry as a date (None for SPOT/PERP)."""
        return None if self.expiry is None else _expiry_to_date(self.expiry)

    @property
    def is_derivative(self) -> bool:
        return self.asset_type is not _SPOT

    @property
    def is_coin_margined(self) -> bool:
        """True for the ``-COINM`` disambiguator (margined in the base asset)."""
        return self.disambiguator == "COINM"


def parse_market(text: str) -> MarketSymbol:
    """Parse a market symbol; raises ``InvalidMarket`` naming the bad part and its position."""
    if not isinstance(text, str):
        raise InvalidMarket(f"market symbol must be a string, not {type(text).__name__}")
    return _parse_cached(text)


def is_valid_market(text: str) -> bool:
    try:
        parse_market(text)
    except InvalidMarket:
        return False
    return True


@lru_cache(maxsize=8192)  # exceptions are not cached, so only valid symbols occupy it
def _parse_cached(text: str) -> MarketSymbol:
    return _parse(text)


def _parse(text: str) -> MarketSymbol:
    if not text:
        raise InvalidMarket("empty market symbol", market=text, position=1)
    if len(text) > MAX_MARKET_LENGTH:
        raise InvalidMarket(
            f"market symbol too long ({len(text)} characters, at most {MAX_MARKET_LENGTH})"
        )
    parts = text.split("-")
    count = len(parts)

    def fail(
        kind: str, pos: int, reason: str, *, verb: str = "invalid", missing: bool = False
    ) -> InvalidMarket:
        part = parts[pos - 1] if pos <= count else ""
        if missing or pos > count:
            head = f"missing {kind}"
        elif not part:
            head = f"empty {kind}"
        else:
            head = f"{verb} {kind} '{part}'"
        msg = f"{head} (part {pos}) in market '{text}': {reason}"
        return InvalidMarket(msg, market=text, position=pos)

    if count < 4:
        missing = ("exchange", "type", "base", "quote")[count]
        raise InvalidMarket(
            f"too few parts in market '{text}': missing {missing} (part {count + 1}); "
            "expected at least EXCHANGE-TYPE-BASE-QUOTE",
            market=text,
            position=count + 1,
        )

    exchange = _EXCHANGES.get(parts[0])
    if exchange is None:
        upper = parts[0].upper() in _EXCHANGES
        raise fail(
            "exchange",
            1,
            _UPPERCASE if upper else f"expected one of {', '.join(Exchange)}",
            verb="invalid" if upper else "unknown",
        )
    layout = _TYPES.get(parts[1])
    if layout is None:
        upper = parts[1].upper() in _TYPES
        raise fail(
            "type",
            2,
            _UPPERCASE if upper else "expected SPOT, PERP, FUT or OPT",
            verb="invalid" if upper else "unknown",
        )
    base, quote = parts[2], parts[3]
    if problem := _asset_problem(base):
        raise fail("base", 3, problem)
    if problem := _asset_problem(quote):
        raise fail("quote", 4, problem)

    asset_type, max_parts, layout_text = layout
    if count > max_parts:
        raise InvalidMarket(
            f"too many parts in market '{text}': {count} parts, but {asset_type} markets have "
            f"at most {max_parts} ({layout_text})",
            market=text,
            position=max_parts + 1,
        )

    pos = 5
    expiry = strike = option_type = None
    if asset_type is _FUT or asset_type is _OPT:
        expiry = parts[4] if count >= 5 else None
        if expiry is None or _expiry_to_date(expiry) is None:
            reason = _EXPECT_EXPIRY if expiry else f"{asset_type} markets need an expiry YYMMDD"
            raise fail("expiry", 5, reason)
        pos = 6
        if asset_type is _OPT:
            if count == 6 and parts[5] in _OPTION_TYPES:
                # "...-210625-C": the strike, not the option type, is what is absent.
                raise fail("strike", 6, "expected EXPIRY-STRIKE-C|P", missing=True)
            if count < 6 or _STRIKE_RE.fullmatch(parts[5]) is None or parts[5] == "0":
                raise fail("strike", 6, _EXPECT_STRIKE)
            strike = Decimal(parts[5])
            if count < 7 or (option_type := _OPTION_TYPES.get(parts[6])) is None:
                if count < 7:
                    raise fail("option type C or P", 7, "options need EXPIRY-STRIKE-C|P")
                reason = _UPPERCASE if parts[6] in ("c", "p") else "expected C or P"
                raise fail("option type", 7, reason)
            pos = 8
    elif count == 5 and _EXPIRY_RE.fullmatch(parts[4]):
        reason = f"{asset_type} markets have no expiry (a disambiguator starts with a letter)"
        raise fail("expiry", 5, reason, verb="unexpected")

    disambiguator = None
    if count >= pos:
        disambiguator = parts[pos - 1]
        if not _is_disambiguator(disambiguator):
            upper = _is_disambiguator(disambiguator.upper())
            raise fail("disambiguator", pos, _UPPERCASE if upper else _EXPECT_DISAMBIGUATOR)

    return MarketSymbol(
        exchange=exchange,
        asset_type=asset_type,
        base=base,
        quote=quote,
        expiry=expiry,
        strike=strike,
        option_type=option_type,
        disambiguator=disambiguator,
    )
