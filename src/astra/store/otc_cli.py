"""``astra otc accounts create|list|deposit``, ``halt``, ``resume``, ``status``, ``audit``:
run the OTC desk's books from the shell.

Every sub-command takes ``--data-dir`` and ``--database-url`` (the same database as ``astra
serve``); a running gateway sees a new account, a deposit or the kill switch on its next read.
Amounts are exact decimals (``accounts deposit ACCOUNT_ID BTC 0.5``; negative withdraws) at
most at the asset's precision. Bad input is exit code 2 with a one-line message on stderr,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from sqlalchemy.exc import SQLAlchemyError

from astra.core import AstraError

from ._cli import database_options, open_engine, reason, when
from .keys import ApiKeyStore
from .otc import AccountRow, OtcStore
from .otc_schema import dec_text

__all__ = ["add_otc_parser", "run_otc"]

_PROG = "astra otc"


class _Refused(Exception):
    """Bad input found by the command itself: its message is the one line printed."""


def _decimal(text: str | None, name: str) -> Decimal | None:
    """Parsed here rather than by argparse, whose refusals print the usage too."""
    if text is None:
        return None
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise _Refused(f"{name} must be a decimal number, not {text!r}") from None
    if not d.is_finite():
        raise _Refused(f"{name} must be a finite number, not {text!r}")
    return d


def add_otc_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``otc`` and its sub-commands to ``subparsers``; returns it."""
    common = database_options()
    otc = subparsers.add_parser("otc", help="manage the OTC desk: accounts, kill switch, audit")
    sub = otc.add_subparsers(dest="otc_command", required=True)
    accounts = sub.add_parser("accounts", help="OTC accounts and their balances")
    acc = accounts.add_subparsers(dest="accounts_command", required=True)
    create = acc.add_parser("create", parents=[common], help="open an account for an API key")
    create.add_argument("--key", required=True, metavar="KEY_ID", help="the owning API key")
    create.add_argument("--name", help="a name to recognize the account by")
    create.add_argument("--spread-bps", help="its spread (default: the desk's)")
    create.add_argument("--max-notional",
                        help="maximum notional per trade, in the home asset")
    create.add_argument("--daily-volume",
                        help="maximum volume per UTC day, in the home asset")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    listing = acc.add_parser("list", parents=[common], help="list accounts with balances")
    listing.add_argument("--key", metavar="KEY_ID", help="only this API key's accounts")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    deposit = acc.add_parser("deposit", parents=[common],
                             help="credit an account (a negative amount withdraws)")
    deposit.add_argument("account_id", metavar="ACCOUNT_ID")
    deposit.add_argument("asset", metavar="ASSET")
    deposit.add_argument("amount", metavar="AMOUNT")
    halt = sub.add_parser("halt", parents=[common],
                          help="kill switch: refuse every quote and accept")
    halt.add_argument("--reason", default="halted from the command line")
    sub.add_parser("resume", parents=[common], help="turn the kill switch off")
    status = sub.add_parser("status", parents=[common],
                            help="kill switch, inventory, hedges, trades and result")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    audit = sub.add_parser("audit", parents=[common], help="the audit trail, newest first")
    audit.add_argument("--limit", type=int, default=50, metavar="N")
    audit.add_argument("--kind", metavar="K", help="only rows of this kind (e.g. ACCEPT)")
    audit.add_argument("--json", action="store_true", help="print one JSON object per line")
    return otc


def _account_json(store: OtcStore, a: AccountRow) -> dict[str, Any]:
    return {"accountId": a.account_id, "keyId": a.key_id, "name": a.name,
            "spreadBps": dec_text(a.spread_bps), "maxNotional": dec_text(a.max_notional),
            "dailyVolume": dec_text(a.daily_volume), "createdAt": a.created_ms,
            "balances": {k: dec_text(v) for k, v in store.balances(a.account_id).items()}}


def _print_json(value: Any) -> None:
    print(msgspec.json.encode(value).decode())


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _accounts(store: OtcStore, keys: ApiKeyStore, args: argparse.Namespace) -> int:
    if args.accounts_command == "create":
        info = keys.get(args.key)
        if info is None:
            raise _Refused(f"no API key with id {args.key!r} (see astra keys list)")
        if not info.active:
            raise _Refused(f"API key {args.key} is revoked")
        account = store.create_account(
            args.key, name=args.name, spread_bps=_decimal(args.spread_bps, "--spread-bps"),
            max_notional=_decimal(args.max_notional, "--max-notional"),
            daily_volume=_decimal(args.daily_volume, "--daily-volume"))
        if args.json:
            _print_json(_account_json(store, account))
        else:
            print(account.account_id)
        return 0
    if args.accounts_command == "list":
        accounts = store.accounts(args.key)
        if args.json:
            _print_json({"accounts": [_account_json(store, a) for a in accounts]})
            return 0
        if not accounts:
            print("no OTC accounts")
            return 0
        rows = [("ACCOUNT_ID", "KEY_ID", "NAME", "SPREAD_BPS", "MAX_NOTIONAL", "DAILY_VOLUME",
                 "CREATED (UTC)", "BALANCES")]
        for a in accounts:
            balances = store.balances(a.account_id)
            rows.append((a.account_id, a.key_id, a.name or "-",
                         dec_text(a.spread_bps) or "default",
                         dec_text(a.max_notional) or "default",
                         dec_text(a.daily_volume) or "default", when(a.created_ms),
                         " ".join(f"{k}={dec_text(v)}" for k, v in balances.items()) or "-"))
        print(_table(rows))
        return 0
    amount = _decimal(args.amount, "AMOUNT")
    assert amount is not None
    balance = store.deposit(args.account_id, args.asset, amount)
    verb = "deposited" if amount > 0 else "withdrew"
    print(f"{verb} {dec_text(abs(amount))} {args.asset}: balance {dec_text(balance)} "
          f"{args.asset}")
    return 0


def _run(store: OtcStore, keys: ApiKeyStore, args: argparse.Namespace) -> int:
    command = args.otc_command
    if command == "accounts":
        return _accounts(store, keys, args)
    if command == "halt":
        store.set_halted(args.reason)
        print(f"OTC desk halted: {args.reason}")
        return 0
    if command == "resume":
        store.set_halted(None)
        print("OTC desk resumed")
        return 0
    if command == "status":
        halted = store.halted()
        summary = store.summary()
        inventory = {k: dec_text(v) for k, v in store.inventory().items()}
        if args.json:
            _print_json({"halted": halted, "inventory": inventory, **summary})
            return 0
        print(f"desk:      {'HALTED: ' + halted if halted else 'running'}")
        print("inventory: " + (" ".join(f"{k}={v}" for k, v in inventory.items()) or "flat"))
        hedges = summary["hedgesByState"]
        print("hedges:    " + (" ".join(f"{k}={v}" for k, v in sorted(hedges.items()))
                               or "none"))
        # A trade whose hedge is PENDING, PARTIAL or FAILED is the operator's to see here.
        by_state = " ".join(f"{k}={v}" for k, v in sorted(summary["tradesByHedgeState"].items()))
        print(f"trades:    {summary['trades']}" + (f" ({by_state})" if by_state else ""))
        print(f"result:    {summary['resultHome']} (home asset, hedged trades)")
        return 0
    if args.limit < 1:
        raise _Refused("--limit must be at least 1")
    rows = store.audit_rows(limit=args.limit, kind=args.kind)
    for r in rows:
        if args.json:
            _print_json(r)
            continue
        ids = " ".join(f"{k.split('_')[0]}={r[k]}" for k in ("account_id", "quote_id",
                                                              "trade_id") if r[k])
        print(f"{when(r['time_ms'])}  {r['kind']:<16} {ids} "
              f"{msgspec.json.encode(r['detail']).decode()}".rstrip())
    if not rows and not args.json:
        print("no audit rows")
    return 0


def run_otc(args: argparse.Namespace) -> int:
    """Run a parsed ``otc`` command; returns the process exit code."""
    engine = open_engine(args, _PROG)
    if engine is None:
        return 2
    try:
        return _run(OtcStore(engine), ApiKeyStore(engine, cache_ttl=0), args)
    except _Refused as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    except AstraError as exc:  # InvalidParameter, OtcAccountNotFound, InsufficientBalance
        print(f"{_PROG}: {exc.message}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"{_PROG}: database error: {reason(exc)}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
