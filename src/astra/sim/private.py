"""The signed (TRADE / USER_DATA / USER_STREAM) REST endpoints of one venue side.

Both of Aster's schemes, chosen by the path's version: ``/v1/`` is HMAC-SHA256 with the
``X-MBX-APIKEY`` header, ``timestamp`` and ``recvWindow``; ``/v3/`` is EIP-712 with ``user``,
``signer``, ``nonce`` and ``signature`` (``signing.py`` checks both). Parameters are read from
the query string and the form body together, as the docs allow for POST/PUT/DELETE; the
signature is checked over the raw strings as sent, before anything is parsed.

Every handler runs synchronously on the event loop that runs the matching engine, so an order
is validated, reserved and matched atomically against the book a client sees.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from aiohttp import web

from .accounts import Account, AccountRegistry
from .engine import BUY, SELL
from .filters import FilterError, parse_decimal
from .orders import OrderError, OrderManager, OrderRequest
from .records import check_limit, window
from .rest import json_response
from .signing import Authenticator
from .state import now_ms

__all__ = ["Handler", "PrivateSide", "SignedRequest"]

_CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_TIFS = ("GTC", "IOC", "FOK", "GTX", "HIDDEN")
_LIMIT_TYPES = ("LIMIT", "STOP", "TAKE_PROFIT")
_STOP_TYPES = ("STOP", "TAKE_PROFIT", "STOP_MARKET", "TAKE_PROFIT_MARKET")


class SignedRequest:
    """An authenticated request: the account and its merged parameters."""

    __slots__ = ("account", "headers", "params", "request")

    def __init__(self, request: web.Request, account: Account, params: dict[str, str]) -> None:
        self.request = request
        self.account = account
        self.params = params
        # Response headers (the ORDERS counts); a handler counting more orders updates them.
        self.headers: dict[str, str] | None = None

    def get(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if value != "" else None

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise OrderError(
                -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
            )
        return value

    def int(self, name: str) -> int | None:
        text = self.get(name)
        if text is None:
            return None
        if not (text.isascii() and text.isdigit()) or len(text) > 20:
            raise OrderError(
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^[0-9]{1,20}$'.",
            )
        return int(text)

    def bool(self, name: str) -> bool:
        text = self.get(name)
        if text is None:
            return False
        if text.lower() not in ("true", "false"):
            raise OrderError(-1130, f"Data sent for parameter '{name}' is not valid.")
        return text.lower() == "true"


Handler = Callable[[SignedRequest], Awaitable[object] | object]


class PrivateSide:
    """Signed routes of one side (``/api`` spot or ``/fapi`` perpetual)."""

    def __init__(
        self,
        kind: str,
        registry: AccountRegistry,
        auth: Authenticator,
        trading: OrderManager,
        on_order: Callable[[Account], dict[str, str]] | None = None,
    ) -> None:
        self.kind = kind
        self.root = "/fapi" if kind == "perp" else "/api"
        self.registry = registry
        self.auth = auth
        self.trading = trading
        self.on_order = on_order  # counts an order against the account's ORDERS limit
        self.routes: list[web.RouteDef] = []

    # -- authentication ----------------------------------------------------------------------
    async def _authenticate(self, request: web.Request, key_only: bool) -> SignedRequest:
        query = request.query_string
        body = ""
        if request.method != "GET" and request.can_read_body:
            body = (await request.read()).decode("utf-8", "replace")
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        # /fapi/v4/account is a V1 (HMAC) path in the docs, but ccxt's aster client calls it
        # with its V3 (EIP-712) signature: a v4 request carrying ``signer`` is checked as V3.
        if "/v3/" in request.path or ("/v4/" in request.path and "signer" in params):
            creds = self.auth.v3(query, body, params, now_ms() * 1000)
        elif key_only:
            creds = self.auth.api_key_only(request.headers)
        else:
            creds = self.auth.v1(request.headers, query, body, params, now_ms())
        return SignedRequest(request, creds, params)  # the registry's creds are the Account

    def add(self, method: str, path: str, handler: Handler, *, key_only: bool = False,
            versions: tuple[str, ...] = ("v1", "v3"), order: bool = False) -> None:
        async def endpoint(request: web.Request) -> web.Response:
            signed = await self._authenticate(request, key_only)
            # An order counts against the account's ORDERS limit before it is placed (429).
            if order and self.on_order:
                signed.headers = self.on_order(signed.account)
            result = handler(signed)
            if isinstance(result, Awaitable):
                result = await result
            return json_response(result, signed.headers)

        for version in versions:
            self.routes.append(web.route(method, f"{self.root}/{version}/{path}", endpoint))

    # -- shared order endpoints --------------------------------------------------------------
    def add_order_routes(self) -> None:
        t = self.trading
        perp = self.kind == "perp"
        self.add("POST", "order", lambda r: t.place(r.account.id, self.order_request(r))
                 .to_json(perp), order=True)
        self.add("GET", "order", lambda r: self._find(r).to_json(perp))
        self.add("GET", "openOrder", self._open_order)
        self.add("DELETE", "order", lambda r: t.cancel(
            r.account.id, self._symbol(r), *self._ids(r)).to_json(perp))
        self.add("GET", "openOrders", lambda r: [
            o.to_json(perp) for o in t.open_orders(r.account.id, self._symbol(r, False))])
        self.add("GET", "allOrders", self._all_orders)
        self.add("DELETE", "allOpenOrders", self._cancel_all)
        self.add("GET", "userTrades", self._user_trades)
        # V3 only (the docs): a signed request that does nothing but take its nonce, so an
        # order queued under the same nonce is refused (-4225).
        self.add("POST", "noop", lambda r: {"code": 200, "msg": "success"}, versions=("v3",))

    def _symbol(self, r: SignedRequest, required: bool = True) -> str | None:
        symbol = r.require("symbol") if required else r.get("symbol")
        if symbol is not None:
            self.trading.state(symbol)  # -1121 for an unknown symbol
        return symbol

    def _ids(self, r: SignedRequest) -> tuple[int | None, str | None]:
        oid, cid = r.int("orderId"), r.get("origClientOrderId")
        if oid is None and cid is None:
            raise OrderError(-1102, "Param 'orderId' or 'origClientOrderId' must be sent, "
                                    "but both were empty/null!")
        return oid, cid

    def _find(self, r: SignedRequest):
        return self.trading.find(r.account.id, self._symbol(r), *self._ids(r))

    def _open_order(self, r: SignedRequest) -> dict:
        order = self._find(r)
        if order.status not in ("NEW", "PARTIALLY_FILLED"):
            raise OrderError(-2013, "Order does not exist.")
        return order.to_json(self.kind == "perp")

    def _all_orders(self, r: SignedRequest) -> list[dict]:
        symbol = self._symbol(r)
        limit = check_limit(r.int("limit"), 500, 1000)
        oid, start, end = r.int("orderId"), r.int("startTime"), r.int("endTime")
        rows = [o for o in self.trading.by_account.get((r.account.id, symbol), ())
                if (oid is None or o.id >= oid)
                and (start is None or o.time >= start) and (end is None or o.time <= end)]
        return [o.to_json(self.kind == "perp") for o in window(rows, limit, oid is not None)]

    def _cancel_all(self, r: SignedRequest) -> object:
        self.trading.cancel_all(r.account.id, self._symbol(r))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _user_trades(self, r: SignedRequest) -> list[dict]:
        symbol = self._symbol(r, required=self.kind == "perp")
        oid = r.int("orderId")
        if oid is not None and symbol is None:
            raise OrderError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                                    "or malformed.")
        limit = check_limit(r.int("limit"), 500, 1000)
        from_id, start, end = r.int("fromId"), r.int("startTime"), r.int("endTime")
        if from_id is not None and (start is not None or end is not None):
            raise OrderError(-1128, "Combination of optional parameters invalid.")
        symbols = [symbol] if symbol else list(self.trading.states)
        rows = sorted((t for s in symbols for t in self.trading.trades.get((r.account.id, s), ())),
                      key=lambda t: (t["time"], t["id"]))
        rows = [t for t in rows if (oid is None or t["orderId"] == oid)
                and (from_id is None or t["id"] >= from_id)
                and (start is None or t["time"] >= start) and (end is None or t["time"] <= end)]
        return window(rows, limit, from_id is not None)

    # -- parameters --------------------------------------------------------------------------
    def order_request(self, r: SignedRequest) -> OrderRequest:
        symbol = self._symbol(r)
        market = self.trading.states[symbol].market
        side_text = r.require("side")
        if side_text not in ("BUY", "SELL"):
            raise OrderError(-1117, "Invalid side.")
        type_ = r.require("type")
        if type_ not in market.exchange_info_symbol()["orderTypes"]:
            raise OrderError(-1116, "Invalid orderType.")
        try:
            qty = self._decimal(r, "quantity", market.qty_dp)
            price = self._decimal(r, "price", market.price_dp)
            stop = self._decimal(r, "stopPrice", market.price_dp)
            quote_qty = self._decimal(r, "quoteOrderQty", market.price_dp + market.qty_dp)
            activation = self._decimal(r, "activationPrice", market.price_dp)
        except FilterError as exc:
            raise OrderError(exc.code, exc.msg) from None
        tif = r.get("timeInForce")
        if type_ in _LIMIT_TYPES:
            tif = tif or ("GTC" if type_ != "LIMIT" else r.require("timeInForce"))
            if tif not in _TIFS:
                raise OrderError(-1115, "Invalid timeInForce.")
            r.require("price")
        else:
            tif = None  # market orders have no time in force; ignore what a client sends
            price = None
        close_position = r.bool("closePosition") if self.kind == "perp" else False
        if type_ in _STOP_TYPES:
            r.require("stopPrice")
        if qty is None and not close_position and not (type_ == "MARKET" and quote_qty):
            r.require("quantity")
        cid = r.get("newClientOrderId")
        if cid is not None and not _CLIENT_ID.match(cid):
            raise OrderError(-4015, "Client order ID is not valid.")
        req = OrderRequest(symbol=symbol, side=BUY if side_text == "BUY" else SELL, type=type_,
                           qty=qty, price=price, stop_price=stop, quote_qty=quote_qty, tif=tif,
                           client_id=cid)
        if self.kind == "perp":
            req.reduce_only = r.bool("reduceOnly")
            req.close_position = close_position
            req.position_side = r.get("positionSide") or "BOTH"
            req.working_type = r.get("workingType") or "CONTRACT_PRICE"
            req.activation_price = activation
            req.callback_rate = r.get("callbackRate")
            if req.working_type not in ("CONTRACT_PRICE", "MARK_PRICE"):
                raise OrderError(-4031, f"Invalid parameter working type: {req.working_type}")
            if req.position_side not in ("BOTH", "LONG", "SHORT"):
                raise OrderError(-4060, "Invalid position side.")
        return req

    @staticmethod
    def _decimal(r: SignedRequest, name: str, dp: int) -> int | None:
        text = r.get(name)
        return None if text is None else parse_decimal(text, name, dp)
