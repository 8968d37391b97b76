"""Spot trading: balances free/locked, reservations, fees, and the spot user-stream events.

Money rules (with ``ledger.py``'s conservation invariant):
- A BUY reserves quote: a limit order ``price * qty``; a market order the exact cost of
  walking the book for its quantity (or the quantity its ``quoteOrderQty`` buys); a
  STOP_MARKET / TAKE_PROFIT_MARKET buy reserves when it triggers (and expires if the balance is
  short then). A SELL reserves its base quantity. Reservations are ``locked`` balance.
- Each fill pays the payer's leg out of its reservation (a limit buy filled below its price
  gets the difference unlocked) and the commission is withheld from the asset received: the
  buyer pays it in base, the seller in quote (maker/taker rates from ``commissionRate``).
  Against the synthetic flow the house pays the other leg; between two users each side pays
  its own leg once, so a fill is settled exactly once whichever order is processed first.

``transactionHistory`` rows record every change of a spot balance: per fill ``TRADE_SOURCE``
(the asset paid, negative) and ``TRADE_TARGET`` (the asset received, net of its commission),
and ``TRANSFER_SPOT_TO_FUTURE`` / ``TRANSFER_FUTURE_TO_SPOT`` for wallet transfers, so the
rows of an asset sum to the balance changes they describe.
"""

from __future__ import annotations

from collections import deque

from .engine import BUY, SELL
from .ledger import AMOUNT_DP, FEES, HOUSE, InsufficientBalance, TranIds, format_amount
from .orders import OrderError, OrderManager, OrderRequest, UserOrder
from .records import history
from .state import MarketState, now_ms

__all__ = ["SPOT_MAKER_PPM", "SPOT_TAKER_PPM", "SpotTrading"]

SPOT_MAKER_PPM = 100  # 0.0100 %
SPOT_TAKER_PPM = 400  # 0.0400 %
WALLET = "spot"


def _base_units(state: MarketState, qty: int) -> int:
    return qty * 10 ** (AMOUNT_DP - state.market.qty_dp)


def _quote_units(state: MarketState, notional: int) -> int:
    """Ledger units of a ``price * qty`` product (units of 10**-(price_dp+qty_dp))."""
    m = state.market
    return notional * 10 ** (AMOUNT_DP - m.price_dp - m.qty_dp)


def walk_cost(state: MarketState, side: int, qty: int | None, quote: int | None) -> tuple[int, int]:
    """(quantity, notional) a market order would take from the book right now, for either a
    base ``qty`` or a ``quote`` budget (notional units); the quantity stays on the step."""
    step = state.market.step
    got = cost = 0
    # Hidden orders fill market orders too.
    for price, level in state.engine.reachable(SELL if side == BUY else BUY):
        if qty is not None:
            take = min(level, qty - got)
        else:
            take = min(level, (quote - cost) // price // step * step)
        if take <= 0:
            break
        got += take
        cost += take * price
    return got, cost


class SpotTrading(OrderManager):
    perp = False

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("maker_ppm", SPOT_MAKER_PPM)
        kwargs.setdefault("taker_ppm", SPOT_TAKER_PPM)
        super().__init__(*args, **kwargs)
        # transactionHistory per account, oldest first (bounded: records.history)
        self.transactions: dict[int, deque[dict]] = {}
        self.tran_ids = TranIds()  # shared with the perpetual side (app.py)

    def record(self, account: int, asset: str, delta: int, kind: str, symbol: str = "",
               trade_id: int | None = None, tran_id: int | None = None) -> None:
        """One ``transactionHistory`` row (``delta`` in ledger units); ``tran_id`` when the
        movement already has one (a transfer, numbered by the perpetual side's record)."""
        rows = self.transactions.get(account)
        if rows is None:
            rows = self.transactions[account] = history()
        rows.append({
            "tranId": tran_id if tran_id is not None else self.tran_ids.next(),
            "tradeId": trade_id, "asset": asset, "symbol": symbol,
            "balanceDelta": format_amount(delta), "balanceInfo": kind, "time": now_ms(),
            "type": kind,
        })

    def record_transfer(self, account: int, asset: str, delta: int, tran_id: int) -> None:
        """A transfer with the perp wallet seen from spot (``delta`` > 0: into spot), under
        the ``tranId`` the transfer's answer and its income row carry."""
        kind = "TRANSFER_FUTURE_TO_SPOT" if delta > 0 else "TRANSFER_SPOT_TO_FUTURE"
        self.record(account, asset, delta, kind, tran_id=tran_id)

    def _pre_check(self, account: int, state: MarketState, req: OrderRequest) -> None:
        if req.type == "MARKET" and req.qty is None:
            if not req.quote_qty or req.quote_qty <= 0:
                raise OrderError(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, "
                                        "but both were empty/null!")
            if req.side != BUY:  # the docs: quoteOrderQty is how much quote a BUY spends
                raise OrderError(-1106, "Parameter 'quoteOrderQty' sent when not required.")

    def _reserve(self, order: UserOrder) -> None:
        state = order.state
        m = state.market
        try:
            if order.side != BUY:
                amount = _base_units(state, order.orig_qty)
                self.ledger.lock(WALLET, order.account, m.base, amount)
            elif order.exec_type == "LIMIT":
                amount = _quote_units(state, order.price * order.orig_qty)
                self.ledger.lock(WALLET, order.account, m.quote, amount)
            elif order.type != "MARKET":
                return  # a stop-market buy reserves when it triggers
            else:
                amount = self._reserve_market_buy(order)
        except InsufficientBalance:
            raise OrderError(-2018, "Balance is insufficient.") from None
        order.reserve = amount

    def _reserve_market_buy(self, order: UserOrder) -> int:
        state = order.state
        if order.quote_qty is not None:
            qty, cost = walk_cost(state, BUY, None, order.quote_qty)
            if qty == 0:
                raise OrderError(-2010, "New order rejected: quoteOrderQty buys nothing.")
            order.orig_qty = qty
        else:
            _, cost = walk_cost(state, BUY, order.orig_qty, None)
        amount = _quote_units(state, cost)
        self.ledger.lock(WALLET, order.account, state.market.quote, amount)
        return amount

    def _on_trigger(self, order: UserOrder) -> None:
        if order.side == BUY and order.exec_type == "MARKET":
            try:
                order.reserve = self._reserve_market_buy(order)
            except (InsufficientBalance, OrderError):
                order.triggered = True
                self._finish(order, "EXPIRED")
                return
        super()._on_trigger(order)

    def _release(self, order: UserOrder) -> None:
        if order.reserve:
            m = order.state.market
            asset = m.quote if order.side == BUY else m.base
            self.ledger.unlock(WALLET, order.account, asset, order.reserve)
            order.reserve = 0

    def _settle(
        self, order: UserOrder, trade_id: int, price: int, qty: int, maker: bool, other: int,
        fee_ppm: int,
    ) -> dict:
        state = order.state
        m = state.market
        base, quote = _base_units(state, qty), _quote_units(state, price * qty)
        if order.side == BUY:
            pay_asset, pay, recv_asset, recv = m.quote, quote, m.base, base
            portion = (_quote_units(state, order.price * qty)
                       if order.exec_type == "LIMIT" else quote)
        else:
            pay_asset, pay, recv_asset, recv = m.base, base, m.quote, quote
            portion = base
        ledger = self.ledger
        # Our leg, out of the reservation; a user counterparty's commission is withheld here.
        other_fee = 0
        if other != HOUSE:
            other_fee = pay * (self.taker_ppm if maker else self.maker_ppm) // 1_000_000
        ledger.move(WALLET, pay_asset, pay - other_fee, order.account, other, from_locked=True)
        ledger.move(WALLET, pay_asset, other_fee, order.account, FEES, from_locked=True)
        if portion > pay:  # a limit buy filled below its price: the difference is free again
            ledger.unlock(WALLET, order.account, pay_asset, portion - pay)
        order.reserve -= portion
        fee = recv * fee_ppm // 1_000_000
        self.record(order.account, pay_asset, -pay, "TRADE_SOURCE", m.symbol, trade_id)
        self.record(order.account, recv_asset, recv - fee, "TRADE_TARGET", m.symbol, trade_id)
        if other == HOUSE:  # the synthetic side pays its leg here; a user pays in its own fill
            ledger.move(WALLET, recv_asset, recv - fee, HOUSE, order.account)
            ledger.move(WALLET, recv_asset, fee, HOUSE, FEES)
        return {
            "symbol": m.symbol,
            "side": order.side_name,
            "price": m.format_price(price),
            "qty": m.format_qty(qty),
            "quoteQty": format_amount(quote),
            "commission": format_amount(fee),
            "commissionAsset": recv_asset,
            "counterpartyId": other if other > 0 else None,
            "createUpdateId": None,
            "maker": maker,
            "buyer": order.side == BUY,
        }

    # -- user stream -------------------------------------------------------------------------
    def _events(self, order: UserOrder, exec_type: str, trade: dict | None = None) -> None:
        m = order.state.market
        now = now_ms()
        self.emit(order.account, {
            "e": "executionReport",
            "E": now,
            "s": m.symbol,
            "c": order.client_id,
            "S": order.side_name,
            "o": order.type,
            "f": order.tif,
            "q": m.format_qty(order.orig_qty),
            "p": m.format_price(order.price or 0),
            "ap": order.avg_price(),
            "P": m.format_price(order.stop_price or 0),
            "x": exec_type,
            "X": order.status,
            "i": order.id,
            "l": trade["qty"] if trade else "0",
            "z": m.format_qty(order.executed),
            "L": trade["price"] if trade else "0",
            "n": trade["commission"] if trade else "0",
            "N": trade["commissionAsset"] if trade else None,
            "T": order.update_time,
            "t": trade["id"] if trade else -1,
            "m": trade["maker"] if trade else False,
            "ot": order.type,
            "O": order.time,
            "Z": order.to_json(False)["cumQuote"],
            "Y": trade["quoteQty"] if trade else "0",
            "Q": format_amount(_quote_units(order.state, order.quote_qty or 0)),
        })
        self.emit(order.account, {
            "e": "outboundAccountPosition",
            "E": now,
            "T": order.update_time,
            "m": "ORDER",
            "B": [
                {"a": a, "f": format_amount(f), "l": format_amount(lk)}
                for a in (m.base, m.quote)
                for f, lk in (self.ledger.balances(WALLET, order.account).get(a, (0, 0)),)
            ],
        })

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["transactions"] = [[a, list(rows)] for a, rows in self.transactions.items()]
        data["tran_id"] = self.tran_ids.last  # the one copy of the counter both sides share
        return data

    def load(self, data: dict) -> None:
        self.transactions.update({a: history(rows) for a, rows in data.get("transactions", ())})
        self.tran_ids.last = max(self.tran_ids.last, data.get("tran_id", 0))
        super().load(data)

    def account_json(self, account: int) -> dict:
        return {
            "feeTier": 0,
            "canTrade": True,
            "canDeposit": True,
            "canWithdraw": True,
            "canBurnAsset": True,
            "updateTime": now_ms(),
            "balances": [
                {"asset": a, "free": format_amount(f), "locked": format_amount(lk)}
                for a, (f, lk) in sorted(self.ledger.balances(WALLET, account).items())
            ],
        }
