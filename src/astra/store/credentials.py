"""Exchange credentials stored per Astra API key and exchange, encrypted at rest.

For self-hosted desks: instead of sending ``x-astra-exchange-*`` headers on every request, an
operator stores each API key's exchange credentials once (``astra credentials set``) and the
gateway uses them for that key's private requests.

Encryption: AES-256-GCM (``cryptography``), a random 96-bit nonce per write, under a key
derived with HKDF-SHA256 from the master key in ``ASTRA_MASTER_KEY`` (32 random bytes, hex or
base64). The associated data binds each ciphertext to its row's ``(key_id, exchange)``: a row
copied onto another key or exchange fails authentication instead of handing one user's
credentials to another. ``master_key_id`` (an HKDF-derived 8-byte identifier, which reveals
nothing about the key) tells "encrypted under another master key" from "tampered with".

Invariants:
- No credential value is written in clear to the database, nor appears in a log, a ``repr``
  or an error message; the master key appears nowhere but in memory.
- ``get`` returns the exact credentials ``set`` stored, or raises: a wrong master key is
  ``MasterKeyError`` and a tampered or moved row ``CredentialDecryptionError``, never garbage.
- Rows exist only for known API keys (checked, and a foreign key on ``api_keys``).

Not covered: an attacker who can write the database can replace a row by an *older* value of
the same row (a rollback); nothing short of state kept outside the database prevents that.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.exc import IntegrityError

from astra.core.credentials import ExchangeCredentials, key_hint

from ._db import METADATA
from .keys import API_KEYS, KEY_ID_MAX

if TYPE_CHECKING:
    from astra.core import Exchange

__all__ = [
    "EXCHANGE_CREDENTIALS",
    "MASTER_KEY_ENV",
    "CredentialDecryptionError",
    "CredentialStore",
    "CredentialStoreError",
    "MasterKeyError",
    "StoredCredentials",
    "UnknownApiKey",
    "generate_master_key",
    "load_master_key",
]

MASTER_KEY_ENV = "ASTRA_MASTER_KEY"
MASTER_KEY_BYTES = 32
_MIN_DISTINCT_BYTES = 16  # 32 random bytes have ~30 distinct values; "aaaa..." has 1
_NONCE_BYTES = 12
_AAD_CONTEXT = b"astra/exchange-credentials/v1"
_HKDF_ENCRYPTION = b"astra/exchange-credentials/aes-256-gcm/v1"
_HKDF_KEY_ID = b"astra/master-key-id/v1"
_GENERATE = "python -c 'import secrets; print(secrets.token_hex(32))'"

EXCHANGE_CREDENTIALS = sa.Table(
    "exchange_credentials",
    METADATA,
    sa.Column("key_id", sa.String(KEY_ID_MAX), sa.ForeignKey(API_KEYS.c.key_id), primary_key=True),
    sa.Column("exchange", sa.String(16), primary_key=True),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),  # AES-GCM output, tag included
    sa.Column("nonce", sa.LargeBinary(_NONCE_BYTES), nullable=False),
    sa.Column("master_key_id", sa.String(16), nullable=False),  # hex, 8 bytes
    sa.Column("key_hint", sa.String(32), nullable=False, server_default=""),
    sa.Column("created_at", sa.BigInteger, nullable=False),  # ms since the epoch
    sa.Column("updated_at", sa.BigInteger, nullable=False),  # ms since the epoch
)


class CredentialStoreError(ValueError):
    """Base of the store's errors; messages never contain a credential or the master key."""


class MasterKeyError(CredentialStoreError):
    """``ASTRA_MASTER_KEY`` is absent or malformed, or a row was encrypted under another key."""


class CredentialDecryptionError(CredentialStoreError):
    """A row failed authentication under the right master key: modified, or moved from
    another ``(key_id, exchange)``."""


class UnknownApiKey(CredentialStoreError):
    """No Astra API key has this id."""


@dataclass(frozen=True, slots=True)
class StoredCredentials:
    """What may be shown about a stored row: never a secret. Times in epoch ms."""

    key_id: str
    exchange: str
    key_hint: str
    created_at: int
    updated_at: int
    master_key_id: str


class _Plain(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """The encrypted payload."""

    api_key: str | None = None
    secret: str | None = None
    passphrase: str | None = None
    private_key: str | None = None
    account: str | None = None


def generate_master_key() -> str:
    """A new master key, 64 hex digits, for ``ASTRA_MASTER_KEY``."""
    return secrets.token_hex(MASTER_KEY_BYTES)


def _decode_master_key(text: str) -> bytes | None:
    if re.fullmatch(r"(?:0x)?[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text.removeprefix("0x"))
    if re.fullmatch(r"[A-Za-z0-9+/_-]{43}={0,1}", text):
        body = text.rstrip("=").replace("-", "+").replace("_", "/")
        try:
            return base64.b64decode(body + "=", validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


def load_master_key(environ: Mapping[str, str] | None = None) -> bytes:
    """The 32-byte master key from ``ASTRA_MASTER_KEY`` (64 hex digits, or base64 with or
    without padding, standard or URL-safe alphabet); raises ``MasterKeyError`` when it is
    absent, malformed or obviously not random. The value is never quoted."""
    env = os.environ if environ is None else environ
    text = env.get(MASTER_KEY_ENV, "").strip()
    if not text:
        raise MasterKeyError(
            f"{MASTER_KEY_ENV} is not set: stored exchange credentials need a master key of "
            f"{MASTER_KEY_BYTES} random bytes (hex or base64); generate one with {_GENERATE}"
        )
    key = _decode_master_key(text)
    if key is None or len(key) != MASTER_KEY_BYTES:
        raise MasterKeyError(
            f"{MASTER_KEY_ENV} is malformed: expected {MASTER_KEY_BYTES} bytes as 64 hex digits "
            f"or base64 (a value of {len(text)} characters was given); "
            f"generate one with {_GENERATE}"
        )
    _check_random(key)
    return key


def _check_random(key: bytes) -> None:
    if len(set(key)) < _MIN_DISTINCT_BYTES:
        raise MasterKeyError(
            f"{MASTER_KEY_ENV} is not random enough: use {MASTER_KEY_BYTES} bytes from a "
            f"secure random source, e.g. {_GENERATE}"
        )


def _hkdf(master_key: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master_key)


def _aad(key_id: str, exchange: str) -> bytes:
    parts = [_AAD_CONTEXT, key_id.encode(), exchange.encode()]
    return b"".join(struct.pack(">H", len(p)) + p for p in parts)  # length-prefixed


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _exchange_code(exchange: Exchange | str) -> str:
    from astra.core import Exchange, UnknownExchange

    try:
        return Exchange(exchange).value
    except ValueError:
        raise UnknownExchange(str(exchange)[:32]) from None


def _info(row: sa.Row) -> StoredCredentials:
    return StoredCredentials(
        row.key_id, row.exchange, row.key_hint, row.created_at, row.updated_at, row.master_key_id
    )


class CredentialStore:
    """Exchange credentials in the ``exchange_credentials`` table of ``engine``.

    ``master_key`` is the 32 raw bytes (``load_master_key()`` reads them from the
    environment); only keys derived from it are kept. With ``master_key=None`` the store can
    ``list``, ``info`` and ``delete`` but ``get``/``set`` raise ``MasterKeyError``. Every call
    reads the database (no cache): a credential set or deleted by the CLI applies to the next
    request.
    """

    def __init__(self, engine: sa.Engine, master_key: bytes | None) -> None:
        self._engine = engine
        self._aead: AESGCM | None = None
        self.master_key_id: str | None = None
        if master_key is not None:
            self.master_key_id = self.master_key_id_of(master_key)
            self._aead = AESGCM(_hkdf(bytes(master_key), _HKDF_ENCRYPTION, 32))
        API_KEYS.create(engine, checkfirst=True)
        EXCHANGE_CREDENTIALS.create(engine, checkfirst=True)

    @staticmethod
    def master_key_id_of(master_key: bytes) -> str:
        """The public identifier of a master key (16 hex digits, HKDF-derived: it reveals
        nothing about the key); raises ``MasterKeyError`` for a key of the wrong size."""
        if not isinstance(master_key, bytes | bytearray) or len(master_key) != MASTER_KEY_BYTES:
            raise MasterKeyError(f"the master key must be {MASTER_KEY_BYTES} bytes")
        _check_random(bytes(master_key))
        return _hkdf(bytes(master_key), _HKDF_KEY_ID, 8).hex()

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            raise MasterKeyError(
                f"this credential store has no master key: set {MASTER_KEY_ENV} "
                f"(generate one with {_GENERATE})"
            )
        return self._aead

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"CredentialStore({url!r}, master_key_id={self.master_key_id!r})"

    def __reduce__(self) -> tuple:
        raise TypeError("CredentialStore cannot be pickled")

    def set(self, key_id: str, credentials: ExchangeCredentials) -> StoredCredentials:
        """Store (or replace) ``key_id``'s credentials on ``credentials.exchange``.

        Raises ``UnknownApiKey`` when no API key has this id (revoked keys are accepted: the
        CLI refuses them, the gateway never serves them).
        """
        if not isinstance(credentials, ExchangeCredentials):
            raise TypeError("credentials must be an ExchangeCredentials")
        exchange = credentials.exchange.value
        plain = msgspec.json.encode(
            _Plain(
                credentials.api_key,
                credentials.secret,
                credentials.passphrase,
                credentials.private_key,
                credentials.account,
            )
        )
        nonce = os.urandom(_NONCE_BYTES)
        values = {
            "ciphertext": self._cipher().encrypt(nonce, plain, _aad(key_id, exchange)),
            "nonce": nonce,
            "master_key_id": self.master_key_id,
            "key_hint": _hint(credentials),
        }
        for _ in range(2):  # a concurrent first insert of the same row: update it instead
            now = _now_ms()
            try:
                with self._engine.begin() as conn:
                    if not conn.execute(
                        sa.select(sa.literal(1)).where(API_KEYS.c.key_id == key_id)
                    ).first():
                        raise UnknownApiKey(f"no API key with id {key_id!r}")
                    n = conn.execute(
                        sa.update(EXCHANGE_CREDENTIALS)
                        .where(*self._row(key_id, exchange))
                        .values(**values, updated_at=now)
                    ).rowcount
                    if n == 0:
                        conn.execute(
                            sa.insert(EXCHANGE_CREDENTIALS).values(
                                key_id=key_id,
                                exchange=exchange,
                                **values,
                                created_at=now,
                                updated_at=now,
                            )
                        )
                break
            except IntegrityError:
                continue
        else:
            raise CredentialStoreError(f"could not store the {exchange} credentials of {key_id}")
        info = self.info(key_id, exchange)
        assert info is not None
        return info

    def get(self, key_id: str, exchange: Exchange | str) -> ExchangeCredentials | None:
        """``key_id``'s credentials on ``exchange``, or None when none are stored.

        Raises ``MasterKeyError`` when the row was encrypted under another master key and
        ``CredentialDecryptionError`` when it fails authentication (modified or moved).
        """
        code = _exchange_code(exchange)
        self._cipher()
        c = EXCHANGE_CREDENTIALS.c
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(c.ciphertext, c.nonce, c.master_key_id).where(*self._row(key_id, code))
            ).first()
        if row is None:
            return None
        where = f"the {code} credentials of API key {key_id}"
        if row.master_key_id != self.master_key_id:
            raise MasterKeyError(
                f"{where} were encrypted under another master key (id {row.master_key_id}; "
                f"{MASTER_KEY_ENV} has id {self.master_key_id}): start with the master key "
                "they were stored with, or store them again"
            )
        try:
            plain = self._cipher().decrypt(
                bytes(row.nonce), bytes(row.ciphertext), _aad(key_id, code)
            )
        except InvalidTag:
            raise CredentialDecryptionError(
                f"{where} failed authentication: the row was modified or copied from another "
                "API key or exchange; store them again"
            ) from None
        fields = msgspec.json.decode(plain, type=_Plain)
        return ExchangeCredentials(
            code,
            api_key=fields.api_key,
            secret=fields.secret,
            passphrase=fields.passphrase,
            private_key=fields.private_key,
            account=fields.account,
        )

    def info(self, key_id: str, exchange: Exchange | str) -> StoredCredentials | None:
        """The row's public part, or None."""
        code = _exchange_code(exchange)
        with self._engine.connect() as conn:
            row = conn.execute(self._select().where(*self._row(key_id, code))).first()
        return None if row is None else _info(row)

    def list(self, key_id: str | None = None) -> list[StoredCredentials]:
        """Every stored row (or ``key_id``'s), by key id then exchange; no secrets."""
        c = EXCHANGE_CREDENTIALS.c
        query = self._select().order_by(c.key_id, c.exchange)
        if key_id is not None:
            query = query.where(c.key_id == key_id)
        with self._engine.connect() as conn:
            return [_info(r) for r in conn.execute(query).all()]

    def delete(self, key_id: str, exchange: Exchange | str) -> bool:
        """Delete the row: True if there was one."""
        code = _exchange_code(exchange)
        with self._engine.begin() as conn:
            n = conn.execute(sa.delete(EXCHANGE_CREDENTIALS).where(*self._row(key_id, code)))
        return n.rowcount > 0

    @staticmethod
    def _row(key_id: str, exchange: str) -> tuple[sa.ColumnElement[bool], ...]:
        c = EXCHANGE_CREDENTIALS.c
        return (c.key_id == key_id, c.exchange == exchange)

    @staticmethod
    def _select() -> sa.Select:
        c = EXCHANGE_CREDENTIALS.c
        return sa.select(
            c.key_id, c.exchange, c.key_hint, c.created_at, c.updated_at, c.master_key_id
        )


def _hint(credentials: ExchangeCredentials) -> str:
    """The public hint kept in clear: the API key's, else the wallet address's."""
    if credentials.api_key is None and credentials.private_key is not None:
        return key_hint(credentials.account or credentials.signer_address)
    return credentials.hint
