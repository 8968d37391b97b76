"""User orders: the model, the parsed request, and the lifecycle shared by spot and perpetuals.

``OrderManager`` owns every user order of one venue side. Subclasses (``spot.SpotTrading``,
``perp.PerpTrading``) decide what an order reserves, how a fill settles and which events a
user stream receives; the manager does everything else the same way on both sides.

Invariants:
- A user order enters the matching engine only through ``OrderManager``; its engine order id
  is its ``orderId`` (unique per market, shared with the synthetic flow's ids).
- Every fill that involves a user order is settled exactly once, from the market state's fill
  hook, whether the user was the taker (their request) or the maker (the synthetic flow, or
  another user, hit their resting order).
- ``executed <= orig_qty``; a final status (FILLED, CANCELED, EXPIRED, REJECTED) never changes,
  and an order in a final status holds no reservation and is not in the book.
- Stop and take-profit orders wait outside the book until their trigger price trades
  (checked every flow step); then they enter the book as the LIMIT or MARKET order they carry.
- ``newClientOrderId`` is unique per account and symbol unless the earlier order was FILLED
  (the docs' rule).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from .engine import BUY, SELL, Fill
from .filters import (
    MAX_NUM_ORDERS,
    FilterError,
    check_lot,
    check_notional,
    check_percent,
    check_price,
    check_stop_price,
)
from .ledger import HOUSE, Ledger
from .markets import format_fixed
from .state import MarketState, now_ms

__all__ = ["FINAL", "OrderError", "OrderManager", "OrderRequest", "UserOrder"]

FINAL = frozenset({"FILLED", "CANCELED", "EXPIRED", "REJECTED"})
STOP_TYPES = {"STOP": "LIMIT", "TAKE_PROFIT": "LIMIT", "STOP_MARKET": "MARKET",
              "TAKE_PROFIT_MARKET": "MARKET", "TRAILING_STOP_MARKET": "MARKET"}


class OrderError(Exception):
    """A rejection with Aster's code; the REST layer answers ``{"code","msg"}`` (HTTP 400)."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


@dataclass(slots=True)
class OrderRequest:
    """A new order, parameters parsed to exact units (``None`` where not sent)."""

    symbol: str
    side: int
    type: str
    qty: int | None = None
    price: int | None = None
    stop_price: int | None = None
    quote_qty: int | None = None  # quoteOrderQty, units of 10**-(price_dp+qty_dp)
    tif: str | None = None
    client_id: str | None = None
    reduce_only: bool = False
    close_position: bool = False
    position_side: str = "BOTH"
    working_type: str = "CONTRACT_PRICE"
    activation_price: int | None = None
    callback_rate: str | None = None


class UserOrder:
    __slots__ = (
        "account",
        "activation_price",
        "callback_rate",
        "client_id",
        "close_position",
        "cum_quote",
        "executed",
        "extreme",
        "id",
        "orig_qty",
        "position_side",
        "price",
        "quote_qty",
        "reduce_only",
        "reserve",
        "side",
        "state",
        "status",
        "stop_price",
        "tif",
        "time",
        "triggered",
        "type",
        "update_time",
        "working_type",
    )

    def __init__(self, oid: int, account: int, state: MarketState, req: OrderRequest, ts: int):
        self.id = oid
        self.account = account
        self.state = state
        self.client_id = req.client_id or _client_id()
        self.side = req.side
        self.type = req.type
        self.tif = req.tif or "GTC"
        self.price = req.price
        self.stop_price = req.stop_price
        self.orig_qty = req.qty or 0
        self.quote_qty = req.quote_qty
        self.executed = 0
        self.cum_quote = 0  # units of 10**-(price_dp+qty_dp)
        self.status = "NEW"
        self.time = self.update_time = ts
        self.reserve = 0  # ledger units still locked for this order
        self.reduce_only = req.reduce_only
        self.close_position = req.close_position
        self.position_side = req.position_side
        self.working_type = req.working_type
        self.activation_price = req.activation_price
        self.callback_rate = req.callback_rate
        self.extreme: int | None = None  # trailing stop: best price seen since activation
        self.triggered = False

    @property
    def remaining(self) -> int:
        return self.orig_qty - self.executed

    @property
    def symbol(self) -> str:
        return self.state.market.symbol

    @property
    def side_name(self) -> str:
        return "BUY" if self.side == BUY else "SELL"

    @property
    def exec_type(self) -> str:
        """The type the order has in (or will have when it enters) the book."""
        return STOP_TYPES.get(self.type, self.type)

    def avg_price(self) -> str:
        m = self.state.market
        if not self.executed:
            return "0"
        return f"{self.cum_quote / self.executed / 10**m.price_dp:.{m.price_dp + 8}f}"

    def to_json(self, perp: bool) -> dict:
        m = self.state.market
        row = {
            "orderId": self.id,
            "symbol": self.symbol,
            "status": self.status,
            "clientOrderId": self.client_id,
            "price": m.format_price(self.price or 0),
            "avgPrice": self.avg_price(),
            "origQty": m.format_qty(self.orig_qty),
            "executedQty": m.format_qty(self.executed),
            "cumQuote": format_fixed(self.cum_quote, m.price_dp + m.qty_dp),
            "timeInForce": self.tif,
            "type": self.type,
            "side": self.side_name,
            "stopPrice": m.format_price(self.stop_price or 0),
            "origType": self.type,
            "time": self.time,
            "updateTime": self.update_time,
        }
        if perp:
            row.update(
                cumQty=m.format_qty(self.executed),
                reduceOnly=self.reduce_only,
                closePosition=self.close_position,
                positionSide=self.position_side,
                workingType=self.working_type,
                priceProtect=False,
            )
            if self.type == "TRAILING_STOP_MARKET":
                row["activatePrice"] = m.format_price(self.activation_price or 0)
                row["priceRate"] = self.callback_rate
        return row


def _client_id() -> str:
    return "sim" + secrets.token_urlsafe(16).replace("-", "x").replace("_", "y")


Emit = Callable[[int, dict], None]  # (account id, user-stream event payload)


class OrderManager:
    """Orders of one side. Subclasses implement ``_reserve``, ``_release``, ``_settle``,
    ``_pre_check`` and ``_events``."""

    perp = False

    def __init__(
        self,
        states: dict[str, MarketState],
        ledger: Ledger,
        index_price: Callable[[MarketState], float],
        *,
        maker_ppm: int,
        taker_ppm: int,
        max_open: int = MAX_NUM_ORDERS,
    ) -> None:
        self.states = states
        self.ledger = ledger
        self.index_price = index_price
        self.maker_ppm, self.taker_ppm = maker_ppm, taker_ppm
        self.max_open = max_open
        self.emit: Emit = lambda account, event: None
        self.orders: dict[tuple[str, int], UserOrder] = {}  # (symbol, id) -> every order
        self.by_account: dict[tuple[int, str], list[UserOrder]] = {}  # oldest first
        self.open: dict[tuple[int, str], dict[int, UserOrder]] = {}
        self.stops: dict[str, dict[int, UserOrder]] = {s: {} for s in states}
        self.trades: dict[tuple[int, str], list[dict]] = {}
        for state in states.values():
            state.fill_listener = self._on_fills

    # -- queries -----------------------------------------------------------------------------
    def state(self, symbol: str) -> MarketState:
        state = self.states.get(symbol)
        if state is None:
            raise OrderError(-1121, "Invalid symbol.")
        return state

    def find(self, account: int, symbol: str, oid: int | None, client_id: str | None) -> UserOrder:
        order = None
        if oid is not None:
            order = self.orders.get((symbol, oid))
        elif client_id is not None:
            for o in reversed(self.by_account.get((account, symbol), ())):
                if o.client_id == client_id:
                    order = o
                    break
        if order is None or order.account != account:
            raise OrderError(-2013, "Order does not exist.")
        return order

    def open_orders(self, account: int, symbol: str | None) -> list[UserOrder]:
        keys = [(account, symbol)] if symbol else [(account, s) for s in self.states]
        return sorted((o for k in keys for o in self.open.get(k, {}).values()),
                      key=lambda o: (o.symbol, o.id))

    # -- placing -----------------------------------------------------------------------------
    def place(self, account: int, req: OrderRequest) -> UserOrder:
        state = self._check(account, req)
        key = (account, req.symbol)
        order = UserOrder(state.next_order_id(), account, state, req, now_ms())
        if order.type in STOP_TYPES and self._triggered(order, state, initial=True):
            raise OrderError(-2021, "Order would immediately trigger.")
        self._reserve(order)  # raises OrderError(-2018) when the balance is short
        self.orders[(req.symbol, order.id)] = order
        self.by_account.setdefault(key, []).append(order)
        self.open.setdefault(key, {})[order.id] = order
        if order.type in STOP_TYPES:
            self.stops[req.symbol][order.id] = order
            self._events(order, "NEW")
            return order
        self._events(order, "NEW")
        self._submit(order)
        return order

    def test(self, account: int, req: OrderRequest) -> UserOrder:
        """``order/test``: every check ``place`` makes, and nothing placed, reserved or
        numbered (the order returned has id 0 and is in no book or record)."""
        state = self._check(account, req)
        order = UserOrder(0, account, state, req, now_ms())
        if order.type in STOP_TYPES and self._triggered(order, state, initial=True):
            raise OrderError(-2021, "Order would immediately trigger.")
        self._reserve(order)  # the balance / margin check ...
        self._release(order)  # ... undone at once
        return order

    def _check(self, account: int, req: OrderRequest) -> MarketState:
        """The checks before an order exists: filters, client id, open count, side rules."""
        state = self.state(req.symbol)
        key = (account, req.symbol)
        try:
            self._validate(state, req)
        except FilterError as exc:
            raise OrderError(exc.code, exc.msg) from None
        if req.client_id is not None:
            for o in self.by_account.get(key, ()):
                if o.client_id == req.client_id and o.status != "FILLED":
                    raise OrderError(-4116, "ClientOrderId is duplicated.")
        if len(self.open.get(key, ())) >= self.max_open:
            raise OrderError(-2025, "Reached max open order limit.")
        self._pre_check(account, state, req)
        return state

    def _validate(self, state: MarketState, req: OrderRequest) -> None:
        market = state.market
        is_market = STOP_TYPES.get(req.type, req.type) == "MARKET"
        if req.price is not None:
            check_price(market, req.price)
            check_percent(market, req.price, self.index_price(state))
        if req.stop_price is not None:
            check_stop_price(market, req.stop_price)
        if req.qty is not None:
            check_lot(market, req.qty, market_order=is_market)
            ref = req.price if req.price is not None else req.stop_price
            if ref is None:
                ref = _reference_price(state, req.side)
            if ref and not req.reduce_only:
                check_notional(market, ref, req.qty)

    def _submit(self, order: UserOrder) -> None:
        """Send an order (new, or a triggered stop) into the matching engine."""
        state = order.state
        limit = order.exec_type == "LIMIT"
        post_only = limit and order.tif == "GTX"
        state.place(
            order.account,
            order.side,
            order.remaining,
            order.price if limit else None,
            post_only=post_only,
            ioc=order.tif == "IOC",
            fok=order.tif == "FOK",
            order_id=order.id,
            hidden=limit and order.tif == "HIDDEN",
        )
        if order.status in FINAL:
            return
        if order.id not in state.engine.orders:  # not resting: IOC/FOK/market rest, GTX taker
            self._finish(order, "EXPIRED")

    def cancel(
        self, account: int, symbol: str, oid: int | None, client_id: str | None
    ) -> UserOrder:
        order = self.find(account, symbol, oid, client_id)
        if order.status in FINAL:
            raise OrderError(-2011, "Unknown order sent.")
        order.state.cancel(order.id)
        self.stops[symbol].pop(order.id, None)
        self._finish(order, "CANCELED")
        return order

    def cancel_all(self, account: int, symbol: str) -> list[UserOrder]:
        self.state(symbol)
        return [self.cancel(account, symbol, o.id, None)
                for o in list(self.open.get((account, symbol), {}).values())]

    def _finish(self, order: UserOrder, status: str) -> None:
        order.status = status
        order.update_time = now_ms()
        self.open.get((order.account, order.symbol), {}).pop(order.id, None)
        self._release(order)
        if status != "REJECTED":
            self._events(order, status)

    # -- fills -------------------------------------------------------------------------------
    def _on_fills(self, state: MarketState, fills: list[Fill]) -> None:
        symbol = state.market.symbol
        first_trade_id = state.next_trade_id - len(fills)  # the public trade ids, in fill order
        for i, fill in enumerate(fills):
            for owner, oid, maker, other in (
                (fill.maker_owner, fill.maker_id, True, fill.taker_owner),
                (fill.taker_owner, fill.taker_id, False, fill.maker_owner),
            ):
                if owner <= 0:
                    continue
                order = self.orders[(symbol, oid)]
                other = other if other > 0 else HOUSE
                self._fill(order, first_trade_id + i, fill.price, fill.qty, maker, other)

    def _fill(
        self, order: UserOrder, trade_id: int, price: int, qty: int, maker: bool, other: int
    ) -> None:
        order.executed += qty
        order.cum_quote += price * qty
        order.update_time = now_ms()
        fee_ppm = self.maker_ppm if maker else self.taker_ppm
        trade = self._settle(order, trade_id, price, qty, maker, other, fee_ppm)
        trade.update(id=trade_id, orderId=order.id, time=order.update_time)
        self.trades.setdefault((order.account, order.symbol), []).append(trade)
        if order.remaining == 0:
            order.status = "FILLED"
            self.open.get((order.account, order.symbol), {}).pop(order.id, None)
            self._release(order)
        else:
            order.status = "PARTIALLY_FILLED"
        self._events(order, "TRADE", trade)

    # -- triggers ----------------------------------------------------------------------------
    def check_triggers(self) -> None:
        """Release stop orders whose trigger traded; called once per flow step."""
        for symbol, pending in self.stops.items():
            if not pending:
                continue
            state = self.states[symbol]
            for order in list(pending.values()):
                if order.status in FINAL:
                    pending.pop(order.id, None)
                elif self._triggered(order, state, initial=False):
                    pending.pop(order.id, None)
                    self._on_trigger(order)

    def _on_trigger(self, order: UserOrder) -> None:
        order.triggered = True
        order.update_time = now_ms()
        self._submit(order)

    def _trigger_price(self, order: UserOrder, state: MarketState) -> int | None:
        last = state.last_trade()
        return last.price if last is not None else None

    def _triggered(self, order: UserOrder, state: MarketState, *, initial: bool) -> bool:
        price = self._trigger_price(order, state)
        if price is None or order.stop_price is None:
            return False
        rising = (order.type.startswith("STOP")) == (order.side == BUY)
        return price >= order.stop_price if rising else price <= order.stop_price

    # -- subclass hooks ----------------------------------------------------------------------
    def _pre_check(self, account: int, state: MarketState, req: OrderRequest) -> None:
        """Side-specific rules before an order exists (reduce-only, position side)."""

    def _reserve(self, order: UserOrder) -> None:
        raise NotImplementedError

    def _release(self, order: UserOrder) -> None:
        raise NotImplementedError

    def _settle(
        self, order: UserOrder, trade_id: int, price: int, qty: int, maker: bool, other: int,
        fee_ppm: int,
    ) -> dict:
        """Move the money of one fill (public trade ``trade_id``); returns the userTrades row
        (without id/orderId/time)."""
        raise NotImplementedError

    def _events(self, order: UserOrder, exec_type: str, trade: dict | None = None) -> None:
        raise NotImplementedError

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        rows = []
        for order in self.orders.values():
            row = {s: getattr(order, s) for s in UserOrder.__slots__ if s not in ("state",)}
            row["symbol"] = order.symbol
            rows.append(row)
        trades = [[a, s, t] for (a, s), t in self.trades.items()]
        return {"orders": rows, "trades": trades}

    def load(self, data: dict) -> None:
        """Restore orders; open limit orders re-enter the (fresh) book in their old order."""
        for a, s, rows in data["trades"]:
            self.trades[(a, s)] = rows
        for row in sorted(data["orders"], key=lambda r: r["time"]):
            state = self.states[row.pop("symbol")]
            order = UserOrder.__new__(UserOrder)
            order.state = state
            for name, value in row.items():
                setattr(order, name, value)
            key = (order.account, order.symbol)
            self.orders[(order.symbol, order.id)] = order
            self.by_account.setdefault(key, []).append(order)
            state._next_order_id = max(state._next_order_id, order.id + 1)
            if order.status in FINAL:
                continue
            self.open.setdefault(key, {})[order.id] = order
            if order.type in STOP_TYPES and not order.triggered:
                self.stops[order.symbol][order.id] = order
            else:
                self._submit(order)


def _reference_price(state: MarketState, side: int) -> int | None:
    """The price a market order would meet first (for MIN_NOTIONAL on market orders)."""
    engine = state.engine
    best = engine.best_ask() if side == BUY else engine.best_bid()
    if best is None:
        last = state.last_trade()
        return last.price if last is not None else None
    return best


def opposite(side: int) -> int:
    return SELL if side == BUY else BUY
