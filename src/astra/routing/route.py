"""A routed order's checked context, and plans on the member books as they are now.

Pure checks and one read of the world (``snapshot``): nothing here sends an order.

- ``check_route``: the request (4xx naming the parameter, before any venue is asked): the SMART
  market, type LIMIT or MARKET, price and quantity positive, finite and bounded,
  ``maxSlippageBps`` in (0, 10000], GTC only with LIMIT, no stopPrice, postOnly or reduceOnly,
  ``venues`` members only, the client order id (``legs.PARENT_CLIENT_ID_RE``), and at least one
  member with credentials for the key (members without are left out and named in the plan).
- ``snapshot``: member books (``MarketDataEngine.member_books``) and each venue's capacity
  (``TradingService.balances``, in parallel; ``capacities`` reads them ahead, e.g. while the
  router waits for books to show a round's fills) into ``plan.plan_order``; the arrival mid is
  the consolidated mid of the synced members' best bid and ask.
- ``refuse``: the 4xx for a plan that cannot do what the order asks: INSUFFICIENT_BALANCE
  (naming each venue's capacity), INSUFFICIENT_LIQUIDITY (nothing inside the bound, or a FOK
  short of the quantity) or UNPROCESSABLE (below every venue's minimums, or a GTC order with
  nothing to take that no member could hold at its price).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from astra.core import (
    CredentialsUnreadable,
    InsufficientBalance,
    InsufficientLiquidity,
    InvalidParameter,
    MissingCredentials,
    Unprocessable,
    VenueUnavailable,
)
from astra.core._trading import OrderType, PlanMember, SmartOrderRequest, TimeInForce
from astra.core.credentials import ExchangeCredentials
from astra.marketdata.engine import MarketDataEngine
from astra.marketdata.smart import MemberBook, SmartMarket
from astra.store.journal import generate_client_order_id
from astra.trading.service import MAX_ORDER_VALUE, TradingService

from .legs import (
    PARENT_CLIENT_ID_MAX,
    PARENT_CLIENT_ID_RE,
    capacity_of,
    dec,
    rest_choice,
    venue_input,
)
from .plan import Plan, consolidated_mid, plan_order

__all__ = [
    "DEFAULT_SLIPPAGE_BPS",
    "MAX_SLIPPAGE_BPS",
    "Capacity",
    "CredsFor",
    "Route",
    "Snapshot",
    "capacities",
    "check_numbers",
    "check_route",
    "refuse",
    "snapshot",
]

DEFAULT_SLIPPAGE_BPS = 100.0  # a MARKET order's bound around the arrival mid when none is given
MAX_SLIPPAGE_BPS = 10_000.0
CredsFor = Callable[[str], ExchangeCredentials]
Capacity = tuple[str, str, Decimal]  # (kind, asset, free): ``legs.capacity_of``


@dataclass
class Route:
    """One request's checked context."""

    key_id: str
    body: SmartOrderRequest
    smart: SmartMarket
    venues: list[str]
    creds: dict[str, ExchangeCredentials]
    skipped: dict[str, str]  # venue -> why it is not planned on
    client_order_id: str
    bound_bps: float | None
    tif: TimeInForce
    capacities: dict[str, tuple[str, Decimal]] = field(default_factory=dict)


@dataclass
class Snapshot:
    """A plan on the member books as they were, with what the planner saw of each member."""

    plan: Plan
    members: list[PlanMember]
    books: list[MemberBook]
    mid: Decimal | None


async def check_route(engine: MarketDataEngine, key_id: str, creds_for: CredsFor,
                      body: SmartOrderRequest) -> Route:
    """The request checked (4xx naming the parameter) and its credentials per member."""
    smart = await engine.smart_market(body.market)
    check_numbers(body)
    if body.type not in (OrderType.LIMIT, OrderType.MARKET):
        raise Unprocessable("SMART orders are LIMIT or MARKET", parameter="type")
    tif = body.time_in_force or TimeInForce.IOC
    if tif == TimeInForce.GTC and body.type != OrderType.LIMIT:
        raise Unprocessable("GTC needs a LIMIT order: the rest rests at its price",
                            parameter="timeInForce")
    for name, flag in (("stopPrice", body.stop_price is not None),
                       ("postOnly", body.post_only), ("reduceOnly", body.reduce_only)):
        if flag:
            raise Unprocessable(f"{name} is not supported on SMART orders", parameter=name)
    members = list(smart.members)
    venues = members if body.venues is None else list(dict.fromkeys(
        v.upper() for v in body.venues))
    if not venues:
        raise InvalidParameter("venues", "venues must name at least one member venue")
    for v in venues:
        if v not in smart.members:
            raise InvalidParameter("venues", f"{str(v)[:16]!r} is not a member of "
                                   f"{smart.symbol} (members: {', '.join(members)})")
    cid = body.client_order_id
    if cid is None:
        cid = "sor" + generate_client_order_id("SIM")[len("astra"):][:PARENT_CLIENT_ID_MAX - 3]
    elif not PARENT_CLIENT_ID_RE.fullmatch(cid):
        raise InvalidParameter("clientOrderId", "SMART orders take 1 to "
                               f"{PARENT_CLIENT_ID_MAX} characters of [A-Za-z0-9_-]: each "
                               "child's id adds 4 (within the venues' 36-character limit)")
    bound = body.max_slippage_bps
    if bound is None and body.type == OrderType.MARKET:
        bound = DEFAULT_SLIPPAGE_BPS
    creds: dict[str, ExchangeCredentials] = {}
    skipped: dict[str, str] = {}
    for v in venues:
        try:
            creds[v] = creds_for(v)
        except (MissingCredentials, CredentialsUnreadable) as exc:
            skipped[v] = f"no usable credentials: {exc.message}"[:200]
    if not creds:
        raise MissingCredentials(
            f"no member venue of {smart.symbol} ({', '.join(venues)}) has credentials for "
            "this API key: store credentials for at least one of them")
    return Route(key_id, body, smart, venues, creds, skipped, cid, bound, tif)


async def snapshot(engine: MarketDataEngine, trading: TradingService, route: Route,
                   quantity: Decimal, arrival_mid: Decimal | None = None,
                   book_wait: float | None = None,
                   read: Mapping[str, Capacity | BaseException] | None = None) -> Snapshot:
    """The member books now, each venue's capacity read in parallel, and the plan on them.
    ``read``: capacities the caller already read (``capacities``) after everything it sent
    had its answer; synced members missing from it are read here."""
    body = route.body
    books = (await engine.member_books(body.market, route.venues, wait=book_wait)).members
    caps = dict(read or {})
    live = [b.venue for b in books
            if b.venue in route.creds and b.state == "synced" and b.venue not in caps]
    caps.update(await capacities(trading, route, live))
    inputs, members = [], []
    route.capacities = {}
    for b in books:
        member = PlanMember(venue=b.venue, market=b.market.symbol, state=b.state,
                            taker_fee=b.taker_fee, reason=route.skipped.get(b.venue))
        cap = caps.get(b.venue) if b.state == "synced" else None  # (read ahead: synced now?)
        if isinstance(cap, BaseException):
            member.reason = "balance unavailable: " + (getattr(cap, "message", None)
                                                       or type(cap).__name__)[:200]
        elif cap is not None:
            kind, asset, free = cap
            member.capacity, member.capacity_asset = float(free), asset
            route.capacities[b.venue] = (kind, free)
            inputs.append(venue_input(b, body.side, kind, free))
        elif b.venue in route.creds:
            member.reason = f"book {b.state}"
        members.append(member)
    if not inputs and not any(b.state == "synced" for b in books):
        states = ", ".join(f"{b.venue} {b.state}" for b in books)
        raise VenueUnavailable("SMART", f"no member book of {body.market} is in sync "
                               f"({states}); nothing was sent")
    mid = arrival_mid
    if mid is None:
        synced = [b for b in books if b.state == "synced"]
        mid = consolidated_mid([dec(b.bids[0][0]) for b in synced if b.bids],
                               [dec(b.asks[0][0]) for b in synced if b.asks])
    if mid is None and route.bound_bps is not None:
        raise InsufficientLiquidity(
            f"no consolidated mid for {body.market} (a side of every member book is "
            "empty): maxSlippageBps has nothing to bound against; nothing was sent",
            parameter="maxSlippageBps")
    plan = plan_order(body.side, quantity, inputs,
                      limit_price=dec(body.price) if body.price is not None else None,
                      arrival_mid=mid,
                      max_slippage_bps=(dec(route.bound_bps) if route.bound_bps is not None
                                        else None))
    return Snapshot(plan, members, books, mid)


async def capacities(trading: TradingService, route: Route,
                     venues: Sequence[str]) -> dict[str, Capacity | BaseException]:
    """Each venue's capacity (``legs.capacity_of``) from its balances, read in parallel now;
    a failed read is its exception."""
    reads = await asyncio.gather(*(_capacity(trading, route, v) for v in venues),
                                 return_exceptions=True)
    return dict(zip(venues, reads, strict=True))


async def _capacity(trading: TradingService, route: Route, code: str) -> Capacity:
    venue, market = trading.venues[code], route.smart.members[code]
    account = None
    if market.kind != "spot" and "swap" in getattr(venue, "balance_accounts", ()):
        account = "swap"
    balances = await trading.balances(route.key_id, route.creds[code], code, account)
    return capacity_of(market.metadata, route.body.side, balances)


def refuse(route: Route, snap: Snapshot) -> None:
    """4xx when the plan cannot do what the order asks; nothing was sent."""
    plan, body = snap.plan, route.body
    why = plan.limited_by
    resting = route.tif == TimeInForce.GTC
    short = plan.unfilled > 0 and route.tif == TimeInForce.FOK
    # The balances cannot pay for it (the books could): refused whole, as a venue refuses
    # an order its balance does not cover, rather than executed in part.
    unaffordable = plan.unfilled > 0 and why == "balance"
    if plan.legs and not short and not unaffordable:
        return
    if resting and why in ("price", "liquidity", "slippage", None):
        # A GTC order may rest whole, if some member can hold it (its price on a tick above
        # zero, its quantity within the lot, minimums and balance): else it would only expire.
        books = [b for b in snap.books if b.venue in route.capacities]
        if rest_choice(books, route.capacities, body.side, dec(body.price),
                       dec(body.quantity)) is not None:
            return
        raise Unprocessable(f"price {body.price:g} cannot rest on any member venue (each "
                            "one's tick, lot, minimums and balance); nothing was sent",
                            parameter="price")
    if why == "balance":
        caps = "; ".join(f"{m.venue} {m.capacity:g} {m.capacity_asset} free"
                         for m in snap.members if m.capacity is not None)
        raise InsufficientBalance(
            f"balance too small across venues for {body.quantity:g} ({caps}); "
            "nothing was sent", parameter="quantity")
    if why == "minimums":
        raise Unprocessable(f"quantity {body.quantity:g} is below every member venue's "
                            "minimum quantity or notional; nothing was sent",
                            parameter="quantity")
    bound = f" (bound {float(plan.price_bound):g})" if plan.price_bound is not None else ""
    what = (f"the books cover {float(plan.quantity):g} of {body.quantity:g} inside the "
            f"order's limits{bound}" if short else f"no liquidity inside the order's "
            f"limits{bound}")
    parameter = {"price": "price", "slippage": "maxSlippageBps"}.get(why or "")
    raise InsufficientLiquidity(f"{what} ({body.time_in_force or 'IOC'}); nothing was sent",
                                parameter=parameter)


def check_numbers(body: SmartOrderRequest) -> None:
    """NaN, infinities, negatives and huge values, before anything else (422 naming them)."""
    if not 0 < body.quantity <= MAX_ORDER_VALUE:
        raise Unprocessable(f"quantity must be a positive number up to {MAX_ORDER_VALUE:g}",
                            parameter="quantity")
    if body.type == OrderType.LIMIT and body.price is None:
        raise Unprocessable("price is required for LIMIT orders", parameter="price")
    if body.type == OrderType.MARKET and body.price is not None:
        raise Unprocessable("price is not allowed for MARKET orders", parameter="price")
    if body.price is not None and not 0 < body.price <= MAX_ORDER_VALUE:
        raise Unprocessable(f"price must be a positive number up to {MAX_ORDER_VALUE:g}",
                            parameter="price")
    bps = body.max_slippage_bps
    if bps is not None and (math.isnan(bps) or not 0 < bps <= MAX_SLIPPAGE_BPS):
        raise Unprocessable(f"maxSlippageBps must be in (0, {MAX_SLIPPAGE_BPS:g}]",
                            parameter="maxSlippageBps")
