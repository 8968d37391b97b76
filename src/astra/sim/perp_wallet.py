"""Money of the perp wallet outside a fill's settlement: income rows, the insurance cover of a
deficit, and transfers between the spot and perp wallets.

Invariants:
- Every amount is moved by the ledger (``Ledger.move`` / ``unlock``), so money is conserved
  and ``Ledger.check`` holds after each function returns.
- After ``clear_deficit`` the account's free perp balance is not below zero: margin set aside
  for isolated positions (``perp_margin.draw_isolated``) pays first, as far as needed, then
  the house covers the rest (income ``INSURANCE_CLEAR``).
- Every income row gets a fresh ``tranId`` from the side's ``TranIds`` (shared with spot by
  ``app.py``); a transfer's row and its spot ``transactionHistory`` row carry the same one.
- A ``clientTranId`` is accepted once per account (-4115 after); a transfer out of the perp
  wallet is limited by the available balance (-2018), so it never frees margin in use.

The trading side is passed in as a ``perp_side.PerpSide``: ``perp`` imports this module, never
the reverse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .ledger import HOUSE, format_amount
from .orders import OrderError
from .perp_figures import account_figures
from .perp_margin import draw_isolated
from .perp_positions import MARGIN_ASSET, WALLET
from .records import history
from .state import now_ms

if TYPE_CHECKING:
    from .perp_side import PerpSide

__all__ = ["add_income", "clear_deficit", "transfer"]


def add_income(trading: PerpSide, account: int, symbol: str, kind: str, amount: int,
               trade_id: str = "", asset: str = MARGIN_ASSET) -> dict:
    """Record an ``income`` row (``incomeType`` ``kind``) for ``account``; returns it."""
    row = {"symbol": symbol, "incomeType": kind, "income": format_amount(amount),
           "asset": asset, "info": kind, "time": now_ms(),
           "tranId": str(trading.tran_ids.next()),
           "tradeId": trade_id}
    rows = trading.income.get(account)
    if rows is None:
        rows = trading.income[account] = history()
    rows.append(row)
    return row


def clear_deficit(trading: PerpSide, account: int, symbol: str) -> None:
    """A wallet below zero is refilled by the house (the insurance fund)."""
    free = trading.ledger.free(WALLET, account, MARGIN_ASSET)
    if free < 0 and trading.ledger.locked(WALLET, account, MARGIN_ASSET):
        # Set-aside margin pays before the house does, only as much as is missing.
        free += draw_isolated(trading, account, -free, symbol)
    if free < 0:
        trading.ledger.move(WALLET, MARGIN_ASSET, -free, HOUSE, account)
        add_income(trading, account, symbol, "INSURANCE_CLEAR", -free)


def transfer(trading: PerpSide, account: int, asset: str, amount: int, kind: str,
             client_id: str) -> int:
    """``asset/wallet/transfer``: between the spot and perp wallets; returns the tranId."""
    if (account, client_id) in trading.transfers:
        raise OrderError(-4115, "clientTranId  is duplicated")
    if kind == "FUTURE_SPOT":
        free = trading.ledger.free(WALLET, account, asset)
        limit = (free if asset != MARGIN_ASSET
                 else min(free, account_figures(trading, account).available))
        if amount > limit:
            raise OrderError(-2018, "Balance is insufficient.")
        trading.ledger.move(WALLET, asset, amount, account, account, dst_wallet="spot")
        change = -amount
    else:
        if amount > trading.ledger.free("spot", account, asset):
            raise OrderError(-2018, "Balance is insufficient.")
        trading.ledger.move("spot", asset, amount, account, account, dst_wallet=WALLET)
        change = amount
    trading.transfers.add((account, client_id))
    row = add_income(trading, account, "", "TRANSFER", change, asset=asset)
    tran_id = int(row["tranId"])
    if trading.on_transfer is not None:  # the same transfer, the same tranId, on spot
        trading.on_transfer(account, asset, -change, tran_id)
    trading.account_update(account, "ASSET_TRANSFER", [], change, asset)
    return tran_id
