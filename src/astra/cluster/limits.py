"""Each venue's rate-limit budget shared by every node of the cluster, on NATS JetStream KV.

With N nodes calling one venue, N local ``VenueLimiter`` buckets would each allow the venue's
whole rate (429s, then a 418 ban). ``share_limits`` installs a ``KvBudget`` as the process's
``SharedBudget`` (``astra.venues.limiter``): every limiter then draws from one bucket per key
(``VENUE.scope``) held in the KV bucket ``BUCKET``, and a 429/418 seen by one node closes that
key's gate on all of them::

    nc = await nats.connect(url)
    budget = await share_limits(nc, node="edge-1")   # every VenueLimiter of the process
    ...
    await budget.close()                              # flushes gates, uninstalls

Why JetStream KV rather than PostgreSQL: a take is one compare-and-set publish (the node keeps
the revision it last wrote, so the read is skipped unless another node wrote since) on the
NATS connection the node already holds; a PostgreSQL row lock costs a transaction and a pool
connection per request, and the cluster's NATS is there whenever there is a cluster.

Integrity rule (exact under concurrency): a key's state — tokens, when they were counted, its
gates, the nodes that drew from it lately — is one KV entry, changed only by
``kv.update(last=revision)`` (``kv.create`` for the first), i.e. JetStream's expected last
subject sequence: of two nodes racing on one revision one write fails and that node re-reads
and recomputes, so two nodes never both take the last tokens. Tokens refill at ``rate`` up to
``capacity``; a normal request may leave the bucket negative (it waits the debt / ``rate``
before going, as a local limiter's queue does), so the requests granted in any interval T
never exceed ``capacity + rate * T`` (plus ``rate`` times the nodes' clock skew: time is the
writer's epoch clock, and a node whose clock is behind the entry's counts no refill, so time
in the entry never runs backwards). No batch of tokens is leased: a lease would hold tokens
other nodes could use.

NATS unreachable (disconnected, a KV call failed or took longer than ``call_timeout``): the
budget falls back, per key, to a local bucket of ``rate / n`` and ``capacity / n``, where ``n``
is the larger of ``expected_nodes`` and the number of nodes seen drawing from the key in the
last ``NODE_WINDOW`` seconds; it neither blocks requests until NATS is back nor fails open to
N times the rate. It logs a WARNING on entering and INFO on leaving it, counts ``fallbacks``,
and tries NATS again after ``retry_seconds`` (re-creating the bucket: a restarted server's
memory store lost it). Gates closed meanwhile are kept and written with the next take.

Gates are epoch seconds (an account's under a hash of its name: the store is shared). The
cached view (``gate``) is refreshed by every take and gate write of this node, so a node
learns of another's 429 at its next request, before sending it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType

from astra.venues.limiter import set_shared_budget, shared_budget
from astra.venues.venue_answers import MAX_WAIT

__all__ = ["BUCKET", "NODE_WINDOW", "KvBudget", "share_limits"]

log = logging.getLogger(__name__)

BUCKET = "ASTRA_LIMITS"
NODE_WINDOW = 60.0  # seconds a node counts as drawing from a key after its last take
_CAS_ATTEMPTS = 32  # then the key is too contended to wait on: the fallback answers
_KEY_CHARS = frozenset("-/_=.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# What means "NATS is not answering" (as opposed to our own bug, which propagates).
_NATS_DOWN = (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError)


class _State(msgspec.Struct, array_like=True):
    tokens: float
    updated: float  # epoch seconds the tokens were counted at
    gates: dict[str, float] = {}  # "" (the venue) or an account's hash -> reopens at (epoch)
    nodes: dict[str, float] = {}  # node -> its last take (epoch)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_State).decode


@functools.lru_cache(maxsize=4096)  # asked before every request naming an account
def _account(account: str | None) -> str:
    return "" if account is None else hashlib.sha256(account.encode()).hexdigest()[:16]


def _kv_key(key: str) -> str:
    # KV keys are [-/_=.A-Za-z0-9]; another character collides with "_", which only ever
    # merges two budgets (fewer requests), never splits one.
    clean = "".join(c if c in _KEY_CHARS else "_" for c in key).strip(".")
    return f"b.{clean or '_'}"


class _Local:
    """A key's fallback bucket while NATS is unreachable: this node's share."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate, self.capacity, self.tokens, self.updated = rate, capacity, capacity, now


class KvBudget:
    """A ``SharedBudget`` on a JetStream KV bucket (see the module docstring). ``node`` names
    this process (unique in the cluster); ``clock``: epoch seconds, injectable."""

    def __init__(
        self,
        nc: Any,
        *,
        node: str,
        bucket: str = BUCKET,
        expected_nodes: int = 2,
        call_timeout: float = 0.5,
        retry_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not node or expected_nodes < 1 or not call_timeout > 0:
            raise ValueError("node must be named, expected_nodes >= 1 and call_timeout > 0")
        self.nc, self.node, self.bucket = nc, str(node), bucket
        self.expected_nodes, self.call_timeout = int(expected_nodes), float(call_timeout)
        self.retry_seconds = float(retry_seconds)
        self._clock, self._monotonic = clock, monotonic
        self._js = nc.jetstream(timeout=self.call_timeout)
        self._kv: Any = None
        self._entries: dict[str, tuple[int, _State]] = {}  # kv key -> our last (revision, state)
        self._gates: dict[tuple[str, str], float] = {}  # (key, account hash) -> reopens at
        self._nodes: dict[str, int] = {}  # key -> nodes seen drawing from it lately
        self._locks: dict[str, asyncio.Lock] = {}
        self._local: dict[str, _Local] = {}
        self._down_until = 0.0  # monotonic: NATS is not tried again before
        self._pushes: dict[str, asyncio.Task] = {}
        self.takes = 0  # answered from the shared bucket
        self.fallbacks = 0  # answered from the local share while NATS was unreachable
        self.conflicts = 0  # compare-and-set retries (another node wrote first)
        self.outages = 0

    def __repr__(self) -> str:
        state = "fallback" if self.degraded else "shared"
        return f"KvBudget(node={self.node!r}, {state}, takes={self.takes}, " \
               f"fallbacks={self.fallbacks})"

    @property
    def stats(self) -> dict[str, int]:
        """The counters ``/metrics`` shows (``astra_cluster_limits_<name>_total``)."""
        return {"takes": self.takes, "fallbacks": self.fallbacks, "conflicts": self.conflicts,
                "outages": self.outages}

    @property
    def degraded(self) -> bool:
        """True while requests are paced by the local share (NATS unreachable)."""
        return not self.nc.is_connected or self._monotonic() < self._down_until

    async def start(self) -> KvBudget:
        """Create (or open) the KV bucket; unreachable NATS starts in the fallback."""
        try:
            await self._ensure()
        except _NATS_DOWN as exc:
            self._down(exc)
        return self

    async def _ensure(self) -> Any:
        if self._kv is None:
            async with asyncio.timeout(self.call_timeout * 4):
                self._kv = await self._js.create_key_value(KeyValueConfig(
                    bucket=self.bucket, history=1, storage=StorageType.MEMORY,
                    # An idle key's entry goes; none is needed longer than its longest gate.
                    ttl=MAX_WAIT + 3600.0))
        return self._kv

    def _down(self, exc: BaseException) -> None:
        if self._monotonic() >= self._down_until:
            self.outages += 1
            log.warning("rate-limit budget: NATS unreachable (%s): pacing by this node's "
                        "share until it answers", type(exc).__name__)
        self._down_until = self._monotonic() + self.retry_seconds
        self._kv = None  # re-opened (re-created after a server restart) on the next try
        self._entries.clear()

    # --- SharedBudget --------------------------------------------------------------------

    def gate(self, key: str, account: str | None = None) -> float:
        until = self._gates.get((key, ""), 0.0)
        if account is not None:
            until = max(until, self._gates.get((key, _account(account)), 0.0))
        return until

    def close_gate(self, key: str, until: float, account: str | None = None) -> None:
        slot = (key, _account(account))
        if until <= self._gates.get(slot, 0.0):
            return
        self._gates[slot] = until
        if len(self._gates) > 256:  # account gates come and go
            now = self._clock()
            self._gates = {k: v for k, v in self._gates.items() if v > now}
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # written with the next take
        if key not in self._pushes and not self.degraded:
            task = self._pushes[key] = loop.create_task(self._push(key))
            task.add_done_callback(lambda _t: self._pushes.pop(key, None))

    async def take(self, key: str, weight: float, *, rate: float, capacity: float,
                   max_wait: float, reserve: float | None = None) -> float:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:  # this node's requests queue here, not in compare-and-set retries
            if not self.nc.is_connected:
                self._down(ConnectionError("disconnected"))
            elif self._monotonic() >= self._down_until:
                try:
                    answer = await self._cas(key, weight, rate, capacity, max_wait, reserve)
                except _NATS_DOWN as exc:
                    self._down(exc)
                else:
                    if answer is not None:
                        if self._local:
                            log.info("rate-limit budget: NATS answers again: shared pacing")
                            self._local.clear()
                        self.takes += 1
                        return answer
            self.fallbacks += 1
            return self._take_local(key, weight, rate, capacity, max_wait, reserve)

    # --- the shared bucket ---------------------------------------------------------------

    async def _cas(self, key: str, weight: float, rate: float, capacity: float,
                   max_wait: float, reserve: float | None) -> float | None:
        """One take by compare-and-set; None when contention outlasted the attempts."""
        async with asyncio.timeout(self.call_timeout * 4):
            kv = await self._ensure()
            kv_key = _kv_key(key)
            for _ in range(_CAS_ATTEMPTS):
                revision, state = await self._read(kv, kv_key, capacity)
                now = self._clock()
                state = self._advance(key, state, now, rate, capacity)
                if reserve is None:
                    deficit = weight - state.tokens
                    wait = deficit / rate if deficit > 0 else 0.0
                    if wait > max_wait:
                        return wait  # reserves nothing (a stale view only overstates tokens)
                else:
                    deficit = weight + reserve - state.tokens
                    if deficit > 0:
                        return deficit / rate
                    wait = 0.0
                state.tokens -= weight
                state.nodes[self.node] = now
                if await self._write(kv, kv_key, revision, state):
                    self._nodes[key] = len(state.nodes)
                    return wait
            return None

    async def _read(self, kv: Any, kv_key: str, capacity: float) -> tuple[int, _State]:
        cached = self._entries.get(kv_key)
        if cached is not None:
            return cached[0], msgspec.structs.replace(
                cached[1], gates=dict(cached[1].gates), nodes=dict(cached[1].nodes))
        try:
            entry = await kv.get(kv_key)
        except nats.js.errors.KeyNotFoundError:
            return 0, _State(tokens=capacity, updated=0.0)
        try:
            return entry.revision, _decode(entry.value)
        except msgspec.DecodeError:  # not ours (a stray put): start the key afresh
            return entry.revision, _State(tokens=0.0, updated=self._clock())

    async def _write(self, kv: Any, kv_key: str, revision: int, state: _State) -> bool:
        try:
            if revision:
                written = await kv.update(kv_key, _encode(state), last=revision)
            else:
                written = await kv.create(kv_key, _encode(state))
        except nats.js.errors.KeyWrongLastSequenceError:
            self.conflicts += 1
            self._entries.pop(kv_key, None)  # another node wrote first: read theirs
            return False
        self._entries[kv_key] = (written, state)
        return True

    def _advance(self, key: str, state: _State, now: float, rate: float | None,
                 capacity: float) -> _State:
        """Refill to ``now`` (``rate`` None: left to the next take); merge the gates both
        ways; forget nodes gone quiet."""
        if state.updated == 0.0:
            state.updated = now
        elif rate is not None and now > state.updated:  # time in the entry never runs back
            state.tokens = min(capacity, state.tokens + (now - state.updated) * rate)
            state.updated = now
        for account, until in state.gates.items():
            if until > self._gates.get((key, account), 0.0):
                self._gates[(key, account)] = until
        state.gates = {account: until for (k, account), until in self._gates.items()
                       if k == key and until > now}
        state.nodes = {n: seen for n, seen in state.nodes.items() if now - seen < NODE_WINDOW}
        return state

    async def _push(self, key: str) -> None:
        """Write ``key``'s gates now (a take would carry them too, but maybe much later)."""
        with contextlib.suppress(*_NATS_DOWN):
            async with self._locks.setdefault(key, asyncio.Lock()), asyncio.timeout(
                    self.call_timeout * 4):
                kv = await self._ensure()
                kv_key = _kv_key(key)
                for _ in range(_CAS_ATTEMPTS):
                    # No entry yet: an empty bucket (after a 429, refilling from now is right).
                    revision, state = await self._read(kv, kv_key, 0.0)
                    state = self._advance(key, state, self._clock(), None, 0.0)
                    if await self._write(kv, kv_key, revision, state):
                        return

    async def flush(self) -> None:
        """Wait for the gates closed so far to be written (or given up)."""
        while self._pushes:
            await asyncio.gather(*list(self._pushes.values()), return_exceptions=True)

    # --- the fallback --------------------------------------------------------------------

    def _take_local(self, key: str, weight: float, rate: float, capacity: float,
                    max_wait: float, reserve: float | None) -> float:
        share = max(self.expected_nodes, self._nodes.get(key, 1))
        now = self._monotonic()
        bucket = self._local.get(key)
        if bucket is None or bucket.rate != rate / share:
            bucket = self._local[key] = _Local(rate / share, capacity / share, now)
        bucket.tokens = min(bucket.capacity, bucket.tokens + (now - bucket.updated) * bucket.rate)
        bucket.updated = now
        needed = weight + (reserve / share if reserve is not None else 0.0)
        deficit = needed - bucket.tokens
        wait = deficit / bucket.rate if deficit > 0 else 0.0
        if (reserve is not None and wait > 0) or wait > max_wait:
            return wait
        bucket.tokens -= weight
        return wait

    async def close(self) -> None:
        """Write the pending gates and stop being the process's budget (if it is)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.call_timeout * 4):
                await self.flush()
        for task in list(self._pushes.values()):
            task.cancel()
        if shared_budget() is self:
            set_shared_budget(None)


async def share_limits(nc: Any, *, node: str, install: bool = True, **options: Any) -> KvBudget:
    """A started ``KvBudget`` on ``nc`` (a connected ``nats.aio.client.Client``) for this
    ``node``, installed as the process's shared budget unless ``install`` is false;
    ``options`` are ``KvBudget``'s (``bucket``, ``expected_nodes``: the least number of
    nodes the budget is split by while NATS is unreachable, ``call_timeout``,
    ``retry_seconds``)."""
    budget = await KvBudget(nc, node=node, **options).start()
    if install:
        set_shared_budget(budget)
    return budget
