"""API keys on a real SQLite file: round trips, malformed tokens, no secret at rest, the CLI."""

from __future__ import annotations

import argparse
import sqlite3
import stat
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from astra.store import (
    API_KEYS,
    ApiKeyStore,
    IssuedKey,
    add_keys_parser,
    default_data_dir,
    open_database,
    parse_token,
    run_keys,
)

GOOD_ID = "abcdefghjk23"
GOOD_SECRET = "Zq3-vR_8kLm2Np4Xs6Tu9Wy1Ab5Cd7Ef0Gh"  # 35 chars, many distinct


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(tmp_path: Path):
    eng = open_database(data_dir=tmp_path)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine) -> ApiKeyStore:
    return ApiKeyStore(engine)


def test_open_database_sqlite_is_private_and_wal(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    eng = open_database(data_dir=data_dir)
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
        assert "api_keys" in sa.inspect(eng).get_table_names()
    finally:
        eng.dispose()
    if sys.platform != "win32":
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((data_dir / "astra.db").stat().st_mode) == 0o600


def test_open_database_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASTRA_DATA_DIR", str(tmp_path / "env-dir"))
    assert default_data_dir() == tmp_path / "env-dir"
    monkeypatch.delenv("ASTRA_DATA_DIR")
    assert default_data_dir() == Path.home() / ".astra"

    url = f"sqlite:///{tmp_path / 'by-url.db'}"
    monkeypatch.setenv("ASTRA_DATABASE_URL", url)
    eng = open_database()  # the environment's URL
    try:
        assert eng.url.database == str(tmp_path / "by-url.db")
    finally:
        eng.dispose()
    eng = open_database(data_dir=tmp_path / "explicit")  # an explicit data dir wins
    try:
        assert eng.url.database == str(tmp_path / "explicit" / "astra.db")
    finally:
        eng.dispose()


def test_create_verify_revoke_list(store: ApiKeyStore) -> None:
    assert store.active_count() == 0 and store.list() == []
    key = store.create("alice")
    assert isinstance(key, IssuedKey)
    assert key.token == f"{key.key_id}.{key.secret}"
    assert len(key.key_id) == 12 and len(key.secret) >= 32
    assert parse_token(key.token) == (key.key_id, key.secret)

    info = store.verify(key.token)
    assert info is not None and info.key_id == key.key_id and info.label == "alice"
    assert info.active and info.created_at > 1_600_000_000_000  # epoch milliseconds

    other = store.create()
    assert other.key_id != key.key_id and store.active_count() == 2
    assert {k.key_id for k in store.list()} == {key.key_id, other.key_id}

    assert store.revoke(key.key_id) is True
    assert store.revoke(key.key_id) is False  # already revoked
    assert store.revoke("nosuchkey234") is False
    assert store.verify(key.token) is None  # same store: immediate
    assert store.verify(other.token) is not None
    assert store.active_count() == 1
    listed = {k.key_id: k for k in store.list()}
    assert listed[key.key_id].revoked_at is not None and not listed[key.key_id].active
    assert store.get(key.key_id) == listed[key.key_id]
    assert store.get("nosuchkey234") is None


def test_secret_never_shown(store: ApiKeyStore) -> None:
    key = store.create("x")
    assert key.secret not in repr(key) and key.secret not in str(key)
    assert key.key_id in repr(key)
    for info in store.list():
        assert key.secret not in repr(info)
        assert not hasattr(info, "secret_hash")
    assert key.secret not in repr(store)


def test_wrong_secret_or_id(store: ApiKeyStore) -> None:
    key = store.create()
    flipped = ("A" if key.secret[0] != "A" else "B") + key.secret[1:]
    assert store.verify(f"{key.key_id}.{flipped}") is None
    assert store.verify(f"{key.key_id}.{key.secret}x") is None
    other_id = ("2" if key.key_id[0] != "2" else "3") + key.key_id[1:]
    assert store.verify(f"{other_id}.{key.secret}") is None
    assert store.verify(key.token) is not None


def test_keys_issued_elsewhere_register_and_verify(store: ApiKeyStore) -> None:
    seed_example = "kadjfasfl.KjUBAhdIafaDFSCsajfaIowSADxkaw"  # seed 001's sample key
    assert store.register(seed_example) == "kadjfasfl"
    assert store.verify(seed_example).key_id == "kadjfasfl"
    assert store.verify(seed_example[:-1] + "X") is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "nodot",
        ".",
        f"{GOOD_ID}.",
        f".{GOOD_SECRET}",
        f"{GOOD_ID}{GOOD_SECRET}",
        f"{GOOD_ID}.{GOOD_SECRET[:23]}",  # secret too short
        f"{GOOD_ID}.{'a' * 129}",  # secret too long
        f"abc.{GOOD_SECRET}",  # key id too short
        f"{'a' * 65}.{GOOD_SECRET}",  # key id too long
        f"ab+cd.{GOOD_SECRET}",  # key id outside [A-Za-z0-9_-]
        f"{GOOD_ID}.{GOOD_SECRET}.extra",
        f"{GOOD_ID}.{GOOD_SECRET}\n",
        f" {GOOD_ID}.{GOOD_SECRET}",
        f"{GOOD_ID}.{GOOD_SECRET[:-1]}\x00",
        f"{GOOD_ID}.{GOOD_SECRET[:-1]}é",
        f"abcdefghjk2é.{GOOD_SECRET}",
        f"{GOOD_ID}.{GOOD_SECRET[:-1]}٣",  # a unicode digit
        "x" * 1_000_000,
        f"{GOOD_ID}." + "a" * 1_000_000,
    ],
)
def test_malformed_tokens_are_rejected(store: ApiKeyStore, token: str) -> None:
    store.register(f"{GOOD_ID}.{GOOD_SECRET}")
    assert store.verify(token) is None
    if token.strip() == f"{GOOD_ID}.{GOOD_SECRET}":
        return  # register() trims whitespace around a value read from the environment
    with pytest.raises(ValueError, match="malformed API key") as exc:
        store.register(token, label="t")
    assert GOOD_SECRET[:20] not in str(exc.value) and GOOD_ID not in str(exc.value)


@pytest.mark.parametrize("token", [None, 123, b"abc.def"])
def test_non_string_tokens(store: ApiKeyStore, token: object) -> None:
    assert store.verify(token) is None  # type: ignore[arg-type]
    assert parse_token(token) is None


def test_database_never_contains_the_secret(tmp_path: Path) -> None:
    eng = open_database(data_dir=tmp_path)
    store = ApiKeyStore(eng)
    keys = [store.create(f"k{i}") for i in range(3)]
    registered = f"{GOOD_ID}.{GOOD_SECRET}"
    store.register(registered)
    secrets_ = [k.secret for k in keys] + [GOOD_SECRET]

    with eng.connect() as conn:
        rows = conn.execute(sa.select(API_KEYS)).all()
    assert len(rows) == 4
    for row in rows:
        text = repr(tuple(row))
        assert all(s not in text for s in secrets_)
        assert row.secret_hash.startswith("sha256$")
    hashes = {row.secret_hash for row in rows}
    assert len(hashes) == 4

    # Before and after a checkpoint: the WAL file too.
    for _ in range(2):
        blobs = [p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("astra.db")]
        assert blobs
        for blob in blobs:
            for s in secrets_:
                assert s.encode() not in blob
                assert s[:16].encode() not in blob
        eng.dispose()
    # The raw file is readable by plain sqlite3 and holds the same 4 rows.
    with sqlite3.connect(tmp_path / "astra.db") as raw:
        assert raw.execute("select count(*) from api_keys").fetchone() == (4,)
    raw.close()


def test_register_is_idempotent(store: ApiKeyStore) -> None:
    token = f"{GOOD_ID}.{GOOD_SECRET}"
    assert store.register(token) == GOOD_ID
    assert store.register(token) == GOOD_ID
    assert store.register(f"  {token}\n", label="again") == GOOD_ID  # env values get trimmed
    assert store.active_count() == 1
    assert store.get(GOOD_ID).label == "env"
    info = store.verify(token)
    assert info is not None and info.key_id == GOOD_ID

    other_secret = GOOD_SECRET[::-1]
    with pytest.raises(ValueError, match="different secret") as exc:
        store.register(f"{GOOD_ID}.{other_secret}")
    assert other_secret not in str(exc.value) and GOOD_SECRET not in str(exc.value)

    store.revoke(GOOD_ID)
    assert store.register(token) == GOOD_ID  # does not revive a revoked key
    assert store.verify(token) is None and store.active_count() == 0


def test_register_rejects_weak_secret_without_quoting_it(store: ApiKeyStore) -> None:
    weak = "password" * 4
    with pytest.raises(ValueError, match="not random enough") as exc:
        store.register(f"{GOOD_ID}.{weak}")
    assert weak not in str(exc.value) and "password" not in str(exc.value)


def test_register_rejects_bad_label(store: ApiKeyStore) -> None:
    with pytest.raises(ValueError):
        store.register(f"{GOOD_ID}.{GOOD_SECRET}", label="a\x1b[31mred")
    with pytest.raises(ValueError):
        store.create("x" * 201)


def test_revocation_by_another_store_after_ttl(tmp_path: Path) -> None:
    clock = Clock()
    server_engine = open_database(data_dir=tmp_path)
    cli_engine = open_database(data_dir=tmp_path)
    try:
        server = ApiKeyStore(server_engine, cache_ttl=2.0, clock=clock)
        cli = ApiKeyStore(cli_engine, cache_ttl=0)
        key = cli.create("shared")
        assert server.verify(key.token) is not None  # cached now
        assert cli.revoke(key.key_id)
        clock.now += 1.9
        assert server.verify(key.token) is not None  # still within the TTL
        clock.now += 0.2
        assert server.verify(key.token) is None  # TTL elapsed: the revocation is seen

        # An unknown id is cached too, and a key created elsewhere appears after the TTL.
        late_id = "zatekey23456"
        late = f"{late_id}.{GOOD_SECRET}"
        assert server.verify(late) is None
        cli.register(late, label="late")
        assert server.verify(late) is None
        clock.now += 2.1
        assert server.verify(late) is not None
    finally:
        server_engine.dispose()
        cli_engine.dispose()


def test_zero_ttl_sees_revocation_immediately(tmp_path: Path) -> None:
    a_engine, b_engine = open_database(data_dir=tmp_path), open_database(data_dir=tmp_path)
    try:
        a, b = ApiKeyStore(a_engine, cache_ttl=0), ApiKeyStore(b_engine, cache_ttl=0)
        key = a.create()
        assert a.verify(key.token) is not None
        assert b.revoke(key.key_id)
        assert a.verify(key.token) is None
    finally:
        a_engine.dispose()
        b_engine.dispose()


def test_cache_of_unknown_ids_is_bounded(
    store: ApiKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from astra.store import keys as keys_module

    monkeypatch.setattr(keys_module, "_MAX_CACHED", 50)
    alphabet = keys_module.KEY_ID_ALPHABET
    sizes = []
    for i in range(120):
        digits = alphabet[i % 31] + alphabet[i // 31]
        assert store.verify(f"cachetest{digits}2.{GOOD_SECRET}") is None
        sizes.append(len(store._cache))
    assert max(sizes) == 50  # unknown ids are cached (no database hit per junk request)...
    assert all(n <= 50 for n in sizes)  # ...but never more than the bound


def test_load_fills_the_cache_and_revoke_calls_listeners(store: ApiKeyStore) -> None:
    revoked: list[str] = []
    store.on_revoke(revoked.append)
    key = store.create()
    assert not store.is_cached(key.key_id)
    info = store.load(key.key_id)  # the blocking read, for a worker thread
    assert info is not None and info.key_id == key.key_id and info.active
    assert store.is_cached(key.key_id)  # verify needs no database read now
    assert store.verify(key.token) == info
    assert store.load("unknown23456") is None and store.is_cached("unknown23456")
    assert store.revoke(key.key_id) and revoked == [key.key_id]
    assert not store.revoke(key.key_id) and revoked == [key.key_id]  # nothing revoked: no call


# --- the `astra keys` command -------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astra")
    add_keys_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _keys(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run_keys(_parser().parse_args(["keys", *argv]))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASTRA_DATABASE_URL", raising=False)
    d = ["--data-dir", str(tmp_path)]
    code, out, err = _keys(capsys, "create", "--label", "desk one", *d)
    assert code == 0
    token = out.strip()
    assert "\n" not in token and "not be shown again" in err and token not in err

    eng = open_database(data_dir=tmp_path)
    try:
        info = ApiKeyStore(eng, cache_ttl=0).verify(token)
        assert info is not None and info.label == "desk one"
        key_id, secret = token.split(".", 1)

        code, out, err = _keys(capsys, "list", *d)
        assert code == 0 and key_id in out and "desk one" in out and "active" in out
        assert secret not in out and secret not in err

        code, out, err = _keys(capsys, "revoke", key_id, *d)
        assert code == 0 and f"revoked API key {key_id}" in out
        assert ApiKeyStore(eng, cache_ttl=0).verify(token) is None

        code, out, err = _keys(capsys, "revoke", key_id, *d)
        assert code == 0 and "already revoked" in out

        code, out, err = _keys(capsys, "list", *d)
        assert "revoked" in out and secret not in out

        code, out, err = _keys(capsys, "revoke", "nosuchkey234", *d)
        assert code == 1 and "nosuchkey234" in err and out == ""
    finally:
        eng.dispose()


def test_cli_database_url_and_empty_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    code, out, _ = _keys(capsys, "list", "--database-url", url)
    assert code == 0 and "no API keys" in out
    code, out, _ = _keys(capsys, "create", "--database-url", url)
    assert code == 0 and (tmp_path / "other.db").exists()


def test_cli_bad_database_url_hides_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _keys(capsys, "list", "--database-url", "not a url hunter2")
    assert code == 2 and "hunter2" not in err and "hunter2" not in out
