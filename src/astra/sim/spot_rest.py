"""Spot signed endpoints beyond orders and the account: ``asset/wallet/transfer`` (the spot
path of the transfer between the spot and perp wallets; the perpetual path is the same
operation) and ``transactionHistory`` (V1 HMAC ``/api/v1/…``, V3 EIP-712 ``/api/v3/…``).

Invariant: a transfer made on either path is one ledger move, one perp income row and one
spot ``transactionHistory`` row (``PerpTrading.on_transfer``), all three under the one
``tranId`` the answer carries, with one ``clientTranId`` namespace per account.
"""

from __future__ import annotations

from .orders import OrderError
from .perp import PerpTrading
from .perp_rest import wallet_transfer
from .private import PrivateSide, SignedRequest
from .records import SEVEN_DAYS_MS, query_window, window
from .spot import SpotTrading
from .state import now_ms

__all__ = ["TRANSACTION_TYPES", "add_spot_routes"]

TRANSACTION_TYPES = (
    "TRADE_TARGET", "TRADE_SOURCE", "TRANSFER_SPOT_TO_FUTURE", "TRANSFER_FUTURE_TO_SPOT",
    "TRANSFER_SPOT_TO_SPOT", "AIRDROP", "DIVIDEND", "TRANSFER_REFUND", "INTERNAL_TRANSFER",
    "TRANSFER", "SWAP", "COMMISSION_REBATE", "CASH_BACK", "STAKING_WITHDRAW", "STAKING_CLAIM",
    "STAKING_DELEGATE",
)  # fmt: skip


def add_spot_routes(private: PrivateSide, spot: SpotTrading, perp: PerpTrading) -> None:
    private.add("POST", "asset/wallet/transfer", lambda r: wallet_transfer(perp, r))
    private.add("GET", "transactionHistory", lambda r: _history(spot, r))


def _history(spot: SpotTrading, r: SignedRequest) -> list[dict]:
    asset, kind = r.get("asset"), r.get("type")
    if kind is not None and kind not in TRANSACTION_TYPES:
        raise OrderError(-1130, "Data sent for parameter 'type' is not valid.")
    start, end, limit = query_window(r, 100, 1000)
    if start is None and end is None:  # the docs: only the most recent 7 days
        start = now_ms() - SEVEN_DAYS_MS
    rows = [row for row in spot.transactions.get(r.account.id, ())
            if (asset is None or row["asset"] == asset) and (kind is None or row["type"] == kind)
            and (start is None or row["time"] >= start) and (end is None or row["time"] <= end)]
    return window(rows, limit, r.get("startTime") is not None)
