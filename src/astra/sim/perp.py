"""Perpetual (USDT-margined) trading: positions, margin, fees and the futures user stream.

Margin model (deliberately simple; every amount is an exact integer of ledger units):
- The ``"perp"`` wallet of the ledger holds each account's *wallet balance* (USDT). Nothing is
  locked there: order and position margin are computed, not reserved, so money only ever
  moves as realized PnL, commission, funding, insurance and transfers.
- A position per (account, symbol, positionSide): a signed quantity and its entry cost
  (``sum(price * qty)`` of the open part, so the entry price is ``cost / |qty|`` exactly).
  One-way mode uses ``BOTH``; hedge mode (``positionSide/dual``) uses ``LONG`` and ``SHORT``.
- Leverage per (account, symbol), default 20, 1..125. Initial margin = notional at mark /
  leverage; maintenance = notional at mark * 2.5 % (``maintMarginPercent``), one bracket.
  ``marginType`` CROSSED/ISOLATED is stored and reported, but every position is margined as
  cross: liquidation looks at the whole account. On an ISOLATED position ``positionMargin``
  sets margin aside (``isolated``, held as *locked* wallet balance, so no money moves): it is
  out of the available balance, counts in the margin balance, and is unlocked when the
  position closes or flips side, and as far as a deficit needs before the house covers the
  rest (``perp_margin``).
- Available balance = wallet + unrealized PnL - position initial margin - open-order initial
  margin. Open-order margin counts resting (and triggered) LIMIT orders that open exposure: in
  one-way mode the larger of the buy and sell sides, each net of the position it would close
  first. A new opening order is accepted only if the available balance covers the margin it
  adds plus its taker fee (else -2019 "Margin is insufficient."); reducing orders need none.
- Each fill settles the user's side against the house (the clearing counterparty of every
  trade, including the synthetic flow): realized PnL between the account's and the house's
  perp wallets, commission to ``FEES``. Funding moves between the account and the house.
  A wallet pushed below zero (a loss beyond the balance) is refilled by the house at once
  (insurance, income ``INSURANCE_CLEAR``), so ``Ledger.check`` holds after every operation.
- Mark price = ``views.mark_price`` (book mid, else the flow's fair price), exactly (a mid may
  fall on half a tick); unrealized PnL = (mark - entry) * quantity. Funding and liquidation
  (``funding.py``) run every flow step from ``check_triggers``, after the stop triggers.
- Conditional orders trigger on the last trade (``CONTRACT_PRICE``) or the mark
  (``MARK_PRICE``); ``TRAILING_STOP_MARKET`` activates at ``activationPrice`` (or at once) and
  fires when the price retraces ``callbackRate`` % (0.1..5) from the extreme seen since.
  ``closePosition`` stops close whatever the position is when they fire. An opening stop is
  margin-checked when placed and again when it fires (EXPIRED if the margin is gone then).

Modules: ``perp_positions`` (constants, positions, figures), ``perp_events`` (user-stream
payloads), ``perp_rest`` (the perpetual-only endpoints), ``perp_batch`` (batch orders,
countdown cancel, order/test), ``perp_margin`` (position margin, Multi-Assets, ADL),
``perp_market`` (funding history and info, index / mark klines from ``price_history``, sampled
once a second here), ``funding`` (funding, liquidation).

Reduce rules: ``reduceOnly`` (one-way only) and hedge-mode closing orders (SELL LONG,
BUY SHORT) may only shrink a position: at placement the order plus the other resting
reducing orders of that position must fit in it (else -2022), and after every batch of fills
resting reducing orders that no longer fit expire, newest first, so they never flip it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal

from astra.venues.aster import schemas as wire

from .engine import BUY, Fill
from .funding import check_liquidations, settle_funding
from .ledger import AMOUNT_DP, FEES, HOUSE, TranIds, format_amount
from .orders import FINAL, STOP_TYPES, OrderError, OrderManager, OrderRequest, UserOrder
from .perp_events import account_update, config_update, order_trade_update
from .perp_margin import draw_isolated, release_isolated
from .perp_positions import (
    DEFAULT_LEVERAGE,
    FUNDING_INTERVAL_MS,
    LIQUIDATION_PREFIX,
    MAINT_PERMILLE,
    MARGIN_ASSET,
    PERP_MAKER_PPM,
    PERP_TAKER_PPM,
    WALLET,
    Figures,
    Position,
    apply_fill,
    ceil_div,
    in_book,
    max_notional,
    permille,
    units,
    value_at,
)
from .price_history import PriceHistory
from .records import FUNDING_ROWS, history
from .spot import walk_cost
from .state import MarketState, now_ms
from .views import mark_index_e8, mark_price

__all__ = ["PerpTrading"]


class PerpTrading(OrderManager):
    perp = True

    def __init__(self, *args, funding_interval_ms: int = FUNDING_INTERVAL_MS, **kwargs) -> None:
        kwargs.setdefault("maker_ppm", PERP_MAKER_PPM)
        kwargs.setdefault("taker_ppm", PERP_TAKER_PPM)
        super().__init__(*args, **kwargs)
        self.positions: dict[int, dict[tuple[str, str], Position]] = {}
        self.leverages: dict[tuple[int, str], int] = {}
        self.margin_types: dict[tuple[int, str], str] = {}
        self.dual: set[int] = set()
        self.income: dict[int, deque[dict]] = {}  # per account, bounded (records.history)
        self.transfers: set[tuple[int, str]] = set()
        self.last_funding: dict[str, dict] = {}
        # fundingRate rows, oldest first, the newest FUNDING_ROWS of each symbol
        self.funding_history = history(maxlen=FUNDING_ROWS * len(self.states))
        self.price_history = PriceHistory()  # indexPriceKlines / markPriceKlines
        self.isolated: dict[tuple[int, str, str], int] = {}  # margin added (positionMargin)
        self.margin_history: dict[int, deque[dict]] = {}  # positionMargin/history rows
        self.multi_assets: set[int] = set()  # accounts in Multi-Assets mode
        # countdownCancelAll: (account, symbol) -> the absolute deadline, in epoch ms.
        self.countdowns: dict[tuple[int, str], int] = {}
        # Told of every transfer (account, asset, spot delta, tranId): spot transactionHistory.
        self.on_transfer: Callable[[int, str, int, int], None] | None = None
        # Told of every liquidation order once matched (the forceOrder streams; funding.py).
        self.on_liquidation: Callable[[wire.ForceOrderEvent], None] | None = None
        self.tran_ids = TranIds()  # app.py shares the spot side's: one id space for both
        self._trade_id = 0  # public id of the fill being settled
        self._sampled_second = 0  # the simulated second of the last price-history sample
        self.set_funding_interval(funding_interval_ms)

    # -- settings ----------------------------------------------------------------------------
    def set_funding_interval(self, interval_ms: int) -> None:
        """Funding every ``interval_ms`` (aligned to multiples of it, like the 8 h schedule)."""
        if interval_ms <= 0:
            raise ValueError("the funding interval is a positive number of milliseconds")
        self.funding_interval_ms = interval_ms
        now = now_ms()
        self.next_funding = now - now % interval_ms + interval_ms

    def leverage(self, account: int, symbol: str) -> int:
        return self.leverages.get((account, symbol), DEFAULT_LEVERAGE)

    def margin_type(self, account: int, symbol: str) -> str:
        return self.margin_types.get((account, symbol), "CROSSED")

    def sides_of(self, account: int) -> tuple[str, ...]:
        return ("LONG", "SHORT") if account in self.dual else ("BOTH",)

    def position(self, account: int, symbol: str, ps: str) -> Position:
        book = self.positions.setdefault(account, {})
        pos = book.get((symbol, ps))
        if pos is None:
            pos = book[(symbol, ps)] = Position()
        return pos

    def peek(self, account: int, symbol: str, ps: str) -> Position:
        """The position, or an empty one (nothing is created)."""
        return self.positions.get(account, {}).get((symbol, ps)) or Position()

    def amount(self, account: int, symbol: str, ps: str) -> int:
        pos = self.positions.get(account, {}).get((symbol, ps))
        return pos.amt if pos is not None else 0

    # -- prices ------------------------------------------------------------------------------
    def mark(self, state: MarketState) -> wire.MarkPriceUpdate:
        return mark_price(state, self.index_price(state))

    def mark_e8(self, state: MarketState) -> int:
        """The mark price exactly, in 10**-8 of the quote asset (ledger units per 1 base)."""
        return int(Decimal(self.mark(state).p).scaleb(AMOUNT_DP))

    def mark_units(self, state: MarketState) -> int:
        """The mark price on the market's price grid (trigger comparisons)."""
        value = Decimal(self.mark(state).p).scaleb(state.market.price_dp)
        return int(value.to_integral_value(ROUND_HALF_EVEN))

    def marks(self) -> dict[str, int]:
        """``mark_e8`` of every market (one consistent view for several figures)."""
        return {symbol: self.mark_e8(state) for symbol, state in self.states.items()}

    # -- margin figures ----------------------------------------------------------------------
    def position_figures(self, account: int, symbol: str, ps: str, mark: int) -> Figures:
        """uPnL, initial and maintenance margin of one position (wallet left at 0) at the
        mark price ``mark`` (``mark_e8``)."""
        pos = self.positions.get(account, {}).get((symbol, ps))
        if pos is None or not pos.amt:
            return Figures()
        market = self.states[symbol].market
        value = value_at(market, pos.amt, mark)
        notional = abs(value)
        signed_cost = pos.cost if pos.amt > 0 else -pos.cost
        return Figures(
            upnl=value - units(market, signed_cost),
            pos_im=ceil_div(notional, self.leverage(account, symbol)),
            maint=ceil_div(notional * MAINT_PERMILLE, 1000),
        )

    def wallet(self, account: int) -> int:
        free, locked = self.ledger.balances(WALLET, account).get(MARGIN_ASSET, (0, 0))
        return free + locked

    def figures(self, account: int, marks: dict[str, int] | None = None) -> Figures:
        out = Figures(wallet=self.wallet(account))
        held = {s for (s, _), p in self.positions.get(account, {}).items() if p.amt}
        for symbol, state in self.states.items():
            if symbol in held:
                mark = marks[symbol] if marks is not None else self.mark_e8(state)
                for ps in ("BOTH", "LONG", "SHORT"):
                    f = self.position_figures(account, symbol, ps, mark)
                    out.upnl += f.upnl
                    out.pos_im += f.pos_im
                    out.maint += f.maint
            if self.open.get((account, symbol)):
                out.order_im += sum(self.order_im(account, symbol, ps)
                                    for ps in self.sides_of(account))
        out.isolated = self.ledger.locked(WALLET, account, MARGIN_ASSET)
        return out

    def order_im(self, account: int, symbol: str, ps: str, extra: UserOrder | None = None,
                 without: UserOrder | None = None) -> int:
        """Initial margin of the open orders on one position side, with ``extra`` counted
        (whatever its type) and ``without`` left out."""
        buy_q = buy_n = sell_q = sell_n = 0
        orders = [o for o in self.open.get((account, symbol), {}).values()
                  if o is not extra and o is not without]
        if extra is not None:
            orders.append(extra)
        for o in orders:
            if o.position_side != ps or self.is_reduce(o) or o.status in FINAL:
                continue
            if o is not extra and (o.exec_type != "LIMIT" or not in_book(o)):
                continue  # market orders are transient; untriggered stops hold no margin
            q, n = self._order_notional(o)
            if o.side == BUY:
                buy_q, buy_n = buy_q + q, buy_n + n
            else:
                sell_q, sell_n = sell_q + q, sell_n + n
        if ps == "LONG":
            sell_n = 0
        elif ps == "SHORT":
            buy_n = 0
        else:  # one-way: each side first closes the opposite position
            amt = self.amount(account, symbol, ps)
            if buy_q:
                buy_n = buy_n * max(0, buy_q - max(0, -amt)) // buy_q
            if sell_q:
                sell_n = sell_n * max(0, sell_q - max(0, amt)) // sell_q
        market = self.states[symbol].market
        return ceil_div(units(market, max(buy_n, sell_n)), self.leverage(account, symbol))

    def _order_notional(self, order: UserOrder) -> tuple[int, int]:
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
                ref = last.price if last is not None else self.mark_units(state)
            return qty, qty * ref
        got, cost = walk_cost(state, order.side, qty, None)
        return qty, cost + (qty - got) * self.mark_units(state)

    # -- reduce rules ------------------------------------------------------------------------
    @staticmethod
    def is_reduce(o: UserOrder | OrderRequest) -> bool:
        return (o.reduce_only or o.close_position
                or (o.position_side == "LONG" and o.side != BUY)
                or (o.position_side == "SHORT" and o.side == BUY))

    def closable(self, account: int, symbol: str, side: int, ps: str) -> int:
        """How much of the position an order of ``side`` on ``ps`` can close."""
        amt = self.amount(account, symbol, ps)
        if side == BUY:
            return -amt if amt < 0 and ps != "LONG" else 0
        return amt if amt > 0 and ps != "SHORT" else 0

    def _resting_reduce(self, account: int, symbol: str, side: int, ps: str,
                        exclude: UserOrder | None = None) -> list[UserOrder]:
        return sorted(
            (o for o in self.open.get((account, symbol), {}).values()
             if o is not exclude and o.side == side and o.position_side == ps
             and self.is_reduce(o) and in_book(o)),
            key=lambda o: o.id,
        )

    def _sweep(self, account: int, symbol: str) -> None:
        """Expire resting reducing orders that no longer fit in their position."""
        for ps in ("BOTH", "LONG", "SHORT"):
            for side in (0, 1):
                orders = self._resting_reduce(account, symbol, side, ps)
                if not orders:
                    continue
                room = self.closable(account, symbol, side, ps)
                total = sum(o.remaining for o in orders)
                for o in reversed(orders):
                    if total <= room:
                        break
                    total -= o.remaining
                    o.state.cancel(o.id)
                    self._finish(o, "EXPIRED")

    # -- order hooks -------------------------------------------------------------------------
    def _pre_check(self, account: int, state: MarketState, req: OrderRequest) -> None:
        dual = account in self.dual
        if (req.position_side == "BOTH") == dual:
            raise OrderError(-4061, "Order's position side does not match user's setting.")
        if req.reduce_only and dual:
            raise OrderError(-1106, "Parameter 'reduceOnly' sent when not required.")
        if req.close_position:
            if req.type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                raise OrderError(-1106, "Parameter 'closePosition' sent when not required.")
            if req.qty is not None:
                raise OrderError(-4137, "Quantity must be zero with closePosition equals true")
            if req.reduce_only:
                raise OrderError(-4138, "Reduce only must be true with closePosition equals true")
            if dual and (req.position_side == "LONG") == (req.side == BUY):
                raise OrderError(-2022, "ReduceOnly Order is rejected.")
        elif req.qty is None:
            raise OrderError(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, "
                                    "or malformed.")
        if req.type == "TRAILING_STOP_MARKET":
            self._check_trailing(state, req)
        if self.is_reduce(req) and not req.close_position and req.type not in STOP_TYPES:
            room = self.closable(account, req.symbol, req.side, req.position_side)
            pending = sum(o.remaining for o in self._resting_reduce(
                account, req.symbol, req.side, req.position_side))
            if room == 0 or req.qty + pending > room:
                raise OrderError(-2022, "ReduceOnly Order is rejected.")

    @staticmethod
    def _check_trailing(state: MarketState, req: OrderRequest) -> None:
        if req.callback_rate is None:
            raise OrderError(-1102, "Mandatory parameter 'callbackRate' was not sent, was "
                                    "empty/null, or malformed.")
        if permille(req.callback_rate) is None:
            raise OrderError(-1130, "Data sent for parameter 'callbackRate' is not valid.")
        m = state.market
        act = req.activation_price
        if act is not None and (act < m.min_price or act > m.max_price
                                or (act - m.min_price) % m.tick):
            raise OrderError(-4135, "Invalid activation price")

    def _reserve(self, order: UserOrder) -> None:
        if not self.is_reduce(order):
            self._check_margin(order)

    def _check_margin(self, order: UserOrder) -> None:
        account, symbol, ps = order.account, order.symbol, order.position_side
        market = order.state.market
        without = self.order_im(account, symbol, ps, without=order)
        added = self.order_im(account, symbol, ps, extra=order) - without
        qty, notional = self._order_notional(order)
        fee = ceil_div(units(market, notional) * self.taker_ppm, 1_000_000)
        # The figures count the order itself once it rests (a triggered stop-limit): not here.
        available = self.figures(account).available + self.order_im(account, symbol, ps) - without
        if added > 0 and available < added + fee:
            raise OrderError(-2019, "Margin is insufficient.")
        amt = self.amount(account, symbol, ps)
        after = abs(amt + (qty if order.side == BUY else -qty))
        cap = max_notional(self.leverage(account, symbol)) * 10 ** (market.price_dp + market.qty_dp)
        if after > abs(amt) and qty and after * (notional // qty) > cap:
            raise OrderError(-2027, "Exceeded the maximum allowable position at current leverage.")

    def _release(self, order: UserOrder) -> None:
        order.reserve = 0  # perpetual orders lock nothing (margin is computed)

    def _on_trigger(self, order: UserOrder) -> None:
        order.triggered = True
        if self.is_reduce(order):
            room = self.closable(order.account, order.symbol, order.side, order.position_side)
            room -= sum(o.remaining for o in self._resting_reduce(
                order.account, order.symbol, order.side, order.position_side, exclude=order))
            qty = room if order.close_position else min(order.orig_qty, room)
            if qty <= 0:
                self._finish(order, "EXPIRED")
                return
            order.orig_qty = qty
        else:
            try:
                self._check_margin(order)
            except OrderError:
                self._finish(order, "EXPIRED")
                return
        super()._on_trigger(order)

    def _trigger_price(self, order: UserOrder, state: MarketState) -> int | None:
        if order.working_type == "MARK_PRICE":
            return self.mark_units(state)
        return super()._trigger_price(order, state)

    def _triggered(self, order: UserOrder, state: MarketState, *, initial: bool) -> bool:
        if order.type != "TRAILING_STOP_MARKET":
            return super()._triggered(order, state, initial=initial)
        price = self._trigger_price(order, state)
        if price is None:
            return False
        buy = order.side == BUY
        act = order.activation_price
        if order.extreme is None:
            if act is None or (price <= act if buy else price >= act):
                if initial and act is not None:
                    return True  # the docs: a BUY activates below, a SELL above the latest price
                order.extreme = price  # activated (without activationPrice: at once)
                if act is None:
                    order.activation_price = price  # reported as activatePrice
            return False
        order.extreme = min(order.extreme, price) if buy else max(order.extreme, price)
        rate = permille(order.callback_rate or "") or 0
        if buy:
            return price * 1000 >= order.extreme * (1000 + rate)
        return price * 1000 <= order.extreme * (1000 - rate)

    # -- fills -------------------------------------------------------------------------------
    def _on_fills(self, state: MarketState, fills: list[Fill]) -> None:
        super()._on_fills(state, fills)
        owners = {o for f in fills for o in (f.maker_owner, f.taker_owner) if o > 0}
        for account in sorted(owners):
            self._sweep(account, state.market.symbol)

    def _fill(self, order: UserOrder, trade_id: int, price: int, qty: int, maker: bool,
              other: int) -> None:
        self._trade_id = trade_id
        super()._fill(order, trade_id, price, qty, maker, other)

    def _settle(self, order: UserOrder, price: int, qty: int, maker: bool, other: int,
                fee_ppm: int) -> dict:
        market = order.state.market
        account, symbol = order.account, order.symbol
        pos = self.position(account, symbol, order.position_side)
        before = pos.amt
        pnl = units(market, apply_fill(pos, order.side, qty, price))
        notional = units(market, price * qty)
        fee = notional * fee_ppm // 1_000_000
        pos.realized += pnl
        pos.update_time = now_ms()
        if before and (not pos.amt or (before > 0) != (pos.amt > 0)):
            # Closed or flipped: the margin set aside for the old position is free again.
            release_isolated(self, account, symbol, order.position_side)
        ledger = self.ledger
        ledger.move(WALLET, MARGIN_ASSET, pnl, HOUSE, account, allow_negative=True)
        ledger.move(WALLET, MARGIN_ASSET, fee, account, FEES, allow_negative=True)
        trade_id = str(self._trade_id)
        if pnl:
            self.add_income(account, symbol, "REALIZED_PNL", pnl, trade_id)
        if fee:
            self.add_income(account, symbol, "COMMISSION", -fee, trade_id)
        self.clear_deficit(account, symbol)
        return {
            "buyer": order.side == BUY,
            "commission": format_amount(fee),
            "commissionAsset": MARGIN_ASSET,
            "maker": maker,
            "marginAsset": MARGIN_ASSET,
            "price": market.format_price(price),
            "qty": market.format_qty(qty),
            "quoteQty": format_amount(notional),
            "realizedPnl": format_amount(pnl),
            "side": order.side_name,
            "positionSide": order.position_side,
            "symbol": symbol,
        }

    def force_order(self, account: int, req: OrderRequest) -> UserOrder:
        """Place an order with no check at all (liquidation): ``autoclose-`` client id."""
        state = self.states[req.symbol]
        now = now_ms()
        order = UserOrder(state.next_order_id(), account, state, req, now)
        order.client_id = f"{LIQUIDATION_PREFIX}{now}{order.id:06d}"
        key = (account, req.symbol)
        self.orders[(req.symbol, order.id)] = order
        self.by_account.setdefault(key, []).append(order)
        self.open.setdefault(key, {})[order.id] = order
        self._events(order, "NEW")
        self._submit(order)
        return order

    # -- money helpers -----------------------------------------------------------------------
    def add_income(self, account: int, symbol: str, kind: str, amount: int,
                   trade_id: str = "", asset: str = MARGIN_ASSET) -> dict:
        row = {"symbol": symbol, "incomeType": kind, "income": format_amount(amount),
               "asset": asset, "info": kind, "time": now_ms(),
               "tranId": str(self.tran_ids.next()),
               "tradeId": trade_id}
        rows = self.income.get(account)
        if rows is None:
            rows = self.income[account] = history()
        rows.append(row)
        return row

    def clear_deficit(self, account: int, symbol: str) -> None:
        """A wallet below zero is refilled by the house (the insurance fund)."""
        free = self.ledger.free(WALLET, account, MARGIN_ASSET)
        if free < 0 and self.ledger.locked(WALLET, account, MARGIN_ASSET):
            # Set-aside margin pays before the house does, only as much as is missing.
            free += draw_isolated(self, account, -free, symbol)
        if free < 0:
            self.ledger.move(WALLET, MARGIN_ASSET, -free, HOUSE, account)
            self.add_income(account, symbol, "INSURANCE_CLEAR", -free)

    def transfer(self, account: int, asset: str, amount: int, kind: str, client_id: str) -> int:
        """``asset/wallet/transfer``: between the spot and perp wallets; returns the tranId."""
        if (account, client_id) in self.transfers:
            raise OrderError(-4115, "clientTranId  is duplicated")
        if kind == "FUTURE_SPOT":
            free = self.ledger.free(WALLET, account, asset)
            limit = free if asset != MARGIN_ASSET else min(free, self.figures(account).available)
            if amount > limit:
                raise OrderError(-2018, "Balance is insufficient.")
            self.ledger.move(WALLET, asset, amount, account, account, dst_wallet="spot")
            change = -amount
        else:
            if amount > self.ledger.free("spot", account, asset):
                raise OrderError(-2018, "Balance is insufficient.")
            self.ledger.move("spot", asset, amount, account, account, dst_wallet=WALLET)
            change = amount
        self.transfers.add((account, client_id))
        row = self.add_income(account, "", "TRANSFER", change, asset=asset)
        tran_id = int(row["tranId"])
        if self.on_transfer is not None:  # the same transfer, the same tranId, on spot
            self.on_transfer(account, asset, -change, tran_id)
        self.account_update(account, "ASSET_TRANSFER", [], change, asset)
        return tran_id

    # -- user stream -------------------------------------------------------------------------
    def _events(self, order: UserOrder, exec_type: str, trade: dict | None = None) -> None:
        if trade is not None:
            self.account_update(order.account, "ORDER", [(order.symbol, order.position_side)])
        self.emit(order.account, order_trade_update(self, order, exec_type, trade))

    def account_update(self, account: int, reason: str, positions: list[tuple[str, str]],
                       change: int = 0, asset: str = MARGIN_ASSET) -> None:
        self.emit(account, account_update(self, account, reason, positions, change, asset))

    def config_update(self, account: int, body: dict) -> None:
        self.emit(account, config_update(body))

    # -- per step ----------------------------------------------------------------------------
    def set_countdown(self, account: int, symbol: str, ms: int) -> None:
        """``countdownCancelAll``: cancel ``symbol``'s open orders ``ms`` from now (0: never)."""
        if ms:
            self.countdowns[(account, symbol)] = now_ms() + ms
        else:
            self.countdowns.pop((account, symbol), None)

    def expire_countdowns(self, now: int) -> None:
        """Cancel the open orders of every countdown whose deadline is ``now`` or earlier."""
        for key, deadline in list(self.countdowns.items()):
            if deadline <= now:
                del self.countdowns[key]
                self.cancel_all(*key)

    def check_triggers(self) -> None:
        super().check_triggers()
        now = now_ms()
        if self.countdowns:
            self.expire_countdowns(now)
        if now >= self.next_funding:
            due = self.next_funding
            self.next_funding = now - now % self.funding_interval_ms + self.funding_interval_ms
            for symbol in self.states:
                settle_funding(self, symbol)
                self.funding_history.append({"symbol": symbol, "fundingRate":
                                             self.last_funding[symbol]["fundingRate"],
                                             "fundingTime": due})
        check_liquidations(self)
        if now // 1000 != self._sampled_second:  # once per second: candles need no more
            self._sampled_second = now // 1000
            self.sample_prices(now)

    def sample_prices(self, now: int | None = None) -> None:
        """Record every market's mark and index (``premiumIndex``'s figures) for the klines."""
        now = now_ms() if now is None else now
        for symbol, state in self.states.items():
            mark, index = mark_index_e8(state, self.index_price(state))
            self.price_history.sample(symbol, now, mark, index)

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        data = super().to_dict()
        data["perp"] = {
            "positions": [[a, s, ps, p.amt, p.cost, p.realized, p.update_time]
                          for a, book in self.positions.items() for (s, ps), p in book.items()],
            "leverage": [[a, s, v] for (a, s), v in self.leverages.items()],
            "margin_type": [[a, s, v] for (a, s), v in self.margin_types.items()],
            "dual": sorted(self.dual),
            "income": [[a, list(rows)] for a, rows in self.income.items()],
            "transfers": sorted([a, c] for a, c in self.transfers),
            "tran_id": self.tran_ids.last,
            "funding_history": list(self.funding_history),
            "isolated": [[a, s, ps, v] for (a, s, ps), v in self.isolated.items()],
            "margin_history": [[a, list(rows)] for a, rows in self.margin_history.items()],
            "multi_assets": sorted(self.multi_assets),
            "countdowns": [[a, s, t] for (a, s), t in self.countdowns.items()],
        }
        return data

    def load(self, data: dict) -> None:
        """Positions and settings first: re-entering open orders may fill against them."""
        perp = data.get("perp", {})
        for a, s, ps, amt, cost, realized, t in perp.get("positions", ()):
            self.positions.setdefault(a, {})[(s, ps)] = Position(amt, cost, realized, t)
        self.leverages.update({(a, s): v for a, s, v in perp.get("leverage", ())})
        self.margin_types.update({(a, s): v for a, s, v in perp.get("margin_type", ())})
        self.dual.update(perp.get("dual", ()))
        self.income.update({a: history(rows) for a, rows in perp.get("income", ())})
        self.transfers.update((a, c) for a, c in perp.get("transfers", ()))
        self.tran_ids.last = max(self.tran_ids.last, perp.get("tran_id", 0))
        self.funding_history.extend(perp.get("funding_history", ()))
        self.isolated.update({(a, s, ps): v for a, s, ps, v in perp.get("isolated", ())})
        self.margin_history.update({a: history(rows)
                                    for a, rows in perp.get("margin_history", ())})
        self.multi_assets.update(perp.get("multi_assets", ()))
        self.countdowns.update({(a, s): t for a, s, t in perp.get("countdowns", ())})
        super().load(data)
