"""Kraken's private REST API through ccxt: spot (``ccxt.kraken``, ``/0/private/<Method>``)
and futures (``ccxt.krakenfutures``, ``/derivatives/api/v3/<path>``) under one exchange code.

The gateway builds one client per call before it knows which market the call is for, and
Kraken's two products are two ccxt classes with different hosts, keys and signatures. So the
client the venue hands out is ``KrakenPrivate``, a small router: it builds the spot or the
futures ccxt client on first use (a call touches one of them, usually) and sends each call
to the one that owns its symbol; ``markets_by_id`` is both products' markets, so the
gateway's market lookup works before either client exists. Symbol-less calls go by what they
are about: ``fetch_positions`` to futures (Kraken spot has margin positions only),
``fetch_balance`` to spot unless ``params["type"]`` names a futures account.

What the ccxt subclasses add, all of it venue-specific:

- Trigger orders named the gateway's way (``STOP``, ``STOP_MARKET``, ``TAKE_PROFIT``,
  ``TAKE_PROFIT_MARKET`` with ``stopPrice``) become ccxt's ``limit``/``market`` with
  ``stopLossPrice``/``takeProfitPrice`` (spot: ``stop-loss[-limit]``/``take-profit[-limit]``;
  futures: a ``stp`` order for stops, ``take_profit`` for take-profits).
- Spot ``AddOrder`` answers only a description and the txid: the order is then reported
  from the request (``open``, with the client order id sent as ``cl_ord_id``), not as an
  order of unknown status.
- Looking an order up by client order id alone (``fetch_order("", symbol,
  {"clientOrderId": ...})``, how the gateway reconciles): ccxt would send it as ``userref``
  (an integer field) on spot and ignore it on futures. Here spot searches ``OpenOrders`` then
  ``ClosedOrders`` filtered by ``cl_ord_id``; futures asks ``orders/status?cliOrdIds=``.
  Cancelling by client order id on futures sends ``cliOrdId`` (ccxt sends ``order_id=""``).
- ``cancel_all_orders(symbol)`` on spot: Kraken's ``CancelAll`` cancels every pair's
  orders, so only that pair's open orders are cancelled (``CancelOrderBatch``, 50 a batch).
- ``reduceOnly`` on a spot order (a margin-trading flag on Kraken) is refused before anything
  is sent.
- Spot nonces come from one ``NonceClock`` per venue, not one counter per client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import ccxt.async_support as ccxt_async
from ccxt.base.errors import InvalidOrder, NotSupported, OrderNotFound

from astra.venues.ccxt_errors import ServerErrorsUnavailable

__all__ = [
    "FUTURES_ACCOUNT_TYPES",
    "KrakenFuturesPrivate",
    "KrakenPrivate",
    "KrakenSpotPrivate",
    "NonceClock",
]

# fetch_balance(params={"type": ...}) values that mean the futures wallet ("flex": the
# multi-collateral account, ccxt krakenfutures' default).
FUTURES_ACCOUNT_TYPES = frozenset({"futures", "future", "swap", "derivatives", "flex"})

# gateway (ccxt futures) type -> (ccxt unified type, ccxt trigger param). Spot: ccxt sends
# stop-loss[-limit] / take-profit[-limit]. Futures: triggerPrice is a plain ``stp`` order
# (stopLossPrice would force reduceOnly), takeProfitPrice a ``take_profit`` order.
_SPOT_TRIGGERS = {
    "STOP": ("limit", "stopLossPrice"),
    "STOP_MARKET": ("market", "stopLossPrice"),
    "TAKE_PROFIT": ("limit", "takeProfitPrice"),
    "TAKE_PROFIT_MARKET": ("market", "takeProfitPrice"),
}
_FUTURES_TRIGGERS = {
    "STOP": ("limit", "triggerPrice"),
    "STOP_MARKET": ("market", "triggerPrice"),
    "TAKE_PROFIT": ("limit", "takeProfitPrice"),
    "TAKE_PROFIT_MARKET": ("market", "takeProfitPrice"),
}
_CANCEL_BATCH = 50  # CancelOrderBatch takes at most 50 ids


def _trigger_order(
    type: str, params: dict, triggers: Mapping[str, tuple[str, str]]
) -> tuple[str, dict]:
    """The gateway's trigger types as ccxt's unified ``type`` + trigger parameter."""
    mapped = triggers.get(str(type).upper())
    if mapped is None:
        return type, params
    kind, trigger = mapped
    params = dict(params)
    stop = params.pop("stopPrice", None)
    if stop is not None:
        params[trigger] = stop
    return kind, params


def _client_order_id(params: Mapping[str, Any]) -> str | None:
    cid = params.get("clientOrderId")
    return str(cid) if cid not in (None, "") else None


async def _canceled(client: Any, ack: dict, id: str, symbol: str | None,
                    cid: str | None) -> dict:
    """The order a cancel answered for: ``ack`` when it describes the order, else the order
    looked up (a cancel that only says "done" leaves side and size unknown). The cancel
    succeeded either way: a failed lookup returns ``ack`` marked canceled."""
    if ack.get("side") is not None:
        return ack
    try:
        order = await client.fetch_order(id, symbol, {} if id else {"clientOrderId": cid})
    except Exception:  # the cancel stands; only its description is missing
        order = ack
    else:
        if order.get("status") == "open":  # a cancel in flight: reported as it ends
            order["status"] = "canceled"
        return order
    order.update(id=id or order.get("id"), clientOrderId=cid or order.get("clientOrderId"),
                 status="canceled", symbol=symbol)
    return order


class NonceClock:
    """Strictly increasing millisecond nonces for every spot client of one venue.

    Kraken refuses a nonce not above the key's last one (``EAPI:Invalid nonce``). ccxt keeps
    that counter per client, and a client lives for one call here: two calls of one key in
    the same millisecond would send the same nonce. One clock per venue (per process: several
    gateway processes sharing a key still need Kraken's nonce window)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self, now_ms: int) -> int:
        with self._lock:
            self._last = max(int(now_ms), self._last + 1)
            return self._last


class KrakenSpotPrivate(ServerErrorsUnavailable, ccxt_async.kraken):
    """ccxt's kraken for one set of credentials (see the module docstring)."""

    nonce_clock: NonceClock | None = None  # the venue's, shared by its clients

    def incrementing_nonce(self) -> int:
        if self.nonce_clock is None:
            return super().incrementing_nonce()
        return self.nonce_clock(self.nonce())

    async def create_order(self, symbol: str, type: str, side: str, amount: float,
                           price: float | None = None, params: dict | None = None) -> dict:
        params = dict(params or {})
        if params.get("reduceOnly"):  # ccxt would send it: a margin-only flag on Kraken spot
            raise InvalidOrder(f"{self.id} spot orders take no reduceOnly")
        type, params = _trigger_order(type, params, _SPOT_TRIGGERS)
        cid = _client_order_id(params)
        order = await super().create_order(symbol, type, side, amount, price, params)
        # AddOrder says "accepted": {"descr": {"order": "..."}, "txid": [...]}, no status.
        if order.get("status") is None and order.get("id") is not None:
            order["status"] = "open"
        if not order.get("clientOrderId") and cid is not None:
            order["clientOrderId"] = cid
        order["symbol"] = order.get("symbol") or symbol
        return order

    async def fetch_order(self, id: str, symbol: str | None = None,
                          params: dict | None = None) -> dict:
        params = dict(params or {})
        cid = _client_order_id(params)
        if id or cid is None:
            return await super().fetch_order(id, symbol, params)
        params.pop("clientOrderId")
        for lookup in (self.fetch_open_orders, self.fetch_closed_orders):
            found = await lookup(symbol, None, None, {**params, "clientOrderId": cid})
            for order in found:
                if order.get("clientOrderId") in (None, cid):
                    order["clientOrderId"] = cid
                    return order
        raise OrderNotFound(f"{self.id} fetchOrder() found no order with cl_ord_id {cid}")

    async def cancel_order(self, id: str, symbol: str | None = None,
                           params: dict | None = None) -> dict:
        params = dict(params or {})
        cid = _client_order_id(params)
        ack = await super().cancel_order(id, symbol, params)  # {"result": {"count": 1}}
        return await _canceled(self, ack, id, symbol, cid)

    async def cancel_all_orders(self, symbol: str | None = None,
                                params: dict | None = None) -> list:
        params = dict(params or {})
        if symbol is None:
            return await super().cancel_all_orders(None, params)
        ids = [o["id"] for o in await self.fetch_open_orders(symbol) if o.get("id")]
        for start in range(0, len(ids), _CANCEL_BATCH):
            await self.cancel_orders(ids[start : start + _CANCEL_BATCH], symbol, params)
        return [self.safe_order({"id": i, "status": "canceled", "symbol": symbol}) for i in ids]


class KrakenFuturesPrivate(ServerErrorsUnavailable, ccxt_async.krakenfutures):
    """ccxt's krakenfutures for one set of credentials (see the module docstring)."""

    async def create_order(self, symbol: str, type: str, side: str, amount: float,
                           price: float | None = None, params: dict | None = None) -> dict:
        params = dict(params or {})
        type, params = _trigger_order(type, params, _FUTURES_TRIGGERS)
        order = await super().create_order(symbol, type, side, amount, price, params)
        # ccxt leaves a futures order's price out (its limitPrice is not always the order's,
        # ccxt issue 27996); the price just sent is.
        if order.get("price") is None and price is not None and type == "limit":
            order["price"] = float(price)
        return order

    async def fetch_order(self, id: str, symbol: str | None = None,
                          params: dict | None = None) -> dict:
        params = dict(params or {})
        cid = _client_order_id(params)
        if id or cid is None:
            return await super().fetch_order(id, symbol, params)
        params.pop("clientOrderId")
        orders = await self.fetch_orders(None, None, None, {**params, "cliOrdIds": cid})
        if not orders:
            raise OrderNotFound(f"{self.id} fetchOrder() found no order with cliOrdId {cid}")
        return orders[0]

    async def cancel_order(self, id: str, symbol: str | None = None,
                           params: dict | None = None) -> dict:
        params = dict(params or {})
        cid = _client_order_id(params)
        if id or cid is None:
            ack = await super().cancel_order(id, symbol, params)
            return await _canceled(self, ack, id, symbol, cid)
        params.pop("clientOrderId")
        if self.markets is None:
            await self.load_markets()
        response = await self.privatePostCancelorder({**params, "cliOrdId": cid})
        status = self.safe_dict(response, "cancelStatus", {})
        self.verify_order_action_success(self.safe_string(status, "status"), "cancelOrder")
        ack = self.extend({"info": response}, self.parse_order(status))
        return await _canceled(self, ack, "", symbol, cid)


class KrakenPrivate:
    """One call's Kraken client: routes each call to the spot or the futures ccxt client,
    building each on first use (see the module docstring). Quacks like the ccxt client the
    gateway uses: markets, precision, orders, trades, balance, positions, ``close``."""

    # What ``fetch_balance`` reads without a futures ``type`` (``Balance.account``).
    default_balance_account = "spot"

    def __init__(
        self,
        spot: Callable[[], KrakenSpotPrivate],
        futures: Callable[[], KrakenFuturesPrivate] | None,
        markets_by_id: Mapping[str, list[dict]],
        futures_symbols: frozenset[str],
    ) -> None:
        self._factories: dict[str, Callable[[], Any]] = {"spot": spot}
        if futures is not None:
            self._factories["futures"] = futures
        self._clients: dict[str, Any] = {}
        self.markets_by_id = markets_by_id
        self._futures_symbols = futures_symbols

    def __repr__(self) -> str:
        return f"KrakenPrivate(open={sorted(self._clients)})"

    def on_rest_response(self, *args: Any) -> None:
        """Sees every HTTP answer of either client (``VenueLimiter.attach`` wraps it)."""
        return None

    def client(self, product: str) -> Any:
        """The ``"spot"`` or ``"futures"`` ccxt client, built on first use."""
        client = self._clients.get(product)
        if client is None:
            factory = self._factories.get(product)
            if factory is None:
                raise NotSupported(f"kraken {product} trading is not configured")
            client = self._clients[product] = factory()
            own = client.on_rest_response

            def hook(*args: Any) -> Any:
                self.on_rest_response(*args)  # looked up per call: attach may come later
                return own(*args)

            client.on_rest_response = hook
        return client

    def _for(self, symbol: str | None) -> Any:
        return self.client("futures" if symbol in self._futures_symbols else "spot")

    # -- markets -------------------------------------------------------------------------
    def market(self, symbol: str) -> dict:
        return self._for(symbol).market(symbol)

    def price_to_precision(self, symbol: str, price: Any) -> str:
        return self._for(symbol).price_to_precision(symbol, price)

    def amount_to_precision(self, symbol: str, amount: Any) -> str:
        return self._for(symbol).amount_to_precision(symbol, amount)

    # -- orders and trades ---------------------------------------------------------------
    async def create_order(self, symbol: str, type: str, side: str, amount: Any,
                           price: Any = None, params: dict | None = None) -> dict:
        return await self._for(symbol).create_order(symbol, type, side, amount, price,
                                                    params or {})

    async def edit_order(self, id: str, symbol: str, type: str, side: str, amount: Any = None,
                         price: Any = None, params: dict | None = None) -> dict:
        return await self._for(symbol).edit_order(id, symbol, type, side, amount, price,
                                                  params or {})

    async def cancel_order(self, id: str, symbol: str | None = None,
                           params: dict | None = None) -> dict:
        return await self._for(symbol).cancel_order(id, symbol, params or {})

    async def cancel_all_orders(self, symbol: str | None = None,
                                params: dict | None = None) -> list:
        return await self._for(symbol).cancel_all_orders(symbol, params or {})

    async def fetch_order(self, id: str, symbol: str | None = None,
                          params: dict | None = None) -> dict:
        return await self._for(symbol).fetch_order(id, symbol, params or {})

    async def fetch_open_orders(self, symbol: str | None = None, since: int | None = None,
                                limit: int | None = None, params: dict | None = None) -> list:
        return await self._for(symbol).fetch_open_orders(symbol, since, limit, params or {})

    async def fetch_closed_orders(self, symbol: str | None = None, since: int | None = None,
                                  limit: int | None = None,
                                  params: dict | None = None) -> list:
        return await self._for(symbol).fetch_closed_orders(symbol, since, limit, params or {})

    async def fetch_my_trades(self, symbol: str | None = None, since: int | None = None,
                              limit: int | None = None, params: dict | None = None) -> list:
        return await self._for(symbol).fetch_my_trades(symbol, since, limit, params or {})

    # -- account -------------------------------------------------------------------------
    async def fetch_balance(self, params: dict | None = None) -> dict:
        params = dict(params or {})
        account = str(params.get("type") or "").lower()
        if account in FUTURES_ACCOUNT_TYPES:
            params["type"] = "flex"
            return await self.client("futures").fetch_balance(params)
        params.pop("type", None)
        return await self.client("spot").fetch_balance(params)

    async def fetch_positions(self, symbols: list[str] | None = None,
                              params: dict | None = None) -> list:
        return await self.client("futures").fetch_positions(symbols, params or {})

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
