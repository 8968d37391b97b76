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
    begin               -                                     INTENT
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

Threading: the methods are synchronous SQLAlchemy calls (about half a millisecond per write
transaction on the embedded SQLite in WAL mode, ~1.5 ms for the three writes of an order; a
network round trip each on PostgreSQL). An asyncio caller runs them in a thread
(``asyncio.to_thread`` or a dedicated executor) so the event loop never waits on the database;
an ``OrderJournal`` is safe to share between threads (the engine's pool gives each call its
own connection).

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
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from astra.core import MAX_MARKET_LENGTH, SIM_CODES, AstraError, Conflict

from ._db import METADATA

__all__ = [
    "CLIENT_ORDER_ID_MAX_LENGTH",
    "CLIENT_ORDER_ID_PATTERN",
    "CLIENT_ORDER_ID_PREFIX",
    "CLOSED_ORDER_STATUSES",
    "ORDERS_JOURNAL",
    "PENDING_STATES",
    "RECONCILE_GRACE_MS",
    "ClientOrderIdConflict",
    "InvalidTransition",
    "JournalEntry",
    "JournalState",
    "OrderJournal",
    "generate_client_order_id",
    "is_valid_client_order_id",
]

CLIENT_ORDER_ID_PREFIX = "astra"
CLIENT_ORDER_ID_MAX_LENGTH = 64  # what the journal stores; each venue is stricter (see above)
RECONCILE_GRACE_MS = 120_000
MAX_REQUEST_BYTES = 64 * 1024
MAX_ERROR_MESSAGE_LENGTH = 500
_KEY_ID_MAX = 64
_EXCHANGE_RE = re.compile(r"[A-Z][A-Z0-9_]{0,15}")
_VENUE_ORDER_ID_MAX = 128
_ORDER_STATUS_MAX = 32

# Order statuses (``last_order["status"]``, upper-cased) after which an acknowledged order is no
# longer open. Covers the Binance-style and the ccxt vocabularies.
CLOSED_ORDER_STATUSES = frozenset(
    {"FILLED", "CANCELED", "CANCELLED", "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH", "CLOSED"}
)


class JournalState(StrEnum):
    INTENT = "INTENT"  # written, not yet (known to be) sent
    SENT = "SENT"  # about to go / gone on the wire, no answer yet
    ACKNOWLEDGED = "ACKNOWLEDGED"  # the venue has the order (venue_order_id is set)
    REJECTED = "REJECTED"  # the venue refused it, or it failed before being sent: final
    UNKNOWN = "UNKNOWN"  # sent, outcome unknown (timeout, connection lost): reconcile it
    NOT_PLACED = "NOT_PLACED"  # reconciled: the venue does not have it after the grace period


PENDING_STATES = frozenset({JournalState.INTENT, JournalState.SENT, JournalState.UNKNOWN})
_PENDING_VALUES = sorted(s.value for s in PENDING_STATES)
_S = JournalState

ORDERS_JOURNAL = sa.Table(
    "orders_journal",
    METADATA,
    # INTEGER PRIMARY KEY on SQLite (the rowid, autoincrementing); BIGINT identity elsewhere.
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("key_id", sa.String(_KEY_ID_MAX), nullable=False),  # the owner (Astra API key id)
    sa.Column("exchange", sa.String(16), nullable=False),
    sa.Column("market", sa.String(MAX_MARKET_LENGTH), nullable=False),  # Astra symbol
    sa.Column("client_order_id", sa.String(CLIENT_ORDER_ID_MAX_LENGTH), nullable=False),
    sa.Column("request", sa.Text, nullable=False),  # JSON, keys sorted, no credentials
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("venue_order_id", sa.String(_VENUE_ORDER_ID_MAX), nullable=True),
    sa.Column("last_order", sa.Text, nullable=True),  # JSON of the last normalized order
    sa.Column("order_status", sa.String(_ORDER_STATUS_MAX), nullable=True),  # its "status"
    sa.Column("error", sa.Text, nullable=True),  # JSON {code, message, venue?, venueCode?}
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("sent_at", sa.BigInteger, nullable=True),
    sa.Column("reconciled_at", sa.BigInteger, nullable=True),
    sa.Column("reconcile_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint(
        "key_id", "exchange", "client_order_id", name="uq_orders_journal_client_order_id"
    ),
    sa.Index("ix_orders_journal_state", "state"),
    sa.Index("ix_orders_journal_venue_order", "exchange", "venue_order_id"),
    sa.Index("ix_orders_journal_owner", "key_id", "exchange", "market"),
)
_T = ORDERS_JOURNAL

# Statements are built once with bound parameters: constructing and cache-keying a fresh
# SQLAlchemy statement costs more than SQLite takes to run it, and three run per order.
_INSERT = sa.insert(_T)
_BY_ID = sa.select(_T).where(_T.c.id == sa.bindparam("entry_id"))
_BY_CLIENT_ID = sa.select(_T).where(
    _T.c.key_id == sa.bindparam("key_id"),
    _T.c.exchange == sa.bindparam("exchange"),
    _T.c.client_order_id == sa.bindparam("client_order_id"),
)
_BY_VENUE_ID = sa.select(_T).where(
    _T.c.key_id == sa.bindparam("key_id"),
    _T.c.exchange == sa.bindparam("exchange"),
    _T.c.venue_order_id == sa.bindparam("venue_order_id"),
)

_MARK_SENT = (
    sa.update(_T)
    .where(
        _T.c.id == sa.bindparam("entry_id"),
        sa.or_(
            _T.c.state == JournalState.INTENT.value,
            sa.and_(_T.c.state == JournalState.UNKNOWN.value, _T.c.sent_at.is_(None)),
        ),
    )
    .values(
        state=JournalState.SENT.value,
        sent_at=sa.bindparam("new_sent_at"),
        updated_at=sa.bindparam("new_updated_at"),
    )
)


@functools.cache
def _update(
    allowed: frozenset[str], columns: tuple[str, ...], settled: bool = False, bump: bool = False
) -> sa.Update:
    """``UPDATE ... SET <columns> WHERE id = :entry_id AND state IN <allowed>``; ``settled``
    adds ``AND coalesce(sent_at, created_at) <= :settled_before``, ``bump`` increments
    ``reconcile_attempts``. Values are bound as ``new_<column>``."""
    where = [_T.c.id == sa.bindparam("entry_id"), _T.c.state.in_(sorted(allowed))]
    if settled:
        where.append(
            sa.func.coalesce(_T.c.sent_at, _T.c.created_at) <= sa.bindparam("settled_before")
        )
    values: dict[str, Any] = {c: sa.bindparam(f"new_{c}") for c in columns}
    if bump:
        values["reconcile_attempts"] = _T.c.reconcile_attempts + 1
    return sa.update(_T).where(*where).values(values)


class ClientOrderIdConflict(Conflict):
    """A client order id reused for a different order (409, code ``CONFLICT``)."""

    def __init__(self, exchange: str, client_order_id: str) -> None:
        super().__init__(
            f"clientOrderId '{client_order_id}' was already used on {exchange} for a different "
            "order; send a new clientOrderId for a new order",
            parameter="clientOrderId",
        )


class InvalidTransition(RuntimeError):
    """A journal operation not allowed from the entry's current state (a bug or a lost race)."""

    def __init__(self, entry_id: int, operation: str, state: str, detail: str = "") -> None:
        self.entry_id = entry_id
        self.operation = operation
        self.state = JournalState(state)
        msg = f"order journal entry {entry_id}: cannot {operation} an order in state {state}"
        super().__init__(msg + (f" ({detail})" if detail else ""))


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled order. ``request``, ``last_order`` and ``error`` are decoded JSON."""

    id: int
    key_id: str
    exchange: str
    market: str
    client_order_id: str
    request: dict[str, Any]
    state: JournalState
    created_at: int
    updated_at: int
    venue_order_id: str | None = None
    last_order: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    sent_at: int | None = None
    reconciled_at: int | None = None
    reconcile_attempts: int = 0

    @property
    def pending(self) -> bool:
        """The outcome at the venue is not known yet: reconcile before trusting it."""
        return self.state in PENDING_STATES

    @property
    def order_status(self) -> str | None:
        status = (self.last_order or {}).get("status")
        return _order_status(status)


# ---------------------------------------------------------------------------- client order ids

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Any venue's client order id at most: the OpenAPI document publishes this same pattern.
CLIENT_ORDER_ID_PATTERN = rf"[A-Za-z0-9._:/-]{{1,{CLIENT_ORDER_ID_MAX_LENGTH}}}"
_GENERIC_ID = re.compile(CLIENT_ORDER_ID_PATTERN)
_BINANCE_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_HEX = "[0-9a-fA-F]"
_VENUE_IDS: dict[str, re.Pattern[str]] = {
    "BINANCE": _BINANCE_ID,
    "ASTER": _BINANCE_ID,
    **dict.fromkeys(SIM_CODES, _BINANCE_ID),
    "OKX": re.compile(r"[A-Za-z0-9]{1,32}"),
    "KUCOIN": re.compile(r"[A-Za-z0-9_-]{1,40}"),
    "KRAKEN": re.compile(
        rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}|{_HEX}{{32}}"
        r"|[A-Za-z0-9_-]{1,18}"
    ),
}
_SHORT_ID_VENUES = frozenset({"KRAKEN"})


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_BASE62[r])
    return "".join(reversed(out))


def generate_client_order_id(exchange: str | None = None) -> str:
    """A fresh client order id the venue accepts: ``astra`` + base62 (see the module docstring).

    32 characters (a millisecond timestamp, then 119 random bits) for venues that allow it;
    18 characters (77 random bits) for Kraken and when ``exchange`` is None (valid everywhere).
    """
    if exchange is None or str(exchange) in _SHORT_ID_VENUES:
        return CLIENT_ORDER_ID_PREFIX + "".join(secrets.choice(_BASE62) for _ in range(13))
    stamp = _base62(time.time_ns() // 1_000_000, 7)  # 62**7 ms lasts until the year 2081
    return CLIENT_ORDER_ID_PREFIX + stamp + "".join(secrets.choice(_BASE62) for _ in range(20))


def is_valid_client_order_id(value: object, exchange: str | None = None) -> bool:
    """Whether the journal stores ``value`` and, given ``exchange``, that venue accepts it.

    Without a known venue rule only the journal's own bound applies: 1 to 64 characters of
    ``[A-Za-z0-9._:/-]``.
    """
    if not isinstance(value, str) or _GENERIC_ID.fullmatch(value) is None:
        return False
    rule = _VENUE_IDS.get(str(exchange)) if exchange is not None else None
    return rule is None or rule.fullmatch(value) is not None


# ------------------------------------------------------------------- payloads, no credentials

_CREDENTIAL_WORDS = (
    "secret",
    "apikey",
    "privatekey",
    "privkey",
    "passphrase",
    "password",
    "mnemonic",
    "seedphrase",
    "credential",
    "accesskey",
    "authorization",
)
_REDACT = re.compile(
    r"(?i)\b(signature|sign|api[_-]?key|api[_-]?secret|secret|passphrase|password"
    r"|private[_-]?key|access[_-]?key|token)(\"?\s*[:=]\s*\"?)([^&\s\"',}]+)"
)


def _normalized_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _check_no_credentials(value: Any, what: str, depth: int = 0) -> None:
    if depth > 32:
        raise ValueError(f"{what} is nested too deeply")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{what} keys must be strings")
            norm = _normalized_key(k)
            if any(word in norm for word in _CREDENTIAL_WORDS):
                # Name the key, never its value.
                raise ValueError(
                    f"{what} must not carry credentials: refusing the field '{k[:64]}'"
                )
            _check_no_credentials(v, what, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_no_credentials(v, what, depth + 1)


def _to_builtins(payload: Any, what: str) -> dict[str, Any]:
    if isinstance(payload, msgspec.Struct):
        payload = msgspec.to_builtins(payload)
    if not isinstance(payload, Mapping):
        raise TypeError(f"{what} must be a mapping or a msgspec Struct, not {type(payload)!r}")
    _check_no_credentials(payload, what)
    return dict(payload)


def _encode(payload: Any, what: str) -> str:
    data = msgspec.json.encode(_to_builtins(payload, what), order="sorted")
    if len(data) > MAX_REQUEST_BYTES:
        raise ValueError(f"{what} is too large ({len(data)} bytes > {MAX_REQUEST_BYTES})")
    return data.decode()


def _decode(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def _redact(message: str) -> str:
    message = _REDACT.sub(lambda m: f"{m[1]}{m[2]}<redacted>", message)
    if len(message) > MAX_ERROR_MESSAGE_LENGTH:
        message = message[: MAX_ERROR_MESSAGE_LENGTH - 3] + "..."
    return message


def _encode_error(error: AstraError | BaseException | Mapping[str, Any]) -> str:
    """The error as ``{code, message, venue?, venueCode?}``: nothing else is kept."""
    if isinstance(error, AstraError):
        fields: dict[str, Any] = {
            "code": error.code,
            "message": error.message,
            "venue": error.venue,
            "venueCode": error.venue_code,
        }
    elif isinstance(error, Mapping):
        fields = {
            "code": error.get("code"),
            "message": error.get("message"),
            "venue": error.get("venue"),
            "venueCode": error.get("venueCode", error.get("venue_code")),
        }
    elif isinstance(error, BaseException):
        fields = {"code": AstraError.code, "message": f"{type(error).__name__}: {error}"}
    else:
        raise TypeError(f"error must be an exception or a mapping, not {type(error)!r}")
    code = str(fields.get("code") or AstraError.code)[:64]
    out: dict[str, str] = {"code": code, "message": _redact(str(fields.get("message") or code))}
    for k in ("venue", "venueCode"):
        if fields.get(k) is not None:
            out[k] = _redact(str(fields[k]))[:64]
    return msgspec.json.encode(out).decode()


def _order_status(status: object) -> str | None:
    return str(status).upper()[:_ORDER_STATUS_MAX] if status not in (None, "") else None


def _check_str(value: object, name: str, max_len: int) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ValueError(f"{name} must be a non-empty string of at most {max_len} characters")
    if not value.isprintable() or value.strip() != value:
        raise ValueError(f"{name} must not contain control characters or surrounding spaces")
    return value


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _entry(row: sa.Row) -> JournalEntry:
    return JournalEntry(
        id=row.id,
        key_id=row.key_id,
        exchange=row.exchange,
        market=row.market,
        client_order_id=row.client_order_id,
        request=_decode(row.request),
        state=JournalState(row.state),
        created_at=row.created_at,
        updated_at=row.updated_at,
        venue_order_id=row.venue_order_id,
        last_order=_decode(row.last_order),
        error=_decode(row.error),
        sent_at=row.sent_at,
        reconciled_at=row.reconciled_at,
        reconcile_attempts=row.reconcile_attempts,
    )


# ---------------------------------------------------------------------------------- the journal


class OrderJournal:
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
    ) -> None:
        self._engine = engine
        self._grace_ms = grace_ms
        self._clock = clock
        ORDERS_JOURNAL.create(engine, checkfirst=True)

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
    ) -> tuple[JournalEntry, bool]:
        """Journal an order intent: ``(entry, True)`` when this call created it.

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
        now = self._clock()
        values = {
            "key_id": key_id,
            "exchange": exchange,
            "market": market,
            "client_order_id": client_order_id,
            "request": body,
            "state": _S.INTENT.value,
            "created_at": now,
            "updated_at": now,
            "reconcile_attempts": 0,
        }
        try:
            with self._engine.begin() as conn:
                entry_id = conn.execute(_INSERT, values).inserted_primary_key[0]
        except IntegrityError:
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
                state=_S.INTENT,
                created_at=now,
                updated_at=now,
            ),
            True,
        )

    # -- transitions

    def mark_sent(self, entry_id: int) -> JournalEntry:
        """``INTENT`` -> ``SENT``: call right before the request goes on the wire (only the
        caller ``begin`` created it for). Also from ``UNKNOWN`` while never sent: another
        process reconciled it meanwhile, not finding it (module docstring)."""
        now = self._clock()
        with self._engine.begin() as conn:
            n = conn.execute(
                _MARK_SENT, {"entry_id": entry_id, "new_sent_at": now, "new_updated_at": now}
            ).rowcount
            entry = self._read(conn, entry_id)
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
                entry_id, {*PENDING_STATES, _S.NOT_PLACED}, values, now
            )
            if changed:
                return entry
            if entry.state is _S.ACKNOWLEDGED and entry.venue_order_id == venue_order_id:
                return self.update_order(entry_id, order)  # another process settled it first
            raise InvalidTransition(entry_id, "reconcile (found)", entry.state)

        grace = self._grace_ms if grace_ms is None else grace_ms
        with self._engine.begin() as conn:  # both updates in one write transaction
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

    # -- reading

    def get(self, key_id: str, exchange: str, client_order_id: str) -> JournalEntry | None:
        """The entry of this owner's client order id on ``exchange``, or None."""
        return self._one(
            _BY_CLIENT_ID,
            {"key_id": key_id, "exchange": str(exchange), "client_order_id": client_order_id},
        )

    def get_entry(self, entry_id: int) -> JournalEntry | None:
        return self._one(_BY_ID, {"entry_id": entry_id})

    def by_venue_order(
        self, key_id: str, exchange: str, venue_order_id: str
    ) -> JournalEntry | None:
        """The entry of this owner whose venue order id is ``venue_order_id``, or None."""
        return self._one(
            _BY_VENUE_ID,
            {"key_id": key_id, "exchange": str(exchange), "venue_order_id": venue_order_id},
        )

    def pending(
        self,
        exchange: str | None = None,
        *,
        key_id: str | None = None,
        older_than_ms: int = 0,
    ) -> list[JournalEntry]:
        """Entries whose outcome at the venue is unknown (``INTENT``, ``SENT``, ``UNKNOWN``),
        oldest first: what to reconcile on startup.

        ``older_than_ms`` skips entries touched more recently: for periodic sweeps while other
        gateway processes may own young in-flight entries (on startup of the only process,
        everything pending is orphaned: 0, the default).
        """
        where = [_T.c.state.in_(_PENDING_VALUES)]
        if exchange is not None:
            where.append(_T.c.exchange == str(exchange))
        if key_id is not None:
            where.append(_T.c.key_id == key_id)
        if older_than_ms > 0:
            where.append(_T.c.updated_at <= self._clock() - older_than_ms)
        return self._many(sa.select(_T).where(*where).order_by(_T.c.id))

    def list_orders(
        self,
        key_id: str,
        exchange: str | None = None,
        market: str | None = None,
        open_only: bool = False,
        limit: int | None = None,
    ) -> list[JournalEntry]:
        """This owner's entries, newest first.

        ``open_only`` keeps what may be live at the venue: pending entries, and acknowledged
        ones whose last known status is not in ``CLOSED_ORDER_STATUSES``.
        """
        where = [_T.c.key_id == key_id]
        if exchange is not None:
            where.append(_T.c.exchange == str(exchange))
        if market is not None:
            where.append(_T.c.market == market)
        if open_only:
            where.append(
                sa.or_(
                    _T.c.state.in_(_PENDING_VALUES),
                    sa.and_(
                        _T.c.state == _S.ACKNOWLEDGED.value,
                        sa.or_(
                            _T.c.order_status.is_(None),
                            _T.c.order_status.not_in(sorted(CLOSED_ORDER_STATUSES)),
                        ),
                    ),
                )
            )
        query = sa.select(_T).where(*where).order_by(_T.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        return self._many(query)

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
    ) -> tuple[JournalEntry, bool]:
        """One conditional UPDATE, then the row: ``(entry, whether this call changed it)``."""
        with self._engine.begin() as conn:  # the UPDATE first: a write lock, never an upgrade
            n = self._apply(conn, entry_id, allowed, values | {"updated_at": now})
            entry = self._read(conn, entry_id)
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

    @staticmethod
    def _read(conn: sa.Connection, entry_id: int) -> JournalEntry:
        row = conn.execute(_BY_ID, {"entry_id": entry_id}).first()
        if row is None:
            raise LookupError(f"no order journal entry with id {entry_id}")
        return _entry(row)

    def _one(self, stmt: sa.Select, params: dict[str, Any]) -> JournalEntry | None:
        with self._engine.connect() as conn:
            row = conn.execute(stmt, params).first()
        return None if row is None else _entry(row)

    def _many(self, query: sa.Select) -> list[JournalEntry]:
        with self._engine.connect() as conn:
            return [_entry(r) for r in conn.execute(query)]
