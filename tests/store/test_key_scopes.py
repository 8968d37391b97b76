"""Scopes, expiry, IP allow-list and last-used time of API keys (``store/key_scopes.py``) on
real SQLite files, and on PostgreSQL too when ``ASTRA_TEST_POSTGRES_URL`` names a database
(the order journal's ``db`` fixture: a throwaway schema per test): a database made before
scopes existed keeps working with full access."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import sqlalchemy as sa

from astra.store import (
    API_KEYS,
    ApiKeyStore,
    ScopeError,
    add_keys_parser,
    ip_allowed,
    open_database,
    parse_allow_ips,
    parse_expiry,
    parse_scopes,
    run_keys,
)

from .test_journal import PG_URL, PG_URL_ENV, Db
from .test_journal import db as db  # the fixture, on every backend

NOW = 1_800_000_000_000  # 2027-01-15


def test_parse_scopes():
    assert parse_scopes("read, TRADE") == {"read", "trade"}
    assert parse_scopes(["otc", "admin"]) == {"otc", "admin"}
    for bad in ("", "read,root", ["read", 3], []):
        with pytest.raises(ScopeError) as exc:
            parse_scopes(bad)
        assert exc.value.parameter == "scopes"


def test_parse_allow_ips_and_match():
    nets = parse_allow_ips(["10.0.0.0/8", "192.168.1.7", "fd00::/8"])
    assert nets == ("10.0.0.0/8", "192.168.1.7/32", "fd00::/8")
    assert ip_allowed(nets, "10.200.3.4") and ip_allowed(nets, "192.168.1.7")
    assert ip_allowed(nets, "::ffff:10.1.1.1")  # an IPv4 client on a dual-stack socket
    assert ip_allowed(nets, "fd12::1")
    assert not ip_allowed(nets, "127.0.0.1") and not ip_allowed(nets, "192.168.1.8")
    assert not ip_allowed(nets, None) and not ip_allowed(nets, "junk")
    assert ip_allowed((), "127.0.0.1")  # no list: anywhere
    for bad in (["10.0.0.1/8"], ["nope"], [5], ["10.0.0.0/8"] * 65):
        with pytest.raises(ScopeError) as exc:
            parse_allow_ips(bad)
        assert exc.value.parameter == "allowIps"


def test_parse_expiry():
    assert parse_expiry(None, NOW) is None
    assert parse_expiry(NOW + 1, NOW) == NOW + 1
    assert parse_expiry("2027-06-01", NOW) == 1811808000000
    assert parse_expiry("2027-06-01T02:00:00+02:00", NOW) == 1811808000000
    assert parse_expiry("2027-06-01T00:00:00Z", NOW) == 1811808000000
    for bad in (NOW, "2020-01-01", "soon", True, 1.5, "99999-01-01"):
        with pytest.raises(ScopeError) as exc:
            parse_expiry(bad, NOW)
        assert exc.value.parameter == "expiresAt"


def test_postgresql_variants_are_configured() -> None:
    if not PG_URL:
        pytest.skip(f"PostgreSQL variants of the key-scope tests not run: set {PG_URL_ENV} to "
                    "a database URL (e.g. postgresql+psycopg://user@127.0.0.1/astra_test)")


def _url(db: Db) -> str:
    """``db``'s URL as another engine (or a process) opens it: on PostgreSQL with the test's
    schema as its search path."""
    if not db.schema:
        return db.url
    return f"{db.url}{'&' if '?' in db.url else '?'}options=-csearch_path%3D{db.schema}"


def _empty_database(db: Db, tmp_path: Path) -> str:
    """The URL of a database with no table yet (``db``'s own SQLite file has them all)."""
    return _url(db) if db.schema else f"sqlite:///{tmp_path / 'old.db'}"


def test_a_database_from_before_scopes_keeps_full_access(db: Db, tmp_path: Path):
    # The old layout: only api_keys, a key in it, created by the old store's code path.
    url = _empty_database(db, tmp_path)
    old = sa.create_engine(url)
    assert sa.inspect(old).get_table_names() == []
    API_KEYS.create(old)
    token = "legacykey234.Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe"
    from astra.store.keys import _hash

    with old.begin() as conn:
        conn.execute(sa.insert(API_KEYS).values(
            key_id="legacykey234", label="old", created_at=1, secret_hash=_hash(
                "legacykey234", token.split(".", 1)[1])))
    old.dispose()
    engine = sa.create_engine(url)
    try:
        store = ApiKeyStore(engine, cache_ttl=0)  # adds api_key_scopes, leaves api_keys
        assert "api_key_scopes" in sa.inspect(engine).get_table_names()
        info = store.verify(token)
        assert info is not None and info.scopes == {"read", "trade", "otc", "admin"}
        assert (info.expires_at, info.allow_ips, info.last_used_at) == (None, (), None)
        store.touch("legacykey234", 1234)  # the first use writes a row: still every scope
        store.touch("legacykey234", 5678)
        again = store.verify(token)
        assert again.scopes == info.scopes and again.last_used_at == 5678
    finally:
        engine.dispose()


def test_create_with_limits_and_nothing_written_on_bad_input(db: Db):
    store = ApiKeyStore(db.engine, cache_ttl=0)
    key = store.create("bot", scopes="read,otc", expires_at="2999-01-01",
                       allow_ips="10.0.0.0/8")
    info = store.verify(key.token)
    assert info.scopes == {"read", "otc"} and info.allow_ips == ("10.0.0.0/8",)
    assert info.expires_at == 32472144000000 and not info.expired(NOW)
    assert info.expired(32472144000000)
    with pytest.raises(ScopeError):
        store.create("bad", scopes="read", allow_ips=["10.0.0.1/8"])
    assert [k.label for k in store.list()] == ["bot"]


def _keys(capsys, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_keys_parser(parser.add_subparsers(dest="command"))
    code = run_keys(parser.parse_args(["keys", *argv]))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_create_with_scopes_and_list(db: Db, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("ASTRA_DATABASE_URL", raising=False)
    url = _url(db)
    d = ["--database-url", url] if db.schema else ["--data-dir", str(tmp_path)]
    code, out, err = _keys(capsys, "create", "--label", "ro", "--scope", "read,trade",
                           "--expires", "2999-01-01", "--allow-ip", "10.0.0.0/8", *d)
    assert code == 0, err
    token = out.strip()
    code, out, _ = _keys(capsys, "create", "--label", "full", *d)
    assert code == 0
    engine = open_database(url) if db.schema else open_database(data_dir=tmp_path)
    try:
        info = ApiKeyStore(engine, cache_ttl=0).verify(token)
        assert info.scopes == {"read", "trade"} and info.allow_ips == ("10.0.0.0/8",)
    finally:
        engine.dispose()
    code, out, _ = _keys(capsys, "list", *d)
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["KEY_ID", "CREATED", "(UTC)", "STATUS", "SCOPES", "EXPIRES"]
    ro = next(line for line in lines if line.endswith("ro"))
    assert "read,trade from 10.0.0.0/8" in ro and "2999-01-01" in ro
    assert token.split(".", 1)[1] not in out
    full = next(line for line in lines if line.endswith("full"))
    assert " all " in full and "never" in full
    code, _, err = _keys(capsys, "create", "--scope", "read,root", *d)
    assert code == 2 and "root" in err
