"""The perpetual-only signed REST endpoints (``/fapi``), shaped field for field as the futures
docs show them (V1 paths ``/fapi/v1|v2|v4/…`` signed with HMAC, V3 ``/fapi/v3/…`` with
EIP-712; the order endpoints themselves come from ``PrivateSide.add_order_routes``).

Paths per version follow the docs: ``balance`` v2/v3, ``account`` v4 (V1 docs) and
``accountWithJoinMargin`` v3 (V3 docs), ``positionRisk`` v2/v3, everything else v1/v3. A few
extra paths that ccxt's ``aster`` client lists are served too (``v2/account``, ``v3/account``).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from .ledger import format_amount
from .orders import OrderError
from .perp import PerpTrading
from .perp_batch import add_batch_routes
from .perp_margin import add_margin_routes, positive_amount
from .perp_market import market_routes
from .perp_positions import (
    BRACKETS,
    LIQUIDATION_PREFIX,
    MAINT_PERMILLE,
    MARGIN_ASSET,
    MAX_LEVERAGE,
    WALLET,
    Figures,
    max_notional,
    value_at,
)  # fmt: skip
from .private import PrivateSide, SignedRequest
from .records import SEVEN_DAYS_MS, query_window, window
from .state import now_ms

__all__ = ["account_json", "add_perp_routes", "balance_json", "position_risk", "wallet_transfer"]

INCOME_TYPES = ("TRANSFER", "WELCOME_BONUS", "REALIZED_PNL", "FUNDING_FEE", "COMMISSION",
                "INSURANCE_CLEAR", "MARKET_MERCHANT_RETURN_REWARD")
OK = {"code": 200, "msg": "success"}


def add_perp_routes(private: PrivateSide, trading: PerpTrading) -> None:
    add = private.add
    add("GET", "balance", lambda r: balance_json(trading, r.account.id), versions=("v2", "v3"))
    def account(r: SignedRequest) -> dict:
        return account_json(trading, r.account.id)

    add("GET", "account", account, versions=("v2", "v3", "v4"))
    add("GET", "accountWithJoinMargin", account, versions=("v3",))
    add("GET", "positionRisk", lambda r: position_risk(trading, r), versions=("v2", "v3"))
    add("POST", "leverage", lambda r: _leverage(trading, r))
    add("POST", "marginType", lambda r: _margin_type(trading, r))
    add("GET", "positionSide/dual",
        lambda r: {"dualSidePosition": r.account.id in trading.dual})
    add("POST", "positionSide/dual", lambda r: _dual(trading, r))
    add("GET", "income", lambda r: _income(trading, r))
    add("GET", "commissionRate", lambda r: _commission(trading, r))
    add("GET", "leverageBracket", lambda r: _brackets(trading, r))
    add("GET", "forceOrders", lambda r: _force_orders(trading, r))
    add("POST", "asset/wallet/transfer", lambda r: wallet_transfer(trading, r))
    add_batch_routes(private, trading)
    add_margin_routes(private, trading)
    private.routes.extend(market_routes(trading))  # unsigned, but they read the trading side


# -- account views ---------------------------------------------------------------------------
def _alias(account: int) -> str:
    digest = hashlib.sha256(f"astra-sim-{account}".encode()).digest()
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "".join(letters[b % 52] for b in digest[:16])


def _update_time(trading: PerpTrading, account: int) -> int:
    rows = trading.income.get(account)
    return rows[-1]["time"] if rows else 0


def _wallets(trading: PerpTrading, account: int) -> dict[str, int]:
    out = {a: f + lk for a, (f, lk) in trading.ledger.balances(WALLET, account).items()}
    out.setdefault(MARGIN_ASSET, 0)
    return dict(sorted(out.items()))


def _asset_figures(asset: str, wallet: int, f: Figures) -> dict[str, int]:
    if asset != MARGIN_ASSET:
        return {"wallet": wallet, "upnl": 0, "pos_im": 0, "order_im": 0, "maint": 0,
                "available": wallet, "max_withdraw": wallet}
    return {"wallet": wallet, "upnl": f.upnl, "pos_im": f.pos_im, "order_im": f.order_im,
            "maint": f.maint, "available": f.available,
            "max_withdraw": max(0, min(wallet, f.available))}


def balance_json(trading: PerpTrading, account: int) -> list[dict]:
    f = trading.figures(account)
    alias, updated = _alias(account), _update_time(trading, account)
    rows = []
    for asset, wallet in _wallets(trading, account).items():
        a = _asset_figures(asset, wallet, f)
        rows.append({
            "accountAlias": alias,
            "asset": asset,
            "balance": format_amount(wallet),
            "crossWalletBalance": format_amount(wallet),
            "crossUnPnl": format_amount(a["upnl"]),
            "availableBalance": format_amount(a["available"]),
            "maxWithdrawAmount": format_amount(a["max_withdraw"]),
            "marginAvailable": asset == MARGIN_ASSET,
            "updateTime": updated,
        })
    return rows


def account_json(trading: PerpTrading, account: int) -> dict:
    marks = trading.marks()
    f = trading.figures(account, marks)
    updated = _update_time(trading, account)
    usdt = _asset_figures(MARGIN_ASSET, f.wallet, f)
    assets = []
    for asset, wallet in _wallets(trading, account).items():
        a = _asset_figures(asset, wallet, f)
        assets.append({
            "asset": asset,
            "walletBalance": format_amount(wallet),
            "unrealizedProfit": format_amount(a["upnl"]),
            "marginBalance": format_amount(wallet + a["upnl"]),
            "maintMargin": format_amount(a["maint"]),
            "initialMargin": format_amount(a["pos_im"] + a["order_im"]),
            "positionInitialMargin": format_amount(a["pos_im"]),
            "openOrderInitialMargin": format_amount(a["order_im"]),
            "crossWalletBalance": format_amount(wallet),
            "crossUnPnl": format_amount(a["upnl"]),
            "availableBalance": format_amount(a["available"]),
            "maxWithdrawAmount": format_amount(a["max_withdraw"]),
            "marginAvailable": asset == MARGIN_ASSET,
            "updateTime": updated,
        })
    positions = []
    for symbol, state in trading.states.items():
        market = state.market
        lev = trading.leverage(account, symbol)
        for ps in trading.sides_of(account):
            pos = trading.peek(account, symbol, ps)
            p = trading.position_figures(account, symbol, ps, marks[symbol])
            order_im = trading.order_im(account, symbol, ps)
            positions.append({
                "symbol": symbol,
                "initialMargin": format_amount(p.pos_im + order_im),
                "maintMargin": format_amount(p.maint),
                "unrealizedProfit": format_amount(p.upnl),
                "positionInitialMargin": format_amount(p.pos_im),
                "openOrderInitialMargin": format_amount(order_im),
                "leverage": str(lev),
                "isolated": trading.margin_type(account, symbol) == "ISOLATED",
                "entryPrice": pos.entry(market),
                "maxNotional": str(max_notional(lev)),
                "positionSide": ps,
                "positionAmt": market.format_qty(pos.amt),
                "notional": market.format_qty(0) if not pos.amt else _notional(
                    trading, symbol, pos.amt, marks[symbol]),
                "isolatedWallet": _isolated(trading, account, symbol, ps, p)[0],
                "updateTime": pos.update_time,
            })
    return {
        "feeTier": 0,
        "canTrade": True,
        "canDeposit": True,
        "canWithdraw": True,
        "updateTime": 0,
        "totalInitialMargin": format_amount(f.pos_im + f.order_im),
        "totalMaintMargin": format_amount(f.maint),
        "totalWalletBalance": format_amount(f.wallet),
        "totalUnrealizedProfit": format_amount(f.upnl),
        "totalMarginBalance": format_amount(f.margin_balance),
        "totalPositionInitialMargin": format_amount(f.pos_im),
        "totalOpenOrderInitialMargin": format_amount(f.order_im),
        "totalCrossWalletBalance": format_amount(f.wallet),
        "totalCrossUnPnl": format_amount(f.upnl),
        "availableBalance": format_amount(usdt["available"]),
        "maxWithdrawAmount": format_amount(usdt["max_withdraw"]),
        "assets": assets,
        "positions": positions,
    }


def _isolated(trading: PerpTrading, account: int, symbol: str, ps: str, p: Figures
              ) -> tuple[str, str]:
    """(isolatedWallet, isolatedMargin) of an ISOLATED position: its initial margin plus the
    margin added to it, then plus its unrealized PnL ("0" for cross positions)."""
    if trading.margin_type(account, symbol) != "ISOLATED" or not p.pos_im:
        return "0", "0.00000000"
    wallet = p.pos_im + trading.isolated.get((account, symbol, ps), 0)
    return format_amount(wallet), format_amount(wallet + p.upnl)


def _notional(trading: PerpTrading, symbol: str, amt: int, mark: int) -> str:
    """Signed position value at mark (``mark_e8``), in the quote asset."""
    return format_amount(value_at(trading.states[symbol].market, amt, mark))


def liquidation_price(trading: PerpTrading, account: int, symbol: str, ps: str,
                      marks: dict[str, int], f: Figures) -> str:
    """The mark price at which the account's margin balance would meet its maintenance
    margin, every other position held at its current mark ("0" when there is none)."""
    market = trading.states[symbol].market
    pos = trading.peek(account, symbol, ps)
    if not pos.amt:
        return "0"
    mine = trading.position_figures(account, symbol, ps, marks[symbol])
    scale = Decimal(1).scaleb(-8)
    others_upnl = (f.upnl - mine.upnl) * scale
    others_maint = (f.maint - mine.maint) * scale
    q = Decimal(pos.amt).scaleb(-market.qty_dp)
    signed_cost = Decimal(pos.cost if pos.amt > 0 else -pos.cost).scaleb(
        -market.price_dp - market.qty_dp)
    mmr = Decimal(MAINT_PERMILLE) / 1000
    price = (others_maint - f.wallet * scale - others_upnl + signed_cost) / (q - abs(q) * mmr)
    if price <= 0:
        return "0"
    return f"{price.quantize(Decimal(1).scaleb(-market.price_dp))}"


def position_risk(trading: PerpTrading, r: SignedRequest) -> list[dict]:
    symbol = r.get("symbol")
    if symbol is not None:
        trading.state(symbol)
    account = r.account.id
    marks = trading.marks()
    f = trading.figures(account, marks)
    rows = []
    for sym, state in trading.states.items():
        if symbol is not None and sym != symbol:
            continue
        market = state.market
        lev = trading.leverage(account, sym)
        mark_text = trading.mark(state).p
        for ps in trading.sides_of(account):
            pos = trading.peek(account, sym, ps)
            p = trading.position_figures(account, sym, ps, marks[sym])
            iso_wallet, iso_margin = _isolated(trading, account, sym, ps, p)
            rows.append({
                "entryPrice": pos.entry(market),
                "marginType": "isolated" if trading.margin_type(account, sym) == "ISOLATED"
                else "cross",
                "isAutoAddMargin": "false",
                "isolatedMargin": iso_margin,
                "leverage": str(lev),
                "liquidationPrice": liquidation_price(trading, account, sym, ps, marks, f),
                "markPrice": mark_text,
                "maxNotionalValue": str(max_notional(lev)),
                "positionAmt": market.format_qty(pos.amt),
                "notional": _notional(trading, sym, pos.amt, marks[sym]),
                "isolatedWallet": iso_wallet,
                "symbol": sym,
                "unRealizedProfit": format_amount(p.upnl),
                "positionSide": ps,
                "updateTime": pos.update_time,
            })
    return rows


# -- settings --------------------------------------------------------------------------------
def _symbol(trading: PerpTrading, r: SignedRequest) -> str:
    symbol = r.require("symbol")
    trading.state(symbol)
    return symbol


def _leverage(trading: PerpTrading, r: SignedRequest) -> dict:
    symbol = _symbol(trading, r)
    r.require("leverage")
    lev = r.int("leverage")
    if lev is None or not 1 <= lev <= MAX_LEVERAGE:
        raise OrderError(-4028, f"Leverage {r.get('leverage')} is not valid")
    account = r.account.id
    key = (account, symbol)
    old = trading.leverage(account, symbol)
    market = trading.states[symbol].market
    mark = trading.mark_e8(trading.states[symbol])
    largest = max(abs(trading.amount(account, symbol, ps)) for ps in ("BOTH", "LONG", "SHORT"))
    if value_at(market, largest, mark) > max_notional(lev) * 10**8:
        raise OrderError(-2027, "Exceeded the maximum allowable position at current leverage.")
    trading.leverages[key] = lev
    if lev < old and trading.figures(account).available < 0:
        trading.leverages[key] = old
        raise OrderError(-2028, "Leverage is smaller than permitted: insufficient margin balance.")
    trading.config_update(account, {"ac": {"s": symbol, "l": lev}})
    return {"leverage": lev, "maxNotionalValue": str(max_notional(lev)), "symbol": symbol}


def _margin_type(trading: PerpTrading, r: SignedRequest) -> dict:
    symbol = _symbol(trading, r)
    kind = r.require("marginType").upper()
    if kind not in ("ISOLATED", "CROSSED"):
        raise OrderError(-1130, "Data sent for parameter 'marginType' is not valid.")
    account = r.account.id
    if trading.margin_type(account, symbol) == kind:
        raise OrderError(-4046, "No need to change margin type.")
    if trading.open.get((account, symbol)):
        raise OrderError(-4047, "Margin type cannot be changed if there exists open orders.")
    if any(trading.amount(account, symbol, ps) for ps in ("BOTH", "LONG", "SHORT")):
        raise OrderError(-4048, "Margin type cannot be changed if there exists position.")
    trading.margin_types[(account, symbol)] = kind
    return OK


def _dual(trading: PerpTrading, r: SignedRequest) -> dict:
    r.require("dualSidePosition")
    dual = r.bool("dualSidePosition")
    account = r.account.id
    if dual == (account in trading.dual):
        raise OrderError(-4059, "No need to change position side.")
    if any(trading.open.get((account, s)) for s in trading.states):
        raise OrderError(-4067, "Position side cannot be changed if there exists open orders.")
    if any(p.amt for p in trading.positions.get(account, {}).values()):
        raise OrderError(-4068, "Position side cannot be changed if there exists position.")
    if dual:
        trading.dual.add(account)
    else:
        trading.dual.discard(account)
    trading.config_update(account, {"ai": {"j": False, "f": False, "d": dual}})
    return OK


# -- history ---------------------------------------------------------------------------------
def _income(trading: PerpTrading, r: SignedRequest) -> list[dict]:
    symbol = r.get("symbol")
    if symbol is not None:
        trading.state(symbol)
    kind = r.get("incomeType")
    if kind is not None and kind not in INCOME_TYPES:
        raise OrderError(-1130, "Data sent for parameter 'incomeType' is not valid.")
    start, end, limit = query_window(r, 100, 1000)
    if start is None and end is None:
        start = now_ms() - SEVEN_DAYS_MS
    rows = [row for row in trading.income.get(r.account.id, ())
            if (symbol is None or row["symbol"] == symbol)
            and (kind is None or row["incomeType"] == kind)
            and (start is None or row["time"] >= start) and (end is None or row["time"] <= end)]
    return window(rows, limit, r.get("startTime") is not None)


def _force_orders(trading: PerpTrading, r: SignedRequest) -> list[dict]:
    symbol = r.get("symbol")
    if symbol is not None:
        trading.state(symbol)
    kind = r.get("autoCloseType")
    if kind is not None and kind not in ("LIQUIDATION", "ADL"):
        raise OrderError(-1130, "Data sent for parameter 'autoCloseType' is not valid.")
    start, end, limit = query_window(r, 50, 100)
    if start is None and end is not None:
        start = end - SEVEN_DAYS_MS
    symbols = [symbol] if symbol else list(trading.states)
    rows = sorted((o for s in symbols for o in trading.by_account.get((r.account.id, s), ())
                   if o.client_id.startswith(LIQUIDATION_PREFIX) and kind != "ADL"
                   and (start is None or o.time >= start) and (end is None or o.time <= end)),
                  key=lambda o: o.time)
    return [o.to_json(True) for o in rows[-limit:]]


def _commission(trading: PerpTrading, r: SignedRequest) -> dict:
    symbol = _symbol(trading, r)
    return {
        "symbol": symbol,
        "makerCommissionRate": f"{Decimal(trading.maker_ppm).scaleb(-6).normalize():f}",
        "takerCommissionRate": f"{Decimal(trading.taker_ppm).scaleb(-6).normalize():f}",
    }


def _brackets(trading: PerpTrading, r: SignedRequest) -> object:
    symbol = r.get("symbol")
    if symbol is not None:
        trading.state(symbol)
    ratio = MAINT_PERMILLE / 1000

    def entry(sym: str) -> dict:
        return {"symbol": sym, "brackets": [
            {"bracket": i + 1, "initialLeverage": lev, "notionalCap": cap,
             "notionalFloor": floor, "maintMarginRatio": ratio, "cum": 0}
            for i, (lev, floor, cap) in enumerate(BRACKETS)
        ]}

    return entry(symbol) if symbol is not None else [entry(s) for s in trading.states]


def wallet_transfer(trading: PerpTrading, r: SignedRequest) -> dict:
    """``asset/wallet/transfer`` (either side's path): between the spot and perp wallets."""
    asset = r.require("asset").upper()
    text = r.require("amount")
    client_id = r.require("clientTranId")
    kind = r.require("kindType")
    if len(client_id) > 64:
        raise OrderError(-4114, "clientTranId  is not valid")
    if kind not in ("FUTURE_SPOT", "SPOT_FUTURE"):
        raise OrderError(-1130, "Data sent for parameter 'kindType' is not valid.")
    amount = positive_amount(text)
    tran_id = trading.transfer(r.account.id, asset, amount, kind, client_id)
    return {"tranId": tran_id, "status": "SUCCESS"}
