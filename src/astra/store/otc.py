"""The OTC desk's persistent state: accounts and their ledger, quotes, trades, hedge legs, the
desk's inventory, the kill switch and the append-only audit trail (SQLAlchemy Core).

``OtcStore`` is what ``astra.otc`` (the desk, the hedger) and ``astra otc`` (the CLI) use; it
knows nothing of pricing or signing (it sits below ``astra.otc``). Tables, row types and the
unit arithmetic are in ``otc_schema``; the money-moving transaction steps in ``otc_ledger``.

Integrity rules:
- A quote is accepted at most once: ``accept`` moves it ACTIVE -> ACCEPTED with one
  conditional UPDATE in the same transaction that books the client's side (balances), the
  account's daily volume, the desk's inventory, the trade, its hedge legs and the audit row.
  Any refusal rolls all of it back and the quote stays ACTIVE. The database enforces it (the
  conditional UPDATE and ``otc_trades.quote_id`` UNIQUE), so it holds with several gateway
  processes on one PostgreSQL database. The account that booked it gets the same trade again
  (``created`` False); any other account gets ``QuoteAlreadyAccepted``.
- Value is conserved: a deposit or withdrawal changes one balance; a trade moves ``to_qty``
  of toAsset from the client to the desk and ``from_qty`` of fromAsset from the desk to the
  client; only ``settle_hedge`` (what the desk traded on the markets) changes the inventory
  otherwise, in the same transaction as the hedge row it settles; with ``expect`` (what the
  hedger passes) a leg is claimed and settled by compare-and-set, so one order's fills move
  the inventory once however many gateway processes hedge.
- Balances never go negative; amounts have at most their asset's precision (fixed at the
  asset's first use); the audit trail is append-only in the database (triggers).
- Synchronous, like the order journal: an asyncio caller runs it in a thread. Safe to share
  between threads (each call takes its own pooled connection).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from astra.core import (
    DeskHalted,
    InsufficientBalance,
    InvalidParameter,
    InvalidQuoteSignature,
    OtcAccountNotFound,
)
from astra.core._otc import ASSET_PRECISION, DEFAULT_PRECISION
from astra.telemetry import timed

from . import otc_ledger as ledger
from .otc_schema import (
    HEDGE_STATES,
    NOTIONAL_PLACES,
    OTC_ACCOUNTS,
    OTC_ASSETS,
    OTC_AUDIT,
    OTC_BALANCES,
    OTC_DAILY,
    OTC_DESK,
    OTC_HEDGES,
    OTC_INVENTORY,
    OTC_QUOTES,
    OTC_TABLES,
    OTC_TRADES,
    QUOTE_STATES,
    TRADE_HEDGE_STATES,
    AccountRow,
    HedgeRow,
    QuoteRow,
    TradeRow,
    account_row,
    check_asset,
    dec_text,
    encode_json,
    from_units,
    hedge_row,
    quote_row,
    round_units,
    to_decimal,
    to_units,
    trade_row,
)

__all__ = ["AccountRow", "DuplicateSignature", "HedgeRow", "OtcStore", "QuoteRow", "TradeRow"]

_HALT = "halted"
_HEDGE_FIELDS = frozenset({"state", "attempts", "client_order_id", "sent_quantity",
                           "parent_order_id", "error"})
_HEDGE_EXPECT = frozenset({"state", "attempts", "client_order_id", "updated_ms"})


class DuplicateSignature(Exception):
    """``save_quote``: a quote with this signature is already stored (``quote_id`` is its)."""

    def __init__(self, signature: str, quote_id: str | None) -> None:
        super().__init__(f"a quote with this signature is already stored ({quote_id})")
        self.signature = signature
        self.quote_id = quote_id


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _optional(value: object, name: str, *, positive: bool) -> str | None:
    if value is None:
        return None
    d = to_decimal(value, name)
    if d < 0 or (positive and d == 0):
        raise InvalidParameter(name, "must be greater than 0" if positive else "must be >= 0")
    return dec_text(d)


class OtcStore:
    """The ``otc_*`` tables of ``engine`` (created when missing); see the module docstring."""

    def __init__(self, engine: sa.Engine, *, clock_ms: Callable[[], int] | None = None,
                 precision: Mapping[str, int] | None = None) -> None:
        self._engine = engine
        self._clock = clock_ms or _now_ms
        self._overrides = dict(precision or {})
        for asset, p in self._overrides.items():
            if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p <= 18:
                raise ValueError(f"precision of {asset!r} must be an integer from 0 to 18")
        self._precision: dict[str, int] = {}  # fixed once written: safe to cache forever
        # astra.telemetry.Telemetry: quote writes, accepts and reads timed (a gateway sets it)
        self.telemetry: Any = None
        for table in OTC_TABLES:
            table.create(engine, checkfirst=True)

    def __repr__(self) -> str:
        return f"OtcStore({self._engine.url.render_as_string(hide_password=True)!r})"

    # -- assets and accounts

    def precision(self, asset: str) -> int:
        """The decimal places of ``asset`` on the desk: fixed by the first call for it (the
        override given to the store, else ``ASSET_PRECISION``, else ``DEFAULT_PRECISION``)."""
        found = self._precision.get(asset)
        if found is not None:
            return found
        check_asset(asset)
        default = self._overrides.get(asset, ASSET_PRECISION.get(asset, DEFAULT_PRECISION))
        with self._engine.begin() as conn:
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            conn.execute(insert(OTC_ASSETS).values(asset=asset, precision=default)
                         .on_conflict_do_nothing())
            found = conn.execute(sa.select(OTC_ASSETS.c.precision)
                                 .where(OTC_ASSETS.c.asset == asset)).scalar_one()
        self._precision[asset] = found
        return found

    def create_account(self, key_id: str, *, name: str | None = None,
                       spread_bps: Decimal | None = None, max_notional: Decimal | None = None,
                       daily_volume: Decimal | None = None) -> AccountRow:
        if not isinstance(key_id, str) or not 1 <= len(key_id) <= 64:
            raise InvalidParameter("keyId", "1 to 64 characters")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise InvalidParameter("name", "at most 200 characters")
        values = {
            "account_id": str(uuid.uuid4()), "key_id": key_id, "name": name,
            "spread_bps": _optional(spread_bps, "spreadBps", positive=False),
            "max_notional": _optional(max_notional, "maxNotional", positive=True),
            "daily_volume": _optional(daily_volume, "dailyVolume", positive=True),
            "created_ms": self._clock(),
        }
        with self._engine.begin() as conn:
            conn.execute(sa.insert(OTC_ACCOUNTS).values(values))
            ledger.audit(conn, values["created_ms"], "ACCOUNT_CREATED",
                         account_id=values["account_id"],
                         detail={k: v for k, v in values.items() if v is not None})
        found = self.account(values["account_id"])
        assert found is not None
        return found

    def account(self, account_id: str) -> AccountRow | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(OTC_ACCOUNTS)
                               .where(OTC_ACCOUNTS.c.account_id == account_id)).first()
        return None if row is None else account_row(row)

    def accounts(self, key_id: str | None = None) -> list[AccountRow]:
        """Accounts (of ``key_id`` when given), oldest first."""
        query = sa.select(OTC_ACCOUNTS).order_by(OTC_ACCOUNTS.c.created_ms,
                                                 OTC_ACCOUNTS.c.account_id)
        if key_id is not None:
            query = query.where(OTC_ACCOUNTS.c.key_id == key_id)
        with self._engine.connect() as conn:
            return [account_row(r) for r in conn.execute(query)]

    # -- the ledger

    def deposit(self, account_id: str, asset: str, amount: Decimal) -> Decimal:
        """Credit ``amount`` of ``asset`` (negative: withdraw it); returns the new balance.

        InvalidParameter("amount") for zero, non-finite or over-precise amounts;
        OtcAccountNotFound; InsufficientBalance for a withdrawal past the balance (nothing
        moves)."""
        check_asset(asset)
        amount = to_decimal(amount, "amount")
        if amount == 0:
            raise InvalidParameter("amount", "must not be 0")
        if self.account(account_id) is None:  # accounts are never deleted: no race
            raise OtcAccountNotFound(f"no OTC account {account_id!r}", parameter="accountId")
        p = self.precision(asset)
        units = to_units(amount, p, "amount", asset)
        now = self._clock()
        with self._engine.begin() as conn:
            if units > 0:
                ledger.credit(conn, account_id, asset, units)
            elif not ledger.debit(conn, account_id, asset, -units):
                have = from_units(ledger.balance_units(conn, account_id, asset), p)
                raise InsufficientBalance(
                    f"insufficient {asset} balance: withdrawing {dec_text(-amount)}, the "
                    f"account has {dec_text(have)}", parameter="amount")
            balance = from_units(ledger.balance_units(conn, account_id, asset), p)
            ledger.audit(conn, now, "DEPOSIT" if units > 0 else "WITHDRAW",
                         account_id=account_id, detail={
                             "asset": asset, "amount": dec_text(amount),
                             "balance": dec_text(balance)})
        return balance

    def balances(self, account_id: str) -> dict[str, Decimal]:
        """The account's non-zero balances by asset."""
        with timed(self.telemetry, "db_query_seconds", "otc", "balances"), \
                self._engine.connect() as conn:
            rows = conn.execute(sa.select(OTC_BALANCES.c.asset, OTC_BALANCES.c.units).where(
                OTC_BALANCES.c.account_id == account_id, OTC_BALANCES.c.units != 0)
                .order_by(OTC_BALANCES.c.asset)).all()
        return {r.asset: from_units(r.units, self.precision(r.asset)) for r in rows}

    def volume_on(self, account_id: str, day: str) -> Decimal:
        """The account's traded volume on ``day`` ("YYYY-MM-DD"), in the home asset."""
        with self._engine.connect() as conn:
            units = conn.execute(sa.select(OTC_DAILY.c.units).where(
                OTC_DAILY.c.account_id == account_id, OTC_DAILY.c.day == day)).scalar()
        return from_units(units or 0, NOTIONAL_PLACES)

    def inventory(self) -> dict[str, Decimal]:
        """The desk's signed position by asset (non-zero ones)."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(OTC_INVENTORY).where(OTC_INVENTORY.c.units != 0)
                                .order_by(OTC_INVENTORY.c.asset)).all()
        return {r.asset: from_units(r.units, self.precision(r.asset)) for r in rows}

    # -- quotes and the accept

    def save_quote(self, row: QuoteRow, *, audit: Mapping[str, Any] | None = None) -> None:
        """Store an issued quote (and, given ``audit``, its ``QUOTE`` audit row in the same
        transaction); DuplicateSignature if its signature is already stored,
        OtcAccountNotFound if its account does not exist."""
        if row.state not in QUOTE_STATES:
            raise ValueError(f"unknown quote state {row.state!r}")
        for asset in (row.from_asset, row.to_asset):
            check_asset(asset)
        try:
            with timed(self.telemetry, "db_query_seconds", "otc", "save_quote"), \
                    self._engine.begin() as conn:
                conn.execute(sa.insert(OTC_QUOTES).values(
                    quote_id=row.quote_id, signature=row.signature,
                    signing_key_id=row.signing_key_id, account_id=row.account_id,
                    from_asset=row.from_asset, to_asset=row.to_asset,
                    from_qty=dec_text(row.from_qty), to_qty=dec_text(row.to_qty),
                    expiry_us=row.expiry_us, state=row.state, created_ms=row.created_ms,
                    accepted_ms=row.accepted_ms, home_notional=dec_text(row.home_notional),
                    detail=encode_json(row.detail)))
                if audit is not None:
                    ledger.audit(conn, self._clock(), "QUOTE", account_id=row.account_id,
                                 quote_id=row.quote_id, detail=audit)
        except IntegrityError:
            existing = self.quote_by_signature(row.signature)
            if existing is None and self.account(row.account_id) is None:
                raise OtcAccountNotFound(f"no OTC account {row.account_id!r}",
                                         parameter="accountId") from None
            if existing is None:
                raise
            raise DuplicateSignature(row.signature, existing.quote_id) from None

    def quote(self, quote_id: str) -> QuoteRow | None:
        return self._quote(OTC_QUOTES.c.quote_id == quote_id)

    def quote_by_signature(self, signature: str) -> QuoteRow | None:
        return self._quote(OTC_QUOTES.c.signature == signature)

    def prune_quotes(self, expired_before_us: int, *, batch: int = 5000) -> int:
        """Delete quotes never accepted that expired before ``expired_before_us`` (at most
        ``batch`` per call); the number deleted. Accepted quotes stay (their trades name them),
        and the audit trail keeps a ``QUOTE`` row for every quote issued."""
        q = OTC_QUOTES
        with self._engine.begin() as conn:
            ids = sa.select(q.c.quote_id).where(
                q.c.state == "ACTIVE", q.c.expiry_us < expired_before_us).limit(batch)
            return conn.execute(sa.delete(q).where(q.c.quote_id.in_(ids))).rowcount

    def _quote(self, where: sa.ColumnElement[bool]) -> QuoteRow | None:
        with timed(self.telemetry, "db_query_seconds", "otc", "read_quote"), \
                self._engine.connect() as conn:
            row = conn.execute(sa.select(OTC_QUOTES).where(where)).first()
        return None if row is None else quote_row(row)

    def accept(self, quote_id: str, *, account_id: str, now_us: int, day: str,
               daily_limit: Decimal | None, inventory_limits: Mapping[str, Decimal],
               hedge: bool) -> tuple[TradeRow, bool]:
        """Book the quote for ``account_id`` in one transaction: ``(trade, True)`` the first
        time, ``(the same trade, False)`` when this account already booked it. Raises
        InvalidQuoteSignature (no such quote, or another account's), QuoteAlreadyAccepted,
        QuoteExpired (``expiry_us < now_us``), InsufficientBalance, LimitExceeded (the daily
        volume, in the home asset, or an inventory limit); then nothing moved."""
        q = self.quote(quote_id)  # a quote's fields never change: read them before
        if q is None:
            raise InvalidQuoteSignature("the desk issued no such quote", parameter="quote")
        prec = {a: self.precision(a) for a in (q.from_asset, q.to_asset)}
        units = {"from": to_units(q.from_qty, prec[q.from_asset], "quote", q.from_asset),
                 "to": to_units(q.to_qty, prec[q.to_asset], "quote", q.to_asset)}
        limits = {a: max(0, round_units(to_decimal(v, "inventoryLimits"), prec[a]))
                  for a, v in inventory_limits.items() if a in prec}
        daily = (None if daily_limit is None
                 else max(0, round_units(to_decimal(daily_limit, "dailyVolume"),
                                         NOTIONAL_PLACES)))
        hedges = None
        if hedge:
            hedges = list(q.detail.get("hedges") or ())
        with timed(self.telemetry, "db_query_seconds", "otc", "accept"), \
                self._engine.begin() as conn:
            trade, created = ledger.accept(
                conn, q, account_id=account_id, now_us=now_us, now_ms=self._clock(), day=day,
                units=units, precision=prec,
                notional_units=round_units(q.home_notional, NOTIONAL_PLACES, up=True),
                daily_limit=daily, inventory_limits=limits, hedges=hedges)
            if created:
                # The kill switch, read inside the booking transaction after its first write
                # (so on the latest committed state): once `astra otc halt` has returned, no
                # accept books. A repeat of a booked accept still gets its trade.
                halted = conn.execute(sa.select(OTC_DESK.c.value)
                                      .where(OTC_DESK.c.name == _HALT)).scalar()
                if halted is not None:
                    raise DeskHalted(f"the OTC desk is halted: {halted}"[:300])
            return trade, created

    # -- trades and hedges

    def trade(self, trade_id: str) -> TradeRow | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(OTC_TRADES)
                               .where(OTC_TRADES.c.trade_id == trade_id)).first()
        return None if row is None else trade_row(row)

    def trades(self, account_id: str, *, limit: int = 100,
               before_ms: int | None = None) -> list[TradeRow]:
        """The account's trades, newest first (``time_ms < before_ms`` when given)."""
        query = (sa.select(OTC_TRADES).where(OTC_TRADES.c.account_id == account_id)
                 .order_by(OTC_TRADES.c.time_ms.desc(), OTC_TRADES.c.trade_id.desc())
                 .limit(limit))
        if before_ms is not None:
            query = query.where(OTC_TRADES.c.time_ms < before_ms)
        with self._engine.connect() as conn:
            return [trade_row(r) for r in conn.execute(query)]

    def trade_ids(self, hedge_state: str, *, limit: int = 1000) -> list[str]:
        """Ids of the trades in ``hedge_state`` (e.g. PENDING: the hedger finishes those whose
        legs are all final, even when the gateway that settled the last one stopped first),
        oldest first."""
        if hedge_state not in TRADE_HEDGE_STATES:
            raise ValueError(f"unknown hedge state {hedge_state!r}")
        query = (sa.select(OTC_TRADES.c.trade_id)
                 .where(OTC_TRADES.c.hedge_state == hedge_state)
                 .order_by(OTC_TRADES.c.time_ms, OTC_TRADES.c.trade_id).limit(limit))
        with self._engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def hedges(self, *, states: Sequence[str] | None = None,
               trade_id: str | None = None) -> list[HedgeRow]:
        """Hedge legs (in those states, of that trade), oldest first."""
        query = sa.select(OTC_HEDGES).order_by(OTC_HEDGES.c.hedge_id)
        if states is not None:
            query = query.where(OTC_HEDGES.c.state.in_(list(states)))
        if trade_id is not None:
            query = query.where(OTC_HEDGES.c.trade_id == trade_id)
        with self._engine.connect() as conn:
            return [hedge_row(r) for r in conn.execute(query)]

    def update_hedge(self, hedge_id: int, *, expect: Mapping[str, Any] | None = None,
                     **fields: Any) -> bool:
        """Set ``state``, ``attempts``, ``client_order_id``, ``sent_quantity`` (Decimal),
        ``parent_order_id``, ``error``. With ``expect`` ({column: value} among ``state``,
        ``attempts``, ``client_order_id``, ``updated_ms``) only if the row still holds those
        values: a compare-and-set, so of several hedgers (gateway processes) one claims a leg;
        returns whether it was updated. Without ``expect``: LookupError for no such leg."""
        unknown = set(fields) - _HEDGE_FIELDS
        if unknown:
            raise ValueError(f"update_hedge cannot set {sorted(unknown)}")
        if "state" in fields and fields["state"] not in HEDGE_STATES:
            raise ValueError(f"unknown hedge state {fields['state']!r}")
        if fields.get("sent_quantity") is not None:
            fields["sent_quantity"] = dec_text(to_decimal(fields["sent_quantity"],
                                                          "sent_quantity"))
        where = self._hedge_where(hedge_id, expect)
        with self._engine.begin() as conn:
            n = conn.execute(sa.update(OTC_HEDGES).where(*where)
                             .values(**fields, updated_ms=self._clock())).rowcount
        if n != 1 and expect is None:
            raise LookupError(f"no hedge leg {hedge_id}")
        return n == 1

    @staticmethod
    def _hedge_where(hedge_id: int, expect: Mapping[str, Any] | None) -> list:
        where = [OTC_HEDGES.c.hedge_id == hedge_id]
        for column, value in (expect or {}).items():
            if column not in _HEDGE_EXPECT:
                raise ValueError(f"a hedge leg cannot be compared on {column!r}")
            col = OTC_HEDGES.c[column]
            where.append(col.is_(None) if value is None else col == value)
        return where

    def settle_hedge(self, hedge_id: int, *, state: str, filled: Decimal,
                     average_price: Decimal | None, fees: Decimal,
                     inventory: Mapping[str, Decimal], parent_order_id: str | None = None,
                     error: str | None = None,
                     expect: Mapping[str, Any] | None = None) -> bool:
        """Record a hedge leg's outcome and move the desk's inventory by ``inventory`` (signed,
        by asset; rounded half-even to each asset's precision: fills and fees are the
        markets', not the desk's) in ONE transaction, with a ``HEDGE`` audit row. With
        ``expect`` (as ``update_hedge``) only if the leg still holds those values, else
        nothing moves and False: one order's fills move the inventory once, whatever the
        number of hedgers that saw its answer."""
        if state not in HEDGE_STATES:
            raise ValueError(f"unknown hedge state {state!r}")
        deltas = {a: round_units(to_decimal(v, "inventory"), self.precision(a))
                  for a, v in inventory.items()}
        now = self._clock()
        values = {"state": state, "filled": dec_text(filled),
                  "average_price": dec_text(average_price), "fees": dec_text(fees),
                  "error": error, "updated_ms": now}
        if parent_order_id is not None:
            values["parent_order_id"] = parent_order_id
        where = self._hedge_where(hedge_id, expect)
        with self._engine.begin() as conn:
            n = conn.execute(sa.update(OTC_HEDGES).where(*where).values(values)).rowcount
            if n != 1 and expect is not None:
                return False
            if n != 1:
                raise LookupError(f"no hedge leg {hedge_id}")
            trade_id = conn.execute(sa.select(OTC_HEDGES.c.trade_id)
                                    .where(OTC_HEDGES.c.hedge_id == hedge_id)).scalar_one()
            for asset in sorted(deltas):
                ledger.move_inventory(conn, asset, deltas[asset])
            ledger.audit(conn, now, "HEDGE", trade_id=trade_id, detail={
                "hedgeId": hedge_id, "state": state, "filled": dec_text(filled),
                "averagePrice": dec_text(average_price), "fees": dec_text(fees),
                "inventory": {a: dec_text(from_units(u, self.precision(a)))
                              for a, u in deltas.items()}, "error": error})
        return True

    def finish_trade(self, trade_id: str, *, hedge_state: str, hedge_cost: Decimal | None = None,
                     result_home: Decimal | None = None,
                     result_bps: Decimal | None = None) -> None:
        if hedge_state not in TRADE_HEDGE_STATES:
            raise ValueError(f"unknown hedge state {hedge_state!r}")
        with self._engine.begin() as conn:
            n = conn.execute(sa.update(OTC_TRADES).where(OTC_TRADES.c.trade_id == trade_id)
                             .values(hedge_state=hedge_state, hedge_cost=dec_text(hedge_cost),
                                     result_home=dec_text(result_home),
                                     result_bps=dec_text(result_bps))).rowcount
        if n != 1:
            raise LookupError(f"no trade {trade_id}")

    def summary(self) -> dict[str, Any]:
        """For ``astra otc status``: trades count, summed ``result_home`` (of the trades that
        have one), trades and hedge legs by hedge state."""
        with self._engine.connect() as conn:
            results = conn.execute(sa.select(OTC_TRADES.c.result_home)
                                   .where(OTC_TRADES.c.result_home.is_not(None))).scalars()
            total = sum((Decimal(r) for r in results), Decimal(0))
            trades = dict(conn.execute(sa.select(OTC_TRADES.c.hedge_state, sa.func.count())
                                       .group_by(OTC_TRADES.c.hedge_state)).all())
            hedges = dict(conn.execute(sa.select(OTC_HEDGES.c.state, sa.func.count())
                                       .group_by(OTC_HEDGES.c.state)).all())
        return {"trades": sum(trades.values()), "resultHome": dec_text(total),
                "tradesByHedgeState": trades, "hedgesByState": hedges}

    # -- the kill switch and the audit trail

    def halted(self) -> str | None:
        """The reason when the kill switch is on, else None."""
        with self._engine.connect() as conn:
            return conn.execute(sa.select(OTC_DESK.c.value)
                                .where(OTC_DESK.c.name == _HALT)).scalar()

    def set_halted(self, reason: str | None) -> None:
        """Turn the kill switch on (with a non-empty ``reason``) or off (None); audited."""
        if reason is not None and (not isinstance(reason, str) or not reason.strip()):
            raise InvalidParameter("reason", "say why the desk is halted")
        now = self._clock()
        with self._engine.begin() as conn:
            if reason is None:
                conn.execute(sa.delete(OTC_DESK).where(OTC_DESK.c.name == _HALT))
            else:
                insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
                stmt = insert(OTC_DESK).values(name=_HALT, value=reason)
                conn.execute(stmt.on_conflict_do_update(index_elements=["name"],
                                                        set_={"value": reason}))
            ledger.audit(conn, now, "HALT" if reason is not None else "RESUME",
                         detail={"reason": reason} if reason is not None else {})

    def audit(self, kind: str, *, account_id: str | None = None, quote_id: str | None = None,
              trade_id: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        """Append a row (REQUEST, QUOTE, refusals, ...: the desk's own kinds)."""
        if not isinstance(kind, str) or not 1 <= len(kind) <= 32:
            raise ValueError("an audit kind is 1 to 32 characters")
        with self._engine.begin() as conn:
            ledger.audit(conn, self._clock(), kind, account_id=account_id, quote_id=quote_id,
                         trade_id=trade_id, detail=detail)

    def audit_rows(self, *, limit: int = 100, kind: str | None = None,
                   quote_id: str | None = None, trade_id: str | None = None) -> list[dict]:
        """Audit rows, newest first, as ``{id, time_ms, kind, account_id, quote_id, trade_id,
        detail}``."""
        a = OTC_AUDIT
        query = sa.select(a).order_by(a.c.id.desc()).limit(limit)
        for column, value in ((a.c.kind, kind), (a.c.quote_id, quote_id),
                              (a.c.trade_id, trade_id)):
            if value is not None:
                query = query.where(column == value)
        with self._engine.connect() as conn:
            return [{"id": r.id, "time_ms": r.time_ms, "kind": r.kind,
                     "account_id": r.account_id, "quote_id": r.quote_id,
                     "trade_id": r.trade_id, "detail": msgspec.json.decode(r.detail)}
                    for r in conn.execute(query)]
