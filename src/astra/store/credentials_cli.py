"""``astra credentials set|list|delete``: exchange credentials stored per Astra API key.

``set --key-id KEY_ID --exchange OKX [--api-key KEY] [--account ADDRESS]`` prompts, without
echo, for the secret parts the exchange needs (secret, passphrase, or a wallet's private key),
or reads them from ``--stdin`` as a JSON object (``{"secret": "...", "passphrase": "..."}``,
``apiKey``/``api_key``, ``privateKey``/``private_key`` and ``account`` also accepted). Secrets
are never taken from the command line: arguments are visible to every user through ``ps`` and
kept in shell history. ``set`` needs ``ASTRA_MASTER_KEY`` and an existing, unrevoked key id.

``list [--key-id KEY_ID]`` shows key id, exchange, a hint of the API key (or wallet address)
and dates, never a secret; with ``ASTRA_MASTER_KEY`` set it also says whether each row is
under that master key. ``delete --key-id KEY_ID --exchange OKX`` removes one row; neither
needs the master key (so credentials stored under a lost master key can still be cleaned up).

Exit codes: 0 done, 1 nothing to do (unknown key id, nothing stored), 2 an error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from astra.core.credentials import ExchangeCredentials, required_for

from ._cli import database_options, open_engine, reason, when
from .credentials import (
    MASTER_KEY_ENV,
    CredentialStore,
    CredentialStoreError,
    StoredCredentials,
    load_master_key,
)
from .keys import ApiKeyStore

__all__ = ["add_credentials_parser", "run_credentials"]

_PROG = "astra credentials"
_MAX_STDIN = 64 * 1024
_STDIN_FIELDS = {
    "api_key": "api_key",
    "apiKey": "api_key",
    "secret": "secret",
    "passphrase": "passphrase",
    "password": "passphrase",
    "private_key": "private_key",
    "privateKey": "private_key",
    "account": "account",
}
_LABELS = {
    "api_key": "API key",
    "secret": "API secret",
    "passphrase": "API passphrase",
    "private_key": "private key (hex)",
}


class _Fail(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _exchange(value: str) -> str:
    from astra.core import Exchange

    code = value.strip().upper()
    if code not in Exchange.__members__:
        raise argparse.ArgumentTypeError(
            f"unknown exchange {value[:32]!r}: expected one of {', '.join(Exchange)}"
        )
    return code


def add_credentials_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``credentials`` (with ``set``, ``list``, ``delete``) to ``subparsers``; returns it."""
    common = database_options()
    creds = subparsers.add_parser(
        "credentials",
        help="manage exchange credentials stored per API key (encrypted with $ASTRA_MASTER_KEY)",
    )
    sub = creds.add_subparsers(dest="credentials_command", required=True)

    set_ = sub.add_parser(
        "set",
        parents=[common],
        help="store an API key's credentials on an exchange (secrets prompted or from --stdin)",
    )
    set_.add_argument("--key-id", required=True, help="the Astra API key id (before the dot)")
    set_.add_argument("--exchange", required=True, type=_exchange, help="e.g. OKX, ASTER")
    set_.add_argument("--api-key", help="the exchange API key (not a secret)")
    set_.add_argument("--account", help="wallet venues (ASTER, SIM): the account address")
    set_.add_argument(
        "--stdin",
        action="store_true",
        help="read the credentials as a JSON object from stdin instead of prompting",
    )
    for flag in ("--secret", "--passphrase", "--private-key", "--password", "--api-secret"):
        # Accepted only to refuse them with a clear message, without echoing the value.
        set_.add_argument(flag, dest=f"argv_{flag[2:].replace('-', '_')}", help=argparse.SUPPRESS)

    list_ = sub.add_parser("list", parents=[common], help="list stored credentials (no secrets)")
    list_.add_argument("--key-id", help="only this API key's")

    delete = sub.add_parser("delete", parents=[common], help="delete stored credentials")
    delete.add_argument("--key-id", required=True, help="the Astra API key id")
    delete.add_argument("--exchange", required=True, type=_exchange)
    return creds



def _table(rows: list[StoredCredentials], master_key_id: str | None) -> str:
    head = ["KEY_ID", "EXCHANGE", "KEY", "CREATED (UTC)", "UPDATED (UTC)"]
    if master_key_id is not None:
        head.append("MASTER KEY")
    lines = [head]
    for r in rows:
        line = [r.key_id, r.exchange, r.key_hint, when(r.created_at), when(r.updated_at)]
        if master_key_id is not None:
            line.append(
                "current" if r.master_key_id == master_key_id else f"other ({r.master_key_id})"
            )
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _interactive() -> bool:
    return sys.stdin.isatty()


def _read_stdin() -> dict[str, str]:
    text = sys.stdin.read(_MAX_STDIN + 1)
    if len(text) > _MAX_STDIN:
        raise _Fail(f"--stdin: more than {_MAX_STDIN} bytes")
    try:
        data = json.loads(text)
    except ValueError:
        raise _Fail("--stdin: expected a JSON object (the input is not valid JSON)") from None
    if not isinstance(data, dict):
        raise _Fail("--stdin: expected a JSON object")
    out: dict[str, str] = {}
    for key, value in data.items():
        field = _STDIN_FIELDS.get(key)
        if field is None:
            raise _Fail(f"--stdin: unknown field {key[:40]!r}: expected {', '.join(_STDIN_FIELDS)}")
        if field in out:
            raise _Fail(f"--stdin: {field} given twice")
        if value is None:
            continue
        if not isinstance(value, str):
            raise _Fail(f"--stdin: {key} must be a string")
        out[field] = value
    return out


def _gather(args: argparse.Namespace) -> dict[str, Any]:
    given = [k for k, v in vars(args).items() if k.startswith("argv_") and v is not None]
    if given:
        raise _Fail(
            "secrets are never taken from the command line (other users see it in ps, and "
            "shell history keeps it): omit them to be prompted, or pass --stdin"
        )
    fields: dict[str, Any] = {}
    if args.api_key is not None:
        fields["api_key"] = args.api_key
    if args.account is not None:
        fields["account"] = args.account
    if args.stdin:
        for field, value in _read_stdin().items():
            if field in fields and fields[field].strip() != value.strip():
                raise _Fail(f"{field} differs between the command line and --stdin")
            fields[field] = value
        return fields
    if not _interactive():
        raise _Fail("stdin is not a terminal to prompt on: pass --stdin with a JSON object")
    alts = required_for(args.exchange)
    # Wallet venues: key + secret when an API key was given, else the private key (v3).
    if len(alts) > 1 and args.api_key is None:
        alt = next(a for a in alts if "private_key" in a)
    else:
        alt = next(a for a in alts if "api_key" in a)
    for field in ("api_key", "secret", "passphrase", "private_key"):
        if field in alt and field not in fields:
            label = f"{args.exchange} {_LABELS[field]}: "
            # The API key is not secret: echo it, so typos show.
            value = input(label) if field == "api_key" else getpass.getpass(label)
            fields[field] = value
    return fields


def _check_key(keys: ApiKeyStore, key_id: str, *, active: bool = False) -> None:
    info = keys.get(key_id)
    if info is None:
        raise _Fail(f"no API key with id {key_id!r} (see 'astra keys list')", 1)
    if active and not info.active:
        raise _Fail(f"API key {key_id} is revoked", 1)


def _optional_master_key() -> bytes | None:
    """The master key when ``ASTRA_MASTER_KEY`` is set (malformed is an error), else None."""
    return load_master_key() if os.environ.get(MASTER_KEY_ENV, "").strip() else None


def _run(engine: Any, args: argparse.Namespace) -> int:
    keys = ApiKeyStore(engine, cache_ttl=0)
    command = args.credentials_command
    if command == "set":
        master_key = load_master_key()  # before prompting: fail early
        _check_key(keys, args.key_id, active=True)
        creds = ExchangeCredentials(args.exchange, **_gather(args))
        info = CredentialStore(engine, master_key).set(args.key_id, creds)
        print(f"stored {info.exchange} credentials (key {info.key_hint}) for API key {info.key_id}")
        return 0
    if command == "list":
        store = CredentialStore(engine, _optional_master_key())
        if args.key_id is not None:
            _check_key(keys, args.key_id)
        rows = store.list(args.key_id)
        print(_table(rows, store.master_key_id) if rows else "no stored exchange credentials")
        unreadable = sorted({r.master_key_id for r in rows if store.master_key_id is not None
                             and r.master_key_id != store.master_key_id})
        if unreadable:  # the gateway answers 503 CREDENTIALS_UNREADABLE for these keys
            count = sum(r.master_key_id in unreadable for r in rows)
            print(
                f"{_PROG}: {count} stored credential(s) cannot be decrypted with this "
                f"{MASTER_KEY_ENV} (id {store.master_key_id}; they were stored under master key "
                f"id {', '.join(unreadable)}): start the gateway with that master key, or "
                "store them again",
                file=sys.stderr,
            )
        return 0
    _check_key(keys, args.key_id)
    if CredentialStore(engine, None).delete(args.key_id, args.exchange):
        print(f"deleted the {args.exchange} credentials of API key {args.key_id}")
        return 0
    print(
        f"{_PROG}: no {args.exchange} credentials stored for API key {args.key_id}", file=sys.stderr
    )
    return 1


def run_credentials(args: argparse.Namespace) -> int:
    """Run a parsed ``credentials`` command; returns the process exit code."""
    from astra.core import AstraError

    engine = open_engine(args, _PROG)
    if engine is None:
        return 2
    try:
        return _run(engine, args)
    except _Fail as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return exc.code
    except (AstraError, CredentialStoreError) as exc:  # messages never quote a value
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    except (EOFError, KeyboardInterrupt):
        print(f"\n{_PROG}: cancelled, nothing stored", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"{_PROG}: database error: {reason(exc)}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()

