"""Hedging what the desk sold: each booked trade's legs become routed MARKET orders on the SMART
markets (``astra.routing``), traded with the desk's own venue credentials (``hedge_key``).

One task works through the hedge legs in the store (``PENDING`` and ``SENT``), oldest first:
1. A leg's quantity is rounded down to the coarsest lot of the member venues (the dust stays in
   the desk's inventory, visible there); a leg below every venue's minimum is ``DONE`` with
   nothing filled and says so.
2. Claim, write before send: the leg moves PENDING -> ``SENT`` with its client order id
   (``otc<leg>a<try>``) in one compare-and-set (``OtcStore.update_hedge(expect=...)``), so of
   several gateways' hedgers on one database exactly one sends it, and a gateway that stops
   mid-send leaves it ``SENT``.
3. A ``SENT`` leg is never placed under a new id while its order may exist: its order is READ
   back from the router's journal by its id (``SmartRouter.get``: no Conflict when
   ``venues`` or the slippage changed since). An order still executing, or with a child whose
   outcome is unknown, leaves the leg ``SENT`` (asked again each ``retry_delay``: the router's
   reconciliation decides; nothing is booked from a partial answer). No order under its id
   (the router never saw it): it is sent with that same id, once the leg is older than
   ``lease_ms`` (another gateway may be about to send it). A refusal before the router
   journaled anything is a failed try.
   A final answer settles the leg and moves the desk's inventory in one transaction
   (``OtcStore.settle_hedge``, conditional on the leg still being ``SENT`` under that id, so
   one order's fills move the inventory once): filled base in, quote (notional and fees) out,
   or the reverse. What is left unfilled is tried again (a new attempt, a new id: the previous
   order is final) up to ``hedge_attempts`` times; then the leg is ``FAILED``: flagged in
   ``astra otc status``, the audit trail and ``/metrics``. A refused or failed hedge never
   touches the client's trade. The kill switch does not stop the hedger: hedging reduces risk.
4. A trade whose legs are all final gets its hedge state (``HEDGED``, ``PARTIAL``, ``FAILED``)
   and, when fully hedged on markets against the home asset, the desk's result: what the client
   paid against what the hedge cost (the dust below the lot marked at the leg's price), in the
   home asset and in bps of the trade's notional.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from decimal import Decimal

from astra.core import AstraError, MissingCredentials, Side
from astra.core._trading import OrderStatus, OrderType, SmartOrder, SmartOrderRequest
from astra.core.credentials import ExchangeCredentials
from astra.marketdata.engine import MarketDataEngine
from astra.routing.legs import dec
from astra.routing.router import SmartRouter
from astra.store.otc import HedgeRow, OtcStore

from .assets import plain, quantize_down

__all__ = ["Hedger"]

log = logging.getLogger(__name__)
_ZERO = Decimal(0)
BPS_PLACES = Decimal("0.0001")  # the desk's result in bps, to 1/10,000 of a basis point
_FINAL = {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
CredentialsLookup = Callable[[str, str], ExchangeCredentials | None]  # (key id, venue)


def _tries(leg: HedgeRow) -> int:
    """Tries made once this one is counted (a SENT leg counted its try when it was sent)."""
    return leg.attempts if leg.state == "SENT" else leg.attempts + 1


class Hedger:
    """Hedges booked trades through ``router`` as ``config.hedge_key`` (module docstring)."""

    def __init__(self, engine: MarketDataEngine, store: OtcStore, router: SmartRouter,
                 credentials: CredentialsLookup, *, key_id: str = "otc-desk",
                 venues: tuple[str, ...] | None = None, slippage_bps: float = 50.0,
                 attempts: int = 3, retry_delay: float = 1.0, home: str = "USDT",
                 usd: str = "USDT", usd_rate: Decimal | None = Decimal(1),
                 lease_ms: int = 60_000, clock_ms: Callable[[], int] | None = None) -> None:
        self.engine, self.store, self.router = engine, store, router
        # A SENT leg with no order under its id is sent again (same id) only once it is this
        # old: another gateway may have claimed it and be about to hand it to the router.
        self.lease_ms = lease_ms
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.credentials, self.key_id, self.venues = credentials, key_id, venues
        self.slippage_bps, self.attempts, self.retry_delay = slippage_bps, attempts, retry_delay
        self.home, self.usd, self.usd_rate = home, usd, usd_rate
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.idle = asyncio.Event()  # set while nothing is pending (tests and the benchmark)
        self.failed = 0  # legs flagged FAILED by this process (metrics)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        self.idle.clear()
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def creds_for(self, venue: str) -> ExchangeCredentials:
        creds = self.credentials(self.key_id, venue)
        if creds is None:
            raise MissingCredentials(f"the OTC desk ({self.key_id}) has no {venue} "
                                     "credentials to hedge with", venue=venue)
        return creds

    async def _run(self) -> None:
        while True:
            try:
                delay = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup: log, wait, try again; never die silently
                log.exception("OTC hedger pass failed")
                delay = self.retry_delay
            if delay is None:
                self.idle.set()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay if delay is not None else 5.0)

    async def run_once(self) -> float | None:
        """One pass over the open legs; the seconds until a retry is due (None: nothing left)."""
        legs = await asyncio.to_thread(self.store.hedges, states=("PENDING", "SENT"))
        retry = False
        for leg in legs:
            try:
                final = await self._hedge(leg)
            except asyncio.CancelledError:
                raise
            except Exception:  # one leg's trouble (a database hiccup) must not stall the rest
                log.exception("OTC hedge leg %s: pass failed", leg.hedge_id)
                final = False
            retry = retry or not final
        # Every trade still PENDING, not only this pass's: a gateway that settled a trade's
        # last leg and stopped before finishing it leaves it for the next pass to finish.
        touched = dict.fromkeys([leg.trade_id for leg in legs]) | dict.fromkeys(
            await asyncio.to_thread(self.store.trade_ids, "PENDING"))
        for trade_id in touched:
            await asyncio.to_thread(self._finish_trade, trade_id)
        return self.retry_delay if retry else None

    async def _hedge(self, leg: HedgeRow) -> bool:
        """Try the leg once; True when it is final (DONE or FAILED)."""
        if leg.state == "SENT" and leg.client_order_id:
            return await self._ask_again(leg)
        try:
            target = await self._rounded(leg.symbol, leg.quantity - (leg.filled or _ZERO))
        except AstraError as exc:  # its market unknown, unlisted: a try, nothing was sent
            return await self._failed_try(leg, None, f"{exc.code}: {exc.message}"[:300])
        if target <= 0:
            await asyncio.to_thread(
                self.store.settle_hedge, leg.hedge_id, state="DONE", filled=leg.filled or _ZERO,
                average_price=leg.average_price, fees=leg.fees or _ZERO, inventory={},
                error=None if leg.filled else "below the venues' lot: kept in inventory",
                expect={"state": leg.state, "attempts": leg.attempts})
            return True
        cid = f"otc{leg.hedge_id}a{leg.attempts + 1}"
        # The claim: of several hedgers (gateway processes) on one database, one sends.
        claimed = await asyncio.to_thread(
            self.store.update_hedge, leg.hedge_id,
            expect={"state": leg.state, "attempts": leg.attempts}, state="SENT",
            attempts=leg.attempts + 1, client_order_id=cid, sent_quantity=target, error=None)
        if not claimed:
            return False  # another hedger took it: read again on the next pass
        return await self._send(leg, cid, target)

    async def _send(self, leg: HedgeRow, cid: str, target: Decimal) -> bool:
        await asyncio.to_thread(self.store.audit, "HEDGE_SENT", trade_id=leg.trade_id,
                                detail={"hedgeId": leg.hedge_id, "symbol": leg.symbol,
                                        "side": leg.side, "quantity": plain(target),
                                        "clientOrderId": cid})
        body = SmartOrderRequest(market=leg.symbol, side=Side(leg.side), type=OrderType.MARKET,
                                 quantity=float(target), client_order_id=cid,
                                 max_slippage_bps=self.slippage_bps, venues=self._members(leg))
        try:
            order = await self.router.place(self.key_id, self.creds_for, body)
        except AstraError as exc:
            error = f"{exc.code}: {exc.message}"[:300]
            if await asyncio.to_thread(self._journaled, cid) is not None:
                # The router journaled the order: its outcome is the router's to tell, and
                # a new id would send a second order. Asked again on the next pass.
                await self._note(leg, cid, error)
                return False
            # Books not in sync yet (a gateway just started), a venue down or rate-limited:
            # no try is spent, the leg waits for the next pass under the same id.
            transient = exc.status in (429, 502, 503, 504)
            return await self._failed_try(leg, cid, error, transient=transient)
        assert isinstance(order, SmartOrder)
        return await self._settle(leg, cid, order)

    def _journaled(self, cid: str):
        return self.router.journal.by_client_id(self.key_id, cid)

    async def _ask_again(self, leg: HedgeRow) -> bool:
        """A leg left ``SENT`` (a stopped gateway, an error, an outcome not yet known): its
        order is READ from the router's journal by its client order id, never placed again
        (a changed ``venues``/slippage would make the router answer Conflict, and a new id
        would hedge twice). No order under that id: the router never saw it, so it is sent
        with that same id, once the leg is older than ``lease_ms`` (another gateway may be
        about to send it) and this hedger has taken it over."""
        cid = leg.client_order_id
        assert cid is not None
        parent = await asyncio.to_thread(self._journaled, cid)
        if parent is not None:
            try:
                order = await self.router.get(self.key_id, self.creds_for, leg.symbol,
                                              parent.parent_id)
            except AstraError as exc:
                await self._note(leg, cid, f"{exc.code}: {exc.message}"[:300])
                return False
            return await self._settle(leg, cid, order)
        if self.clock_ms() - leg.updated_ms < self.lease_ms:
            return False
        target = leg.sent_quantity
        if target is None:  # never sent (no order under its id): what is left, rounded
            target = await self._rounded(leg.symbol, leg.quantity - (leg.filled or _ZERO))
        if target <= 0:
            await asyncio.to_thread(
                self.store.settle_hedge, leg.hedge_id, state="DONE", filled=leg.filled or _ZERO,
                average_price=leg.average_price, fees=leg.fees or _ZERO, inventory={},
                error=None if leg.filled else "below the venues' lot: kept in inventory",
                expect={"state": "SENT", "client_order_id": cid})
            return True
        taken = await asyncio.to_thread(
            self.store.update_hedge, leg.hedge_id,
            expect={"state": "SENT", "client_order_id": cid, "updated_ms": leg.updated_ms},
            sent_quantity=target)
        if not taken:
            return False
        return await self._send(leg, cid, target)

    async def _note(self, leg: HedgeRow, cid: str, error: str) -> None:
        """The leg stays SENT (its order's outcome is not known yet), saying why."""
        await asyncio.to_thread(self.store.update_hedge, leg.hedge_id,
                                expect={"state": "SENT", "client_order_id": cid}, error=error)

    def _members(self, leg: HedgeRow) -> list[str] | None:
        return list(self.venues) if self.venues else None

    async def _rounded(self, symbol: str, quantity: Decimal) -> Decimal:
        smart = await self.engine.smart_market(symbol)
        # Down to the coarsest member's lot, so every venue can take any slice of it.
        lot = max((dec(m.metadata.lot_size) for v, m in smart.members.items()
                   if self.venues is None or v in self.venues), default=_ZERO)
        return (quantity // lot) * lot if lot > 0 else quantize_down(quantity, 8)

    async def _settle(self, leg: HedgeRow, cid: str, order: SmartOrder) -> bool:
        if order.status not in _FINAL:
            # Still executing elsewhere, or a child's outcome unknown: the fills are not final,
            # so nothing is booked and nothing re-sent; the router's journal is asked again.
            await self._note(leg, cid, f"hedge order {order.order_id} status {order.status}: "
                             "outcome not known yet")
            return False
        report = order.report
        filled = dec(order.filled_quantity)
        notional = dec(report.notional) if report else _ZERO
        fees = dec(report.fees) if report else _ZERO
        total = (leg.filled or _ZERO) + filled
        prior = (leg.average_price or _ZERO) * (leg.filled or _ZERO)
        average = (prior + notional) / total if total else None
        smart = await self.engine.smart_market(leg.symbol)
        base, quote = smart.metadata.base_asset, smart.metadata.quote_asset
        sign = 1 if leg.side == "BUY" else -1
        inventory = {base: sign * filled, quote: -sign * notional - fees} if filled else {}
        rounded_rest = await self._rounded(leg.symbol, leg.quantity - total)
        done = rounded_rest <= 0  # what is left is below the lot: dust
        state = "DONE" if done else "FAILED" if _tries(leg) >= self.attempts else "PENDING"
        error = None if done else f"filled {plain(total)} of {plain(leg.quantity)}"
        settled = await asyncio.to_thread(
            self.store.settle_hedge, leg.hedge_id, state=state, filled=total,
            average_price=average, fees=(leg.fees or _ZERO) + fees, inventory=inventory,
            parent_order_id=order.order_id, error=error,
            expect={"state": "SENT", "client_order_id": cid})
        if not settled:  # another hedger booked this order's answer already
            return True
        await asyncio.to_thread(self.store.audit, "HEDGE_FILL" if filled else "HEDGE_EMPTY",
                                trade_id=leg.trade_id,
                                detail={"hedgeId": leg.hedge_id, "orderId": order.order_id,
                                        "status": str(order.status), "filled": plain(filled),
                                        "notional": plain(notional), "fees": plain(fees),
                                        "state": state})
        if state == "FAILED":
            self.failed += 1
            log.warning("OTC hedge leg %s flagged FAILED: %s", leg.hedge_id, error)
        return state != "PENDING"

    async def _failed_try(self, leg: HedgeRow, cid: str | None, error: str, *,
                          transient: bool = False) -> bool:
        """A try that sent nothing: the router refused the order before journaling it (the
        leg SENT under ``cid``), or the leg could not be prepared (still PENDING: None).
        ``transient`` (503-like: nothing wrong with the leg itself): not counted as a try."""
        attempts = _tries(leg) - (1 if transient and leg.state == "PENDING" else 0)
        final = not transient and attempts >= self.attempts
        state = "FAILED" if final else "PENDING"
        expect = ({"state": "SENT", "client_order_id": cid} if cid is not None
                  else {"state": "PENDING", "attempts": leg.attempts})
        if not await asyncio.to_thread(self.store.update_hedge, leg.hedge_id, expect=expect,
                                       state=state, attempts=attempts, error=error):
            return True
        kind = "HEDGE_FAILED" if final else "HEDGE_WAIT" if transient else "HEDGE_RETRY"
        await asyncio.to_thread(self.store.audit, kind,
                                trade_id=leg.trade_id,
                                detail={"hedgeId": leg.hedge_id, "error": error,
                                        "attempts": attempts})
        if final:
            self.failed += 1
            log.warning("OTC hedge leg %s flagged FAILED: %s", leg.hedge_id, error)
        return final

    def _finish_trade(self, trade_id: str) -> None:
        legs = self.store.hedges(trade_id=trade_id)
        if any(leg.state in ("PENDING", "SENT") for leg in legs):
            return
        trade = self.store.trade(trade_id)
        if trade is None or trade.hedge_state != "PENDING":
            return
        if any(leg.state == "FAILED" for leg in legs):
            state = "FAILED" if not any(leg.filled for leg in legs) else "PARTIAL"
            self.store.finish_trade(trade_id, hedge_state=state)
            return
        result = self._result(trade, legs)
        if result is None:
            self.store.finish_trade(trade_id, hedge_state="HEDGED")
            return
        cost, pnl = result
        bps = (pnl / trade.home_notional * 10000).quantize(BPS_PLACES) \
            if trade.home_notional else None
        self.store.finish_trade(trade_id, hedge_state="HEDGED", hedge_cost=cost,
                                result_home=pnl, result_bps=bps)
        self.store.audit("HEDGED", trade_id=trade_id,
                         detail={"hedgeCost": plain(cost), "resultHome": plain(pnl),
                                 "resultBps": plain(bps) if bps is not None else None})

    def _home_value(self, asset: str, amount: Decimal) -> Decimal | None:
        if asset == self.home:
            return amount
        if asset == "USD" and self.usd == self.home and self.usd_rate:
            return amount / self.usd_rate
        return None

    def _result(self, trade, legs: list[HedgeRow]) -> tuple[Decimal, Decimal] | None:
        """(net home the hedge legs paid, the desk's result in home) when every leg trades
        against the home asset; else None. A leg's dust (its quantity below the venues' lot,
        left in the inventory) is marked at the leg's average price (the quote's expected one
        when nothing filled): the desk still owes the base it did not buy, still holds the base
        it did not sell, so the result is not flattered by what was not hedged."""
        quoted = None
        flows = marks = _ZERO
        for leg in legs:
            symbol_quote = leg.symbol.rsplit("-", 1)[-1]
            if symbol_quote != self.home:
                return None
            filled = leg.filled or _ZERO
            notional = (leg.average_price or _ZERO) * filled
            fees = leg.fees or _ZERO
            flows += -(notional + fees) if leg.side == "BUY" else notional - fees
            dust = leg.quantity - filled
            if dust > 0:
                price = leg.average_price
                if price is None:
                    if quoted is None:
                        q = self.store.quote(trade.quote_id)
                        quoted = list((q.detail if q else {}).get("hedges") or ())
                    found = quoted[leg.leg] if leg.leg < len(quoted) else {}
                    price = Decimal(str(found.get("averagePrice") or 0))
                marks += -dust * price if leg.side == "BUY" else dust * price
        received = self._home_value(trade.to_asset, trade.to_qty)
        paid = self._home_value(trade.from_asset, trade.from_qty)
        pnl = flows + marks + (received or _ZERO) - (paid or _ZERO)
        return -flows, pnl
