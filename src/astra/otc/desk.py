"""The OTC desk: firm, signed, expiring quotes priced from the consolidated books; accepted at
most once; booked in the account's ledger; hedged through the smart order router.

A quote (``request_quote``):
1. Checks, all before any book is read: the kill switch (``DeskHalted``), the assets and exactly
   one amount at its asset's precision (400 naming the parameter), the account (404 unknown,
   403 another key's).
2. Route and books: the pair's SMART spot market, or two through a bridge asset, or USD through
   ``usd`` at ``usd_rate`` (``pricing.find_route``); every hop's member books (the configured
   ``venues``). A member book that is ``stale`` (silently old) refuses the quote (``STALE_BOOK``);
   a member that is down or resyncing is left out; no member in sync: ``STALE_BOOK``.
3. Price (``pricing.price_quote``): the fee-adjusted cost of walking the side the desk would
   hedge for the whole size, times (1 + markup), markup = the account's spread + the inventory
   skew, never below zero. Then the limits: the account's maximum notional per trade and what
   is left of its daily volume, the desk's inventory limit per asset, and the account's balance
   of what it sells: each a 4xx, no quote.
4. The quote is signed (``signing.QuoteSigner``: HMAC-SHA256 over every field) and stored
   ``ACTIVE`` with what hedging it takes; ``expiryTime`` is now + ``quote_ttl``.

An accept (``accept``): the kill switch (it stops the accepts of quotes already issued, not
the hedger: hedging reduces the desk's risk); the signature (``INVALID_QUOTE_SIGNATURE`` for
any changed field, an unknown signature, or a retired signing key); the account's owner (403);
the account's maximum notional per trade as it is NOW (lowered since the quote: refused); then
one database transaction (``OtcStore.accept``) moves the quote ACTIVE -> ACCEPTED (expired:
``QUOTE_EXPIRED``), books the client's side and the desk's inventory, checks the daily volume
and inventory limits, and writes the trade and its hedge legs. Integrity rule: a quote books at
most one trade, whatever the number of concurrent accepts or gateway processes (the database's
conditional update decides, not this process); the owner's repeat gets the same trade back.
The hedge (``hedger.Hedger``) runs after the trade is booked and never undoes it.

Every request, quote, refusal, accept and hedge leg is in the store's append-only audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Context, Decimal
from typing import Any

from astra.core import (
    AstraError,
    DeskHalted,
    Forbidden,
    InsufficientBalance,
    InvalidParameter,
    InvalidQuoteSignature,
    LimitExceeded,
    OtcAccountNotFound,
    QuoteAlreadyAccepted,
    StaleBook,
)
from astra.core._otc import (
    AcceptedQuote,
    AcceptQuote,
    Convert,
    ConvertsMessage,
    OtcAccount,
    OtcAccountsMessage,
    Quote,
    QuoteRequest,
    QuoteResponse,
)
from astra.marketdata.engine import MarketDataEngine
from astra.routing.legs import dec
from astra.store.otc import AccountRow, DuplicateSignature, OtcStore, QuoteRow, TradeRow

from .assets import ACCOUNT_ID_RE, check_amount, check_asset, plain
from .config import OtcConfig
from .hedger import Hedger
from .pricing import (
    MemberLevels,
    PairBook,
    Priced,
    UsdRule,
    find_route,
    inventory_skew_bps,
    price_quote,
)
from .signing import QuoteSigner

__all__ = ["Desk"]

log = logging.getLogger(__name__)
_PRICE = Context(prec=12)
BOOK_WAIT = 2.0  # seconds a quote waits for a member book that is still connecting
# Quotes never accepted are deleted this long after they expired (streams issue one a
# second each); a late accept of one is QUOTE_EXPIRED before, INVALID_QUOTE_SIGNATURE after.
QUOTE_RETENTION = 3600.0
PRUNE_EVERY = 300.0


def _day(ms: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


class Desk:
    """The OTC desk of one gateway (module docstring); ``hedger``: None when ``hedge = "off"``."""

    def __init__(self, engine: MarketDataEngine, store: OtcStore, signer: QuoteSigner,
                 config: OtcConfig, hedger: Hedger | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine, self.store, self.signer, self.config = engine, store, signer, config
        self.hedger = hedger
        self.clock = clock
        self.stream_interval = config.stream_interval
        self.usd = UsdRule(via=config.usd, rate=config.usd_rate)
        # For /metrics: quotes issued and refused, trades booked, repeated accepts answered.
        self.stats: Counter[str] = Counter()
        self._pruner: asyncio.Task | None = None

    async def start(self) -> None:
        if self.hedger is not None:
            self.hedger.start()
        self._pruner = asyncio.create_task(self._prune_forever())

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None
        if self.hedger is not None:
            await self.hedger.close()

    async def prune(self) -> int:
        """Quotes never accepted, expired more than ``QUOTE_RETENTION`` seconds ago, deleted
        (every quote stays in the audit trail); the number deleted."""
        before = int((self.clock() - QUOTE_RETENTION) * 1_000_000)
        total = 0
        while (n := await asyncio.to_thread(self.store.prune_quotes, before)) > 0:
            total += n
        return total

    async def _prune_forever(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception:  # a database hiccup: try again next time
                log.exception("pruning expired OTC quotes failed")
            await asyncio.sleep(PRUNE_EVERY)

    # -- accounts ---------------------------------------------------------------------------
    async def _own(self, key_id: str, account_id: str) -> AccountRow:
        _check_account_id(account_id)
        row = await asyncio.to_thread(self.store.account, account_id)
        return self._owned(key_id, row, account_id)

    @staticmethod
    def _owned(key_id: str, row: AccountRow | None, account_id: str) -> AccountRow:
        if row is None:
            raise OtcAccountNotFound(f"OTC account {account_id[:64]!r} does not exist",
                                     parameter="accountId")
        if row.key_id != key_id:
            raise Forbidden(f"OTC account {account_id} belongs to another API key",
                            parameter="accountId")
        return row

    def _view(self, row: AccountRow) -> OtcAccount:
        today = _day(self.clock() * 1000)
        return OtcAccount(
            account_id=row.account_id, name=row.name,
            spread_bps=self._spread(row),
            max_notional=row.max_notional if row.max_notional is not None
            else self.config.max_notional,
            daily_volume=row.daily_volume if row.daily_volume is not None
            else self.config.daily_volume,
            volume_today=self.store.volume_on(row.account_id, today),
            balances=self.store.balances(row.account_id),
            created_at=row.created_ms)

    def _spread(self, row: AccountRow) -> Decimal:
        return row.spread_bps if row.spread_bps is not None else self.config.spread_bps

    async def accounts(self, key_id: str) -> OtcAccountsMessage:
        def read() -> OtcAccountsMessage:
            return OtcAccountsMessage(accounts=[self._view(r) for r in self.store.accounts(key_id)])
        return await asyncio.to_thread(read)

    async def account(self, key_id: str, account_id: str) -> OtcAccount:
        row = await self._own(key_id, account_id)
        return await asyncio.to_thread(self._view, row)

    # -- quotes -----------------------------------------------------------------------------
    async def request_quote(self, key_id: str, req: QuoteRequest) -> QuoteResponse:
        try:
            response = await self._quote(key_id, req)
            self.stats["quotes"] += 1
            return response
        except AstraError as exc:
            self.stats["quotes_refused"] += 1
            await asyncio.to_thread(
                self.store.audit, "QUOTE_REFUSED",
                account_id=req.account_id if isinstance(req.account_id, str) else None,
                detail={"request": _request_detail(req), "code": exc.code,
                        "message": exc.message[:300]})
            raise

    async def _quote(self, key_id: str, req: QuoteRequest) -> QuoteResponse:
        from_asset = check_asset(req.from_asset, "fromAsset")
        to_asset = check_asset(req.to_asset, "toAsset")
        if (req.from_amount is None) == (req.to_amount is None):
            if req.from_amount is None:
                raise InvalidParameter("fromAmount", "give exactly one of fromAmount and "
                                       "toAmount; neither was given")
            raise InvalidParameter("toAmount", "give exactly one of fromAmount and toAmount, "
                                   "not both")
        _check_account_id(req.account_id)
        markets = await self._markets()
        route = find_route(from_asset, to_asset, markets, bridges=self.config.bridges,
                           usd=self.usd)  # before any asset is stored: only those it prices
        # One thread hop for the database: the kill switch, the account, balances, limits.
        account, state = await asyncio.to_thread(self._state, key_id, req.account_id, route)
        if req.from_amount is not None:
            amount_name = "fromAmount"
            from_amount = check_amount(req.from_amount, state["dp"][from_asset], "fromAmount")
            to_amount = None
        else:
            amount_name = "toAmount"
            to_amount = check_amount(req.to_amount, state["dp"][to_asset], "toAmount")
            from_amount = None
        books = {}
        for hop in route:
            if hop.symbol is not None and hop.symbol not in books:
                books[hop.symbol] = await self._pair_book(hop.symbol)
        skew = inventory_skew_bps(from_asset, to_asset, state["inventory"],
                                  self.config.inventory_limits, self.config.max_skew_bps,
                                  home=self.config.home)
        markup = max(Decimal(0), self._spread(account) + skew)
        priced = price_quote(from_asset, to_asset, route, books, from_amount=from_amount,
                             to_amount=to_amount, markup_bps=markup, precision=state["dp"],
                             home=self.config.home, home_prices=None)
        self._check_limits(account, state, priced, from_asset, to_asset, amount_name)
        return await asyncio.to_thread(self._issue, account, from_asset, to_asset, priced,
                                       markup, skew, _hedges(route, priced))

    def _state(self, key_id: str, account_id: str, route) -> tuple[AccountRow, dict[str, Any]]:
        """What a quote needs from the database, read in one thread hop."""
        halted = self.store.halted()
        if halted is not None:
            raise DeskHalted(f"the OTC desk is halted: {halted}"[:300])
        account = self._owned(key_id, self.store.account(account_id), account_id)
        assets = {a for hop in route for a in (hop.source, hop.target)} | {self.config.home}
        dp = {a: self.store.precision(a) for a in assets}
        return account, {"dp": dp, "inventory": self.store.inventory(),
                "balances": self.store.balances(account.account_id),
                "volume": self.store.volume_on(account.account_id,
                                               _day(self.clock() * 1000))}

    async def _markets(self) -> dict[tuple[str, str], str]:
        """(base, quote) -> SMART spot symbol, for markets with a member the desk uses."""
        out = {}
        for symbol, smart in (await self.engine.smart_markets()).items():
            meta = smart.metadata
            if str(meta.asset_type) != "SPOT":
                continue
            if self.config.venues is not None and not set(smart.members) & set(
                    self.config.venues):
                continue
            out.setdefault((meta.base_asset, meta.quote_asset), symbol)
        return out

    async def _pair_book(self, symbol: str) -> PairBook:
        smart = await self.engine.smart_market(symbol)
        venues = [v for v in smart.members
                  if self.config.venues is None or v in self.config.venues]
        books = await self.engine.member_books(symbol, venues, wait=BOOK_WAIT)
        stale = [m.venue for m in books.members if m.state == "stale"]
        if stale:
            raise StaleBook(f"{', '.join(stale)}'s {symbol} book is stale: no quote until it "
                            "updates again")
        members = tuple(
            MemberLevels(venue=m.venue,
                         bids=tuple((dec(p), dec(q)) for p, q in m.bids),
                         asks=tuple((dec(p), dec(q)) for p, q in m.asks),
                         taker_fee=dec(m.taker_fee))
            for m in books.members if m.state == "synced")
        if not members:
            states = ", ".join(f"{m.venue} {m.state}" for m in books.members)
            raise StaleBook(f"no member book of {symbol} is in sync ({states})")
        meta = smart.metadata
        return PairBook(symbol=symbol, base=meta.base_asset, quote=meta.quote_asset,
                        members=members)

    def _check_limits(self, account: AccountRow, state: dict, priced: Priced,
                      from_asset: str, to_asset: str, amount_name: str) -> None:
        home = self.config.home
        cap = account.max_notional if account.max_notional is not None \
            else self.config.max_notional
        if cap is not None and priced.home_notional > cap:
            raise LimitExceeded(f"{plain(priced.home_notional)} {home} is past this account's "
                                f"maximum of {plain(cap)} {home} per trade",
                                parameter=amount_name)
        daily = account.daily_volume if account.daily_volume is not None \
            else self.config.daily_volume
        if daily is not None and state["volume"] + priced.home_notional > daily:
            raise LimitExceeded(f"this trade would take today's volume to "
                                f"{plain(state['volume'] + priced.home_notional)} {home}, past "
                                f"the account's daily {plain(daily)} {home}",
                                parameter=amount_name)
        inventory = state["inventory"]
        for asset, delta in ((from_asset, -priced.from_quantity),
                             (to_asset, priced.to_quantity)):
            limit = self.config.inventory_limits.get(asset)
            after = inventory.get(asset, Decimal(0)) + delta
            if limit is not None and abs(after) > limit:
                raise LimitExceeded(f"the desk's {asset} position would be {plain(after)}, past "
                                    f"its limit of {plain(limit)}", parameter=amount_name)
        held = state["balances"].get(to_asset, Decimal(0))
        if held < priced.to_quantity:
            raise InsufficientBalance(f"the account holds {plain(held)} {to_asset}; this quote "
                                      f"needs {plain(priced.to_quantity)}", parameter=amount_name)

    def _issue(self, account: AccountRow, from_asset: str, to_asset: str, priced: Priced,
               markup: Decimal, skew: Decimal, hedges: list[dict]) -> QuoteResponse:
        now_ms = int(self.clock() * 1000)
        expiry = int(self.clock() * 1_000_000) + int(self.config.quote_ttl * 1_000_000)
        detail = {
            "hedges": hedges,
            "cost": plain(priced.cost), "markupBps": plain(markup), "skewBps": plain(skew),
        }
        for _ in range(8):  # two equal quotes in one microsecond: the later expires 1 µs sooner
            key_id, signature = self.signer.sign(
                account.account_id, from_asset, to_asset, priced.from_quantity,
                priced.to_quantity, expiry)
            quote_id = str(uuid.uuid4())
            row = QuoteRow(
                quote_id=quote_id, signature=signature, signing_key_id=key_id,
                account_id=account.account_id, from_asset=from_asset, to_asset=to_asset,
                from_qty=priced.from_quantity, to_qty=priced.to_quantity, expiry_us=expiry,
                state="ACTIVE", created_ms=now_ms, accepted_ms=None,
                home_notional=priced.home_notional, detail=detail)
            try:
                self.store.save_quote(row, audit={
                    "fromAsset": from_asset, "toAsset": to_asset,
                    "fromAssetQuantity": plain(priced.from_quantity),
                    "toAssetQuantity": plain(priced.to_quantity), "expiryTime": expiry,
                    **detail})
                break
            except DuplicateSignature:
                expiry -= 1
        else:  # pragma: no cover - eight identical quotes in a row
            raise AstraError("could not issue a unique quote")
        quote = Quote(account_id=account.account_id, from_asset=from_asset, to_asset=to_asset,
                      from_asset_quantity=priced.from_quantity,
                      to_asset_quantity=priced.to_quantity, expiry_time=expiry,
                      signature=signature)
        return QuoteResponse(quote=quote, quote_id=quote_id)

    # -- accepting --------------------------------------------------------------------------
    async def accept(self, key_id: str, body: AcceptQuote,
                     account_id: str | None = None) -> AcceptedQuote:
        quote = body.quote
        try:
            trade, created = await self._accept(key_id, body, account_id)
        except AstraError as exc:
            self.stats["accepts_refused"] += 1
            await asyncio.to_thread(
                self.store.audit, "ACCEPT_REFUSED",
                account_id=quote.account_id[:64] if isinstance(quote.account_id, str) else None,
                detail={"signature": str(quote.signature)[:64], "code": exc.code,
                        "message": exc.message[:300]})
            raise
        self.stats["trades" if created else "accepts_repeated"] += 1
        if created and self.hedger is not None:
            self.hedger.wake()
        return AcceptedQuote(trade=_convert(trade))

    async def _accept(self, key_id: str, body: AcceptQuote,
                      account_id: str | None) -> tuple[TradeRow, bool]:
        row, account = await asyncio.to_thread(self._accepting, key_id, body, account_id)
        now = self.clock()
        return await asyncio.to_thread(
            self.store.accept, row.quote_id, account_id=account.account_id,
            now_us=int(now * 1_000_000), day=_day(now * 1000),
            daily_limit=account.daily_volume if account.daily_volume is not None
            else self.config.daily_volume,
            inventory_limits=self.config.inventory_limits,
            hedge=self.hedger is not None and bool(row.detail.get("hedges")))

    def _accepting(self, key_id: str, body: AcceptQuote,
                   account_id: str | None) -> tuple[QuoteRow, AccountRow]:
        """The checks before the booking transaction, in one thread hop: the signature
        (against the stored quote's signing key), the account's owner."""
        quote = body.quote  # (the kill switch is read inside the booking transaction)
        row = self.store.quote_by_signature(quote.signature) \
            if isinstance(quote.signature, str) and len(quote.signature) == 64 else None
        if row is not None and row.signing_key_id not in self.signer.key_ids:
            raise InvalidQuoteSignature(
                f"the quote was signed with key {row.signing_key_id!r}, which this gateway no "
                "longer holds (retired, or an ephemeral key before a restart): request a new "
                "quote", parameter="quote")
        if row is None or not self.signer.verify(quote, row.signing_key_id):
            raise InvalidQuoteSignature(parameter="quote")
        if body.quote_id is not None and body.quote_id != row.quote_id:
            raise InvalidParameter("quoteId", "quoteId does not name this quote")
        if account_id is not None and account_id != row.account_id:
            # Another account than the quote's (its own key's): it can never book it.
            _check_account_id(account_id)
            self._owned(key_id, self.store.account(account_id), account_id)
            if row.state == "ACCEPTED":
                raise QuoteAlreadyAccepted(parameter="quote")
            raise InvalidParameter("accountId", "this quote was issued for another account")
        account = self._owned(key_id, self.store.account(row.account_id), row.account_id)
        # The per-trade maximum again: lowered since the quote (a risk decision), it binds
        # the quotes already out too. (The daily volume is checked in the booking itself.)
        cap = account.max_notional if account.max_notional is not None \
            else self.config.max_notional
        # (an ACCEPTED quote is its owner's retry: it gets its trade back, booked before)
        if cap is not None and row.home_notional > cap and row.state == "ACTIVE":
            home = self.config.home
            raise LimitExceeded(f"{plain(row.home_notional)} {home} is past this account's "
                                f"maximum of {plain(cap)} {home} per trade", parameter="quote")
        return row, account

    async def converts(self, key_id: str, account_id: str, limit: int = 100,
                       before_ms: int | None = None) -> ConvertsMessage:
        await self._own(key_id, account_id)
        rows = await asyncio.to_thread(self.store.trades, account_id, limit=limit,
                                       before_ms=before_ms)
        return ConvertsMessage(converts=[_convert(r) for r in rows])


def _hedges(route, priced: Priced) -> list[dict]:
    """The legs that flatten the desk after the trade. The walk's legs deliver what the client
    buys; when the desk's first hop SELLS what the client pays with (a non-home asset such as
    BTC), that leg sells ALL of it, the markup included, so the desk's margin ends in the home
    asset instead of staying behind as an unhedged position in the client's asset."""
    legs = [{"symbol": h.symbol, "side": h.side, "quantity": plain(h.quantity),
             "averagePrice": plain(h.average_price), "fees": plain(h.fees)}
            for h in priced.hedges]
    first = route[0] if route else None
    if legs and first is not None and first.symbol is not None and first.side == "SELL" \
            and legs[0]["symbol"] == first.symbol:
        legs[0]["quantity"] = plain(priced.to_quantity)
    return legs


def _check_account_id(account_id: object) -> None:
    if not isinstance(account_id, str) or ACCOUNT_ID_RE.fullmatch(account_id) is None:
        raise InvalidParameter("accountId", "accountId must be an OTC account id (a UUID)")


def _convert(row: TradeRow) -> Convert:
    return Convert(trade_id=row.trade_id, quote_id=row.quote_id, account_id=row.account_id,
                   from_asset=row.from_asset, to_asset=row.to_asset,
                   from_asset_quantity=row.from_qty, to_asset_quantity=row.to_qty,
                   price=_PRICE.divide(row.to_qty, row.from_qty),
                   time=row.time_ms)


def _request_detail(req: QuoteRequest) -> dict:
    return {"fromAsset": str(req.from_asset)[:16], "toAsset": str(req.to_asset)[:16],
            "fromAmount": None if req.from_amount is None else str(req.from_amount)[:40],
            "toAmount": None if req.to_amount is None else str(req.to_amount)[:40]}
