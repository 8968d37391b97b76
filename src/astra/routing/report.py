"""What a routed order shows: the parent ``SmartOrder`` with its children and execution report,
recomputed from the journal (``astra.store.routing_journal``), and the dry-run ``SmartPlan``.

Pure: no I/O. The journal is the only truth: a parent's filled quantity is always the sum of
its children's filled quantities as their venues last reported them, never a separate counter
that could drift.

Parent status rule (``parent_status``), first match wins:
- a child whose outcome is not known yet (journaled or sent, no answer) -> ``UNKNOWN``;
- filled the whole quantity -> ``FILLED``;
- canceled by its owner -> ``CANCELED``;
- a child rests (GTC), or the rounds are still running -> ``NEW`` / ``PARTIALLY_FILLED``;
- otherwise the rest expired (IOC, FOK, or a GTC rest that could not be placed) -> ``EXPIRED``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import msgspec

from astra.core._trading import (
    ExecutionReport,
    OrderStatus,
    PlanMember,
    PlannedLeg,
    SmartChild,
    SmartOrder,
    SmartOrderRequest,
    SmartPlan,
    VenueFills,
)
from astra.store.routing_journal import ChildEntry, ParentEntry

from .legs import dec
from .plan import Plan

__all__ = ["child_state", "child_view", "parent_state", "parent_status", "plan_view",
           "slippage_bps", "smart_order", "vs_best_bps"]

_OPEN = (OrderStatus.NEW.value, OrderStatus.PARTIALLY_FILLED.value)
_PENDING = ("INTENT", "SENT", "UNKNOWN")
_EPS = Decimal("1e-12")


def child_state(order_status: str) -> str:
    """The journal state of a child whose venue reported ``order_status``."""
    if order_status == OrderStatus.UNKNOWN:
        return "UNKNOWN"
    return "OPEN" if order_status in _OPEN else "DONE"


def _filled(c: ChildEntry) -> Decimal:
    return dec((c.last_order or {}).get("filledQuantity"))


def _avg(c: ChildEntry) -> Decimal:
    order = c.last_order or {}
    return dec(order.get("averagePrice") or order.get("price") or c.request.get("price"))


def child_view(c: ChildEntry) -> SmartChild:
    order = c.last_order or {}
    if c.state in ("INTENT", "SENT", "UNKNOWN"):
        status = OrderStatus.UNKNOWN
    elif c.state in ("REJECTED", "NOT_SENT"):
        status = OrderStatus.REJECTED
    else:
        status = OrderStatus(order.get("status", OrderStatus.UNKNOWN))
    filled = _filled(c)
    notional = filled * _avg(c)
    error = (c.error or {}).get("message")
    if c.state == "NOT_SENT" and error is None:
        error = "never sent: the gateway stopped before sending it"
    return SmartChild(
        client_order_id=c.client_order_id, venue=c.venue, market=c.market, round=c.round,
        leg=c.leg, side=c.request["side"], time_in_force=c.request["timeInForce"],
        quantity=c.request["quantity"], price=c.request["price"], status=status,
        filled_quantity=float(filled), order_id=order.get("orderId"),
        average_price=order.get("averagePrice"),
        fee=float(notional * dec(c.fee_rate)) if filled else 0.0,
        latency_ms=None if c.latency_ms is None else round(c.latency_ms, 3), error=error)


def parent_status(parent: ParentEntry) -> OrderStatus:
    filled = sum((_filled(c) for c in parent.children), Decimal(0))
    requested = dec(parent.request["quantity"])
    if any(c.state in _PENDING for c in parent.children):
        return OrderStatus.UNKNOWN
    if filled >= requested - _EPS:
        return OrderStatus.FILLED
    if parent.canceled:
        return OrderStatus.CANCELED
    if parent.state == "EXECUTING" or any(c.state == "OPEN" for c in parent.children):
        return OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.NEW
    return OrderStatus.EXPIRED


def parent_state(parent: ParentEntry) -> str:
    """``OPEN`` while a child rests or has an unknown outcome, else ``DONE``."""
    live = any(c.state in (*_PENDING, "OPEN") for c in parent.children)
    return "OPEN" if live else "DONE"


def slippage_bps(side: str, price: Decimal | None, mid: Decimal | None) -> float | None:
    """``price`` against ``mid`` in bps, positive when worse for the taker."""
    if price is None or not mid:
        return None
    diff = price - mid if side == "BUY" else mid - price
    return float(diff / mid * 10_000)


def vs_best_bps(side: str, net: Decimal | None, best: Decimal | None) -> float | None:
    """The routed net price against the best single venue's, positive when routing did better."""
    if net is None or not best:
        return None
    diff = best - net if side == "BUY" else net - best
    return float(diff / best * 10_000)


def smart_order(parent: ParentEntry) -> SmartOrder:
    req = msgspec.convert(parent.request, SmartOrderRequest)
    children = [child_view(c) for c in parent.children]
    by_venue: dict[str, list[Decimal]] = {}
    for c in parent.children:
        filled = _filled(c)
        if filled:
            row = by_venue.setdefault(c.venue, [Decimal(0)] * 3)
            notional = filled * _avg(c)
            row[0] += filled
            row[1] += notional
            row[2] += notional * dec(c.fee_rate)
    qty = sum((r[0] for r in by_venue.values()), Decimal(0))
    notional = sum((r[1] for r in by_venue.values()), Decimal(0))
    fees = sum((r[2] for r in by_venue.values()), Decimal(0))
    avg = notional / qty if qty else None
    net = ((notional + fees if req.side == "BUY" else notional - fees) / qty) if qty else None
    plan = parent.plan
    mid = dec(plan.get("arrivalMid")) or None
    best = dec(plan.get("bestSingleNetPrice")) or None
    report = ExecutionReport(
        filled_quantity=float(qty), notional=float(notional), fees=float(fees),
        rounds=max((c.round for c in parent.children), default=0),
        fills=[VenueFills(venue=v, quantity=float(r[0]), notional=float(r[1]), fee=float(r[2]),
                          average_price=float(r[1] / r[0])) for v, r in by_venue.items()],
        average_price=_f(avg), net_average_price=_f(net), arrival_mid=_f(mid),
        slippage_bps=slippage_bps(req.side, avg, mid),
        best_single_venue=plan.get("bestSingleVenue"), best_single_net_price=_f(best),
        vs_best_single_bps=vs_best_bps(req.side, net, best))
    return SmartOrder(
        order_id=parent.parent_id, client_order_id=parent.client_order_id, market=parent.market,
        side=req.side, type=req.type, quantity=req.quantity, filled_quantity=float(qty),
        status=parent_status(parent), price=req.price, average_price=_f(avg),
        time_in_force=req.time_in_force, created_at=parent.created_at,
        updated_at=parent.updated_at, venues=plan.get("venues"),
        max_slippage_bps=plan.get("maxSlippageBps"), children=children, report=report)


def plan_view(req: SmartOrderRequest, plan: Plan, members: Sequence[PlanMember]) -> SmartPlan:
    best_net = plan.best_single_net_price
    return SmartPlan(
        market=req.market, side=req.side, type=req.type, requested=req.quantity,
        quantity=float(plan.quantity), unfilled=float(plan.unfilled),
        legs=[PlannedLeg(venue=leg.venue, market=leg.market, quantity=float(leg.quantity),
                         limit_price=float(leg.limit_price),
                         average_price=float(leg.average_price), notional=float(leg.notional),
                         fee=float(leg.fee)) for leg in plan.legs],
        members=list(members), fees=float(plan.fees), dry_run=True,
        time_in_force=req.time_in_force,
        average_price=_f(plan.average_price), net_average_price=_f(plan.net_average_price),
        arrival_mid=_f(plan.arrival_mid),
        slippage_bps=_f(plan.slippage_bps), best_single_venue=plan.best_single_venue,
        best_single_net_price=_f(best_net),
        vs_best_single_bps=vs_best_bps(req.side, plan.net_average_price, best_net),
        price_bound=_f(plan.price_bound), limited_by=plan.limited_by)


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)
