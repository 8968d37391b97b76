"""The venues' private ccxt clients, kept per set of credentials between calls.

Building a ccxt client costs more than the order it sends (on the simulator ~10 ms of
``__init__`` and market indexing, plus a wallet address derivation, against ~3 ms for the
whole signed round trip), so a client is built once per (venue, credentials) and leased to
each call.

Invariants:
- A client only ever holds the credentials it was built with; it is found again by a keyed
  BLAKE2 digest of the venue and every credential field (the key is random per process), so
  different credentials never share a client and no secret is a dictionary key.
- A cached client's secrets stay registered with ``REDACTOR`` (scrubbed from every log)
  until the client is closed.
- At most ``max_clients`` are kept: leasing one more closes the least recently used. A
  client idle for ``idle_ttl`` seconds, or older than ``max_age`` (markets reloaded since),
  is closed instead of leased. ``close()`` closes every client.
- A client is never closed while a call holds it: an evicted client in use closes when its
  last lease ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from astra.core.credentials import FIELDS, ExchangeCredentials

from .credentials import REDACTOR

__all__ = ["ClientCache"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Entry:
    client: Any
    secrets: list[str]  # as registered with the redactor
    created: float
    used: float
    leases: int = 0
    evicted: bool = False
    closing: asyncio.Task | None = field(default=None, repr=False)


class ClientCache:
    """Private clients by (venue, credentials); ``lease`` one for each call."""

    def __init__(
        self,
        *,
        max_clients: int = 256,
        idle_ttl: float = 300.0,
        max_age: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, not {max_clients}")
        self.max_clients, self.idle_ttl, self.max_age = max_clients, idle_ttl, max_age
        self._clock = clock
        self._digest_key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()  # least recently used first
        self._closing: set[asyncio.Task] = set()
        self.built = 0  # clients built so far (a figure for tests and metrics)

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, venue_code: str, creds: ExchangeCredentials) -> bytes:
        digest = hashlib.blake2b(key=self._digest_key, digest_size=32)
        digest.update(venue_code.encode())
        for name in FIELDS:
            value = getattr(creds, name) or ""
            digest.update(b"\x00" + name.encode() + b"\x00" + value.encode())
        return digest.digest()

    def lease(self, venue_code: str, creds: ExchangeCredentials,
              build: Callable[[], Any]) -> _Lease:
        """The cached client for ``creds`` on ``venue_code`` (``build()`` makes one when there
        is none), held for the ``async with`` block."""
        return _Lease(self, venue_code, creds, build)

    def _acquire(self, venue_code: str, creds: ExchangeCredentials,
                 build: Callable[[], Any]) -> _Entry:
        now = self._clock()
        key = self._key(venue_code, creds)
        entry = self._entries.get(key)
        if entry is not None and (now - entry.used > self.idle_ttl
                                  or now - entry.created > self.max_age):
            self._evict(key)
            entry = None
        if entry is None:
            registered = REDACTOR.register(creds)
            try:
                client = build()
            except BaseException:
                REDACTOR.unregister(registered)
                raise
            entry = _Entry(client, registered, now, now)
            self.built += 1
            self._entries[key] = entry
            while len(self._entries) > self.max_clients:
                self._evict(next(iter(self._entries)))
        else:
            self._entries.move_to_end(key)
        entry.used = now
        entry.leases += 1
        return entry

    def _release(self, entry: _Entry) -> None:
        entry.leases -= 1
        entry.used = self._clock()
        if entry.evicted and entry.leases == 0:
            self._close_later(entry)

    def _evict(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        entry.evicted = True
        if entry.leases == 0:
            self._close_later(entry)

    def _close_later(self, entry: _Entry) -> None:
        if entry.closing is None:
            entry.closing = asyncio.get_running_loop().create_task(self._close(entry))
            self._closing.add(entry.closing)
            entry.closing.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(entry: _Entry) -> None:
        try:
            await entry.client.close()
        except Exception as exc:  # a client that fails to close must not fail a request
            log.warning("closing a private client failed: %r", exc)
        finally:
            REDACTOR.unregister(entry.secrets)

    async def close(self) -> None:
        for key in list(self._entries):
            self._evict(key)
        if self._closing:
            await asyncio.gather(*self._closing)


class _Lease:
    """``ClientCache.lease``'s block: a plain async context manager (on every order's path,
    where ``contextlib.asynccontextmanager``'s generator and wrapper cost more than the
    lookup). The client is taken on entry and given back on exit, whatever the block did."""

    __slots__ = ("_args", "_cache", "_entry")

    def __init__(self, cache: ClientCache, venue_code: str, creds: ExchangeCredentials,
                 build: Callable[[], Any]) -> None:
        self._cache = cache
        self._args = (venue_code, creds, build)
        self._entry: _Entry | None = None

    async def __aenter__(self) -> Any:
        if self._entry is not None:
            raise RuntimeError("a client lease is entered once")
        self._entry = self._cache._acquire(*self._args)
        return self._entry.client

    async def __aexit__(self, *exc_info: object) -> None:
        entry, self._entry = self._entry, None
        if entry is not None:
            self._cache._release(entry)
