"""``astra keys create|list|revoke``: manage the gateway's API keys from the shell.

``create`` prints the token alone on stdout (so ``TOKEN=$(astra keys create)`` works) and a
one-line warning on stderr; it is never shown again. ``create --scope read,trade --expires
2027-01-01 --allow-ip 10.0.0.0/8`` limits the key (without ``--scope``: every scope, as keys
made before scopes). ``list`` shows scopes, expiry and last use, and no secret material.
Every sub-command takes ``--data-dir`` and ``--database-url`` (see ``open_database`` for which
database is used when neither is given); a running server sees a revocation within seconds.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.exc import SQLAlchemyError

from ._cli import database_options, open_engine, reason, when
from .key_scopes import ALL_SCOPES, SCOPES
from .keys import ApiKeyStore, KeyInfo

__all__ = ["add_keys_parser", "run_keys"]


def add_keys_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``keys`` (with ``create``, ``list``, ``revoke``) to ``subparsers``; returns it."""
    common = database_options()
    keys = subparsers.add_parser("keys", help="manage Astra API keys")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", parents=[common], help="issue a new API key")
    create.add_argument("--label", default="", help="a note to recognize the key by")
    create.add_argument("--scope", default=None, metavar="SCOPES",
                        help=f"comma-separated: {', '.join(SCOPES)} (default: all)")
    create.add_argument("--expires", default=None, metavar="WHEN",
                        help="expiry: an ISO date or time (UTC unless a zone is given)")
    create.add_argument("--allow-ip", action="append", default=None, metavar="CIDR",
                        help="accept requests only from this network (repeatable)")
    sub.add_parser("list", parents=[common], help="list API keys (no secrets)")
    revoke = sub.add_parser("revoke", parents=[common], help="revoke an API key")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the part of the key before the dot")
    return keys



def _scopes(k: KeyInfo) -> str:
    text = "all" if k.scopes == ALL_SCOPES else ",".join(s for s in SCOPES if s in k.scopes)
    return text + (f" from {','.join(k.allow_ips)}" if k.allow_ips else "")


def _table(keys: list[KeyInfo]) -> str:
    rows = [("KEY_ID", "CREATED (UTC)", "STATUS", "SCOPES", "EXPIRES (UTC)", "LAST USED",
             "LABEL")]
    rows += [
        (
            k.key_id,
            when(k.created_at),
            "active" if k.active else f"revoked {when(k.revoked_at)}",
            _scopes(k),
            when(k.expires_at) if k.expires_at is not None else "never",
            when(k.last_used_at) if k.last_used_at is not None else "-",
            k.label,
        )
        for k in keys
    ]
    n = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(r[:n], widths, strict=True)), r[n]]).rstrip()
        for r in rows
    )


def _run(store: ApiKeyStore, args: argparse.Namespace) -> int:
    if args.keys_command == "create":
        key = store.create(args.label, scopes=args.scope, expires_at=args.expires,
                           allow_ips=args.allow_ip)
        print(key.token, flush=True)
        print(
            f"created API key {key.key_id}: copy the token above now, it will not be shown again",
            file=sys.stderr,
        )
        return 0
    if args.keys_command == "list":
        keys = store.list()
        print(_table(keys) if keys else "no API keys")
        return 0
    info = store.get(args.key_id)
    if info is None:
        print(f"astra keys: no API key with id {args.key_id!r}", file=sys.stderr)
        return 1
    if store.revoke(args.key_id):
        print(f"revoked API key {args.key_id}")
    else:
        print(f"API key {args.key_id} was already revoked")
    return 0


def run_keys(args: argparse.Namespace) -> int:
    """Run a parsed ``keys`` command; returns the process exit code."""
    engine = open_engine(args, "astra keys")
    if engine is None:
        return 2
    try:
        return _run(ApiKeyStore(engine, cache_ttl=0), args)
    except ValueError as exc:  # a bad label, scope, CIDR or expiry; never a secret
        print(f"astra keys: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"astra keys: database error: {reason(exc)}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()

