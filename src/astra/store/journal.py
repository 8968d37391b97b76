"""The order journal: every order intent is written before it is sent (SQLAlchemy Core, no ORM).

``POST /orders`` goes through the journal so that an order is never placed twice and never lost:

1. ``begin(key_id, exchange, market, client_order_id, request)`` writes the intent (state
   ``INTENT``) under the client order id the venue will receive. It returns ``(entry, True)``
   only to the one caller that created the row; a retried or concurrent request with the same
   id gets ``(existing_entry, False)`` and must **not** send anything: it answers with the
   existing entry. The same id with a different request body raises ``ClientOrderIdConflict``
   (409): an idempotency key never silently applies to another order.
2. ``mark_sent(id)`` just before the request goes on the wire (``SENT``).
3. The venue's answer: ``acknowledge(id, venue_order_id, order)`` (``ACKNOWLEDGED``),
   ``reject(id, error)`` when the venue certainly refused it (``REJECTED``), or
   ``mark_unknown(id, error)`` on a timeout or a connection lost after sending (``UNKNOWN``:
   reported to the client as status unknown, never as a failure: the order may be live).
4. Later order updates (fills, cancels) go through ``update_order(id, order)``.
5. On startup (and periodically) ``pending()`` lists the entries whose outcome is unknown and
   the caller looks each one up at the venue *by client order id*, then calls
   ``reconcile(id, order_or_None, venue_order_id=...)``.

State machine (``JournalState``; any other move raises ``InvalidTransition``)::

    operation           from                                  to
    begin               -                                     INTENT (SENT with sent=True)
    mark_sent           INTENT, UNKNOWN (never sent)          SENT
    acknowledge         SENT, UNKNOWN, NOT_PLACED             ACKNOWLEDGED  (same id again: no-op)
    reject              INTENT, SENT, UNKNOWN                 REJECTED      (final)
    mark_unknown        INTENT, SENT, UNKNOWN                 UNKNOWN
    update_order        ACKNOWLEDGED                          ACKNOWLEDGED  (new last_order)
    reconcile(found)    INTENT, SENT, UNKNOWN, NOT_PLACED     ACKNOWLEDGED
    reconcile(None)     INTENT, SENT, UNKNOWN                 NOT_PLACED after the grace period,
                                                              UNKNOWN before it

``mark_sent`` from ``UNKNOWN`` (``sent_at`` still unset) is the sender's own move after
another process sharing the database looked the order up at the venue before it went out
(another gateway's reconciliation at its startup or on the key's request): "not found" was
true, and the sender still sends it, once; it stays pending, so a later lookup finds it.

``reconcile`` stamps ``reconciled_at``: ``ACKNOWLEDGED`` with ``reconciled_at`` set is the
"reconciled, found" outcome, ``NOT_PLACED`` the "reconciled, not found" one.

Why ``INTENT`` is reconciled too: the intent is committed before the network write, and the
process can die between the two. With ``mark_sent`` committed before the write, an ``INTENT``
was most likely never sent, but nothing in the journal proves it: a caller may mark after
sending, a venue client may retry on its own, another gateway process sharing the database may
be sending it right now. An ``INTENT`` is therefore treated as possibly sent, like ``SENT`` and
``UNKNOWN``: one lookup by client order id settles it, and it is also the only way out of
``INTENT`` for a retried ``POST /orders`` that would otherwise see it pending forever.

Why "not found" is not final at once: a venue's order lookup can lag its matching engine, and
a request still in flight (a slow network path, a venue-side queue) can land after the lookup.
``reconcile(id, None)`` therefore moves an entry to ``NOT_PLACED`` only when it was sent (or,
never marked sent, created) at least ``grace_ms`` ago (``RECONCILE_GRACE_MS``, 2 minutes: longer
than the validity window of any signed request, which the venues enforce on arrival: Binance
and Aster ``recvWindow`` <= 60 s, KuCoin's 5 s timestamp window, OKX ``expTime`` when set).
Younger, the entry becomes ``UNKNOWN`` (``reconcile_attempts`` + 1) and the caller looks again
after ``settles_at(entry)``. A ``NOT_PLACED`` order that turns up later anyway (e.g. on the
user data stream) is moved to ``ACKNOWLEDGED``: the venue's truth wins over the journal's.

Invariants:
- A (``key_id``, ``exchange``, ``client_order_id``) is journaled at most once: a database
  UNIQUE constraint, not a check-then-insert, so it holds across threads, processes and
  gateway nodes sharing one PostgreSQL. ``begin`` inserts first and reads the existing row
  only on ``IntegrityError`` (upgrading a read transaction to a write one can fail "busy" on
  SQLite; an insert waits for the lock instead).
- Every transition is a conditional ``UPDATE ... WHERE id = ? AND state IN (...)``: two
  processes racing on one entry (a late venue answer and a reconciliation) cannot both win,
  and the loser gets the current state back (idempotent repeat) or ``InvalidTransition``.
- No credentials are stored: ``request`` and order payloads whose keys look like credentials
  (``apiKey``, ``secret``, ``privateKey``, ``passphrase``, ...) are refused with ``ValueError``
  (defence in depth: the caller should never pass them), and stored errors keep only
  ``code``/``message``/``venue``/``venueCode``, with ``key=value`` credential-looking pairs
  in messages redacted and the message truncated.
- Times are integer milliseconds since the Unix epoch.

``begin(..., sent=True)`` writes the intent already marked sent, in one commit: for a caller
that sends right after it (the gateway) ``INTENT`` then ``SENT`` were two commits on the
order's path for one fact, "this may be at the venue from now on", which ``SENT`` states.

Deferred acknowledgement (``acknowledge_later``): once the venue has answered, the caller need
not wait for the write. It runs soon after (``deferred.DeferredWrites``: for SQLite on the
event loop, ``ACK_DELAY`` later at most, or earlier inside the next order's intent
transaction, one commit for both; on a thread for a server database) and every later call on
this journal, in any thread, runs or waits for it first (read-your-writes in the process); a
crash before it commits leaves the entry ``SENT``, reconciled like any other.

Inline writes (``inline(method, ...)``, when ``inline_writes``: an SQLite file): an event loop
calls the journal in its own thread, on a connection with no busy wait, so an order's write
costs its ~0.1 ms and no thread wake-up (which costs milliseconds on a loaded machine); when
another writer holds the lock the call raises ``JournalBusy`` at once, having written
nothing, and the caller runs it on a thread instead. The loop never waits on a lock, nor on
a WAL checkpoint (``journal_inline``: the intent's INSERT and the acknowledgement's UPDATE as
plain SQL on one kept DB-API connection, checkpoints on a thread).

Durability: SQLite runs in WAL mode with ``synchronous=NORMAL`` (``_db.py``): a commit is
durable across a crash of the process (the WAL is in the OS's page cache and written by it),
but the last commits may be lost in a power loss or OS crash, which reconciliation covers for
the journal (a lost ``SENT`` row is the one case it cannot, so a desk that needs it across
power loss runs on PostgreSQL, or SQLite with ``synchronous=FULL``).

Threading: the methods are synchronous SQLAlchemy calls (~0.1-0.2 ms per write transaction on
the embedded SQLite in WAL mode, a network round trip each on PostgreSQL). An asyncio caller
runs them in a thread so the event loop never waits on the database; an ``OrderJournal`` is
safe to share between threads (the engine's pool gives each call its own connection).
``telemetry`` (``astra.telemetry.Telemetry``, settable) observes each write's time until
committed as ``journal_write_seconds`` by operation.

Client order ids (``generate_client_order_id``): what the venues accept differs. Binance,
Aster and the simulator take ``[.A-Z:/a-z0-9_-]{1,36}``; OKX ``clOrdId`` only ASCII letters
and digits, at most 32; KuCoin ``clientOid`` ``[A-Za-z0-9_-]``, at most 40; HTX spot
``client-order-id`` at most 64; Coinbase any unique string (ccxt sends a UUID); Kraken spot
``cl_ord_id`` a UUID (with or without dashes) or free text of at most 18 characters. The
tightest common form is therefore ASCII letters and digits, at most 18 characters (HTX
*contracts* alone want an integer ``client_order_id``: the HTX venue package maps ids there).
Generated ids are ``astra`` + base62: 32 characters (7 of them a millisecond timestamp,
sortable and readable by an operator, then 119 random bits) where the venue allows it, 18
(77 random bits) for Kraken and when no venue is given. The prefix tells Astra's orders from
orders placed by hand on the venue's own site.

Modules: ``journal_schema`` (table, states, rows, errors), ``journal_payloads`` (client order
ids, what is stored and what never is), ``journal_reads`` (the reads), ``journal_inline``
(the event loop's SQLite path); every public name is importable from here.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, OperationalError

from astra.core import MAX_MARKET_LENGTH, AstraError

from .deferred import DeferredWrites
from .journal_inline import AckRow, InlineWriter, busy, inline_pragmas
from .journal_payloads import (
    CLIENT_ORDER_ID_PATTERN,
    CLIENT_ORDER_ID_PREFIX,
    _check_str,
    _decode,
    _encode,
    _encode_error,
    _now_ms,
    generate_client_order_id,
    is_valid_client_order_id,
)
from .journal_reads import JournalReads
from .journal_schema import (
    _EXCHANGE_RE,
    _INSERT,
    _KEY_ID_MAX,
    _MARK_SENT,
    _VENUE_ORDER_ID_MAX,
    CLIENT_ORDER_ID_MAX_LENGTH,
    CLOSED_ORDER_STATUSES,
    ORDERS_JOURNAL,
    PENDING_STATES,
    RECONCILE_GRACE_MS,
    ClientOrderIdConflict,
    InvalidTransition,
    JournalBusy,
    JournalEntry,
    JournalState,
    _order_status,
    _update,
)

__all__ = [
    "ACK_DELAY",
    "CLIENT_ORDER_ID_MAX_LENGTH",
    "CLIENT_ORDER_ID_PATTERN",
    "CLIENT_ORDER_ID_PREFIX",
    "CLOSED_ORDER_STATUSES",
    "ORDERS_JOURNAL",
    "PENDING_STATES",
    "RECONCILE_GRACE_MS",
    "ClientOrderIdConflict",
    "InvalidTransition",
    "JournalBusy",
    "JournalEntry",
    "JournalState",
    "OrderJournal",
    "generate_client_order_id",
    "is_valid_client_order_id",
]

log = logging.getLogger(__name__)
_S = JournalState
_T = ORDERS_JOURNAL
# How long an acknowledgement waits for the next intent to share its commit (the inline,
# SQLite path): at most this much later it is committed on its own.
ACK_DELAY = 0.002


# ---------------------------------------------------------------------------------- the journal


class OrderJournal(JournalReads):
    """The ``orders_journal`` table of ``engine`` and its state machine (module docstring).

    ``grace_ms`` is the default reconciliation grace period; ``clock`` (epoch milliseconds)
    is for tests. Synchronous: call from a thread when on an event loop.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        grace_ms: int = RECONCILE_GRACE_MS,
        clock: Callable[[], int] = _now_ms,
        telemetry: Any = None,
    ) -> None:
        self._engine = engine
        self._grace_ms = grace_ms
        self._clock = clock
        url = engine.url
        # Inline writes: on an embedded SQLite file only (a write is ~0.1 ms of local work);
        # a server database's round trip belongs on a thread. Settable (False: always thread).
        self.inline_writes = url.get_backend_name() == "sqlite" and url.database not in (
            None, "", ":memory:") and "mode=memory" not in str(url)
        self._inline_engine: sa.Engine | None = None
        self._writer: InlineWriter | None = None  # the hot statements' kept connection
        self._local = threading.local()
        self._deferred = DeferredWrites(inline=self.inline_writes, name="astra-journal",
                                        delay=ACK_DELAY)
        self.telemetry = telemetry  # the gateway may set it later (None: not measured)
        ORDERS_JOURNAL.create(engine, checkfirst=True)

    def _observe(self, operation: str, started: float) -> None:
        if (telemetry := self.telemetry) is not None:  # its observer is bound once per label
            telemetry.observer(telemetry.journal_write_seconds, operation)(
                time.perf_counter() - started)

    def flush(self) -> None:
        """Run (or wait for) the deferred writes submitted so far (``acknowledge_later``)."""
        self._deferred.settle()

    def inline(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` (a method of this journal) in the calling thread on a
        connection that never waits for SQLite's write lock: ``JournalBusy`` when another
        writer holds it (nothing written; call it on a thread instead). For an event loop's
        own calls when ``inline_writes`` is set: no thread hop, no wait on the loop."""
        outer = getattr(self._local, "inline", False)
        self._local.inline = True
        try:
            return method(*args, **kwargs)
        except (OperationalError, sqlite3.OperationalError) as exc:
            if busy(exc):
                raise JournalBusy(str(getattr(exc, "orig", exc))[:200]) from None
            raise
        finally:
            self._local.inline = outer

    def _engine_now(self) -> sa.Engine:
        if not getattr(self._local, "inline", False):
            return self._engine
        return self._inline()

    def _inline(self) -> sa.Engine:
        if self._inline_engine is None:
            engine = sa.create_engine(self._engine.url)
            event.listen(engine, "connect", inline_pragmas)
            self._inline_engine = engine
        return self._inline_engine

    def _fast(self) -> InlineWriter | None:
        """The inline writer, in an inline call on an SQLite file (else None)."""
        if not (self.inline_writes and getattr(self._local, "inline", False)):
            return None
        if self._writer is None:
            self._writer = InlineWriter(self._inline(), self._engine)
        return self._writer

    def close(self) -> None:
        """Commit the deferred writes and release the inline connection (the engine is the
        caller's)."""
        self._deferred.settle()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._inline_engine is not None:
            self._inline_engine.dispose()
            self._inline_engine = None

    def _tx(self) -> contextlib.AbstractContextManager[sa.Connection]:
        return self._engine_now().begin()

    def _reader(self) -> contextlib.AbstractContextManager[sa.Connection]:
        return self._engine_now().connect()

    def _acknowledge_soon(self, entry_id: int, venue_order_id: str, order: Any) -> None:
        if self.inline_writes:
            try:
                self.inline(self._acknowledge_unread, entry_id, venue_order_id, order)
                return
            except JournalBusy:
                pass  # another writer holds the lock: wait for it (rare, short)
        outer = getattr(self._local, "inline", False)
        self._local.inline = False  # (run from an inline call: this one may wait)
        try:
            self._acknowledge_unread(entry_id, venue_order_id, order)
        finally:
            self._local.inline = outer

    def _acknowledge_unread(self, entry_id: int, venue_order_id: str, order: Any) -> None:
        """``acknowledge`` with no caller to give the row to: one conditional UPDATE, the row
        read back only when it did not apply (``acknowledge``'s checks then decide)."""
        order_text = _encode(order, "order")
        started = time.perf_counter()
        now = self._clock()
        fast = self._fast()
        if fast is not None:
            row: AckRow = (venue_order_id, order_text, self._status_of(order_text), now,
                           entry_id)
            n = fast.acknowledge([row])[0]
        else:
            values = self._ack_values(venue_order_id, order_text) | {"updated_at": now}
            with self._tx() as conn:
                n = self._apply(conn, entry_id, {_S.SENT, _S.UNKNOWN, _S.NOT_PLACED}, values)
        self._observe("ack", started)
        if n == 0:
            self.acknowledge(entry_id, venue_order_id, order)

    def _ack_rows(self, claimed: list[tuple], now: int) -> tuple[list[AckRow], list[tuple]]:
        """Claimed ``_acknowledge_soon`` arguments as ``AckRow``s, and those kept with them
        (one whose order cannot be journaled is logged and dropped, as a failed deferred
        write: its entry stays pending)."""
        rows, kept = [], []
        for args in claimed:
            entry_id, venue_order_id, order = args
            try:
                text = _encode(order, "order")
            except (TypeError, ValueError) as exc:
                log.warning("a deferred journal write failed (%s: %s); the entry stays "
                            "pending and is reconciled", type(exc).__name__, str(exc)[:200])
                continue
            rows.append((venue_order_id, text, self._status_of(text), now, entry_id))
            kept.append(args)
        return rows, kept

    def _insert_inline(self, fast: InlineWriter, values: dict[str, Any],
                       started: float) -> int:
        """``begin``'s INSERT on the inline writer, the acknowledgements waiting in the same
        commit (``journal_inline``); an acknowledgement that did not apply is judged by
        ``acknowledge`` after (logged if it fails, as any deferred write)."""
        columns = (values["key_id"], values["exchange"], values["market"],
                   values["client_order_id"], values["request"], values["state"],
                   values["created_at"], values["updated_at"], values["sent_at"])
        with self._deferred.claim(self._acknowledge_soon) as claimed:
            if claimed is None:  # other writes queued, or the queue is running: settle
                self._deferred.settle()
                claimed = []
            rows, kept = self._ack_rows(claimed, values["created_at"])
            # (IntegrityError or JournalBusy here: the claimed acks go back to the queue)
            entry_id, counts = fast.begin(columns, rows)
        for _ in counts:  # each waited for this commit
            self._observe("ack", started)
        for args, n in zip(kept, counts, strict=True):
            if n == 0:
                try:
                    self.acknowledge(*args)
                except Exception as exc:
                    log.warning("a deferred journal write failed (%s: %s); the entry stays "
                                "pending and is reconciled", type(exc).__name__,
                                str(exc)[:200])
        return entry_id

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"OrderJournal({url!r})"

    # -- writing the intent

    def begin(
        self,
        key_id: str,
        exchange: str,
        market: str,
        client_order_id: str,
        request: Mapping[str, Any] | msgspec.Struct,
        *,
        sent: bool = False,
    ) -> tuple[JournalEntry, bool]:
        """Journal an order intent: ``(entry, True)`` when this call created it; ``sent``: the
        caller sends it right after this returns, so it is written ``SENT`` at once (one commit
        for ``begin`` and ``mark_sent``).

        ``(existing, False)`` when the client order id is already journaled for this owner and
        exchange with the same market and an equal request (a retry: send nothing, answer with
        ``existing``; equal as decoded JSON, so key order and ``1`` vs ``1.0`` do not matter).
        Raises ``ClientOrderIdConflict`` when the market or request differs, ``ValueError`` for a
        malformed argument or a credential-looking field in ``request``.
        """
        _check_str(key_id, "key_id", _KEY_ID_MAX)
        exchange = str(exchange)
        if _EXCHANGE_RE.fullmatch(exchange) is None:
            raise ValueError(f"exchange must be an exchange code such as BINANCE, not {exchange!r}")
        _check_str(market, "market", MAX_MARKET_LENGTH)
        if not is_valid_client_order_id(client_order_id):
            raise ValueError(
                f"client order id must be 1 to {CLIENT_ORDER_ID_MAX_LENGTH} characters of "
                "[A-Za-z0-9._:/-]"
            )
        body = _encode(request, "order request")
        fast = self._fast()
        if fast is None:  # (the inline writer runs the deferred writes in its transaction)
            self._deferred.settle()
        started = time.perf_counter()
        now = self._clock()
        state = _S.SENT if sent else _S.INTENT
        values = {
            "key_id": key_id,
            "exchange": exchange,
            "market": market,
            "client_order_id": client_order_id,
            "request": body,
            "state": state.value,
            "created_at": now,
            "updated_at": now,
            "sent_at": now if sent else None,
            "reconcile_attempts": 0,
        }
        try:
            if fast is not None:
                entry_id = self._insert_inline(fast, values, started)
            else:
                with self._tx() as conn:
                    entry_id = conn.execute(_INSERT, values).inserted_primary_key[0]
            self._observe("begin", started)
        except (IntegrityError, sqlite3.IntegrityError):
            existing = self.get(key_id, exchange, client_order_id)
            if existing is None:  # some other constraint failed
                raise
            if existing.market != market or existing.request != _decode(body):
                raise ClientOrderIdConflict(exchange, client_order_id) from None
            return existing, False
        return (
            JournalEntry(
                id=entry_id,
                key_id=key_id,
                exchange=exchange,
                market=market,
                client_order_id=client_order_id,
                request=_decode(body),
                state=state,
                created_at=now,
                updated_at=now,
                sent_at=now if sent else None,
            ),
            True,
        )

    # -- transitions

    def mark_sent(self, entry_id: int) -> JournalEntry:
        """``INTENT`` -> ``SENT``: call right before the request goes on the wire (only the
        caller ``begin`` created it for). Also from ``UNKNOWN`` while never sent: another
        process reconciled it meanwhile, not finding it (module docstring)."""
        self._deferred.settle()
        started = time.perf_counter()
        now = self._clock()
        with self._tx() as conn:
            n = conn.execute(
                _MARK_SENT, {"entry_id": entry_id, "new_sent_at": now, "new_updated_at": now}
            ).rowcount
            entry = self._read(conn, entry_id)
        self._observe("sent", started)
        if n == 0:
            raise InvalidTransition(entry_id, "mark_sent", entry.state)
        return entry

    def acknowledge(
        self,
        entry_id: int,
        venue_order_id: str,
        order: Mapping[str, Any] | msgspec.Struct,
    ) -> JournalEntry:
        """The venue accepted the order: ``SENT``/``UNKNOWN``/``NOT_PLACED`` -> ``ACKNOWLEDGED``.

        Repeating it for an entry already acknowledged with the same venue order id (the user
        data stream often reports an order before the REST answer arrives) changes nothing:
        later states come through ``update_order``.
        """
        _check_str(venue_order_id, "venue_order_id", _VENUE_ORDER_ID_MAX)
        order_text = _encode(order, "order")
        now = self._clock()
        entry, changed = self._transition(
            entry_id,
            {_S.SENT, _S.UNKNOWN, _S.NOT_PLACED},
            self._ack_values(venue_order_id, order_text),
            now,
            "ack",
        )
        if changed:
            return entry
        if entry.state is _S.ACKNOWLEDGED and entry.venue_order_id == venue_order_id:
            return entry
        detail = {
            _S.INTENT: "mark_sent first",
            _S.ACKNOWLEDGED: f"already acknowledged as {entry.venue_order_id}",
        }.get(entry.state, "")
        raise InvalidTransition(entry_id, "acknowledge", entry.state, detail)

    def acknowledge_later(
        self,
        entry_id: int,
        venue_order_id: str,
        order: Mapping[str, Any] | msgspec.Struct,
    ) -> None:
        """``acknowledge`` soon, without waiting for it (module docstring: every later call of
        this journal runs or waits for it first; a failure is logged and leaves the entry
        pending). The argument checks run here, in the caller."""
        _check_str(venue_order_id, "venue_order_id", _VENUE_ORDER_ID_MAX)
        self._deferred.submit(self._acknowledge_soon, entry_id, venue_order_id, order)

    def reject(
        self, entry_id: int, error: AstraError | BaseException | Mapping[str, Any]
    ) -> JournalEntry:
        """The venue refused the order, or it failed before anything was sent: ``REJECTED``.

        Only for a *certain* refusal; a timeout or a connection lost after sending is
        ``mark_unknown``.
        """
        now = self._clock()
        entry, changed = self._transition(
            entry_id,
            {_S.INTENT, _S.SENT, _S.UNKNOWN},
            {"state": _S.REJECTED.value, "error": _encode_error(error)},
            now,
            "reject",
        )
        if not changed:
            raise InvalidTransition(entry_id, "reject", entry.state)
        return entry

    def mark_unknown(
        self, entry_id: int, error: AstraError | BaseException | Mapping[str, Any]
    ) -> JournalEntry:
        """Sent but no answer (timeout, connection lost, 5xx): ``UNKNOWN`` until reconciled."""
        now = self._clock()
        entry, changed = self._transition(
            entry_id,
            {_S.INTENT, _S.SENT, _S.UNKNOWN},
            {"state": _S.UNKNOWN.value, "error": _encode_error(error)},
            now,
            "unknown",
        )
        if not changed:
            raise InvalidTransition(entry_id, "mark_unknown", entry.state)
        return entry

    def update_order(
        self, entry_id: int, order: Mapping[str, Any] | msgspec.Struct
    ) -> JournalEntry:
        """A later state of an acknowledged order (fills, cancel): replaces ``last_order``."""
        order_text = _encode(order, "order")
        now = self._clock()
        entry, changed = self._transition(
            entry_id,
            {_S.ACKNOWLEDGED},
            {"last_order": order_text, "order_status": self._status_of(order_text)},
            now,
            "update",
        )
        if not changed:
            raise InvalidTransition(entry_id, "update_order", entry.state)
        return entry

    def reconcile(
        self,
        entry_id: int,
        order: Mapping[str, Any] | msgspec.Struct | None,
        *,
        venue_order_id: str | None = None,
        grace_ms: int | None = None,
    ) -> JournalEntry:
        """Settle a pending entry with what the venue said when asked by client order id.

        Found (``order`` given, with its ``venue_order_id``): -> ``ACKNOWLEDGED``. Not found
        (``order`` None): -> ``NOT_PLACED`` if the entry was sent (or created, never marked
        sent) at least ``grace_ms`` ago, else -> ``UNKNOWN`` with ``reconcile_attempts`` + 1;
        look again after ``settles_at(entry)``. Reconciling an entry already settled the same
        way changes nothing; "not found" never downgrades an acknowledged or rejected order.
        """
        now = self._clock()
        if order is not None:
            if venue_order_id is None:
                raise ValueError("reconcile: a found order needs its venue_order_id")
            _check_str(venue_order_id, "venue_order_id", _VENUE_ORDER_ID_MAX)
            order_text = _encode(order, "order")
            values = self._ack_values(venue_order_id, order_text) | {"reconciled_at": now}
            entry, changed = self._transition(
                entry_id, {*PENDING_STATES, _S.NOT_PLACED}, values, now, "reconcile"
            )
            if changed:
                return entry
            if entry.state is _S.ACKNOWLEDGED and entry.venue_order_id == venue_order_id:
                return self.update_order(entry_id, order)  # another process settled it first
            raise InvalidTransition(entry_id, "reconcile (found)", entry.state)

        grace = self._grace_ms if grace_ms is None else grace_ms
        self._deferred.settle()
        started = time.perf_counter()
        with self._tx() as conn:  # both updates in one write transaction
            n = self._apply(
                conn,
                entry_id,
                PENDING_STATES,
                {"state": _S.NOT_PLACED.value, "reconciled_at": now, "updated_at": now},
                settled_before=now - grace,
                bump=True,
            )
            if n == 0:
                n = self._apply(
                    conn,
                    entry_id,
                    PENDING_STATES,
                    {"state": _S.UNKNOWN.value, "updated_at": now},
                    bump=True,
                )
            entry = self._read(conn, entry_id)
        self._observe("reconcile", started)
        if n == 0 and entry.state is not _S.NOT_PLACED:
            detail = "the venue had acknowledged it" if entry.state is _S.ACKNOWLEDGED else ""
            raise InvalidTransition(entry_id, "reconcile (not found)", entry.state, detail)
        return entry

    def now(self) -> int:
        """The journal's clock (epoch ms): what its rows' times are measured on."""
        return self._clock()

    def settles_at(self, entry: JournalEntry, grace_ms: int | None = None) -> int:
        """When (epoch ms) a "not found" from the venue makes ``reconcile`` final."""
        grace = self._grace_ms if grace_ms is None else grace_ms
        return (entry.sent_at if entry.sent_at is not None else entry.created_at) + grace

    # -- helpers

    @staticmethod
    def _status_of(order_text: str) -> str | None:
        return _order_status(msgspec.json.decode(order_text).get("status"))

    def _ack_values(self, venue_order_id: str, order_text: str) -> dict[str, Any]:
        return {
            "state": _S.ACKNOWLEDGED.value,
            "venue_order_id": venue_order_id,
            "last_order": order_text,
            "order_status": self._status_of(order_text),
            "error": None,
        }

    def _transition(
        self,
        entry_id: int,
        allowed: frozenset[JournalState] | set[JournalState],
        values: dict[str, Any],
        now: int,
        operation: str = "update",
    ) -> tuple[JournalEntry, bool]:
        """One conditional UPDATE, then the row: ``(entry, whether this call changed it)``."""
        self._deferred.settle()
        started = time.perf_counter()
        with self._tx() as conn:  # the UPDATE first: a write lock, never an upgrade
            n = self._apply(conn, entry_id, allowed, values | {"updated_at": now})
            entry = self._read(conn, entry_id)
        self._observe(operation, started)
        return entry, n > 0

    @staticmethod
    def _apply(
        conn: sa.Connection,
        entry_id: int,
        allowed: frozenset[JournalState] | set[JournalState],
        values: dict[str, Any],
        *,
        settled_before: int | None = None,
        bump: bool = False,
    ) -> int:
        stmt = _update(
            frozenset(s.value for s in allowed),
            tuple(sorted(values)),
            settled_before is not None,
            bump,
        )
        params = {f"new_{k}": v for k, v in values.items()}
        params["entry_id"] = entry_id
        if settled_before is not None:
            params["settled_before"] = settled_before
        return conn.execute(stmt, params).rowcount
