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

Reduce rules: ``reduceOnly`` (one-way only) and hedge-mode closing orders (SELL LONG,
BUY SHORT) may only shrink a position: at placement the order plus the other resting
reducing orders of that position must fit in it (else -2022), and after every batch of fills
resting reducing orders that no longer fit expire, newest first, so they never flip it.

Modules: ``perp_positions`` (constants, positions, the fill arithmetic), ``perp_figures``
(margin figures, the margin check), ``perp_rules`` (position side, reduce and trailing-stop
rules), ``perp_wallet`` (income rows, deficit cover, transfers), ``perp_persist`` (the state
document), ``perp_events`` (user-stream payloads), ``perp_rest`` (the perpetual-only
endpoints), ``perp_batch`` (batch orders, countdown cancel, order/test), ``perp_margin``
(position margin, Multi-Assets, ADL), ``perp_market`` (funding history and info, index / mark
klines from ``price_history``, sampled once a second here), ``funding`` (funding,
liquidation). This module is the side's ``OrderManager``: its state, the order hooks, a fill's
settlement, the user stream and the per-step work; the helper modules work on it through the
``perp_side.PerpSide`` Protocol.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal

from astra.venues.aster import schemas as wire

from .engine import BUY, Fill
from .funding import check_liquidations, settle_funding
from .ledger import AMOUNT_DP, FEES, HOUSE, TranIds, format_amount
from .orders import OrderManager, OrderRequest, UserOrder
from .perp_events import account_update, config_update, order_trade_update
from .perp_figures import (
    account_figures,
    check_margin,
    order_im,
    position_figures,
    wallet_balance,
)
from .perp_margin import release_isolated
from .perp_persist import dump_perp, load_perp
from .perp_positions import (
    DEFAULT_LEVERAGE,
    FUNDING_INTERVAL_MS,
    LIQUIDATION_PREFIX,
    MARGIN_ASSET,
    PERP_MAKER_PPM,
    PERP_TAKER_PPM,
    WALLET,
    Figures,
    Position,
    apply_fill,
    is_reduce,
    units,
)
from .perp_rules import excess_reduce, fit_triggered, pre_check, trailing_triggered
from .perp_wallet import add_income, clear_deficit, transfer
from .price_history import PriceHistory
from .records import FUNDING_ROWS, history
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
        """The mark price exactly, in 10**-8 of the quote asset (ledger units per 1 base):
        ``mark``'s ``p`` from the numbers (no message built, no text parsed)."""
        return mark_index_e8(state, self.index_price(state))[0]

    def mark_units(self, state: MarketState) -> int:
        """The mark price on the market's price grid (trigger comparisons), half-even."""
        value = Decimal(self.mark_e8(state)).scaleb(state.market.price_dp - AMOUNT_DP)
        return int(value.to_integral_value(ROUND_HALF_EVEN))

    def marks(self) -> dict[str, int]:
        """``mark_e8`` of every market (one consistent view for several figures)."""
        return {symbol: self.mark_e8(state) for symbol, state in self.states.items()}

    # -- margin figures (perp_figures) -------------------------------------------------------
    def position_figures(self, account: int, symbol: str, ps: str, mark: int) -> Figures:
        return position_figures(self, account, symbol, ps, mark)

    def wallet(self, account: int) -> int:
        return wallet_balance(self, account)

    def figures(self, account: int, marks: dict[str, int] | None = None) -> Figures:
        return account_figures(self, account, marks)

    def order_im(self, account: int, symbol: str, ps: str, extra: UserOrder | None = None,
                 without: UserOrder | None = None) -> int:
        return order_im(self, account, symbol, ps, extra, without)

    # -- order hooks (perp_rules, perp_figures) ----------------------------------------------
    def _pre_check(self, account: int, state: MarketState, req: OrderRequest) -> None:
        pre_check(self, account, state, req)

    def _reserve(self, order: UserOrder) -> None:
        if not is_reduce(order):
            check_margin(self, order)

    def _release(self, order: UserOrder) -> None:
        order.reserve = 0  # perpetual orders lock nothing (margin is computed)

    def _on_trigger(self, order: UserOrder) -> None:
        order.triggered = True
        if not fit_triggered(self, order):
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
        return price is not None and trailing_triggered(order, price, initial=initial)

    # -- fills -------------------------------------------------------------------------------
    def _on_fills(self, state: MarketState, fills: list[Fill]) -> None:
        super()._on_fills(state, fills)
        owners = {o for f in fills for o in (f.maker_owner, f.taker_owner) if o > 0}
        for account in sorted(owners):
            # Resting reducing orders that no longer fit in their position expire.
            for o in excess_reduce(self, account, state.market.symbol):
                o.state.cancel(o.id)
                self._finish(o, "EXPIRED")

    def _settle(self, order: UserOrder, trade_id: int, price: int, qty: int, maker: bool,
                other: int, fee_ppm: int) -> dict:
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
        if pnl:
            self.add_income(account, symbol, "REALIZED_PNL", pnl, str(trade_id))
        if fee:
            self.add_income(account, symbol, "COMMISSION", -fee, str(trade_id))
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

    # -- money helpers (perp_wallet) ---------------------------------------------------------
    def add_income(self, account: int, symbol: str, kind: str, amount: int,
                   trade_id: str = "", asset: str = MARGIN_ASSET) -> dict:
        return add_income(self, account, symbol, kind, amount, trade_id, asset)

    def clear_deficit(self, account: int, symbol: str) -> None:
        clear_deficit(self, account, symbol)

    def transfer(self, account: int, asset: str, amount: int, kind: str, client_id: str) -> int:
        return transfer(self, account, asset, amount, kind, client_id)

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

    # -- persistence (perp_persist) ----------------------------------------------------------
    def to_dict(self) -> dict:
        data = super().to_dict()
        data["perp"] = dump_perp(self)
        return data

    def load(self, data: dict) -> None:
        """Positions and settings first: re-entering open orders may fill against them."""
        load_perp(self, data.get("perp", {}))
        super().load(data)
