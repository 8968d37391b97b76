"""Funding payments and liquidations of perpetual positions, run every flow step by
``PerpTrading.check_triggers``.

Funding: at every funding time (``PerpTrading.funding_interval_ms``, default 8 h, aligned to
multiples of it) each open position pays ``quantity * markPrice * fundingRate`` (the rate and
mark price that ``premiumIndex`` / ``markPrice`` streams publish at that moment, truncated to
ledger units): longs pay when the rate is positive, shorts receive, and the other side of
every payment is the house. Income ``FUNDING_FEE``; ``ACCOUNT_UPDATE`` reason ``FUNDING_FEE``
with the balance only (the docs' rule for crossed positions).

Liquidation: an account whose margin balance (wallet + unrealized PnL at mark) falls below its
maintenance margin loses every open order (canceled), then every position is closed by a
MARKET order (client id ``autoclose-…``, ``o``/``ot`` ``LIQUIDATION`` and ``x`` ``CALCULATED``
on its fills) against the book. When the book cannot absorb the whole position, the house
(the insurance fund) first posts the missing quantity at the mark price (or just inside the
opposite best, hidden orders included, so that it never crosses). A loss beyond the wallet
is refilled by the house (``INSURANCE_CLEAR``). Every step here is a ledger move, so money
stays conserved. Each liquidation order, once matched, is handed to ``on_liquidation`` (the
``forceOrder`` streams).

The trading side is passed in as a ``perp_side.PerpSide``: ``perp`` imports this module, never
the reverse.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING

from .engine import BUY, SELL
from .ledger import HOUSE
from .orders import OrderRequest
from .perp_events import force_order_event
from .perp_positions import MARGIN_ASSET, WALLET
from .spot import walk_cost
from .state import now_ms

if TYPE_CHECKING:
    from .perp_side import PerpSide

__all__ = ["INSURANCE_OWNER", "check_liquidations", "funding_payment", "liquidate",
           "settle_funding"]

INSURANCE_OWNER = -20  # engine owner of the house's liquidity for liquidations


def funding_payment(qty_dp: int, amt: int, mark: Decimal, rate: Decimal) -> int:
    """Ledger units a position of ``amt`` pays (negative: receives), truncated toward 0."""
    value = Decimal(amt).scaleb(-qty_dp) * mark * rate
    return int(value.scaleb(8).to_integral_value(ROUND_DOWN))


def settle_funding(trading: PerpSide, symbol: str) -> None:
    state = trading.states[symbol]
    mp = trading.mark(state)
    mark, rate = Decimal(mp.p), Decimal(mp.r)
    trading.last_funding[symbol] = {"time": now_ms(), "markPrice": mp.p, "fundingRate": mp.r}
    for account, book in list(trading.positions.items()):
        for ps in ("BOTH", "LONG", "SHORT"):
            pos = book.get((symbol, ps))
            if pos is None or not pos.amt:
                continue
            paid = funding_payment(state.market.qty_dp, pos.amt, mark, rate)
            if not paid:
                continue
            trading.ledger.move(WALLET, MARGIN_ASSET, paid, account, HOUSE, allow_negative=True)
            trading.add_income(account, symbol, "FUNDING_FEE", -paid)
            trading.clear_deficit(account, symbol)
            trading.account_update(account, "FUNDING_FEE", [], -paid)


def check_liquidations(trading: PerpSide) -> list[int]:
    """Liquidate every account below its maintenance margin; returns their ids."""
    marks: dict[str, int] | None = None
    out = []
    for account, book in list(trading.positions.items()):
        if not any(p.amt for p in book.values()):
            continue
        if marks is None:
            marks = trading.marks()
        f = trading.figures(account, marks)
        if f.margin_balance < f.maint:
            liquidate(trading, account)
            out.append(account)
    return out


def liquidate(trading: PerpSide, account: int) -> None:
    for symbol in trading.states:
        for order in list(trading.open.get((account, symbol), {}).values()):
            trading.cancel(account, symbol, order.id, None)
    for (symbol, ps), pos in sorted(trading.positions.get(account, {}).items()):
        if pos.amt:
            _close(trading, account, symbol, ps, pos.amt)


def _close(trading: PerpSide, account: int, symbol: str, ps: str, amt: int) -> None:
    state = trading.states[symbol]
    market = state.market
    side = SELL if amt > 0 else BUY
    qty = abs(amt)
    got, _ = walk_cost(state, side, qty, None)
    if got < qty:  # a thin book: the insurance fund posts the rest at the mark price
        engine = state.engine
        mark = trading.mark_units(state)
        # Priced against the best including hidden orders: the post-only check sees them.
        if side == SELL:  # the house buys
            ask = engine.best_resting(SELL)
            price = mark if ask is None else min(mark, ask - market.tick)
        else:
            bid = engine.best_resting(BUY)
            price = mark if bid is None else max(mark, bid + market.tick)
        price = max(market.tick, price // market.tick * market.tick)
        state.place(INSURANCE_OWNER, BUY if side == SELL else SELL, qty - got, price,
                    post_only=True)
    order = trading.force_order(account, OrderRequest(
        symbol=symbol, side=side, type="MARKET", qty=qty, reduce_only=ps == "BOTH",
        position_side=ps,
    ))
    if trading.on_liquidation is not None:  # the public forceOrder streams
        trading.on_liquidation(force_order_event(trading, order))
