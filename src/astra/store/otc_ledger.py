"""The OTC ledger's money-moving steps, each run inside the caller's transaction.

Every movement is a conditional UPDATE on integer units (``otc_schema``): a debit is ``SET
units = units - :n WHERE ... AND units >= :n``, a credit first makes sure the row exists
(``INSERT ... ON CONFLICT DO NOTHING``) and then adds, a limited move adds only if the result
stays inside the limit. No value is read and written back, so concurrent transactions on
PostgreSQL (row locks, READ COMMITTED re-checks the WHERE after a wait) and on SQLite (one
writer at a time) can never lose or double an update.

``accept`` is the atomic accept of a quote (spec, section 4): any refusal raises, and the
caller's ``engine.begin()`` rolls the whole transaction back, so the quote stays ACTIVE and no
balance, volume or position moved. Rows are touched in one global order (the quote, then the
account's balances by asset, its daily volume, then the inventory by asset) so two accepts on
PostgreSQL never wait on each other in a cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from astra.core import (
    InsufficientBalance,
    InvalidParameter,
    InvalidQuoteSignature,
    LimitExceeded,
    QuoteAlreadyAccepted,
    QuoteExpired,
)

from .otc_schema import (
    MAX_UNITS,
    NOTIONAL_PLACES,
    OTC_AUDIT,
    OTC_BALANCES,
    OTC_DAILY,
    OTC_HEDGES,
    OTC_INVENTORY,
    OTC_QUOTES,
    OTC_TRADES,
    QuoteRow,
    TradeRow,
    dec_text,
    encode_json,
    from_units,
    trade_row,
)

__all__ = ["accept", "audit", "balance_units", "credit", "debit", "move_inventory"]

_B, _I, _D, _Q, _T = OTC_BALANCES, OTC_INVENTORY, OTC_DAILY, OTC_QUOTES, OTC_TRADES


def _ensure(conn: sa.Connection, table: sa.Table, keys: Mapping[str, Any]) -> None:
    """The row of ``keys`` exists afterwards (with 0 units), whoever inserted it."""
    values = {**keys, "units": 0}
    name = conn.dialect.name
    if name in ("postgresql", "sqlite"):
        insert = pg_insert if name == "postgresql" else sqlite_insert
        conn.execute(insert(table).values(values).on_conflict_do_nothing())
        return
    try:  # other databases: a savepoint keeps the transaction usable after a clash
        with conn.begin_nested():
            conn.execute(sa.insert(table).values(values))
    except IntegrityError:
        pass


def balance_units(conn: sa.Connection, account_id: str, asset: str) -> int:
    units = conn.execute(sa.select(_B.c.units).where(
        _B.c.account_id == account_id, _B.c.asset == asset)).scalar()
    return units or 0


def credit(conn: sa.Connection, account_id: str, asset: str, units: int) -> None:
    _ensure(conn, _B, {"account_id": account_id, "asset": asset})
    n = conn.execute(sa.update(_B).where(
        _B.c.account_id == account_id, _B.c.asset == asset, _B.c.units <= MAX_UNITS - units,
    ).values(units=_B.c.units + units)).rowcount
    if n != 1:
        raise InvalidParameter("amount", f"the {asset} balance would be too large")


def debit(conn: sa.Connection, account_id: str, asset: str, units: int) -> bool:
    """Take ``units`` off the balance if it holds that much; False (nothing moved) if not."""
    return conn.execute(sa.update(_B).where(
        _B.c.account_id == account_id, _B.c.asset == asset, _B.c.units >= units,
    ).values(units=_B.c.units - units)).rowcount == 1


def move_inventory(conn: sa.Connection, asset: str, units: int,
                   limit: int | None = None) -> bool:
    """Add ``units`` (signed) to the desk's position in ``asset``. With ``limit``, only if the
    move does not take the position past ``limit`` on the side it moves towards (so a move
    back towards zero is always allowed, even when a lowered limit is already exceeded)."""
    _ensure(conn, _I, {"asset": asset})
    bound = MAX_UNITS if limit is None else min(MAX_UNITS, limit)
    cond = _I.c.units <= bound - units if units >= 0 else _I.c.units >= -bound - units
    return conn.execute(sa.update(_I).where(_I.c.asset == asset, cond)
                        .values(units=_I.c.units + units)).rowcount == 1


def _add_daily(conn: sa.Connection, account_id: str, day: str, units: int,
               limit: int | None) -> bool:
    _ensure(conn, _D, {"account_id": account_id, "day": day})
    bound = MAX_UNITS if limit is None else min(MAX_UNITS, limit)
    return conn.execute(sa.update(_D).where(
        _D.c.account_id == account_id, _D.c.day == day, _D.c.units <= bound - units,
    ).values(units=_D.c.units + units)).rowcount == 1


def audit(conn: sa.Connection, now_ms: int, kind: str, *, account_id: str | None = None,
          quote_id: str | None = None, trade_id: str | None = None,
          detail: Mapping[str, Any] | None = None) -> None:
    conn.execute(sa.insert(OTC_AUDIT).values(
        time_ms=now_ms, kind=kind, account_id=account_id, quote_id=quote_id, trade_id=trade_id,
        detail=encode_json(dict(detail or {}))))


def _refusal(conn: sa.Connection, quote_id: str, account_id: str,
             now_us: int) -> tuple[TradeRow, bool]:
    """Step 1 changed nothing: say why, or find the trade this account already booked."""
    q = conn.execute(sa.select(_Q.c.state, _Q.c.account_id, _Q.c.expiry_us)
                     .where(_Q.c.quote_id == quote_id)).first()
    if q is None:
        raise InvalidQuoteSignature("the desk issued no such quote", parameter="quote")
    if q.state == "ACCEPTED":
        if q.account_id != account_id:
            raise QuoteAlreadyAccepted(parameter="quote")
        row = conn.execute(sa.select(_T).where(_T.c.quote_id == quote_id)).first()
        if row is None:  # cannot happen: the trade commits with the state change
            raise RuntimeError(f"quote {quote_id} is ACCEPTED but has no trade")
        return trade_row(row), False
    if q.account_id != account_id:
        raise InvalidQuoteSignature("the quote was issued for another account",
                                    parameter="quote")
    if q.expiry_us < now_us:
        raise QuoteExpired(parameter="quote")
    raise RuntimeError(f"quote {quote_id} in state {q.state!r} cannot be accepted")


def accept(conn: sa.Connection, quote: QuoteRow, *, account_id: str, now_us: int, now_ms: int,
           day: str, units: Mapping[str, int], precision: Mapping[str, int],
           notional_units: int, daily_limit: int | None, inventory_limits: Mapping[str, int],
           hedges: Sequence[Mapping[str, Any]] | None) -> tuple[TradeRow, bool]:
    """Book ``quote`` (a QuoteRow read before the transaction: its fields never change) for
    ``account_id``. ``units``: the quote's quantities in units, by asset (``from``/``to``);
    limits in units; ``hedges``: the legs to journal, or None for no hedge."""
    fa, ta = quote.from_asset, quote.to_asset
    n = conn.execute(sa.update(_Q).where(
        _Q.c.quote_id == quote.quote_id, _Q.c.state == "ACTIVE",
        _Q.c.account_id == account_id, _Q.c.expiry_us >= now_us,
    ).values(state="ACCEPTED", accepted_ms=now_ms)).rowcount
    if n == 0:
        return _refusal(conn, quote.quote_id, account_id, now_us)

    # 2-3. The client pays to_asset and receives from_asset; balances in asset order.
    for asset in sorted((fa, ta)):
        if asset == ta and not debit(conn, account_id, ta, units["to"]):
            have = from_units(balance_units(conn, account_id, ta), precision[ta])
            raise InsufficientBalance(
                f"insufficient {ta} balance: the quote needs {dec_text(quote.to_qty)} {ta}, "
                f"the account has {dec_text(have)}", parameter="quote")
        if asset == fa:
            credit(conn, account_id, fa, units["from"])
    # 4. The account's daily volume in the home asset.
    if not _add_daily(conn, account_id, day, notional_units, daily_limit):
        used = conn.execute(sa.select(_D.c.units).where(
            _D.c.account_id == account_id, _D.c.day == day)).scalar() or 0
        raise LimitExceeded(
            f"dailyVolume: the account's daily volume limit of "
            f"{dec_text(from_units(daily_limit or 0, NOTIONAL_PLACES))} would be exceeded "
            f"({dec_text(from_units(used, NOTIONAL_PLACES))} traded on {day}, this trade "
            f"{dec_text(quote.home_notional)})", parameter="quote")
    # 5. The desk's inventory: it delivers from_asset and receives to_asset.
    deltas = {fa: -units["from"], ta: units["to"]}
    for asset in sorted(deltas):
        if not move_inventory(conn, asset, deltas[asset], inventory_limits.get(asset)):
            limit = from_units(inventory_limits[asset], precision[asset])
            raise LimitExceeded(
                f"the desk's {asset} inventory limit of {dec_text(limit)} would be exceeded",
                parameter="quote")
    # 6. The trade and its hedge legs; 7. the audit row.
    trade = TradeRow(
        trade_id=str(uuid.uuid4()), quote_id=quote.quote_id, account_id=account_id,
        from_asset=fa, to_asset=ta, from_qty=quote.from_qty, to_qty=quote.to_qty,
        home_notional=quote.home_notional, time_ms=now_ms,
        hedge_state="PENDING" if hedges is not None else "OFF",
        hedge_cost=None, result_home=None, result_bps=None)
    conn.execute(sa.insert(_T).values(
        trade_id=trade.trade_id, quote_id=trade.quote_id, account_id=account_id,
        from_asset=fa, to_asset=ta, from_qty=dec_text(trade.from_qty),
        to_qty=dec_text(trade.to_qty), home_notional=dec_text(trade.home_notional),
        time_ms=now_ms, hedge_state=trade.hedge_state))
    if hedges:
        conn.execute(sa.insert(OTC_HEDGES), [{
            "trade_id": trade.trade_id, "leg": i, "symbol": str(h["symbol"]),
            "side": str(h["side"]), "quantity": dec_text(Decimal(str(h["quantity"]))),
            "state": "PENDING", "attempts": 0, "updated_ms": now_ms,
        } for i, h in enumerate(hedges)])
    audit(conn, now_ms, "ACCEPT", account_id=account_id, quote_id=quote.quote_id,
          trade_id=trade.trade_id, detail={
              "fromAsset": fa, "toAsset": ta, "fromQuantity": dec_text(trade.from_qty),
              "toQuantity": dec_text(trade.to_qty),
              "homeNotional": dec_text(trade.home_notional), "day": day,
              "hedgeState": trade.hedge_state, "hedgeLegs": len(hedges or ())})
    return trade, True
