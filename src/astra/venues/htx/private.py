"""HTX's private REST API through ccxt: one ``ccxt.htx`` client per set of credentials trades
spot (``api.huobi.pro``: ``/v1/order/...``, ``/v1/account/...``) and USDT-margined
perpetual swaps (``api.hbdm.com``: ccxt uses the ``/v5/...`` unified-account endpoints);
ccxt picks the host and endpoint from the market. HTX signs the host name into every request
(``Signature`` over method, host, path and sorted query), so the client is given the host of
each configured base URL, not just the URL.

What this class adds to ccxt's ``htx``, all of it venue-specific:

- Spot orders, open orders and balances need the user's spot ``account-id``
  (``GET /v1/account/accounts``). ccxt asks once per client; clients are rebuilt (evicted,
  expired), so the venue remembers each key's accounts (by a hash of the API key, never the
  key).
- HTX contract orders take an integer ``client_order_id`` (ccxt drops a non-integer one
  silently, and reads an integer one through a float). A client order id that is not a
  positive integer up to 2**53 - 1 is sent as a stable 53-bit hash of itself
  (``numeric_client_order_id``), so lookups and cancels by
  client order id find the order, and orders parsed by the client that placed them get the
  original id back (its last ``_CID_MEMORY`` ids). Orders placed through another client
  (another process, before a restart) show the number.
- Trigger orders named the gateway's way (``STOP``, ``STOP_MARKET``, ``TAKE_PROFIT``,
  ``TAKE_PROFIT_MARKET`` with ``stopPrice``) become ccxt's ``triggerPrice`` orders: spot
  ``stop-limit`` with the trigger side's ``operator`` (``gte`` for a buy stop, ``lte`` for a
  sell stop, the other way for a take-profit); HTX spot has no stop-market order.
- Spot answers an order with its id only (``{"status": "ok", "data": "<id>"}``) and a cancel
  likewise: the order is reported from the request (``open``), and the canceled order is
  looked up to be described.
- Refused before anything is sent: ``reduceOnly`` on spot (HTX spot has no such flag) and
  spot market buys, which HTX sizes in the quote currency while the gateway's quantity is
  the base (a ``cost`` param, ccxt's, sends a quote amount).
- ``fetch_balance({"type": "futures"})`` is the USDT-margined swap account.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import ccxt.async_support as ccxt_async
from ccxt.base.errors import InvalidOrder, NotSupported

from astra.venues.ccxt_errors import ServerErrorsUnavailable

__all__ = ["FUTURES_ACCOUNT_TYPES", "HtxPrivate", "numeric_client_order_id"]

FUTURES_ACCOUNT_TYPES = frozenset({"futures", "future", "swap", "linear", "derivatives"})
_MAX_CID = 2**53 - 1  # HTX takes up to 2**63 - 1; ccxt passes the id through a float
_ACCOUNT_CACHE_SIZE = 4096

# gateway type -> (ccxt unified type, take-profit?)
_TRIGGERS = {
    "STOP": ("limit", False),
    "STOP_MARKET": ("market", False),
    "TAKE_PROFIT": ("limit", True),
    "TAKE_PROFIT_MARKET": ("market", True),
}


_CID_MEMORY = 10_000  # client order ids a client translates back


def numeric_client_order_id(cid: str) -> int:
    """The integer HTX contract endpoints take for the client order id ``cid``: ``cid``
    itself when it is one that survives ccxt's float (1..2**53-1), else a stable 53-bit hash
    of it (HTX takes up to 2**63-1)."""
    if cid.isdigit() and 0 < int(cid) <= _MAX_CID:
        return int(cid)
    digest = hashlib.blake2b(cid.encode(), digest_size=8, person=b"astra-htx-cid").digest()
    return (int.from_bytes(digest, "big") & _MAX_CID) or 1


def _client_order_id(params: Mapping[str, Any]) -> str | None:
    cid = params.get("clientOrderId")
    return str(cid) if cid not in (None, "") else None


class HtxPrivate(ServerErrorsUnavailable, ccxt_async.htx):
    """ccxt's htx for one set of credentials (see the module docstring)."""

    def __init__(self, config: dict | None = None,
                 accounts_cache: OrderedDict[str, list] | None = None) -> None:
        super().__init__(config or {})
        self._accounts_cache = accounts_cache if accounts_cache is not None else OrderedDict()
        # numeric client order id -> as given, the most recent last (bounded: clients are kept)
        self._original_cids: OrderedDict[str, str] = OrderedDict()

    # -- client order ids ----------------------------------------------------------------
    def _is_contract(self, symbol: str | None) -> bool:
        return symbol is not None and bool(self.market(symbol).get("contract"))

    def _contract_cid(self, symbol: str | None, params: dict) -> dict:
        """``params`` with the client order id a contract endpoint takes."""
        cid = _client_order_id(params)
        if cid is None or not self._is_contract(symbol):
            return params
        number = str(numeric_client_order_id(cid))
        self._original_cids[number] = cid
        self._original_cids.move_to_end(number)
        if len(self._original_cids) > _CID_MEMORY:
            self._original_cids.popitem(last=False)
        return {**params, "clientOrderId": number}

    def parse_order(self, order: dict, market: Any = None) -> dict:
        parsed = super().parse_order(order, market)
        original = self._original_cids.get(str(parsed.get("clientOrderId")))
        if original is not None:
            parsed["clientOrderId"] = original
        return parsed

    # -- accounts ------------------------------------------------------------------------
    def _accounts_key(self) -> str:
        return hashlib.sha256(f"htx-accounts:{self.apiKey}".encode()).hexdigest()

    async def load_accounts(self, reload: bool = False, params: dict | None = None) -> list:
        key = self._accounts_key()
        cached = None if reload else self._accounts_cache.get(key)
        if cached is not None:
            self.accounts = cached
            self.accountsById = self.index_by(cached, "id")
            return cached
        accounts = await super().load_accounts(reload, params or {})
        if accounts:
            self._accounts_cache[key] = accounts
            self._accounts_cache.move_to_end(key)
            while len(self._accounts_cache) > _ACCOUNT_CACHE_SIZE:
                self._accounts_cache.popitem(last=False)
        return accounts

    # -- orders --------------------------------------------------------------------------
    def _trigger_order(self, symbol: str, type: str, side: str, params: dict
                       ) -> tuple[str, dict]:
        mapped = _TRIGGERS.get(str(type).upper())
        if mapped is None:
            return type, params
        kind, take_profit = mapped
        params = dict(params)
        stop = params.pop("stopPrice", None)
        if stop is not None:
            params["triggerPrice"] = stop
            if not self._is_contract(symbol):
                if kind == "market":
                    raise NotSupported(f"{self.id} has no spot stop-market orders")
                rises = (side == "buy") != take_profit  # a buy stop triggers on the way up
                params["operator"] = "gte" if rises else "lte"
        return kind, params

    async def create_order(self, symbol: str, type: str, side: str, amount: float,
                           price: float | None = None, params: dict | None = None) -> dict:
        if self.markets is None:
            await self.load_markets()
        params = dict(params or {})
        if not self._is_contract(symbol):
            if params.get("reduceOnly"):
                raise InvalidOrder(f"{self.id} spot orders take no reduceOnly")
            if type == "market" and side == "buy" and params.get("cost") is None:
                raise InvalidOrder(f"{self.id} sizes spot market buy orders in the quote "
                                   "currency, not in the base: use a LIMIT order (IOC)")
        type, params = self._trigger_order(symbol, type, side, params)
        cid = _client_order_id(params)
        params = self._contract_cid(symbol, params)
        order = await super().create_order(symbol, type, side, amount, price, params)
        if order.get("id") is not None and order.get("status") is None:
            # {"status": "ok", "data": "<order id>"}: accepted, described by the request.
            order["status"] = "open"
            order["filled"] = order.get("filled") or 0.0
            if params.get("triggerPrice") is not None and order.get("triggerPrice") is None:
                order["triggerPrice"] = float(params["triggerPrice"])
        if cid is not None and not self._is_contract(symbol):
            order["clientOrderId"] = order.get("clientOrderId") or cid
        elif cid is not None and order.get("clientOrderId") in (None, ""):
            order["clientOrderId"] = cid
        if order.get("price") is not None and type == "market":
            order["price"] = None  # ccxt echoes the price argument
        return order

    async def fetch_order(self, id: str, symbol: str | None = None,
                          params: dict | None = None) -> dict:
        if self.markets is None:
            await self.load_markets()
        params = self._contract_cid(symbol, dict(params or {}))
        return await super().fetch_order(id, symbol, params)

    async def cancel_order(self, id: str, symbol: str | None = None,
                           params: dict | None = None) -> dict:
        if self.markets is None:
            await self.load_markets()
        cid = _client_order_id(params or {})
        params = self._contract_cid(symbol, dict(params or {}))
        ack = await super().cancel_order(id, symbol, params)
        if ack.get("side") is not None:
            return ack
        # {"status": "ok", "data": "<order id>"}: the canceled order is looked up.
        try:
            order = await self.fetch_order(id, symbol, {} if id else {"clientOrderId": cid})
        except Exception:  # the cancel stands; only its description is missing
            order = ack
            order.update(id=id or None, clientOrderId=cid, symbol=symbol)
        if order.get("status") in (None, "open"):  # a cancel in flight: reported as it ends
            order["status"] = "canceled"
        return order

    async def fetch_balance(self, params: dict | None = None) -> dict:
        params = dict(params or {})
        if str(params.get("type") or "").lower() in FUTURES_ACCOUNT_TYPES:
            params["type"] = "swap"
            params.setdefault("subType", "linear")
        return await super().fetch_balance(params)
