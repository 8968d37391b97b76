"""Position margin endpoints of the perpetual side: ``positionMargin`` (add / reduce isolated
margin) and its history, ``multiAssetsMargin``, and ``adlQuantile`` (V1 HMAC ``/fapi/v1/…``,
V3 EIP-712 ``/fapi/v3/…``).

What the margin model allows (see ``perp.py``): every position is margined as cross, so
liquidation looks at the whole account. ``positionMargin`` on an ISOLATED position with a
non-zero amount sets USDT aside for it: the amount is *locked* in the account's perp wallet
(no money moves, so the ledger's conservation holds), leaves the available balance (what
orders and transfers may use) and still counts in the margin balance. ``type=2`` unlocks up
to what was added (-4051 beyond). The margin is unlocked when the position closes or flips
side (one-way mode), and the part of it a deficit needs is unlocked before the house covers
the rest. ``positionRisk`` reports ``isolatedWallet`` as the
position's initial margin plus what was added and ``isolatedMargin`` as that plus its
unrealized PnL.

``multiAssetsMargin`` is stored per account and reported; the only margin asset is USDT, so
the mode changes no figure. ``adlQuantile``: the simulator never auto-deleverages (the house
absorbs every liquidation), so the quantile is an estimate from the position's return on its
initial margin: 0 at a loss, then 1..4 per 25 % of profit (4 from 75 %).

The trading side is a ``perp_side.PerpSide``: ``perp`` imports this module, never the reverse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .filters import FilterError, parse_decimal
from .ledger import InsufficientBalance, format_amount
from .orders import OrderError
from .perp_positions import MARGIN_ASSET, WALLET
from .records import history, query_window, window
from .state import now_ms

if TYPE_CHECKING:
    from .perp_side import PerpSide
    from .private import PrivateSide, SignedRequest

__all__ = ["add_margin_routes", "adl_quantile", "draw_isolated", "release_isolated"]

OK = {"code": 200, "msg": "success"}


def release_isolated(trading: PerpSide, account: int, symbol: str, ps: str) -> None:
    """Unlock the margin set aside for one position (closed or flipped)."""
    held = trading.isolated.pop((account, symbol, ps), 0)
    if held:
        trading.ledger.unlock(WALLET, account, MARGIN_ASSET, held)


def _unset(trading: PerpSide, key: tuple[int, str, str], amount: int) -> None:
    """Unlock ``amount`` (at most what is held) of one position's set-aside margin; an entry
    exists only while positive, so an emptied one is deleted."""
    trading.ledger.unlock(WALLET, key[0], MARGIN_ASSET, amount)
    held = trading.isolated[key] - amount
    if held:
        trading.isolated[key] = held
    else:
        del trading.isolated[key]


def draw_isolated(trading: PerpSide, account: int, need: int, symbol: str) -> int:
    """Unlock up to ``need`` of the margin set aside by ``account`` (``symbol``'s positions
    first), to pay a shortfall before the house does; returns what was unlocked. The rest
    stays set aside for its positions."""
    keys = sorted((k for k in trading.isolated if k[0] == account), key=lambda k: k[1] != symbol)
    drawn = 0
    for key in keys:
        if drawn >= need:
            break
        held = trading.isolated[key]
        take = min(held, need - drawn)
        _unset(trading, key, take)
        drawn += take
    return drawn


def add_margin_routes(private: PrivateSide, trading: PerpSide) -> None:
    add = private.add
    add("POST", "positionMargin", lambda r: _modify(trading, r))
    add("GET", "positionMargin/history", lambda r: _history(trading, r))
    add("POST", "multiAssetsMargin", lambda r: _set_multi(trading, r))
    add("GET", "multiAssetsMargin",
        lambda r: {"multiAssetsMargin": r.account.id in trading.multi_assets})
    add("GET", "adlQuantile", lambda r: adl_quantile(trading, r))


def positive_amount(text: str) -> int:
    """An ``amount`` parameter (margin, transfers) in ledger units (10**-8): at most 8
    decimals, above zero."""
    try:
        amount = parse_decimal(text, "amount", 8)
    except FilterError as exc:
        raise OrderError(exc.code, exc.msg) from None
    if amount <= 0:
        raise OrderError(-4055, "Amount must be positive.")
    return amount


def _position_side(trading: PerpSide, r: SignedRequest) -> str:
    ps = r.get("positionSide") or "BOTH"
    if ps not in ("BOTH", "LONG", "SHORT"):
        raise OrderError(-4060, "Invalid position side.")
    if (ps == "BOTH") == (r.account.id in trading.dual):
        raise OrderError(-4061, "Order's position side does not match user's setting.")
    return ps


def _modify(trading: PerpSide, r: SignedRequest) -> dict:
    symbol = r.require("symbol")
    trading.state(symbol)
    ps = _position_side(trading, r)
    text = r.require("amount")
    kind = r.int("type")
    r.require("type")
    if kind not in (1, 2):
        raise OrderError(-1130, "Data sent for parameter 'type' is not valid.")
    amount = positive_amount(text)
    account = r.account.id
    if trading.margin_type(account, symbol) != "ISOLATED":
        raise OrderError(-4049, "Add margin only support for isolated position.")
    if not trading.amount(account, symbol, ps):
        raise OrderError(-4054, "Cannot add position margin: position is 0.")
    key = (account, symbol, ps)
    held = trading.isolated.get(key, 0)
    if kind == 1:
        if amount > trading.figures(account).available:
            raise OrderError(-4050, "Cross balance insufficient.")
        try:
            trading.ledger.lock(WALLET, account, MARGIN_ASSET, amount)
        except InsufficientBalance:
            raise OrderError(-4050, "Cross balance insufficient.") from None
        trading.isolated[key] = held + amount
    else:
        if amount > held:
            raise OrderError(-4051, "Isolated balance insufficient.")
        _unset(trading, key, amount)
    rows = trading.margin_history.get(account)
    if rows is None:
        rows = trading.margin_history[account] = history()
    rows.append({
        "amount": format_amount(amount), "asset": MARGIN_ASSET, "symbol": symbol,
        "time": now_ms(), "type": kind, "positionSide": ps,
    })
    trading.account_update(account, "MARGIN_TRANSFER", [(symbol, ps)])
    return {"amount": float(format_amount(amount)), "code": 200,
            "msg": "Successfully modify position margin.", "type": kind}


def _history(trading: PerpSide, r: SignedRequest) -> list[dict]:
    symbol = r.require("symbol")
    trading.state(symbol)
    kind = r.int("type")
    if kind is not None and kind not in (1, 2):
        raise OrderError(-1130, "Data sent for parameter 'type' is not valid.")
    start, end, limit = query_window(r, 500, 1000)
    rows = [row for row in trading.margin_history.get(r.account.id, ())
            if row["symbol"] == symbol and (kind is None or row["type"] == kind)
            and (start is None or row["time"] >= start) and (end is None or row["time"] <= end)]
    return window(rows, limit, start is not None)


def _set_multi(trading: PerpSide, r: SignedRequest) -> dict:
    r.require("multiAssetsMargin")
    if r.bool("multiAssetsMargin"):
        trading.multi_assets.add(r.account.id)
    else:
        trading.multi_assets.discard(r.account.id)
    return OK


def _quantile(trading: PerpSide, account: int, symbol: str, sides: tuple[str, ...],
              marks: dict[str, int]) -> int:
    upnl = im = 0
    for ps in sides:
        f = trading.position_figures(account, symbol, ps, marks[symbol])
        upnl, im = upnl + f.upnl, im + f.pos_im
    if upnl <= 0 or im <= 0:
        return 0
    return min(4, 1 + upnl * 4 // im)  # 25 % of the initial margin per step


def adl_quantile(trading: PerpSide, r: SignedRequest) -> list[dict]:
    symbol = r.get("symbol")
    if symbol is not None:
        trading.state(symbol)
    account = r.account.id
    marks = trading.marks()
    rows = []
    for sym in trading.states:
        if symbol is not None and sym != symbol:
            continue
        if not any(trading.amount(account, sym, ps) for ps in ("BOTH", "LONG", "SHORT")):
            continue
        if account not in trading.dual:
            q = {"LONG": 0, "SHORT": 0, "BOTH": _quantile(trading, account, sym, ("BOTH",),
                                                           marks)}
        elif trading.margin_type(account, sym) == "CROSSED":
            both = _quantile(trading, account, sym, ("LONG", "SHORT"), marks)
            q = {"LONG": both, "SHORT": both, "HEDGE": 0}  # HEDGE: only a sign (the docs)
        else:
            q = {ps: _quantile(trading, account, sym, (ps,), marks) for ps in ("LONG", "SHORT")}
            q["BOTH"] = 0
        rows.append({"symbol": sym, "adlQuantile": q})
    return rows
