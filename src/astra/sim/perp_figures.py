"""Margin figures of perpetual accounts and the margin check of a new order.

Invariants (the margin model is in ``perp.py``):
- Every figure is an exact integer of ledger units of ``MARGIN_ASSET``; margin is computed
  from positions, open orders and the mark price, never reserved, so nothing here moves money
  (``check_margin`` only raises).
- A position's initial margin is its notional at mark / leverage and its maintenance margin
  notional * ``MAINT_PERMILLE`` / 1000, both rounded up.
- Open-order margin counts only orders that open exposure and rest in the book (a LIMIT
  order, a triggered stop-limit), plus the ``extra`` order being checked whatever its type;
  in one-way mode each side is first netted against the position it would close, and the
  larger side counts.
- ``check_margin`` rejects an opening order the available balance cannot cover (its added
  margin plus its taker fee: -2019) or one that grows the position past the leverage
  bracket's cap (-2027).

The trading side is passed in as a ``perp_side.PerpSide``: ``perp`` imports this module, never
the reverse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .engine import BUY
from .orders import FINAL, STOP_TYPES, OrderError, UserOrder
from .perp_positions import (
    MAINT_PERMILLE,
    MARGIN_ASSET,
    WALLET,
    Figures,
    ceil_div,
    in_book,
    is_reduce,
    max_notional,
    units,
    value_at,
)
from .spot import walk_cost

if TYPE_CHECKING:
    from .perp_side import PerpSide

__all__ = ["account_figures", "check_margin", "order_im", "order_notional", "position_figures",
           "wallet_balance"]


def position_figures(trading: PerpSide, account: int, symbol: str, ps: str,
                     mark: int) -> Figures:
    """uPnL, initial and maintenance margin of one position (wallet left at 0) at the
    mark price ``mark`` (``mark_e8``)."""
    pos = trading.positions.get(account, {}).get((symbol, ps))
    if pos is None or not pos.amt:
        return Figures()
    market = trading.states[symbol].market
    value = value_at(market, pos.amt, mark)
    notional = abs(value)
    signed_cost = pos.cost if pos.amt > 0 else -pos.cost
    return Figures(
        upnl=value - units(market, signed_cost),
        pos_im=ceil_div(notional, trading.leverage(account, symbol)),
        maint=ceil_div(notional * MAINT_PERMILLE, 1000),
    )


def wallet_balance(trading: PerpSide, account: int) -> int:
    """The perp wallet balance: free plus locked (isolated margin set aside)."""
    free, locked = trading.ledger.balances(WALLET, account).get(MARGIN_ASSET, (0, 0))
    return free + locked


def account_figures(trading: PerpSide, account: int,
                    marks: dict[str, int] | None = None) -> Figures:
    """Every figure of ``account``, at ``marks`` (``PerpTrading.marks``) or the current mark."""
    out = Figures(wallet=wallet_balance(trading, account))
    held = {s for (s, _), p in trading.positions.get(account, {}).items() if p.amt}
    for symbol, state in trading.states.items():
        if symbol in held:
            mark = marks[symbol] if marks is not None else trading.mark_e8(state)
            for ps in ("BOTH", "LONG", "SHORT"):
                f = position_figures(trading, account, symbol, ps, mark)
                out.upnl += f.upnl
                out.pos_im += f.pos_im
                out.maint += f.maint
        if trading.open.get((account, symbol)):
            out.order_im += sum(order_im(trading, account, symbol, ps)
                                for ps in trading.sides_of(account))
    out.isolated = trading.ledger.locked(WALLET, account, MARGIN_ASSET)
    return out


def order_im(trading: PerpSide, account: int, symbol: str, ps: str,
             extra: UserOrder | None = None, without: UserOrder | None = None) -> int:
    """Initial margin of the open orders on one position side, with ``extra`` counted
    (whatever its type) and ``without`` left out."""
    buy_q = buy_n = sell_q = sell_n = 0
    orders = [o for o in trading.open.get((account, symbol), {}).values()
              if o is not extra and o is not without]
    if extra is not None:
        orders.append(extra)
    for o in orders:
        if o.position_side != ps or is_reduce(o) or o.status in FINAL:
            continue
        if o is not extra and (o.exec_type != "LIMIT" or not in_book(o)):
            continue  # market orders are transient; untriggered stops hold no margin
        q, n = order_notional(trading, o)
        if o.side == BUY:
            buy_q, buy_n = buy_q + q, buy_n + n
        else:
            sell_q, sell_n = sell_q + q, sell_n + n
    if ps == "LONG":
        sell_n = 0
    elif ps == "SHORT":
        buy_n = 0
    else:  # one-way: each side first closes the opposite position
        amt = trading.amount(account, symbol, ps)
        if buy_q:
            buy_n = buy_n * max(0, buy_q - max(0, -amt)) // buy_q
        if sell_q:
            sell_n = sell_n * max(0, sell_q - max(0, amt)) // sell_q
    market = trading.states[symbol].market
    return ceil_div(units(market, max(buy_n, sell_n)), trading.leverage(account, symbol))


def order_notional(trading: PerpSide, order: UserOrder) -> tuple[int, int]:
    """(quantity, notional) an order would trade: its limit price, the book for a market
    order, the trigger reference for a stop still waiting."""
    state = order.state
    qty = order.remaining
    if order.exec_type == "LIMIT":
        return qty, qty * order.price
    if order.type in STOP_TYPES and not order.triggered:
        ref = order.stop_price or order.activation_price
        if ref is None:
            last = state.last_trade()
            ref = last.price if last is not None else trading.mark_units(state)
        return qty, qty * ref
    got, cost = walk_cost(state, order.side, qty, None)
    return qty, cost + (qty - got) * trading.mark_units(state)


def check_margin(trading: PerpSide, order: UserOrder) -> None:
    """Reject an opening order the account cannot margin (-2019) or that grows the position
    past what its leverage allows (-2027)."""
    account, symbol, ps = order.account, order.symbol, order.position_side
    market = order.state.market
    without = order_im(trading, account, symbol, ps, without=order)
    added = order_im(trading, account, symbol, ps, extra=order) - without
    qty, notional = order_notional(trading, order)
    fee = ceil_div(units(market, notional) * trading.taker_ppm, 1_000_000)
    # The figures count the order itself once it rests (a triggered stop-limit): not here.
    available = (account_figures(trading, account).available
                 + order_im(trading, account, symbol, ps) - without)
    if added > 0 and available < added + fee:
        raise OrderError(-2019, "Margin is insufficient.")
    amt = trading.amount(account, symbol, ps)
    after = abs(amt + (qty if order.side == BUY else -qty))
    cap = max_notional(trading.leverage(account, symbol)) * 10 ** (market.price_dp + market.qty_dp)
    if after > abs(amt) and qty and after * (notional // qty) > cap:
        raise OrderError(-2027, "Exceeded the maximum allowable position at current leverage.")
