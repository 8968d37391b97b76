"""What the perpetual helper modules need from the perpetual trading side, as a Protocol.

``funding`` (funding and liquidation), ``perp_events`` (user-stream payloads),
``perp_margin`` (position margin), ``perp_figures`` (margin figures), ``perp_rules`` (order
rules), ``perp_wallet`` (income, deficit cover, transfers) and ``perp_persist`` (the state
document) work on a ``PerpSide`` passed to them; ``perp.PerpTrading`` implements it and imports
those modules. They annotate with this Protocol rather than with ``PerpTrading``, so none of
them imports ``perp`` (not even for type checking) and the simulator has no import cycle. Only
names are imported here, for type checking, from modules below all of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from astra.venues.aster import schemas as wire

    from .ledger import Ledger, TranIds
    from .orders import OrderRequest, UserOrder
    from .perp_positions import Figures, Position
    from .state import MarketState

__all__ = ["PerpSide"]


class PerpSide(Protocol):
    states: dict[str, MarketState]
    ledger: Ledger
    positions: dict[int, dict[tuple[str, str], Position]]
    open: dict[tuple[int, str], dict[int, UserOrder]]
    trades: dict[tuple[int, str], list[dict]]  # an account's fills per symbol, oldest first
    dual: set[int]
    last_funding: dict[str, dict]
    isolated: dict[tuple[int, str, str], int]
    margin_history: dict[int, deque[dict]]
    multi_assets: set[int]
    leverages: dict[tuple[int, str], int]
    margin_types: dict[tuple[int, str], str]
    funding_history: deque[dict]  # fundingRate rows, oldest first (records.history)
    countdowns: dict[tuple[int, str], int]  # countdownCancelAll deadlines, epoch ms
    taker_ppm: int
    income: dict[int, deque[dict]]  # per account, bounded (records.history)
    transfers: set[tuple[int, str]]  # (account, clientTranId) of every transfer
    tran_ids: TranIds
    # Told of every transfer (account, asset, spot delta, tranId): spot transactionHistory.
    on_transfer: Callable[[int, str, int, int], None] | None
    # Told of every liquidation order once it has been matched (the forceOrder streams).
    on_liquidation: Callable[[wire.ForceOrderEvent], None] | None

    def state(self, symbol: str) -> MarketState: ...
    def mark(self, state: MarketState) -> wire.MarkPriceUpdate: ...
    def mark_e8(self, state: MarketState) -> int: ...
    def mark_units(self, state: MarketState) -> int: ...
    def marks(self) -> dict[str, int]: ...
    def figures(self, account: int, marks: dict[str, int] | None = None) -> Figures: ...
    def position_figures(self, account: int, symbol: str, ps: str, mark: int) -> Figures: ...
    def peek(self, account: int, symbol: str, ps: str) -> Position: ...
    def amount(self, account: int, symbol: str, ps: str) -> int: ...
    def margin_type(self, account: int, symbol: str) -> str: ...
    def leverage(self, account: int, symbol: str) -> int: ...
    def sides_of(self, account: int) -> tuple[str, ...]: ...
    def cancel(
        self, account: int, symbol: str, oid: int | None, client_id: str | None
    ) -> UserOrder: ...
    def force_order(self, account: int, req: OrderRequest) -> UserOrder: ...
    def add_income(
        self, account: int, symbol: str, kind: str, amount: int, trade_id: str = "",
        asset: str = ...,
    ) -> dict: ...
    def clear_deficit(self, account: int, symbol: str) -> None: ...
    def account_update(
        self, account: int, reason: str, positions: list[tuple[str, str]], change: int = 0,
        asset: str = ...,
    ) -> None: ...
