"""Hedging what the desk sold: each booked trade's legs become routed MARKET orders on the SMART
markets (``astra.routing``), traded with the desk's own venue credentials (``hedge_key``).

One task works through the hedge legs in the store (``PENDING`` and ``SENT``), oldest first:
1. A leg's quantity is rounded down to the coarsest lot of the member venues (the dust stays in
   the desk's inventory, visible there); a leg below every venue's minimum is ``DONE`` with
   nothing filled and says so.
2. Write before send: the leg is marked ``SENT`` with its client order id (``otc<leg>a<try>``)
   before the router sees it, so a gateway that stops mid-send finds it ``SENT`` and asks the
   router again with the SAME id: the router's journal gives back that order instead of a new
   one (one (key, clientOrderId), one parent). A leg is never hedged twice.
3. The router's answer settles the leg and moves the desk's inventory in one transaction
   (``OtcStore.settle_hedge``): filled base in, quote (notional and fees) out, or the reverse.
   What is left unfilled is tried again (a new attempt, a new id, after ``retry_delay``) up to
   ``hedge_attempts`` times; then the leg is ``FAILED``: flagged in ``astra otc status``, the
   audit trail and ``/metrics``. A refused or failed hedge never touches the client's trade.
4. A trade whose legs are all final gets its hedge state (``HEDGED``, ``PARTIAL``, ``FAILED``)
   and, when fully hedged on markets against the home asset, the desk's result: what the client
   paid against what the hedge cost, in the home asset and in bps of the trade's notional.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from decimal import Decimal

from astra.core import AstraError, MissingCredentials, Side
from astra.core._trading import OrderStatus, OrderType, SmartOrder, SmartOrderRequest
from astra.core.credentials import ExchangeCredentials
from astra.marketdata.engine import MarketDataEngine
from astra.routing.router import SmartRouter
from astra.store.otc import HedgeRow, OtcStore

from .assets import plain, quantize_down

__all__ = ["Hedger"]

log = logging.getLogger(__name__)
_ZERO = Decimal(0)
_FINAL = {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
CredentialsLookup = Callable[[str, str], ExchangeCredentials | None]  # (key id, venue)


def _dec(value: float | None) -> Decimal:
    return Decimal(repr(value)) if value else _ZERO


def _tries(leg: HedgeRow) -> int:
    """Tries made once this one is counted (a SENT leg counted its try when it was sent)."""
    return leg.attempts if leg.state == "SENT" else leg.attempts + 1


def _lot_places(lot: float | None) -> int:
    if not lot:
        return 8
    exponent = Decimal(repr(lot)).normalize().as_tuple().exponent
    return max(0, -int(exponent))


class Hedger:
    """Hedges booked trades through ``router`` as ``config.hedge_key`` (module docstring)."""

    def __init__(self, engine: MarketDataEngine, store: OtcStore, router: SmartRouter,
                 credentials: CredentialsLookup, *, key_id: str = "otc-desk",
                 venues: tuple[str, ...] | None = None, slippage_bps: float = 50.0,
                 attempts: int = 3, retry_delay: float = 1.0, home: str = "USDT",
                 usd: str = "USDT", usd_rate: Decimal | None = Decimal(1)) -> None:
        self.engine, self.store, self.router = engine, store, router
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
            if not await self._hedge(leg):
                retry = True
        touched = {leg.trade_id for leg in legs}
        for trade_id in touched:
            await asyncio.to_thread(self._finish_trade, trade_id)
        return self.retry_delay if retry else None

    async def _hedge(self, leg: HedgeRow) -> bool:
        """Try the leg once; True when it is final (DONE or FAILED)."""
        if leg.state == "SENT" and leg.client_order_id and leg.sent_quantity:
            # The last try's outcome, asked again by its own id and quantity: the router's
            # journal answers with that order, nothing is sent twice.
            cid, target = leg.client_order_id, leg.sent_quantity
        else:
            target = await self._rounded(leg.symbol, leg.quantity - (leg.filled or _ZERO))
            if target <= 0:
                await asyncio.to_thread(
                    self.store.settle_hedge, leg.hedge_id, state="DONE", filled=leg.filled or _ZERO,
                    average_price=leg.average_price, fees=leg.fees or _ZERO, inventory={},
                    error=None if leg.filled else "below the venues' lot: kept in inventory")
                return True
            cid = f"otc{leg.hedge_id}a{leg.attempts + 1}"
            await asyncio.to_thread(self.store.update_hedge, leg.hedge_id, state="SENT",
                                    attempts=leg.attempts + 1, client_order_id=cid,
                                    sent_quantity=target)
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
            return await self._failed_try(leg, f"{exc.code}: {exc.message}"[:300])
        assert isinstance(order, SmartOrder)
        return await self._settle(leg, order)

    def _members(self, leg: HedgeRow) -> list[str] | None:
        return list(self.venues) if self.venues else None

    async def _rounded(self, symbol: str, quantity: Decimal) -> Decimal:
        smart = await self.engine.smart_market(symbol)
        lots = [m.metadata.lot_size for v, m in smart.members.items()
                if self.venues is None or v in self.venues]
        places = min((_lot_places(lot) for lot in lots), default=8)
        coarsest = max((_dec(lot) for lot in lots if lot), default=_ZERO)
        rounded = quantize_down(quantity, places)
        if coarsest > 0:
            rounded = (rounded // coarsest) * coarsest
        return rounded

    async def _settle(self, leg: HedgeRow, order: SmartOrder) -> bool:
        report = order.report
        filled = _dec(order.filled_quantity)
        notional = _dec(report.notional) if report else _ZERO
        fees = _dec(report.fees) if report else _ZERO
        total = (leg.filled or _ZERO) + filled
        prior = (leg.average_price or _ZERO) * (leg.filled or _ZERO)
        average = (prior + notional) / total if total else None
        smart = await self.engine.smart_market(leg.symbol)
        base, quote = smart.metadata.base_asset, smart.metadata.quote_asset
        sign = 1 if leg.side == "BUY" else -1
        inventory = {base: sign * filled, quote: -sign * notional - fees} if filled else {}
        unknown = order.status not in _FINAL
        rounded_rest = await self._rounded(leg.symbol, leg.quantity - total)
        done = not unknown and rounded_rest <= 0  # what is left is below the lot: dust
        state = ("DONE" if done else "FAILED" if unknown or _tries(leg) >= self.attempts
                 else "PENDING")
        error = None
        if unknown:  # a child's outcome is not known: never re-sent, a human looks
            error = f"hedge order {order.order_id} status {order.status}: outcome unknown"
        elif not done:
            error = f"filled {plain(total)} of {plain(leg.quantity)}"
        await asyncio.to_thread(
            self.store.settle_hedge, leg.hedge_id, state=state, filled=total,
            average_price=average, fees=(leg.fees or _ZERO) + fees, inventory=inventory,
            parent_order_id=order.order_id, error=error)
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

    async def _failed_try(self, leg: HedgeRow, error: str) -> bool:
        attempts = _tries(leg)
        final = attempts >= self.attempts
        state = "FAILED" if final else "PENDING"
        await asyncio.to_thread(self.store.update_hedge, leg.hedge_id, state=state,
                                attempts=attempts, error=error)
        await asyncio.to_thread(self.store.audit, "HEDGE_FAILED" if final else "HEDGE_RETRY",
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
        bps = pnl / trade.home_notional * 10000 if trade.home_notional else None
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
        against the home asset; else None."""
        flows = _ZERO
        for leg in legs:
            symbol_quote = leg.symbol.rsplit("-", 1)[-1]
            if symbol_quote != self.home:
                return None
            notional = (leg.average_price or _ZERO) * (leg.filled or _ZERO)
            fees = leg.fees or _ZERO
            flows += -(notional + fees) if leg.side == "BUY" else notional - fees
        received = self._home_value(trade.to_asset, trade.to_qty)
        paid = self._home_value(trade.from_asset, trade.from_qty)
        pnl = flows + (received or _ZERO) - (paid or _ZERO)
        return -flows, pnl
