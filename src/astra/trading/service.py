"""The gateway's private API: orders, fills, balances and positions on any venue, through ccxt.

Safety rules (the order journal in ``astra.store.journal`` carries them across restarts):
- Every order intent is journaled, under the client order id the venue receives, before
  anything is sent. A retried or concurrent ``POST /orders`` with the same ``clientOrderId``
  returns the journaled order and never sends a second one; within this process the retry
  waits for the first request's outcome.
- Across processes sharing the journal (gateway edges on one PostgreSQL) the journal's UNIQUE
  constraint elects the one sender; a process that loses the race for an entry still in flight
  elsewhere (``INTENT``/``SENT``) asks the venue by client order id and, if the order is not
  there yet, waits for the sender's answer in the journal (polling the row, at most that
  send's timeout and a margin), so both answer with the same venue order; only then is a "not
  found" written (``UNKNOWN``), never a second send.
- A timeout or a connection lost after sending is not a failure: the order is reported with
  status ``UNKNOWN`` (HTTP 202) and reconciled by client order id, on the next request of the
  same Astra key for that venue (header credentials exist only during a request) and at
  startup for stored credentials.
- Quantities and prices are checked against the market's tick, lot, minimum quantity and
  minimum notional before a venue round trip (422 naming the parameter), and sent at the
  venue's precision.
- The intent is committed (``SENT``, one commit: ``begin(..., sent=True)``) before any byte of
  the order leaves; the venue's acknowledgement is journaled after the answer is returned
  (``acknowledge_later``: a crash before it commits leaves the entry ``SENT``, reconciled by
  client order id like any other), and this process's later journal reads wait for it.
- Venues whose private client has a ``native`` order path (Aster and the simulator:
  ``astra.venues.aster.native``) send creates and cancels through it, which answers the
  ``Order`` itself (the one ``order_from_ccxt`` would make of ccxt's reading) and rounds to
  the market's precision as ccxt does, remembered per value; every other call, and every
  other venue, goes through ccxt.
- ``telemetry`` (settable; the gateway hands its own) observes each order operation's venue
  round trip as ``order_round_trip_seconds`` (venue, ``create``/``cancel``,
  ``ok``/``rejected``/``unknown``).
- Exchange credentials live only in memory: in the ccxt client cached for them
  (``clients.py``: built once, closed after ``idle_ttl`` unused) and in the redactor's
  registry while that client lives; nothing here logs, stores or echoes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import ssl
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import certifi
import msgspec

from astra.core import (
    ContractUnits,
    Exchange,
    ExchangeNotServed,
    InvalidParameter,
    MarketNotFound,
    UnknownExchange,
    Unprocessable,
    VenueUnavailable,
    parse_market,
)
from astra.core._trading import Balance, Fill, Order, OrderStatus, OrderType, PlaceOrder, Position
from astra.core.credentials import ExchangeCredentials
from astra.store import CredentialStoreError
from astra.store.journal import (
    ClientOrderIdConflict,
    InvalidTransition,
    JournalBusy,
    JournalEntry,
    JournalState,
    OrderJournal,
    generate_client_order_id,
    is_valid_client_order_id,
)
from astra.venues.base import BALANCE_ACCOUNTS, Venue, VenueMarket
from astra.venues.ccxt_normalize import (
    balances_from_ccxt,
    ccxt_market,
    fill_from_ccxt,
    fill_in_base,
    order_from_ccxt,
    order_in_base,
    position_from_ccxt,
)
from astra.venues.limiter import VenueLimiter, attach_routed

from ._keccak import install_fast_keccak
from .clients import ClientCache
from .errors import map_venue_error

__all__ = ["PRICED_TYPES", "STOP_TYPES", "TradingService", "TradingVenue"]

log = logging.getLogger(__name__)
install_fast_keccak()  # wallet-signed venues (Aster, SIM): C Keccak instead of pure Python

_CCXT_TYPES = {
    OrderType.LIMIT: "limit",
    OrderType.MARKET: "market",
    OrderType.STOP_LIMIT: "STOP",
    OrderType.STOP_MARKET: "STOP_MARKET",
    OrderType.TAKE_PROFIT_LIMIT: "TAKE_PROFIT",
    OrderType.TAKE_PROFIT_MARKET: "TAKE_PROFIT_MARKET",
}


class TradingVenue(Venue):
    """A venue that trades: it builds a ccxt client for one set of credentials."""

    def private_client(self, config: Mapping[str, Any]) -> Any:  # pragma: no cover
        raise NotImplementedError


def _d(value: float) -> Decimal:
    return Decimal(repr(value))


# The order types that need a price (all others refuse one), and those that need a stopPrice
# (all others refuse one): check_order's rule, which the OpenAPI document states too.
PRICED_TYPES = (OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT)
STOP_TYPES = (OrderType.STOP_LIMIT, OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_LIMIT,
              OrderType.TAKE_PROFIT_MARKET)

# Another process's send of an entry is waited for (its answer polled in the journal) at most
# its timeout plus this margin (a limiter wait, a venue's last price first) from its start.
IN_FLIGHT_MARGIN = 2.0
_IN_FLIGHT_POLL = 0.02  # seconds between reads of the row: a race's loser only, never the sender
_IN_FLIGHT = (JournalState.INTENT, JournalState.SENT)

# Larger than any real order (in base units or quote per unit); bounded so the tick and lot
# arithmetic below stays exact instead of overflowing the decimal context.
MAX_ORDER_VALUE = 1e15


def check_order(body: PlaceOrder, market: VenueMarket) -> None:
    """Tick, lot, minimum quantity and notional, before any venue round trip (422)."""
    meta = market.metadata
    if not 0 < body.quantity <= MAX_ORDER_VALUE:  # (also refuses NaN)
        raise Unprocessable(f"quantity must be a positive number up to {MAX_ORDER_VALUE:g}",
                            parameter="quantity")
    if body.type in PRICED_TYPES and body.price is None:
        raise Unprocessable(f"price is required for {body.type} orders", parameter="price")
    if body.type not in PRICED_TYPES and body.price is not None:
        raise Unprocessable(f"price is not allowed for {body.type} orders", parameter="price")
    if body.type in STOP_TYPES and body.stop_price is None:
        raise Unprocessable(f"stopPrice is required for {body.type}", parameter="stopPrice")
    if body.type not in STOP_TYPES and body.stop_price is not None:
        raise Unprocessable(f"stopPrice is not allowed for {body.type} orders",
                            parameter="stopPrice")
    for name, value in (("price", body.price), ("stopPrice", body.stop_price)):
        if value is None:
            continue
        if not 0 < value <= MAX_ORDER_VALUE:
            raise Unprocessable(f"{name} must be a positive number up to {MAX_ORDER_VALUE:g}",
                                parameter=name)
        if meta.tick_size and _d(value) % _d(meta.tick_size):
            raise Unprocessable(f"{name} {value} is not a multiple of the tick size "
                                f"{meta.tick_size}", parameter=name)
    qty = _d(body.quantity)
    if meta.lot_size and qty % _d(meta.lot_size):
        raise Unprocessable(f"quantity {body.quantity} is not a multiple of the lot size "
                            f"{meta.lot_size}", parameter="quantity")
    if meta.min_quantity and body.quantity < meta.min_quantity:
        raise Unprocessable(f"quantity is below the minimum {meta.min_quantity}",
                            parameter="quantity")
    reference = body.price or body.stop_price
    if meta.min_notional and reference and body.quantity * reference < meta.min_notional:
        if not body.reduce_only:
            raise Unprocessable(f"order value is below the minimum notional {meta.min_notional}",
                                parameter="quantity")
    if body.post_only and body.type != OrderType.LIMIT:
        raise Unprocessable("postOnly applies to LIMIT orders only", parameter="postOnly")


class TradingService:
    def __init__(
        self,
        venues: Mapping[str, Venue],
        journal: OrderJournal,
        *,
        timeout: float = 10.0,
        limiters: dict[str, VenueLimiter] | None = None,
        clients: ClientCache | None = None,
        telemetry: Any = None,
    ) -> None:
        self.venues = venues
        self.telemetry = telemetry
        self.journal = journal
        self.timeout = timeout
        self.limiters = limiters if limiters is not None else {}
        # (key id, venue, client order id) -> the send in progress and its request
        self._inflight: dict[tuple[str, str, str], tuple[asyncio.Future[Order], dict]] = {}
        self._tls: ssl.SSLContext | None = None
        self.clients = clients if clients is not None else ClientCache()

    # -- plumbing ----------------------------------------------------------------------------
    def _round_trip(self, venue: str, operation: str, outcome: str, started: float) -> None:
        if (telemetry := self.telemetry) is not None:  # its observer is bound once per label
            telemetry.observer(telemetry.order_round_trip_seconds, venue, operation, outcome)(
                time.perf_counter() - started)

    async def _journal(self, method, *args: Any, **kwargs: Any) -> Any:
        """A journal call: inline on this loop where the journal allows it (SQLite: no thread
        hop), else, or when the database is busy, on a thread."""
        journal = self.journal
        if getattr(journal, "inline_writes", False):
            try:
                return journal.inline(method, *args, **kwargs)
            except JournalBusy:
                pass  # another writer holds the lock: wait for it on a thread
        return await asyncio.to_thread(method, *args, **kwargs)

    async def _venue_call(self, operation: str, venue: TradingVenue, creds: ExchangeCredentials,
                          coro_factory, *, market: VenueMarket, sent: bool = True) -> Any:
        """``_call`` of an order operation, its round trip observed by outcome."""
        started = time.perf_counter()
        try:
            result = await self._call(venue, creds, coro_factory, market=market, sent=sent)
        except Exception as err:
            unknown = getattr(err, "code", "") == "ORDER_STATUS_UNKNOWN"
            self._round_trip(venue.code, operation, "unknown" if unknown else "rejected",
                             started)
            raise
        self._round_trip(venue.code, operation, "ok", started)
        return result

    def _venue(self, exchange: str) -> TradingVenue:
        venue = self.venues.get(exchange)
        if venue is None:
            if exchange in Exchange.__members__:  # valid, just not configured: 404
                raise ExchangeNotServed(exchange, list(self.venues))
            raise UnknownExchange(exchange)
        if not hasattr(venue, "private_client"):
            raise InvalidParameter("exchange", f"{exchange} does not support trading yet")
        return venue  # type: ignore[return-value]

    async def market(self, symbol: str) -> tuple[TradingVenue, VenueMarket]:
        """The venue and market of an Astra symbol; every refusal names ``market`` (the
        exchange is a part of it, not a parameter of its own)."""
        exchange = parse_market(symbol).exchange  # InvalidMarket names the bad part
        venue = self.venues.get(exchange)
        if venue is None:
            raise MarketNotFound(symbol, f"market '{symbol}': exchange {exchange} is not "
                                 "served here")
        if not hasattr(venue, "private_client"):
            raise InvalidParameter("market", f"{exchange} does not support trading yet")
        markets = await venue.load_markets()
        market = markets.get(symbol)
        if market is None:
            raise MarketNotFound(symbol)
        return venue, market

    @staticmethod
    def check_order_ids(venue: Venue, order_id: str | None,
                        client_order_id: str | None = None) -> None:
        """An order id of the venue's form, before it reaches the venue (400 naming it)."""
        if order_id is not None and not re.fullmatch(venue.order_id_pattern, order_id):
            raise InvalidParameter("orderId", f"{venue.code} order ids match "
                                   f"{venue.order_id_pattern}, got {order_id[:40]!r}")
        if client_order_id is not None and not is_valid_client_order_id(client_order_id,
                                                                         venue.code):
            raise InvalidParameter("clientOrderId",
                                   f"not a valid client order id for {venue.code}")

    @staticmethod
    def check_balance_account(venue: Venue, account: str | None) -> None:
        """An ``account=`` value that reads one of the venue's accounts (400 naming it)."""
        if account is not None and account not in venue.balance_accounts:
            accounts = venue.balance_accounts
            raise InvalidParameter("account", f"{venue.code} accounts are "
                                   f"{' and '.join(accounts)}: expected one of "
                                   f"{', '.join(accounts)}, got {account[:40]!r}")

    def _limiter(self, exchange: str, market: VenueMarket | None = None,
                 url: str | None = None) -> VenueLimiter:
        """The limiter a private call on ``market`` (or a request to ``url``) counts against:
        one given for the venue (``limiters``), else the venue's for that product
        (``Venue.limiter_for``: per product where the venue counts them apart, e.g.
        Binance), else one made per venue: limits are per IP or account, not per key."""
        limiter = self.limiters.get(exchange)
        if limiter is None:
            venue = self.venues.get(exchange)
            limiter = venue.limiter_for(market, url=url) if venue is not None else None
            if limiter is None:
                limiter = self.limiters[exchange] = VenueLimiter(exchange)
        return limiter

    def _client(self, venue: TradingVenue,
                creds: ExchangeCredentials) -> contextlib.AbstractAsyncContextManager[Any]:
        """The ccxt client holding ``creds`` on ``venue``, leased for one call: built on first
        use and kept (``clients.py``: its secrets stay redacted from logs until it closes).
        (The cache's lease itself, not a context manager around it: one fewer per order.)"""

        def build() -> Any:
            config = creds.ccxt_config()
            config.update(self._transport())
            client = venue.private_client(config)
            # sees 429/418 + Retry-After first; an account-scoped limit (-1015) closes only
            # this account's gate, not public REST's nor other users' orders
            # Each answer feeds the limiter of the API it came from (one client may call
            # several the venue counts apart: Binance's products).
            code = venue.code
            attach_routed(client, lambda url: self._limiter(code, url=url),
                          account=_limit_account(creds), key=self)
            return client

        return self.clients.lease(venue.code, creds, build)

    def _transport(self) -> dict[str, Any]:
        """No ccxt-side pacing or exit delay on private clients: pacing is the venue
        limiter's job (per venue, not per client), and ccxt would otherwise make a fresh
        client's first call wait a rate interval and its ``close`` sleep 250 ms. Each venue
        shares one HTTP session between its private clients (kept-alive connections); the TLS
        context passed here only spares ccxt building one per client (~40 ms each), its
        session is the venue's."""
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=certifi.where())
        return {"enableRateLimit": False, "timeout_on_exit": 0, "ssl_context": self._tls}

    async def close(self) -> None:
        """Close the cached clients (HTTP sessions belong to the venues, closed with them),
        once the journal's deferred writes are done (and its inline connection released)."""
        close = getattr(self.journal, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
        else:
            await self._journal(self.journal.flush)
        await self.clients.close()

    async def _call(self, venue: TradingVenue, creds: ExchangeCredentials, coro_factory, *,
                    market: VenueMarket | None = None, sent: bool = False,
                    order: bool = True) -> Any:
        """``coro_factory()`` under the limiter of ``market``'s API (None: the venue's, for
        calls naming no market), as ``creds``' account, and the timeout; any failure becomes
        one Astra error (``order=False``: an account read, whose bad request is no bad
        order)."""
        limiter = self._limiter(venue.code, market)
        account = _limit_account(creds)
        try:
            async with limiter.slot(account=account):
                async with asyncio.timeout(self.timeout):
                    return await coro_factory()
        except Exception as exc:  # every venue failure becomes one Astra error
            # ``from None``: the original text may hold a signed URL.
            raise map_venue_error(
                exc, venue.code, sent=sent, order=order,
                retry_after=limiter.retry_after(account),
            ) from None

    # -- orders ------------------------------------------------------------------------------
    async def place(self, key_id: str, creds: ExchangeCredentials, body: PlaceOrder, *,
                    resolved: tuple[TradingVenue, VenueMarket] | None = None) -> Order:
        """Place ``body`` (module docstring); ``resolved``: ``market(body.market)`` when the
        caller has just looked it up (the route does, to name a bad market first)."""
        venue, market = resolved if resolved is not None else await self.market(body.market)
        check_order(body, market)
        cid = body.client_order_id
        if cid is None:  # (an empty one is refused below, not silently replaced)
            cid = generate_client_order_id(venue.code)
        self.check_order_ids(venue, None, cid)
        request = _request_json(body, cid)
        key = (key_id, venue.code, cid)
        waiting = self._inflight.get(key)
        if waiting is not None:  # the same order is being placed right now by this process
            sending, sent_request = waiting
            if sent_request != request:  # as the journal would answer once it is written
                raise ClientOrderIdConflict(venue.code, cid)
            return await asyncio.shield(sending)
        # Registered before the journal write: a concurrent retry must wait for this send,
        # not reconcile an entry whose order is still on its way to the venue.
        future: asyncio.Future[Order] = asyncio.get_running_loop().create_future()
        self._inflight[key] = (future, request)
        try:
            # Written SENT at once: the order leaves right after (one commit, not two).
            entry, created = await self._journal(
                self.journal.begin, key_id, venue.code, market.symbol, cid, request, sent=True)
            if created:
                order = await self._send(entry, venue, market, creds, body, cid)
            else:
                order = await self._existing(entry, venue, market, creds)
            future.set_result(order)
            return order
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a lone caller must not log "never retrieved"
            raise
        finally:
            del self._inflight[key]

    async def _send(self, entry: JournalEntry, venue: TradingVenue, market: VenueMarket,
                    creds: ExchangeCredentials, body: PlaceOrder, cid: str) -> Order:
        async with self._client(venue, creds) as client:
            units, at = _units(market), body.price or body.stop_price
            native = getattr(client, "native", None)
            precise = native if native is not None else client  # (native: remembered)
            try:
                symbol = ccxt_market(client, market)["symbol"]
                kind = _CCXT_TYPES[body.type]
                params: dict[str, Any] = {"clientOrderId": cid}
                if body.time_in_force is not None:
                    params["timeInForce"] = body.time_in_force.value
                if body.post_only:
                    params["postOnly"] = True
                if body.reduce_only:
                    params["reduceOnly"] = True
                if body.stop_price is not None:
                    params["stopPrice"] = precise.price_to_precision(symbol, body.stop_price)
                if units is not None and units.inverse and at is None:  # a market order
                    at = await self._last_price(venue, creds, client, market, symbol)
                amount = precise.amount_to_precision(
                    symbol, _venue_quantity(client, symbol, units, body.quantity, at))
                price = (precise.price_to_precision(symbol, body.price)
                         if body.price is not None else None)
            except Exception as err:  # nothing was sent: certainly not placed
                await self._journal(self.journal.reject, entry.id, err)
                raise
            if native is not None:  # its answer read straight into an Order (same result)
                def create() -> Any:
                    return native.place(symbol, kind, body.side.lower(), amount, price, params,
                                        market=market.symbol)
            else:
                def create() -> Any:
                    return client.create_order(symbol, kind, body.side.lower(), amount, price,
                                               params)
            try:
                raw = await self._venue_call("create", venue, creds, create, market=market)
            except Exception as err:
                if getattr(err, "code", "") == "ORDER_STATUS_UNKNOWN":
                    try:
                        await self._journal(self.journal.mark_unknown, entry.id, err)
                    except InvalidTransition:
                        # Settled meanwhile by another process sharing the journal (it found
                        # the order at the venue by client order id): its answer stands.
                        settled = await self._journal(self.journal.get_entry, entry.id)
                        if settled is not None and settled.last_order is not None:
                            return _order_from_json(settled.last_order)
                    return _unknown(entry, body, market.symbol, cid)
                await self._journal(self.journal.reject, entry.id, err)
                raise
        order = raw if native is not None else order_from_ccxt(raw, market.symbol)
        order = order_in_base(order, units, at)
        if not order.client_order_id:
            order.client_order_id = cid
        # Not awaited: the answer need not wait for this commit (module docstring). The
        # Order itself (the journal encodes it then; nothing changes it once answered).
        self.journal.acknowledge_later(entry.id, order.order_id, order)
        return order

    async def _last_price(self, venue: TradingVenue, creds: ExchangeCredentials, client: Any,
                          market: VenueMarket, symbol: str) -> float:
        """The venue's last price: what an inverse contract's market order converts at."""
        ticker = await self._call(venue, creds, lambda: client.fetch_ticker(symbol),
                                  market=market)
        last = ticker.get("last") or ticker.get("close")
        if not last:
            raise VenueUnavailable(venue.code, f"{venue.code} gave no last price for {symbol}")
        return float(last)

    async def _existing(self, entry: JournalEntry, venue: TradingVenue, market: VenueMarket,
                        creds: ExchangeCredentials) -> Order:
        """The answer to a retried client order id: the journaled order, reconciled first when
        its outcome is not known."""
        if entry.pending:
            entry = await self._reconcile(entry, venue, market, creds, in_flight=True)
        if entry.last_order is not None:
            return _order_from_json(entry.last_order)
        if not entry.pending:  # REJECTED or NOT_PLACED: a retry returns that outcome
            reason = (entry.error or {}).get("message", "the venue did not place it")
            raise Unprocessable(
                f"order {entry.client_order_id} was not placed: {reason}; "
                "use a new clientOrderId to place it again",
                parameter="clientOrderId",
            )
        body = msgspec.convert(entry.request, PlaceOrder)  # journaled as the wire body
        return _unknown(entry, body, market.symbol, entry.client_order_id)

    async def _reconcile(self, entry: JournalEntry, venue: TradingVenue, market: VenueMarket,
                         creds: ExchangeCredentials, *, in_flight: bool = False) -> JournalEntry:
        """Look ``entry`` up at the venue by client order id and journal what it says.
        ``in_flight``: the entry may be being sent by another process right now (a retry that
        lost the journal's race): "not found" then waits for that sender's answer first."""
        async with self._client(venue, creds) as client:
            symbol = ccxt_market(client, market)["symbol"]
            try:
                raw = await self._call(venue, creds, lambda: client.fetch_order(
                    "", symbol, {"clientOrderId": entry.client_order_id}), market=market)
            except Exception as err:
                if getattr(err, "code", "") != "ORDER_NOT_FOUND":
                    raise
                if in_flight and entry.state in _IN_FLIGHT:
                    # Not at the venue yet, maybe on its way: the sender's answer, else look
                    # once more (it may have timed out with the order live) before "not found".
                    settled = await self._sent_elsewhere(entry)
                    if not settled.pending:
                        return settled
                    return await self._reconcile(settled, venue, market, creds)
                try:
                    return await self._journal(self.journal.reconcile, entry.id, None)
                except InvalidTransition:
                    # settled meanwhile (another process's send was acknowledged after our
                    # lookup): the journal's answer stands, "not found" was just early
                    settled = await self._journal(self.journal.get_entry, entry.id)
                    if settled is None:
                        raise
                    return settled
        order = order_in_base(order_from_ccxt(raw, market.symbol), _units(market))
        return await self._journal(self.journal.reconcile, entry.id, _order_json(order),
                                       venue_order_id=order.order_id)

    async def _sent_elsewhere(self, entry: JournalEntry) -> JournalEntry:
        """``entry`` as journaled once its sender (another process) has its answer, or when
        that send has had its time: its timeout and ``IN_FLIGHT_MARGIN`` from when it was sent
        (created, if never marked sent), and never longer than twice that here."""
        budget = self.timeout + IN_FLIGHT_MARGIN
        bound = time.monotonic() + 2 * budget
        while entry.state in _IN_FLIGHT and time.monotonic() < bound:
            started = entry.sent_at if entry.sent_at is not None else entry.created_at
            if self.journal.now() - started >= budget * 1000:
                break
            await asyncio.sleep(_IN_FLIGHT_POLL)
            entry = await self._journal(self.journal.get_entry, entry.id) or entry
        return entry

    async def reconcile_pending(self, key_id: str, exchange: str,
                                creds: ExchangeCredentials) -> int:
        """Settle this key's orders of unknown outcome on ``exchange`` (header credentials
        exist only during a request, so this runs at the start of that key's requests)."""
        entries = await self._journal(self.journal.pending, exchange, key_id=key_id)
        done = 0
        for entry in entries:
            if (key_id, exchange, entry.client_order_id) in self._inflight:
                continue  # being sent right now by this process
            venue, market = await self.market(entry.market)
            entry = await self._reconcile(entry, venue, market, creds)
            done += not entry.pending
        return done

    async def reconcile_stored(self, source: Any) -> int:
        """At startup: settle every order of unknown outcome whose Astra key has credentials
        in ``source`` (a ``CredentialSource``); header-mode keys settle on their next request."""
        done = 0
        for entry in await self._journal(self.journal.pending):
            try:
                # (a row stored under another ASTRA_MASTER_KEY raises: that key's orders wait,
                # the others' do not)
                creds = source.get(entry.key_id, entry.exchange) if source is not None else None
                if creds is None:
                    continue
                venue, market = await self.market(entry.market)
                entry = await self._reconcile(entry, venue, market, creds)
            except Exception as exc:  # one venue down must not stop the others' reconciliation
                log.warning("reconciling order %s on %s failed: %s", entry.client_order_id,
                            entry.exchange, getattr(exc, "message", None) or
                            (str(exc) if isinstance(exc, CredentialStoreError)  # names no secret
                             else type(exc).__name__))
                continue
            done += not entry.pending
        return done

    async def cancel(self, key_id: str, creds: ExchangeCredentials, symbol: str,
                     order_id: str | None, client_order_id: str | None) -> Order:
        # (the route checks the ids before the credentials: the server is the only caller)
        venue, market = await self.market(symbol)
        if order_id is None and client_order_id is not None:
            # The journal knows the venue's id for orders placed through Astra: venues that
            # cannot cancel by client id (Coinbase) then need no search.
            entry = await self._journal(self.journal.get, key_id, venue.code, client_order_id)
            if entry is not None and entry.venue_order_id:
                order_id = entry.venue_order_id
        async with self._client(venue, creds) as client:
            ccxt_symbol = ccxt_market(client, market)["symbol"]
            params = {"clientOrderId": client_order_id} if order_id is None else {}
            native = getattr(client, "native", None)
            if native is not None:
                def cancel() -> Any:
                    return native.cancel(order_id or "", ccxt_symbol, params,
                                         market=market.symbol)
            else:
                def cancel() -> Any:
                    return client.cancel_order(order_id or "", ccxt_symbol, params)
            raw = await self._venue_call("cancel", venue, creds, cancel, market=market,
                                         sent=False)
        order = raw if native is not None else order_from_ccxt(raw, market.symbol)
        order = order_in_base(order, _units(market))
        await self._journal_update(key_id, venue.code, order)
        return order

    async def cancel_all(self, key_id: str, creds: ExchangeCredentials, symbol: str) -> int:
        """Cancel every open order of ``symbol``; returns how many were open."""
        venue, market = await self.market(symbol)
        async with self._client(venue, creds) as client:
            ccxt_symbol = ccxt_market(client, market)["symbol"]
            opened = await self._call(venue, creds, lambda: client.fetch_open_orders(
                ccxt_symbol), market=market)
            await self._call(venue, creds, lambda: client.cancel_all_orders(ccxt_symbol),
                             market=market)
        return len(opened)

    async def open_orders(self, key_id: str, creds: ExchangeCredentials,
                          symbol: str) -> list[Order]:
        venue, market = await self.market(symbol)
        async with self._client(venue, creds) as client:
            ccxt_symbol = ccxt_market(client, market)["symbol"]
            raw = await self._call(venue, creds, lambda: client.fetch_open_orders(ccxt_symbol),
                                   market=market)
        units = _units(market)
        return [order_in_base(order_from_ccxt(r, market.symbol), units) for r in raw]

    async def get_order(self, key_id: str, creds: ExchangeCredentials, symbol: str,
                        order_id: str) -> Order:
        venue, market = await self.market(symbol)  # (ids checked by the route, as in cancel)
        async with self._client(venue, creds) as client:
            ccxt_symbol = ccxt_market(client, market)["symbol"]
            raw = await self._call(venue, creds, lambda: client.fetch_order(
                order_id, ccxt_symbol), market=market)
        order = order_in_base(order_from_ccxt(raw, market.symbol), _units(market))
        await self._journal_update(key_id, venue.code, order)
        return order

    async def fills(self, key_id: str, creds: ExchangeCredentials, symbol: str,
                    since: int | None) -> list[Fill]:
        venue, market = await self.market(symbol)
        async with self._client(venue, creds) as client:
            ccxt_symbol = ccxt_market(client, market)["symbol"]
            raw = await self._call(venue, creds, lambda: client.fetch_my_trades(
                ccxt_symbol, since), market=market, order=False)
        units = _units(market)
        return [fill_in_base(fill_from_ccxt(r, market.symbol, venue.code), units) for r in raw]

    async def balances(self, key_id: str, creds: ExchangeCredentials,
                       exchange: str, account: str | None = None) -> list[Balance]:
        venue = self._venue(exchange)  # (``account`` checked by the route, as in cancel)
        await venue.load_markets()
        params = {"type": account} if account else {}
        async with self._client(venue, creds) as client:
            raw = await self._call(venue, creds, lambda: client.fetch_balance(params), order=False)
            account = account or _default_account(client)
        return balances_from_ccxt(raw, venue.code, account)

    async def positions(self, key_id: str, creds: ExchangeCredentials,
                        exchange: str) -> list[Position]:
        venue = self._venue(exchange)
        markets = await venue.load_markets()
        async with self._client(venue, creds) as client:
            raw = await self._call(venue, creds, lambda: client.fetch_positions(), order=False)
            by_ccxt: dict[str, VenueMarket] = {}
            for m in markets.values():
                with contextlib.suppress(KeyError):
                    by_ccxt[ccxt_market(client, m)["symbol"]] = m
        out = []
        for row in raw:
            m = by_ccxt.get(row.get("symbol"))
            position = position_from_ccxt(row, m.symbol, _units(m)) if m else None
            if position is not None:
                out.append(position)
        return out

    async def _journal_update(self, key_id: str, exchange: str, order: Order) -> None:
        if order.order_id is None:
            return
        entry = await self._journal(self.journal.by_venue_order, key_id, exchange,
                                        order.order_id)
        if entry is not None and not entry.pending:
            await self._journal(self.journal.update_order, entry.id, _order_json(order))


# -- JSON helpers ----------------------------------------------------------------------------

def _request_json(body: PlaceOrder, cid: str) -> dict:
    data = msgspec.to_builtins(body)
    data["clientOrderId"] = cid
    return data


def _limit_account(creds: ExchangeCredentials) -> str:
    """The venue account ``creds`` trade as, as the limiter's ``account=``: venues count
    some limits per account (Binance's -1015), so one account's limit must not close the
    gate for the others. A digest of the key (or wallet), so the limiter holds no secret."""
    ident = creds.api_key or creds.account or creds.private_key or ""
    return hashlib.sha256(f"{creds.exchange}:{ident}".encode()).hexdigest()[:16]


def _default_account(client: Any) -> str | None:
    """The account a ``fetch_balance`` without ``type`` reads: ccxt's ``defaultType`` as ccxt
    resolves it (``spot`` unless configured); a client that is no ccxt client (Kraken's
    spot/futures router) names it itself. None when no ``account=`` value reads it."""
    resolve = getattr(client, "handle_market_type_and_params", None)
    if resolve is not None:
        account = resolve("fetchBalance", None, {})[0]
    else:
        account = getattr(client, "default_balance_account", None)
    return account if account in BALANCE_ACCOUNTS else None


def _units(market: VenueMarket) -> ContractUnits | None:
    return ContractUnits.of(market.metadata)


def _venue_quantity(client: Any, symbol: str, units: ContractUnits | None, quantity: float,
                    at: float | None) -> float:
    """``quantity`` (base units) in the venue's units. Linear contracts convert exactly (the
    lot check already made it whole lots); an inverse contract's converts at ``at`` and is
    rounded to the nearest whole lot, never to none."""
    if units is None:
        return quantity
    contracts = units.to_contracts(quantity, at)
    if not units.inverse:
        return contracts
    lot = Decimal(str((client.market(symbol).get("precision") or {}).get("amount") or 1))
    lots = (Decimal(repr(contracts)) / lot).to_integral_value()
    if lots < 1:
        one = units.to_base(float(lot), at)
        raise Unprocessable(
            f"quantity {quantity} is less than one contract ({float(lot):g} x "
            f"{units.size:g} quote = {one:g} base at {at:g})", parameter="quantity")
    return float(lots * lot)


def _order_json(order: Order) -> dict:
    return msgspec.to_builtins(order)


def _order_from_json(data: dict) -> Order:
    return msgspec.convert(data, Order)


def _unknown(entry: JournalEntry, body: PlaceOrder, market: str, cid: str) -> Order:
    return Order(
        order_id=entry.venue_order_id,
        client_order_id=cid,
        market=market,
        side=body.side,
        type=body.type,
        quantity=body.quantity,
        filled_quantity=0.0,
        status=OrderStatus.UNKNOWN,
        price=body.price,
        stop_price=body.stop_price,
        time_in_force=body.time_in_force,
        created_at=entry.created_at,
        updated_at=entry.updated_at,
    )
