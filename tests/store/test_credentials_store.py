"""Stored exchange credentials on a real SQLite file: round trips, no secret at rest, rows
bound to their key and exchange, wrong master keys, and the ``astra credentials`` command."""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from astra.cli import main
from astra.core import Exchange
from astra.core.credentials import ExchangeCredentials
from astra.store import (
    EXCHANGE_CREDENTIALS,
    MASTER_KEY_ENV,
    ApiKeyStore,
    CredentialDecryptionError,
    CredentialStore,
    MasterKeyError,
    UnknownApiKey,
    credentials_cli,
    generate_master_key,
    load_master_key,
    open_database,
)

MASTER_HEX = "6b1f0e3a9c2d4b5a8e7f6c1d2b3a49587d6e5f4a3b2c1d0e9f8a7b6c5d4e3f21"
MASTER = bytes.fromhex(MASTER_HEX)
OTHER_MASTER = bytes(reversed(MASTER))
API_KEY = "okx-api-key-0123456789abcdef"
SECRET = "OKX-SECRET-7f3a9b2c4d6e8f0a1b3c5d7e9f1a2b4c"
PASSPHRASE = "desk-one passphrase!"
PRIVATE_KEY = "0x" + "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
ACCOUNT = "0x" + "C0ffee" * 6 + "beef"
SECRETS = (SECRET, PASSPHRASE, PRIVATE_KEY, PRIVATE_KEY[2:])


@pytest.fixture
def engine(tmp_path: Path):
    eng = open_database(data_dir=tmp_path)
    yield eng
    eng.dispose()


@pytest.fixture
def keys(engine) -> ApiKeyStore:
    return ApiKeyStore(engine, cache_ttl=0)


@pytest.fixture
def store(engine) -> CredentialStore:
    return CredentialStore(engine, MASTER)


@pytest.fixture
def okx() -> ExchangeCredentials:
    return ExchangeCredentials(Exchange.OKX, api_key=API_KEY, secret=SECRET, passphrase=PASSPHRASE)


@pytest.fixture
def wallet() -> ExchangeCredentials:
    return ExchangeCredentials(Exchange.ASTER, private_key=PRIVATE_KEY, account=ACCOUNT)


def _no_secret(text: str) -> None:
    for s in SECRETS:
        assert s not in text


# --- the master key ------------------------------------------------------------------------


def test_load_master_key_formats() -> None:
    std = base64.b64encode(MASTER).decode()
    url = base64.urlsafe_b64encode(MASTER).decode()
    for text in (
        MASTER_HEX,
        MASTER_HEX.upper(),
        f"0x{MASTER_HEX}",
        std,
        std.rstrip("="),
        url,
        f"  {MASTER_HEX}\n",
    ):
        assert load_master_key({MASTER_KEY_ENV: text}) == MASTER
    fresh = generate_master_key()
    assert len(load_master_key({MASTER_KEY_ENV: fresh})) == 32


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (None, "ASTRA_MASTER_KEY is not set"),
        ("", "ASTRA_MASTER_KEY is not set"),
        ("hunter2-is-my-password", "malformed"),
        (MASTER_HEX[:-2], "malformed"),  # 31 bytes
        (MASTER_HEX + "00", "malformed"),  # 33 bytes
        (base64.b64encode(MASTER[:24]).decode(), "malformed"),
        ("00" * 32, "not random enough"),
        ("ab" * 32, "not random enough"),
    ],
)
def test_load_master_key_errors(value: str | None, match: str) -> None:
    env = {} if value is None else {MASTER_KEY_ENV: value}
    with pytest.raises(MasterKeyError, match=match) as exc:
        load_master_key(env)
    if value:
        assert value not in str(exc.value)
    assert "secrets.token_hex(32)" in str(exc.value)  # says how to make one


def test_load_master_key_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, MASTER_HEX)
    assert load_master_key() == MASTER
    monkeypatch.delenv(MASTER_KEY_ENV)
    with pytest.raises(MasterKeyError, match="not set"):
        load_master_key()


def test_store_rejects_bad_master_keys(engine) -> None:
    with pytest.raises(MasterKeyError, match="32 bytes"):
        CredentialStore(engine, MASTER[:16])
    with pytest.raises(MasterKeyError, match="not random"):
        CredentialStore(engine, bytes(32))


# --- round trips ---------------------------------------------------------------------------


def test_set_get_list_delete(
    store: CredentialStore,
    keys: ApiKeyStore,
    okx: ExchangeCredentials,
    wallet: ExchangeCredentials,
) -> None:
    a, b = keys.create("a").key_id, keys.create("b").key_id
    assert store.get(a, "OKX") is None and store.list() == []

    info = store.set(a, okx)
    assert (info.key_id, info.exchange, info.key_hint) == (a, "OKX", "okx-…cdef")
    assert info.created_at == info.updated_at > 1_600_000_000_000
    assert info.master_key_id == store.master_key_id and len(store.master_key_id) == 16
    store.set(a, wallet)
    store.set(b, ExchangeCredentials(Exchange.SIM, private_key=PRIVATE_KEY))

    got = store.get(a, Exchange.OKX)
    assert got == okx and got is not okx
    assert (got.api_key, got.secret, got.passphrase) == (API_KEY, SECRET, PASSPHRASE)
    assert store.get(a, "ASTER") == wallet
    assert store.get(b, "SIM").private_key == PRIVATE_KEY
    assert store.get(b, "OKX") is None

    listed = [(r.key_id, r.exchange, r.key_hint) for r in store.list()]
    signer = ExchangeCredentials(Exchange.SIM, private_key=PRIVATE_KEY).signer_address
    assert signer == "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
    assert sorted(listed) == sorted(  # a bare private key shows its address
        [(a, "OKX", "okx-…cdef"), (a, "ASTER", "0xC0ff…beef"), (b, "SIM", "0x7099…79c8")]
    )
    assert [r.exchange for r in store.list(a)] == ["ASTER", "OKX"]
    _no_secret(repr(store.list()))

    # Replacing keeps created_at and moves updated_at; a new nonce every time.
    with store._engine.connect() as conn:
        before = conn.execute(
            sa.select(EXCHANGE_CREDENTIALS).where(
                EXCHANGE_CREDENTIALS.c.key_id == a, EXCHANGE_CREDENTIALS.c.exchange == "OKX"
            )
        ).one()
    replacement = ExchangeCredentials(
        Exchange.OKX, api_key="new-key-000000000000", secret=SECRET, passphrase=PASSPHRASE
    )
    again = store.set(a, replacement)
    assert again.created_at == info.created_at and again.updated_at >= info.updated_at
    assert again.key_hint == "new-…0000"
    assert store.get(a, "OKX") == replacement
    with store._engine.connect() as conn:
        after = conn.execute(
            sa.select(EXCHANGE_CREDENTIALS).where(
                EXCHANGE_CREDENTIALS.c.key_id == a, EXCHANGE_CREDENTIALS.c.exchange == "OKX"
            )
        ).one()
    assert after.nonce != before.nonce and after.ciphertext != before.ciphertext

    assert store.delete(a, "OKX") is True
    assert store.delete(a, "OKX") is False
    assert store.get(a, "OKX") is None and len(store.list()) == 2


def test_unknown_api_key_and_exchange(store: CredentialStore, okx: ExchangeCredentials) -> None:
    with pytest.raises(UnknownApiKey, match="no API key with id 'nosuchkey234'"):
        store.set("nosuchkey234", okx)
    assert store.list() == []
    with pytest.raises(Exception, match="unknown exchange"):
        store.get("nosuchkey234", "NASDAQ")


def test_foreign_key_backs_the_check(engine, keys: ApiKeyStore) -> None:
    key_id = keys.create().key_id
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            sa.insert(EXCHANGE_CREDENTIALS).values(
                key_id="nosuchkey234",
                exchange="OKX",
                ciphertext=b"x",
                nonce=b"n" * 12,
                master_key_id="0" * 16,
                key_hint="",
                created_at=1,
                updated_at=1,
            )
        )
    assert key_id


# --- at rest -------------------------------------------------------------------------------


def test_database_file_never_contains_a_secret(
    tmp_path: Path, okx: ExchangeCredentials, wallet: ExchangeCredentials
) -> None:
    eng = open_database(data_dir=tmp_path)
    keys = ApiKeyStore(eng, cache_ttl=0)
    store = CredentialStore(eng, MASTER)
    key_id = keys.create().key_id
    store.set(key_id, okx)
    store.set(key_id, wallet)
    assert store.get(key_id, "OKX") == okx
    for _ in range(2):  # the WAL file before the checkpoint, the main file after it
        blobs = [p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("astra.db")]
        assert blobs and any(b"exchange_credentials" in b for b in blobs)
        for blob in blobs:
            for s in SECRETS:
                assert s.encode() not in blob
                assert s[:12].encode() not in blob
                assert base64.b64encode(s.encode()) not in blob
            assert MASTER not in blob and MASTER_HEX.encode() not in blob
        eng.dispose()
    with sqlite3.connect(tmp_path / "astra.db") as raw:
        rows = raw.execute("select key_id, exchange, key_hint from exchange_credentials").fetchall()
    raw.close()
    assert sorted(rows) == [(key_id, "ASTER", "0xC0ff…beef"), (key_id, "OKX", "okx-…cdef")]


def _copy_row(engine, src: tuple[str, str], dst: tuple[str, str]) -> None:
    c = EXCHANGE_CREDENTIALS.c
    with engine.begin() as conn:
        row = (
            conn.execute(
                sa.select(EXCHANGE_CREDENTIALS).where(c.key_id == src[0], c.exchange == src[1])
            )
            .one()
            ._asdict()
        )
        row.update(key_id=dst[0], exchange=dst[1])
        conn.execute(
            sa.delete(EXCHANGE_CREDENTIALS).where(c.key_id == dst[0], c.exchange == dst[1])
        )
        conn.execute(sa.insert(EXCHANGE_CREDENTIALS).values(**row))


def test_a_row_moved_to_another_key_or_exchange_fails(
    engine, store: CredentialStore, keys: ApiKeyStore, okx: ExchangeCredentials
) -> None:
    victim, attacker = keys.create("victim").key_id, keys.create("attacker").key_id
    store.set(victim, okx)
    store.set(
        attacker,
        ExchangeCredentials(
            Exchange.OKX,
            api_key="attacker-key-0000",
            secret="attacker-secret-000000",
            passphrase="pw-attacker",
        ),
    )
    _copy_row(engine, (victim, "OKX"), (attacker, "OKX"))  # swap into the attacker's row
    with pytest.raises(CredentialDecryptionError) as exc:
        store.get(attacker, "OKX")
    assert "modified or copied from another API key or exchange" in str(exc.value)
    _no_secret(str(exc.value))

    _copy_row(engine, (victim, "OKX"), (victim, "KUCOIN"))  # same key, another exchange
    with pytest.raises(CredentialDecryptionError):
        store.get(victim, "KUCOIN")
    assert store.get(victim, "OKX") == okx  # the original is intact


def test_a_modified_row_fails(
    engine, store: CredentialStore, keys: ApiKeyStore, okx: ExchangeCredentials
) -> None:
    key_id = keys.create().key_id
    store.set(key_id, okx)
    c = EXCHANGE_CREDENTIALS.c
    where = (c.key_id == key_id, c.exchange == "OKX")
    with engine.begin() as conn:
        blob = bytearray(conn.execute(sa.select(c.ciphertext).where(*where)).scalar_one())
        blob[5] ^= 1
        conn.execute(sa.update(EXCHANGE_CREDENTIALS).where(*where).values(ciphertext=bytes(blob)))
    with pytest.raises(CredentialDecryptionError):
        store.get(key_id, "OKX")


def test_wrong_master_key_is_a_clear_error(
    engine, store: CredentialStore, keys: ApiKeyStore, okx: ExchangeCredentials
) -> None:
    key_id = keys.create().key_id
    store.set(key_id, okx)
    other = CredentialStore(engine, OTHER_MASTER)
    assert other.master_key_id != store.master_key_id
    with pytest.raises(MasterKeyError) as exc:
        other.get(key_id, "OKX")
    message = str(exc.value)
    assert "encrypted under another master key" in message
    assert store.master_key_id in message and other.master_key_id in message
    _no_secret(message)
    assert MASTER_HEX not in message

    # Even if the row's master key id is forged to match, decryption fails: never garbage.
    with engine.begin() as conn:
        conn.execute(sa.update(EXCHANGE_CREDENTIALS).values(master_key_id=other.master_key_id))
    with pytest.raises(CredentialDecryptionError):
        other.get(key_id, "OKX")


def test_store_without_master_key_lists_and_deletes_only(
    engine, store: CredentialStore, keys: ApiKeyStore, okx: ExchangeCredentials
) -> None:
    key_id = keys.create().key_id
    store.set(key_id, okx)
    keyless = CredentialStore(engine, None)
    assert [r.exchange for r in keyless.list()] == ["OKX"]
    with pytest.raises(MasterKeyError, match="no master key"):
        keyless.get(key_id, "OKX")
    with pytest.raises(MasterKeyError, match="no master key"):
        keyless.set(key_id, okx)
    assert keyless.delete(key_id, "OKX") is True


def test_store_repr_and_pickle(store: CredentialStore) -> None:
    text = repr(store)
    assert MASTER_HEX not in text and store.master_key_id in text
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(store)


# --- the `astra credentials` command ------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["credentials", *argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A data dir with one API key; ASTRA_MASTER_KEY set. Yields (dir args, key id)."""
    monkeypatch.delenv("ASTRA_DATABASE_URL", raising=False)
    monkeypatch.setenv(MASTER_KEY_ENV, MASTER_HEX)
    eng = open_database(data_dir=tmp_path)
    key_id = ApiKeyStore(eng).create("desk").key_id
    eng.dispose()
    return ["--data-dir", str(tmp_path)], key_id


def _stored(tmp_path: Path, key_id: str, exchange: str) -> ExchangeCredentials | None:
    eng = open_database(data_dir=tmp_path)
    try:
        return CredentialStore(eng, MASTER).get(key_id, exchange)
    finally:
        eng.dispose()


def test_cli_set_from_stdin_list_delete(
    tmp_path: Path, cli_env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, key_id = cli_env
    payload = json.dumps({"secret": SECRET, "passphrase": PASSPHRASE})
    monkeypatch.setattr(sys, "stdin", io.StringIO(payload))
    code, out, err = _cli(
        capsys, "set", "--key-id", key_id, "--exchange", "okx", "--api-key", API_KEY, "--stdin", *d
    )
    assert (code, err) == (0, "")
    assert out == f"stored OKX credentials (key okx-…cdef) for API key {key_id}\n"
    assert _stored(tmp_path, key_id, "OKX") == ExchangeCredentials(
        Exchange.OKX, api_key=API_KEY, secret=SECRET, passphrase=PASSPHRASE
    )

    wallet = json.dumps({"privateKey": PRIVATE_KEY, "account": ACCOUNT})
    monkeypatch.setattr(sys, "stdin", io.StringIO(wallet))
    code, out, _ = _cli(capsys, "set", "--key-id", key_id, "--exchange", "ASTER", "--stdin", *d)
    assert code == 0 and "stored ASTER credentials (key 0xC0ff…beef)" in out

    code, out, err = _cli(capsys, "list", *d)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == [
        "KEY_ID",
        "EXCHANGE",
        "KEY",
        "CREATED",
        "(UTC)",
        "UPDATED",
        "(UTC)",
        "MASTER",
        "KEY",
    ]
    assert [line.split()[:3] for line in lines[1:]] == [
        [key_id, "ASTER", "0xC0ff…beef"],
        [key_id, "OKX", "okx-…cdef"],
    ]
    assert all(line.rstrip().endswith("current") for line in lines[1:])
    _no_secret(out)
    assert API_KEY not in out

    monkeypatch.delenv(MASTER_KEY_ENV)  # list and delete work without the master key
    code, out, _ = _cli(capsys, "list", "--key-id", key_id, *d)
    assert code == 0 and "MASTER" not in out and len(out.splitlines()) == 3
    code, out, _ = _cli(capsys, "delete", "--key-id", key_id, "--exchange", "OKX", *d)
    assert code == 0 and out == f"deleted the OKX credentials of API key {key_id}\n"
    code, out, err = _cli(capsys, "delete", "--key-id", key_id, "--exchange", "OKX", *d)
    assert code == 1 and "no OKX credentials stored" in err
    monkeypatch.setenv(MASTER_KEY_ENV, MASTER_HEX)
    assert _stored(tmp_path, key_id, "OKX") is None
    assert _stored(tmp_path, key_id, "ASTER").private_key == PRIVATE_KEY


def test_cli_set_prompts_without_echo(
    tmp_path: Path, cli_env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, key_id = cli_env
    prompts: list[str] = []
    answers = {"KUCOIN API secret: ": SECRET, "KUCOIN API passphrase: ": PASSPHRASE}

    def fake_getpass(prompt: str) -> str:
        prompts.append(prompt)
        return answers[prompt]

    monkeypatch.setattr(credentials_cli, "_interactive", lambda: True)
    monkeypatch.setattr(credentials_cli.getpass, "getpass", fake_getpass)
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("the key was given"))
    code, out, err = _cli(
        capsys, "set", "--key-id", key_id, "--exchange", "KUCOIN", "--api-key", API_KEY, *d
    )
    assert code == 0 and prompts == list(answers)
    _no_secret(out + err)
    assert _stored(tmp_path, key_id, "KUCOIN").passphrase == PASSPHRASE

    # A wallet venue without --api-key asks for the private key.
    prompts.clear()
    answers = {"SIM private key (hex): ": PRIVATE_KEY}
    code, out, err = _cli(capsys, "set", "--key-id", key_id, "--exchange", "SIM", *d)
    assert code == 0 and prompts == list(answers)
    assert _stored(tmp_path, key_id, "SIM").private_key == PRIVATE_KEY


def test_cli_refuses_secrets_in_argv(cli_env, capsys: pytest.CaptureFixture[str]) -> None:
    d, key_id = cli_env
    for flag in ("--secret", "--passphrase", "--private-key"):
        code, out, err = _cli(
            capsys,
            "set",
            "--key-id",
            key_id,
            "--exchange",
            "OKX",
            "--api-key",
            API_KEY,
            flag,
            SECRET,
            *d,
        )
        assert code == 2 and "never taken from the command line" in err
        assert SECRET not in out + err


def test_cli_errors(
    tmp_path: Path, cli_env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, key_id = cli_env
    set_okx = ["set", "--key-id", key_id, "--exchange", "OKX", "--api-key", API_KEY, "--stdin", *d]

    def stdin(text: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))

    stdin(json.dumps({"secret": SECRET}))  # no passphrase
    code, out, err = _cli(capsys, *set_okx)
    assert code == 2 and "missing passphrase" in err
    _no_secret(out + err)

    stdin(json.dumps({"secret": SECRET, "passphrase": PASSPHRASE, "private_key": PRIVATE_KEY}))
    code, _, err = _cli(capsys, *set_okx)
    assert code == 2 and "private_key is not used by this exchange" in err
    _no_secret(err)

    stdin(f"secret={SECRET}")
    code, _, err = _cli(capsys, *set_okx)
    assert code == 2 and "not valid JSON" in err and SECRET not in err

    stdin(json.dumps({"secret": SECRET, "passphrase": PASSPHRASE, "pasword": "typo-value"}))
    code, _, err = _cli(capsys, *set_okx)
    assert code == 2 and "unknown field 'pasword'" in err and "typo-value" not in err

    monkeypatch.setattr(credentials_cli, "_interactive", lambda: False)
    code, _, err = _cli(
        capsys, "set", "--key-id", key_id, "--exchange", "OKX", "--api-key", API_KEY, *d
    )
    assert code == 2 and "not a terminal" in err

    stdin(json.dumps({"secret": SECRET, "passphrase": PASSPHRASE}))
    code, _, err = _cli(
        capsys,
        "set",
        "--key-id",
        "nosuchkey234",
        "--exchange",
        "OKX",
        "--api-key",
        API_KEY,
        "--stdin",
        *d,
    )
    assert code == 1 and "no API key with id 'nosuchkey234'" in err

    code, _, err = _cli(capsys, "list", "--key-id", "nosuchkey234", *d)
    assert code == 1 and "nosuchkey234" in err
    code, _, err = _cli(capsys, "delete", "--key-id", "nosuchkey234", "--exchange", "OKX", *d)
    assert code == 1

    monkeypatch.delenv(MASTER_KEY_ENV)
    stdin(json.dumps({"secret": SECRET, "passphrase": PASSPHRASE}))
    code, _, err = _cli(capsys, *set_okx)
    assert code == 2 and "ASTRA_MASTER_KEY is not set" in err
    monkeypatch.setenv(MASTER_KEY_ENV, "not-a-key-hunter2")
    code, out, err = _cli(capsys, "list", *d)
    assert code == 2 and "malformed" in err and "hunter2" not in err + out

    monkeypatch.setenv(MASTER_KEY_ENV, MASTER_HEX)
    eng = open_database(data_dir=tmp_path)
    ApiKeyStore(eng).revoke(key_id)
    eng.dispose()
    stdin(json.dumps({"secret": SECRET, "passphrase": PASSPHRASE}))
    code, _, err = _cli(capsys, *set_okx)
    assert code == 1 and "revoked" in err

    with pytest.raises(SystemExit) as exc:
        main(["credentials", "delete", "--key-id", key_id, "--exchange", "NASDAQ", *d])
    assert exc.value.code == 2
    assert "unknown exchange 'NASDAQ'" in capsys.readouterr().err


def test_cli_with_a_different_master_key_lists_other(
    tmp_path: Path, cli_env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, key_id = cli_env
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"secret": SECRET})))
    assert (
        _cli(
            capsys,
            "set",
            "--key-id",
            key_id,
            "--exchange",
            "KRAKEN",
            "--api-key",
            API_KEY,
            "--stdin",
            *d,
        )[0]
        == 0
    )
    monkeypatch.setenv(MASTER_KEY_ENV, OTHER_MASTER.hex())
    code, out, err = _cli(capsys, "list", *d)
    assert code == 0 and f"other ({CredentialStore.master_key_id_of(MASTER)})" in out
    # said in words too: the gateway cannot use them (503 CREDENTIALS_UNREADABLE)
    assert "1 stored credential(s) cannot be decrypted with this ASTRA_MASTER_KEY" in err
    assert CredentialStore.master_key_id_of(MASTER) in err and OTHER_MASTER.hex() not in err


def test_cli_subprocess_reads_stdin(tmp_path: Path, cli_env) -> None:
    d, key_id = cli_env
    env = {**os.environ, MASTER_KEY_ENV: MASTER_HEX}
    env.pop("ASTRA_DATABASE_URL", None)
    payload = json.dumps({"apiKey": API_KEY, "secret": SECRET})
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "astra",
            "credentials",
            "set",
            "--key-id",
            key_id,
            "--exchange",
            "BINANCE",
            "--stdin",
            *d,
        ],
        input=payload,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "stored BINANCE credentials" in run.stdout
    _no_secret(run.stdout + run.stderr)
    assert _stored(tmp_path, key_id, "BINANCE") == ExchangeCredentials(
        Exchange.BINANCE, api_key=API_KEY, secret=SECRET
    )
