"""Astra API keys: issue, register, list, revoke and verify (SQLAlchemy Core, no ORM).

A key is the token ``<key_id>.<secret>``: ``key_id`` is 12 characters from an unambiguous
alphabet (no ``0/o``, ``1/l/i``), public and safe to log; ``secret`` is 32 to 128 characters of
``[A-Za-z0-9_-]``, the ``secrets.token_urlsafe`` alphabet (``create`` makes 43, 256 bits).

Invariants:
- No secret is ever written to disk or logs, nor appears in a ``repr`` or an error message:
  the ``api_keys`` table keeps ``sha256$<salt>$<digest>``, ``SHA-256(salt || token)``, and
  ``IssuedKey`` (the only object that holds a secret, returned once by ``create``) hides it.
- ``verify`` compares digests with ``hmac.compare_digest`` (constant time).
- A revocation written by any process (e.g. the CLI beside a running server) takes effect in
  every ``ApiKeyStore`` within its ``cache_ttl``; revocation is final (``register`` never
  revives a revoked key). A revocation through this store also calls its revocation
  listeners at once (``on_revoke``: a server closes the key's open sessions).
- Scopes, expiry, IP allow-list and last-used time are in ``api_key_scopes``
  (``key_scopes.py``); a key without a row there (every key issued before scopes) has full
  access. ``verify`` returns the key whatever its expiry: the caller decides (401 "expired").
- Only ``load`` and the uncached reads touch the database; ``is_cached``, ``cache_entry``,
  ``verify_cached`` and a ``verify`` of a cached key id never do, so an event loop can run
  misses in a thread (``load``) and verify on the loop. Unknown key ids are cached too
  (negative entries), and the cache is bounded (expired entries, then the oldest, are
  evicted). A cache entry is never changed in place, only replaced or dropped.

Why one salted SHA-256 and not bcrypt/scrypt/argon2: slow KDFs exist to make guessing
low-entropy passwords expensive. These secrets are uniformly random with at least 192 bits
(32 characters x 6 bits), so even a stolen table cannot be brute-forced at any hash speed,
while ``verify`` runs on every HTTP request and must cost microseconds (one SHA-256 is ~1 us;
an HMAC costs 4x that here for no gain, as only preimage resistance matters). The 16-byte
random salt per key and hashing the whole token (key id included) rule out precomputed
tables and moving a digest from one key id to another.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from astra.telemetry import timed

from ._db import METADATA
from .key_scopes import (
    ALL_SCOPES,
    API_KEY_SCOPES,
    parse_allow_ips,
    parse_expiry,
    parse_scopes,
)

__all__ = [
    "API_KEYS",
    "KEY_ID_ALPHABET",
    "KEY_ID_LENGTH",
    "MAX_TOKEN_LENGTH",
    "ApiKeyStore",
    "IssuedKey",
    "KeyInfo",
    "parse_token",
]

KEY_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
KEY_ID_LENGTH = 12  # of the ids this store issues
# Keys issued elsewhere (ASTRA_API_KEY, e.g. the seed's "kadjfasfl.KjUB...") may have other
# id lengths and shorter secrets; any such key is accepted within these bounds.
KEY_ID_MIN, KEY_ID_MAX = 4, 64
SECRET_MIN, SECRET_MAX = 24, 128
MAX_TOKEN_LENGTH = KEY_ID_MAX + 1 + SECRET_MAX
MAX_LABEL_LENGTH = 200
_SECRET_MIN_DISTINCT = 12  # a random 32-char secret has ~25; "passwordpassword..." has 7
_SCHEME = "sha256"
_TOKEN_RE = re.compile(rf"([A-Za-z0-9_-]{{{KEY_ID_MIN},{KEY_ID_MAX}}})\.([A-Za-z0-9_-]+)")
_FORMAT = (
    f"expected '<key_id>.<secret>': a key id of {KEY_ID_MIN} to {KEY_ID_MAX} characters, "
    f"a dot, and a secret of {SECRET_MIN} to {SECRET_MAX} characters, both from [A-Za-z0-9_-]"
)
_MAX_CACHED = 10_000  # bounds the memory an attacker can make verify() use with random ids

API_KEYS = sa.Table(
    "api_keys",
    METADATA,
    sa.Column("key_id", sa.String(KEY_ID_MAX), primary_key=True),
    sa.Column("label", sa.String(MAX_LABEL_LENGTH), nullable=False, server_default=""),
    sa.Column("secret_hash", sa.String(200), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),  # ms since the epoch
    sa.Column("revoked_at", sa.BigInteger, nullable=True),  # ms since the epoch
)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What may be shown about a key: never its secret nor its hash. Times in epoch ms."""

    key_id: str
    label: str
    created_at: int
    revoked_at: int | None = None
    scopes: frozenset[str] = ALL_SCOPES
    expires_at: int | None = None
    allow_ips: tuple[str, ...] = ()  # CIDRs; empty: any address
    last_used_at: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def expired(self, now_ms: int) -> bool:
        return self.expires_at is not None and self.expires_at <= now_ms


@dataclass(frozen=True, slots=True, repr=False)
class IssuedKey:
    """A newly created key; ``token`` is shown to the user once and stored nowhere."""

    key_id: str
    secret: str

    @property
    def token(self) -> str:
        return f"{self.key_id}.{self.secret}"

    def __repr__(self) -> str:
        return f"IssuedKey(key_id={self.key_id!r}, secret=<hidden>)"


def parse_token(token: object) -> tuple[str, str] | None:
    """``(key_id, secret)`` for a well-formed token, else None (never raises)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        return None
    m = _TOKEN_RE.fullmatch(token)
    if m is None or not SECRET_MIN <= len(m[2]) <= SECRET_MAX:
        return None
    return m[1], m[2]


def _digest(salt: bytes, key_id: str, secret: str) -> bytes:
    return hashlib.sha256(salt + f"{key_id}.{secret}".encode()).digest()


def _hash(key_id: str, secret: str) -> str:
    salt = secrets.token_bytes(16)
    return f"{_SCHEME}${salt.hex()}${_digest(salt, key_id, secret).hex()}"


def _parse_hash(stored: str) -> tuple[bytes, bytes] | None:
    """``(salt, digest)`` from a stored ``secret_hash``; None for an unknown scheme."""
    scheme, _, rest = stored.partition("$")
    salt_hex, _, digest_hex = rest.partition("$")
    try:
        salt, digest = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return None
    return (salt, digest) if scheme == _SCHEME and salt and digest else None


def _matches(parsed: tuple[bytes, bytes] | None, key_id: str, secret: str) -> bool:
    if parsed is None:
        return False
    salt, digest = parsed
    return hmac.compare_digest(_digest(salt, key_id, secret), digest)


def _check_label(label: str) -> str:
    if not isinstance(label, str) or len(label) > MAX_LABEL_LENGTH:
        raise ValueError(f"label must be a string of at most {MAX_LABEL_LENGTH} characters")
    if any(not c.isprintable() for c in label):
        raise ValueError("label must not contain control characters")
    return label


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _info(row: sa.Row) -> KeyInfo:
    if row.scopes is None:  # no api_key_scopes row: a key from before scopes, full access
        return KeyInfo(row.key_id, row.label, row.created_at, row.revoked_at,
                       last_used_at=row.last_used_at)
    return KeyInfo(
        row.key_id, row.label, row.created_at, row.revoked_at,
        frozenset(s for s in row.scopes.split(",") if s),
        row.expires_at,
        tuple(n for n in (row.allow_ips or "").split(",") if n),
        row.last_used_at,
    )


def _joined() -> sa.Join:
    return API_KEYS.outerjoin(API_KEY_SCOPES, API_KEY_SCOPES.c.key_id == API_KEYS.c.key_id)


_EXTRA = (
    API_KEY_SCOPES.c.scopes,
    API_KEY_SCOPES.c.expires_at,
    API_KEY_SCOPES.c.allow_ips,
    API_KEY_SCOPES.c.last_used_at,
)


_Entry = tuple[KeyInfo, tuple[bytes, bytes] | None]


class ApiKeyStore:
    """API keys in the ``api_keys`` table of ``engine``.

    ``verify`` caches each key id's row (or its absence) for ``cache_ttl`` seconds, so the hot
    path is a dict lookup and one SHA-256; 0 disables the cache. ``clock`` is for tests.
    """

    def __init__(
        self,
        engine: sa.Engine,
        cache_ttl: float = 2.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._ttl = cache_ttl
        self._clock = clock
        # key_id -> (expires_at, (info, (salt, digest)) or None when the id is unknown)
        self._cache: dict[str, tuple[float, _Entry | None]] = {}
        self._revoke_listeners: list[Callable[[str], None]] = []
        # astra.telemetry.Telemetry: the database reads and writes timed (a gateway sets it)
        self.telemetry: Any = None
        API_KEYS.create(engine, checkfirst=True)
        API_KEY_SCOPES.create(engine, checkfirst=True)

    def on_revoke(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(key_id)`` after each key this store revokes (in the revoking
        thread); revocations by other processes are not seen here (poll ``load``/``get``).
        Returns the function that removes the listener."""
        self._revoke_listeners.append(listener)
        return lambda: self._revoke_listeners.remove(listener)

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"ApiKeyStore({url!r}, cache_ttl={self._ttl})"

    def create(
        self,
        label: str = "",
        *,
        scopes: Iterable[str] | str | None = None,
        expires_at: object = None,
        allow_ips: Iterable[str] | str | None = None,
    ) -> IssuedKey:
        """Issue a new key. Its secret is in the returned ``IssuedKey`` only.

        ``scopes`` None: every scope. ``expires_at``: epoch ms or an ISO date, in the future.
        ``allow_ips``: CIDRs. Bad values raise ``key_scopes.ScopeError`` (a ValueError naming
        the parameter) before anything is written."""
        _check_label(label)
        attrs = None
        if scopes is not None or expires_at is not None or allow_ips is not None:
            attrs = {
                "scopes": ",".join(sorted(ALL_SCOPES if scopes is None else parse_scopes(scopes))),
                "expires_at": parse_expiry(expires_at, _now_ms()),
                "allow_ips": ",".join(parse_allow_ips(allow_ips)) or None,
            }
        while True:
            key_id = "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
            key = IssuedKey(key_id, secrets.token_urlsafe(32))
            try:
                self._insert(key.key_id, key.secret, label, attrs)
            except IntegrityError:  # a key id collision (59 random bits): draw again
                continue
            return key

    def register(self, token: str, label: str = "env") -> str:
        """Store a key given from outside (e.g. ``ASTRA_API_KEY``); returns its key id.

        Idempotent: registering the same token again does nothing (and does not revive it if
        it was revoked). Raises ValueError, never quoting the token, when the token is
        malformed or its key id is already taken by a different secret.
        """
        _check_label(label)
        if not isinstance(token, str):
            raise ValueError("API key must be a string")
        parsed = parse_token(token.strip())
        if parsed is None:
            raise ValueError(f"malformed API key: {_FORMAT}")
        key_id, secret = parsed
        if len(set(secret)) < _SECRET_MIN_DISTINCT:
            raise ValueError(
                f"API key {key_id}: the secret is not random enough "
                "(use e.g. Python's secrets.token_urlsafe(32))"
            )
        try:  # insert first: upgrading a read transaction can fail "busy" on SQLite
            self._insert(key_id, secret, label)
        except IntegrityError:
            with self._engine.connect() as conn:
                stored = conn.execute(
                    sa.select(API_KEYS.c.secret_hash).where(API_KEYS.c.key_id == key_id)
                ).scalar_one()
            if not _matches(_parse_hash(stored), key_id, secret):
                raise ValueError(
                    f"API key id {key_id} is already registered with a different secret"
                ) from None
        return key_id

    def get(self, key_id: str) -> KeyInfo | None:
        """The key with this id, revoked or not (uncached); None when unknown."""
        with self._engine.connect() as conn:
            row = conn.execute(self._select().where(API_KEYS.c.key_id == key_id)).first()
        return None if row is None else _info(row)

    def revoke(self, key_id: str) -> bool:
        """Revoke an active key: True if this call revoked it, False if unknown or revoked."""
        with self._timed("revoke"), self._engine.begin() as conn:
            n = conn.execute(
                sa.update(API_KEYS)
                .where(API_KEYS.c.key_id == key_id, API_KEYS.c.revoked_at.is_(None))
                .values(revoked_at=_now_ms())
            ).rowcount
        self._cache.pop(key_id, None)
        if n > 0:
            for listener in list(self._revoke_listeners):
                listener(key_id)
        return n > 0

    def active_count(self) -> int:
        with self._engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(API_KEYS)
                .where(API_KEYS.c.revoked_at.is_(None))
            ).scalar_one()

    def verify(self, token: str) -> KeyInfo | None:
        """The active key ``token`` names, or None (malformed, unknown, wrong secret, revoked)."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        entry = self._lookup(key_id)
        if entry is None:
            return None
        info, parsed_hash = entry
        if not _matches(parsed_hash, key_id, secret) or not info.active:
            return None
        return info

    def verify_cached(self, key_id: str, secret: str) -> KeyInfo | bool | None:
        """``verify`` of a parsed token (``parse_token``) from the cache alone: False when
        ``key_id`` is not cached (``load`` it off the loop, then call again); otherwise the
        active key, or None, exactly as ``verify`` would answer. Never reads the database."""
        hit = self._cache.get(key_id)
        if hit is None or hit[0] <= self._clock():
            return False
        entry = hit[1]
        if entry is None:
            return None
        info, parsed_hash = entry
        if not _matches(parsed_hash, key_id, secret) or not info.active:
            return None
        return info

    def list(self) -> list[KeyInfo]:
        """Every key, oldest first, with no secret material."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                self._select().order_by(API_KEYS.c.created_at, API_KEYS.c.key_id)
            ).all()
        return [_info(r) for r in rows]

    def touch(self, key_id: str, when_ms: int) -> None:
        """Record that ``key_id`` was used at ``when_ms`` (blocking: call from a thread).
        A key without a scopes row gets one with every scope, so its access is unchanged."""
        t = API_KEY_SCOPES
        for _ in range(2):  # an insert racing another process's: the update then finds it
            with self._timed("touch"), self._engine.begin() as conn:
                n = conn.execute(
                    sa.update(t).where(t.c.key_id == key_id).values(last_used_at=when_ms)
                ).rowcount
                if n:
                    return
            try:
                with self._timed("touch"), self._engine.begin() as conn:
                    conn.execute(sa.insert(t).values(
                        key_id=key_id, scopes=",".join(sorted(ALL_SCOPES)),
                        last_used_at=when_ms))
                return
            except IntegrityError:
                continue

    def _timed(self, operation: str) -> AbstractContextManager[None]:
        """``astra_db_query_seconds{store="api_keys",operation}`` around a round trip (the
        commit included), when a gateway gave this store its telemetry."""
        return timed(self.telemetry, "db_query_seconds", "api_keys", operation)

    def _select(self) -> sa.Select:
        c = API_KEYS.c
        return sa.select(c.key_id, c.label, c.created_at, c.revoked_at, *_EXTRA).select_from(
            _joined())

    def _insert(self, key_id: str, secret: str, label: str, attrs: dict | None = None) -> None:
        with self._timed("insert"), self._engine.begin() as conn:
            conn.execute(
                sa.insert(API_KEYS).values(
                    key_id=key_id,
                    label=label,
                    secret_hash=_hash(key_id, secret),
                    created_at=_now_ms(),
                )
            )
            if attrs is not None:  # same transaction: a key never exists without its limits
                conn.execute(sa.insert(API_KEY_SCOPES).values(key_id=key_id, **attrs))
        self._cache.pop(key_id, None)

    def cache_entry(self, key_id: str, holding: KeyInfo | None = None) -> object | None:
        """The cache's live entry for ``key_id`` (None: not cached, or stale), to compare by
        identity with one seen before: a re-read, a revocation through this store or an
        eviction replaces or drops it, so the same object means the same verified key. With
        ``holding``, only an entry holding that very ``KeyInfo`` (one verified from it): an
        entry another thread replaced since the verification is not that key's."""
        hit = self._cache.get(key_id)
        if hit is None or hit[0] <= self._clock():
            return None
        if holding is not None and (hit[1] is None or hit[1][0] is not holding):
            return None
        return hit

    def is_cached(self, key_id: str) -> bool:
        """True when ``verify`` of a token with this key id needs no database read."""
        hit = self._cache.get(key_id)
        return hit is not None and hit[0] > self._clock()

    def load(self, key_id: str) -> KeyInfo | None:
        """Read this key id's row (or its absence) from the database into the cache (when
        enabled): the blocking part of ``verify``, for a worker thread. Returns the key."""
        entry = self._read(key_id)
        return None if entry is None else entry[0]

    def _lookup(self, key_id: str) -> _Entry | None:
        hit = self._cache.get(key_id)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        return self._read(key_id)

    def _read(self, key_id: str) -> _Entry | None:
        with self._timed("read"), self._engine.connect() as conn:
            row = conn.execute(
                sa.select(API_KEYS, *_EXTRA).select_from(_joined())
                .where(API_KEYS.c.key_id == key_id)
            ).first()
        entry = None if row is None else (_info(row), _parse_hash(row.secret_hash))
        if self._ttl > 0:
            now = self._clock()
            cache = self._cache
            if len(cache) >= _MAX_CACHED:
                cache = {k: v for k, v in cache.items() if v[0] > now}
                while len(cache) >= _MAX_CACHED:  # full of live entries: drop the oldest
                    del cache[next(iter(cache))]
            cache.pop(key_id, None)  # re-inserted last: the dict stays in age order
            cache[key_id] = (now + self._ttl, entry)
            self._cache = cache
        return entry
