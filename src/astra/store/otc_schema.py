"""The OTC desk's tables (``otc_*`` on ``METADATA``), its row types and exact unit arithmetic.

Money is kept as integers: a balance, the desk's inventory and the daily volume are ``units =
amount * 10**precision`` in BIGINT columns, so that every movement is one conditional UPDATE
(``SET units = units - :n WHERE ... AND units >= :n``) that is exact and atomic on SQLite and
PostgreSQL alike. Quote and trade quantities, limits and results are decimal TEXT (exact, any
scale). An asset's precision is fixed the first time the store sees it (``otc_assets``) and
never changes afterwards, so a unit always means the same amount.

Invariants:
- ``otc_balances.units >= 0`` (a CHECK constraint backs the conditional debits).
- ``otc_quotes.signature`` is UNIQUE and ``otc_trades.quote_id`` is UNIQUE: a quote books at
  most one trade whatever the number of processes.
- ``otc_audit`` is append-only: a trigger refuses UPDATE and DELETE (and TRUNCATE on
  PostgreSQL), created with the table on both databases.
- Times are integer milliseconds since the Unix epoch, except ``expiry_us`` (microseconds,
  as the quote's ``expiryTime``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import Any

import msgspec
import sqlalchemy as sa

from astra.core import InvalidParameter

from ._db import METADATA

__all__ = [
    "HEDGE_STATES",
    "MAX_UNITS",
    "NOTIONAL_PLACES",
    "OTC_ACCOUNTS",
    "OTC_ASSETS",
    "OTC_AUDIT",
    "OTC_BALANCES",
    "OTC_DAILY",
    "OTC_DESK",
    "OTC_HEDGES",
    "OTC_INVENTORY",
    "OTC_QUOTES",
    "OTC_TABLES",
    "OTC_TRADES",
    "QUOTE_STATES",
    "TRADE_HEDGE_STATES",
    "AccountRow",
    "HedgeRow",
    "QuoteRow",
    "TradeRow",
]

QUOTE_STATES = ("ACTIVE", "ACCEPTED")
TRADE_HEDGE_STATES = ("PENDING", "HEDGED", "PARTIAL", "FAILED", "OFF")
HEDGE_STATES = ("PENDING", "SENT", "DONE", "FAILED")
MAX_UNITS = 2**63 - 1  # BIGINT: no amount, balance or position may leave [-MAX, MAX] units
NOTIONAL_PLACES = 8  # otc_daily counts home-asset volume in units of 10**-8
ASSET_RE = re.compile(r"[A-Z0-9]{1,16}")
_ID = 64  # account, quote, trade ids and API key ids
_ASSET = 16
_DEC = 64  # a decimal as TEXT
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # rowid on SQLite

OTC_ACCOUNTS = sa.Table(
    "otc_accounts", METADATA,
    sa.Column("account_id", sa.String(_ID), primary_key=True),  # a UUID4
    sa.Column("key_id", sa.String(_ID), nullable=False, index=True),  # the owning API key
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("spread_bps", sa.String(_DEC), nullable=True),  # NULL: the desk's default
    sa.Column("max_notional", sa.String(_DEC), nullable=True),
    sa.Column("daily_volume", sa.String(_DEC), nullable=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)
OTC_ASSETS = sa.Table(
    "otc_assets", METADATA,
    sa.Column("asset", sa.String(_ASSET), primary_key=True),
    sa.Column("precision", sa.Integer, nullable=False),
)
OTC_BALANCES = sa.Table(
    "otc_balances", METADATA,
    sa.Column("account_id", sa.String(_ID), sa.ForeignKey("otc_accounts.account_id"),
              primary_key=True),
    sa.Column("asset", sa.String(_ASSET), primary_key=True),
    sa.Column("units", sa.BigInteger, nullable=False),
    sa.CheckConstraint("units >= 0", name="ck_otc_balances_not_negative"),
)
OTC_INVENTORY = sa.Table(
    "otc_inventory", METADATA,
    sa.Column("asset", sa.String(_ASSET), primary_key=True),
    sa.Column("units", sa.BigInteger, nullable=False),  # signed: the desk's position
)
OTC_DAILY = sa.Table(
    "otc_daily", METADATA,
    sa.Column("account_id", sa.String(_ID), sa.ForeignKey("otc_accounts.account_id"),
              primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),  # "YYYY-MM-DD" (UTC)
    sa.Column("units", sa.BigInteger, nullable=False),  # home asset, 10**-NOTIONAL_PLACES
)
OTC_QUOTES = sa.Table(
    "otc_quotes", METADATA,
    sa.Column("quote_id", sa.String(_ID), primary_key=True),
    sa.Column("signature", sa.String(128), nullable=False, unique=True),
    sa.Column("signing_key_id", sa.String(_ID), nullable=False),
    sa.Column("account_id", sa.String(_ID), sa.ForeignKey("otc_accounts.account_id"),
              nullable=False),
    sa.Column("from_asset", sa.String(_ASSET), nullable=False),
    sa.Column("to_asset", sa.String(_ASSET), nullable=False),
    sa.Column("from_qty", sa.String(_DEC), nullable=False),
    sa.Column("to_qty", sa.String(_DEC), nullable=False),
    sa.Column("expiry_us", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("accepted_ms", sa.BigInteger, nullable=True),
    sa.Column("home_notional", sa.String(_DEC), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # JSON: pricing detail, hedge legs
)
OTC_TRADES = sa.Table(
    "otc_trades", METADATA,
    sa.Column("trade_id", sa.String(_ID), primary_key=True),  # a UUID4
    sa.Column("quote_id", sa.String(_ID), nullable=False, unique=True),
    sa.Column("account_id", sa.String(_ID), sa.ForeignKey("otc_accounts.account_id"),
              nullable=False),
    sa.Column("from_asset", sa.String(_ASSET), nullable=False),
    sa.Column("to_asset", sa.String(_ASSET), nullable=False),
    sa.Column("from_qty", sa.String(_DEC), nullable=False),
    sa.Column("to_qty", sa.String(_DEC), nullable=False),
    sa.Column("home_notional", sa.String(_DEC), nullable=False),
    sa.Column("time_ms", sa.BigInteger, nullable=False),
    sa.Column("hedge_state", sa.String(16), nullable=False),
    sa.Column("hedge_cost", sa.String(_DEC), nullable=True),
    sa.Column("result_home", sa.String(_DEC), nullable=True),
    sa.Column("result_bps", sa.String(_DEC), nullable=True),
    sa.Index("ix_otc_trades_account", "account_id", "time_ms"),
)
OTC_HEDGES = sa.Table(
    "otc_hedges", METADATA,
    sa.Column("hedge_id", _BIGID, primary_key=True, autoincrement=True),
    sa.Column("trade_id", sa.String(_ID), sa.ForeignKey("otc_trades.trade_id"),
              nullable=False),
    sa.Column("leg", sa.Integer, nullable=False),
    sa.Column("symbol", sa.String(128), nullable=False),
    sa.Column("side", sa.String(8), nullable=False),
    sa.Column("quantity", sa.String(_DEC), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("client_order_id", sa.String(64), nullable=True),
    sa.Column("sent_quantity", sa.String(_DEC), nullable=True),  # of the last try sent
    sa.Column("parent_order_id", sa.String(64), nullable=True),
    sa.Column("filled", sa.String(_DEC), nullable=True),
    sa.Column("average_price", sa.String(_DEC), nullable=True),
    sa.Column("fees", sa.String(_DEC), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("trade_id", "leg", name="uq_otc_hedges_leg"),
    sa.Index("ix_otc_hedges_state", "state"),
)
OTC_AUDIT = sa.Table(
    "otc_audit", METADATA,
    sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
    sa.Column("time_ms", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("account_id", sa.String(_ID), nullable=True),
    sa.Column("quote_id", sa.String(_ID), nullable=True),
    sa.Column("trade_id", sa.String(_ID), nullable=True),
    sa.Column("detail", sa.Text, nullable=False),  # JSON object
    sa.Index("ix_otc_audit_kind", "kind"),
    sa.Index("ix_otc_audit_quote", "quote_id"),
    sa.Index("ix_otc_audit_trade", "trade_id"),
)
OTC_DESK = sa.Table(
    "otc_desk", METADATA,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
# In creation order (foreign keys first).
OTC_TABLES = (OTC_ACCOUNTS, OTC_ASSETS, OTC_BALANCES, OTC_INVENTORY, OTC_DAILY, OTC_QUOTES,
              OTC_TRADES, OTC_HEDGES, OTC_AUDIT, OTC_DESK)

# The audit trail is append-only in the database itself, not only in this module's API.
for _op in ("UPDATE", "DELETE"):
    sa.event.listen(OTC_AUDIT, "after_create", sa.DDL(
        f"CREATE TRIGGER otc_audit_no_{_op.lower()} BEFORE {_op} ON otc_audit "
        "BEGIN SELECT RAISE(ABORT, 'otc_audit is append-only'); END").execute_if(
            dialect="sqlite"))
sa.event.listen(OTC_AUDIT, "after_create", sa.DDL(
    "CREATE OR REPLACE FUNCTION otc_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'otc_audit is append-only'; END $$").execute_if(
        dialect="postgresql"))
sa.event.listen(OTC_AUDIT, "after_create", sa.DDL(
    "CREATE TRIGGER otc_audit_no_change BEFORE UPDATE OR DELETE ON otc_audit "
    "FOR EACH ROW EXECUTE FUNCTION otc_audit_append_only()").execute_if(dialect="postgresql"))
sa.event.listen(OTC_AUDIT, "after_create", sa.DDL(
    "CREATE TRIGGER otc_audit_no_truncate BEFORE TRUNCATE ON otc_audit "
    "FOR EACH STATEMENT EXECUTE FUNCTION otc_audit_append_only()").execute_if(
        dialect="postgresql"))


@dataclass(frozen=True, slots=True)
class AccountRow:
    account_id: str
    key_id: str
    name: str | None
    spread_bps: Decimal | None  # None: the desk's default
    max_notional: Decimal | None
    daily_volume: Decimal | None
    created_ms: int


@dataclass(frozen=True, slots=True)
class QuoteRow:
    quote_id: str
    signature: str
    signing_key_id: str
    account_id: str
    from_asset: str  # the client buys it
    to_asset: str  # the client sells it
    from_qty: Decimal
    to_qty: Decimal
    expiry_us: int
    state: str
    created_ms: int
    accepted_ms: int | None
    home_notional: Decimal
    detail: dict[str, Any]  # "hedges": [{"symbol", "side", "quantity"}, ...]


@dataclass(frozen=True, slots=True)
class TradeRow:
    trade_id: str
    quote_id: str
    account_id: str
    from_asset: str
    to_asset: str
    from_qty: Decimal
    to_qty: Decimal
    home_notional: Decimal
    time_ms: int
    hedge_state: str
    hedge_cost: Decimal | None
    result_home: Decimal | None
    result_bps: Decimal | None


@dataclass(frozen=True, slots=True)
class HedgeRow:
    hedge_id: int
    trade_id: str
    leg: int
    symbol: str
    side: str
    quantity: Decimal
    state: str
    attempts: int
    client_order_id: str | None
    parent_order_id: str | None
    filled: Decimal | None
    average_price: Decimal | None
    fees: Decimal | None
    error: str | None
    updated_ms: int
    sent_quantity: Decimal | None = None  # the quantity of the last try sent (the hedger's)


# ---------------------------------------------------------------------------- conversions


def check_asset(asset: object, name: str = "asset") -> str:
    if not isinstance(asset, str) or ASSET_RE.fullmatch(asset) is None:
        raise InvalidParameter(name, "an asset is 1 to 16 characters of A-Z and 0-9")
    return asset


def to_decimal(value: object, name: str) -> Decimal:
    """A finite Decimal from a Decimal, an int or a decimal string (never a float)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise InvalidParameter(name, "expected a decimal number")
    try:
        d = Decimal(value)
    except (InvalidOperation, ValueError):
        raise InvalidParameter(name, "expected a decimal number") from None
    if not d.is_finite():
        raise InvalidParameter(name, "must be a finite number")
    return d


def to_units(amount: Decimal, precision: int, name: str, asset: str) -> int:
    """``amount * 10**precision`` exactly; InvalidParameter(name) when ``amount`` has more
    decimal places than ``asset`` allows or does not fit in BIGINT."""
    amount = to_decimal(amount, name)
    with localcontext() as ctx:
        ctx.prec = 80  # exact for every amount that fits in BIGINT units
        scaled = amount.scaleb(precision)
        if scaled != scaled.to_integral_value():
            raise InvalidParameter(
                name, f"{asset} amounts have at most {precision} decimal places")
        units = int(scaled)
    if abs(units) > MAX_UNITS:
        raise InvalidParameter(name, "amount too large")
    return units


def round_units(amount: Decimal, precision: int, *, up: bool = False) -> int:
    """``amount`` in units, rounded (half-even, or up with ``up``): for flows the desk does not
    choose (hedge fills and fees, home-asset notionals)."""
    with localcontext() as ctx:
        ctx.prec = 80
        scaled = Decimal(amount).scaleb(precision)
        units = int(scaled.to_integral_value(ROUND_CEILING if up else ROUND_HALF_EVEN))
    return max(-MAX_UNITS, min(MAX_UNITS, units))


def from_units(units: int, precision: int) -> Decimal:
    """The Decimal of ``units``, without trailing zeros or exponent ("1.5", "100", "0")."""
    return plain_decimal(Decimal(units).scaleb(-precision))


def plain_decimal(d: Decimal) -> Decimal:
    """``d`` without trailing zeros or exponent, exactly (never rounded to 28 digits)."""
    with localcontext() as ctx:
        ctx.prec = max(28, len(d.as_tuple().digits))
        d = d.normalize()
        return d.quantize(Decimal(1)) if d.as_tuple().exponent > 0 else d


def dec_text(value: Decimal | None) -> str | None:
    return None if value is None else format(plain_decimal(Decimal(value)), "f")


def text_dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def encode_json(value: Any) -> str:
    return msgspec.json.encode(value, order="sorted").decode()


def account_row(r: sa.Row) -> AccountRow:
    return AccountRow(r.account_id, r.key_id, r.name, text_dec(r.spread_bps),
                      text_dec(r.max_notional), text_dec(r.daily_volume), r.created_ms)


def quote_row(r: sa.Row) -> QuoteRow:
    return QuoteRow(r.quote_id, r.signature, r.signing_key_id, r.account_id, r.from_asset,
                    r.to_asset, Decimal(r.from_qty), Decimal(r.to_qty), r.expiry_us, r.state,
                    r.created_ms, r.accepted_ms, Decimal(r.home_notional),
                    msgspec.json.decode(r.detail))


def trade_row(r: sa.Row) -> TradeRow:
    return TradeRow(r.trade_id, r.quote_id, r.account_id, r.from_asset, r.to_asset,
                    Decimal(r.from_qty), Decimal(r.to_qty), Decimal(r.home_notional), r.time_ms,
                    r.hedge_state, text_dec(r.hedge_cost), text_dec(r.result_home),
                    text_dec(r.result_bps))


def hedge_row(r: sa.Row) -> HedgeRow:
    return HedgeRow(r.hedge_id, r.trade_id, r.leg, r.symbol, r.side, Decimal(r.quantity),
                    r.state, r.attempts, r.client_order_id, r.parent_order_id,
                    text_dec(r.filled), text_dec(r.average_price), text_dec(r.fees), r.error,
                    r.updated_ms, text_dec(r.sent_quantity))
