"""The OTC desk's settings: the ``[otc]`` section of ``astra serve --config``.

```toml
[otc]
home = "USDT"            # limits and the desk's result are in this asset
spread_bps = 10          # an account's spread when it has none of its own
max_notional = 1000000   # per trade (home asset), unless the account has its own
daily_volume = 10000000  # per account and UTC day (home asset)
quote_ttl = 5            # seconds a quote stays acceptable
stream_interval = 1      # seconds between quotes on /ws/stream-otc-quotes
bridges = ["USDT", "USDC"]   # assets a pair without a direct market is priced through
usd = "USDT"             # USD is priced through this asset...
usd_rate = 1             # ...at this many USD per unit, or "market" (a USDT/USD market)
venues = ["SIM", "SIM2"] # members the desk prices and hedges on (default: all)
hedge = "sor"            # "sor": hedge every trade through the router; "off": keep the risk
hedge_key = "otc-desk"   # the key id whose venue credentials the hedges trade with
hedge_slippage_bps = 50  # a hedge order's bound around the consolidated mid
hedge_attempts = 3       # tries per hedge leg before it is flagged FAILED
max_skew_bps = 5         # price skew at a full inventory limit
signing_key_id = "k1"    # the quote-signing key (astra.otc.signing); rotate by adding a key
signing_keys = { k1 = "<64+ hex characters>" }
[otc.inventory_limits]   # the desk's largest position per asset (absolute)
BTC = 50
[otc.precision]          # decimal places per asset (else 8; USD 4, USDT/USDC 6)
BTC = 8
```

Invariant: ``OtcConfig.from_config`` checks every value (type and range) and raises
``ValueError`` naming the setting, so ``astra serve`` exits with status 2 instead of a desk that
misprices; a secret is never part of a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from .assets import DECIMAL_TEXT, MAX_PLACES

__all__ = ["OtcConfig"]

_ASSET = re.compile(r"^[A-Z0-9]{1,16}$")
_KEYS = {"home", "spread_bps", "max_notional", "daily_volume", "quote_ttl", "stream_interval",
         "bridges", "usd", "usd_rate", "venues", "hedge", "hedge_key", "hedge_slippage_bps",
         "hedge_attempts", "max_skew_bps", "signing_key_id", "signing_keys",
         "inventory_limits", "precision"}


def _number(section: Mapping, name: str, default, low: float, high: float, *,
            optional: bool = False, setting: str | None = None, positive: bool = False,
            kind: str = "a number") -> Decimal | None:
    """``section[name]`` as a Decimal in [low, high] (> 0 when ``positive``); ``setting`` is
    the name a message gives (default ``name``), ``kind`` what it says the value must be."""
    setting = setting or name
    value = section.get(name, default)
    if value is None and optional:
        return None
    # Text as strictly as a number: Decimal() alone takes "1_0", " 5" and other scripts' digits.
    if isinstance(value, bool) or not isinstance(value, int | float | str) or (
            isinstance(value, str) and DECIMAL_TEXT.fullmatch(value) is None):
        raise ValueError(f"[otc] {setting} must be {kind}, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"[otc] {setting} must be {kind}, got {value!r}") from None
    if not number.is_finite() or not low <= number <= high:
        raise ValueError(f"[otc] {setting} must be between {low:g} and {high:g}, got {value!r}")
    if positive and number <= 0:
        raise ValueError(f"[otc] {setting} must be greater than 0, got {value!r}")
    return number


def _asset(name: str, value: object) -> str:
    if not isinstance(value, str) or not _ASSET.fullmatch(value):
        raise ValueError(f"[otc] {name} must be an asset such as USDT, got {value!r}")
    return value


@dataclass(frozen=True)
class OtcConfig:
    home: str = "USDT"
    spread_bps: Decimal = Decimal(10)
    max_notional: Decimal | None = Decimal(1_000_000)
    daily_volume: Decimal | None = Decimal(10_000_000)
    quote_ttl: float = 5.0
    stream_interval: float = 1.0
    bridges: tuple[str, ...] = ("USDT", "USDC")
    usd: str = "USDT"
    usd_rate: Decimal | None = Decimal(1)  # None: "market"
    venues: tuple[str, ...] | None = None
    hedge: str = "sor"
    hedge_key: str = "otc-desk"
    hedge_slippage_bps: float = 50.0
    hedge_attempts: int = 3
    max_skew_bps: Decimal = Decimal(5)
    inventory_limits: dict[str, Decimal] = field(default_factory=dict)
    precision: dict[str, int] = field(default_factory=dict)
    section: Mapping = field(default_factory=dict, repr=False)  # for the signer's settings

    @classmethod
    def from_config(cls, section: Mapping | None) -> OtcConfig:
        if section is None:
            section = {}
        if not isinstance(section, Mapping):  # otc = 5 in the file: not a table
            raise ValueError("[otc] must be a table of settings")
        section = dict(section)
        unknown = sorted(set(section) - _KEYS)
        if unknown:
            raise ValueError(f"[otc] unknown setting {unknown[0]!r}")
        home = _asset("home", section.get("home", "USDT"))
        bridges = section.get("bridges", ["USDT", "USDC"])
        if not isinstance(bridges, list):
            raise ValueError("[otc] bridges must be a list of assets")
        rate = section.get("usd_rate", 1)
        venues = section.get("venues")
        if venues is not None and (not isinstance(venues, list) or not venues
                                   or not all(isinstance(v, str) for v in venues)):
            raise ValueError("[otc] venues must be a non-empty list of venue codes")
        hedge = section.get("hedge", "sor")
        if hedge not in ("sor", "off"):
            raise ValueError(f"[otc] hedge must be \"sor\" or \"off\", got {hedge!r}")
        hedge_key = section.get("hedge_key", "otc-desk")
        if not isinstance(hedge_key, str) or not 1 <= len(hedge_key) <= 64:
            raise ValueError("[otc] hedge_key must be an API key id")
        attempts = section.get("hedge_attempts", 3)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 20:
            raise ValueError(f"[otc] hedge_attempts must be an integer 1 to 20, got {attempts!r}")
        limits = section.get("inventory_limits", {})
        precision = section.get("precision", {})
        if not isinstance(limits, Mapping) or not isinstance(precision, Mapping):
            raise ValueError("[otc] inventory_limits and precision are tables of assets")
        for asset, dp in precision.items():
            _asset("precision", asset)
            if isinstance(dp, bool) or not isinstance(dp, int) or not 0 <= dp <= MAX_PLACES:
                raise ValueError(f"[otc] precision.{asset} must be an integer 0 to {MAX_PLACES}")
        return cls(
            home=home,
            spread_bps=_number(section, "spread_bps", 10, 0, 5000),
            # 0 would refuse every quote: a limit is > 0 (leave it out for the default).
            max_notional=_number(section, "max_notional", 1_000_000, 0, 1e15, optional=True,
                                 positive=True),
            daily_volume=_number(section, "daily_volume", 10_000_000, 0, 1e16, optional=True,
                                 positive=True),
            quote_ttl=float(_number(section, "quote_ttl", 5, 0.1, 3600)),
            stream_interval=float(_number(section, "stream_interval", 1, 0.05, 3600)),
            bridges=tuple(_asset("bridges", b) for b in bridges),
            usd=_asset("usd", section.get("usd", "USDT")),
            usd_rate=None if rate == "market" else _number(
                section, "usd_rate", 1, 1e-9, 1e9, kind='a number or "market"'),
            venues=tuple(v.upper() for v in venues) if venues else None,
            hedge=hedge,
            hedge_key=hedge_key,
            hedge_slippage_bps=float(_number(section, "hedge_slippage_bps", 50, 0.01, 10000)),
            hedge_attempts=attempts,
            max_skew_bps=_number(section, "max_skew_bps", 5, 0, 1000),
            inventory_limits={_asset("inventory_limits", a): _number(
                limits, a, None, 0, 1e15, setting=f"inventory_limits.{a}") for a in limits},
            precision=dict(precision),
            section=section,
        )
