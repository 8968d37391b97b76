"""The futures user-data stream payloads (``ORDER_TRADE_UPDATE``, ``ACCOUNT_UPDATE``,
``ACCOUNT_CONFIG_UPDATE``), field for field as the futures docs show them.

Choices the docs leave open: ``o`` is the order's type until a conditional order triggers and
the type it entered the book as afterwards (``ot`` keeps the original); ``N``/``n`` are pushed
only with a fill ("will not push if no commission"); a liquidation order (client id
``autoclose-…``) reports ``o``/``ot`` ``LIQUIDATION`` and its fills ``x`` ``CALCULATED``;
``b``/``a`` are the account's resting buy/sell notional on the symbol.

The public ``forceOrder`` event of a liquidation order reports the order as it is (``o``
``MARKET``, ``f`` its time in force, as ``forceOrders`` does); ``p`` and ``ap`` are both its
average fill price (a market order has no limit price, and ``"0"`` would read as a liquidation
at zero); ``l`` is its last fill's quantity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from astra.venues.aster import schemas as wire

from .engine import BUY
from .ledger import format_amount
from .markets import format_fixed
from .orders import UserOrder
from .perp_positions import LIQUIDATION_PREFIX, WALLET, in_book
from .state import now_ms

if TYPE_CHECKING:
    from .perp_side import PerpSide

__all__ = ["account_update", "config_update", "force_order_event", "order_trade_update"]


def order_trade_update(trading: PerpSide, order: UserOrder, exec_type: str,
                       trade: dict | None) -> dict:
    m = order.state.market
    liquidation = order.client_id.startswith(LIQUIDATION_PREFIX)
    kind = "LIQUIDATION" if liquidation else (order.exec_type if order.triggered else order.type)
    bids = asks = 0
    for o in trading.open.get((order.account, order.symbol), {}).values():
        if o.exec_type == "LIMIT" and in_book(o):
            if o.side == BUY:
                bids += o.price * o.remaining
            else:
                asks += o.price * o.remaining
    row = {
        "s": m.symbol, "c": order.client_id, "S": order.side_name, "o": kind,
        "f": order.tif, "q": m.format_qty(order.orig_qty),
        "p": m.format_price(order.price or 0), "ap": order.avg_price(),
        "sp": m.format_price(order.stop_price or 0),
        "x": "CALCULATED" if liquidation and trade else exec_type, "X": order.status,
        "i": order.id, "l": trade["qty"] if trade else "0",
        "z": m.format_qty(order.executed), "L": trade["price"] if trade else "0",
    }
    if trade is not None:
        row.update(N=trade["commissionAsset"], n=trade["commission"])
    row.update({
        "T": order.update_time, "t": trade["id"] if trade else 0,
        "b": format_fixed(bids, m.price_dp + m.qty_dp),
        "a": format_fixed(asks, m.price_dp + m.qty_dp),
        "m": trade["maker"] if trade else False, "R": order.reduce_only,
        "wt": order.working_type, "ot": "LIQUIDATION" if liquidation else order.type,
        "ps": order.position_side, "cp": order.close_position,
    })
    if order.type == "TRAILING_STOP_MARKET":
        row.update(AP=m.format_price(order.activation_price or 0), cr=order.callback_rate)
    row["rp"] = trade["realizedPnl"] if trade else "0"
    now = now_ms()
    return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": order.update_time, "o": row}


def account_update(trading: PerpSide, account: int, reason: str,
                   positions: list[tuple[str, str]], change: int, asset: str) -> dict:
    """``B`` carries ``asset``; ``P`` the given (symbol, positionSide) positions."""
    now = now_ms()
    wallet = sum(trading.ledger.balances(WALLET, account).get(asset, (0, 0)))
    rows = []
    for symbol, ps in positions:
        state = trading.states[symbol]
        pos = trading.peek(account, symbol, ps)
        f = trading.position_figures(account, symbol, ps, trading.mark_e8(state))
        rows.append({
            "s": symbol, "pa": state.market.format_qty(pos.amt),
            "ep": pos.entry(state.market), "cr": format_amount(pos.realized),
            "up": format_amount(f.upnl),
            "mt": "isolated" if trading.margin_type(account, symbol) == "ISOLATED" else "cross",
            "iw": "0", "ps": ps,
        })
    return {
        "e": "ACCOUNT_UPDATE", "E": now, "T": now,
        "a": {
            "m": reason,
            "B": [{"a": asset, "wb": format_amount(wallet), "cw": format_amount(wallet),
                   "bc": format_amount(change)}],
            "P": rows,
        },
    }


def config_update(body: dict) -> dict:
    """``body`` is ``{"ac": {"s", "l"}}`` (leverage) or ``{"ai": {"j", "f", "d"}}``."""
    now = now_ms()
    return {"e": "ACCOUNT_CONFIG_UPDATE", "E": now, "T": now, **body}


def force_order_event(trading: PerpSide, order: UserOrder) -> wire.ForceOrderEvent:
    """The public ``forceOrder`` event of a matched liquidation order."""
    m = order.state.market
    fills = trading.trades.get((order.account, order.symbol), ())
    last = next((t["qty"] for t in reversed(fills) if t["orderId"] == order.id), "0")
    avg = order.avg_price()
    return wire.ForceOrderEvent(
        e="forceOrder",
        E=now_ms(),
        o=wire.ForceOrder(
            s=m.symbol, S=order.side_name, o=order.type, f=order.tif,
            q=m.format_qty(order.orig_qty), p=avg, ap=avg, X=order.status, l=last,
            z=m.format_qty(order.executed), T=order.update_time,
        ),
    )
