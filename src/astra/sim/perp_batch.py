"""Perpetual order endpoints beyond one order at a time: ``batchOrders`` (POST and DELETE),
``countdownCancelAll`` and ``order/test`` (V1 HMAC ``/fapi/v1/…``, V3 EIP-712 ``/fapi/v3/…``).

Invariants:
- A batch is processed in list order, each element exactly as ``POST /order`` (or
  ``DELETE /order``) would be, and answered in the same order: an order's JSON, or that
  element's own ``{"code","msg"}`` error; one element's failure never undoes another. Each
  order of a batch counts against the ORDERS limit (an element over it fails with -1015).
- ``countdownCancelAll`` keeps at most one absolute deadline per (account, symbol) in
  ``PerpTrading.countdowns`` (no event-loop timer): a new call replaces it,
  ``countdownTime=0`` removes it, and the first flow step at or past it cancels every open
  order of that symbol (as ``DELETE allOpenOrders`` would), like a stop trigger. Deadlines are
  saved with ``--data``, so a restart neither loses one nor lets one fire after the last save.
- ``order/test`` runs every check ``place`` runs (filters, position rules, margin) and places
  nothing: the answer has the order fields with ``orderId`` 0.
"""

from __future__ import annotations

import ast
import json
from typing import TYPE_CHECKING

from .orders import OrderError
from .private import SignedRequest
from .ratelimit import RateLimitError

if TYPE_CHECKING:
    from .perp import PerpTrading
    from .private import PrivateSide

__all__ = ["MAX_BATCH", "MAX_CANCEL_LIST", "add_batch_routes"]

MAX_BATCH = 5  # "order list. Max 5 orders"
MAX_CANCEL_LIST = 10  # orderIdList / origClientOrderIdList "max length 10"
_MAX_TEXT = 16_384  # a batch longer than this cannot be 5 orders


def _invalid(name: str) -> OrderError:
    return OrderError(-1130, f"Data sent for parameter '{name}' is not valid.")


def _json_list(text: str, name: str) -> list:
    """A JSON list parameter. The futures docs' own V3 demo sends Python-style single quotes
    (``[{'symbol':'ASTERUSDT',…}]``), so a literal in that form is read too (literals only)."""
    if len(text) > _MAX_TEXT:
        raise _invalid(name)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's
        try:
            value = ast.literal_eval(text)
        # TypeError: a literal that cannot be built, such as an unhashable key ({[]: 1}).
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise _invalid(name) from None
    if not isinstance(value, list):
        raise _invalid(name)
    return value


def _text(value: object) -> str:
    """A JSON value as the form parameter it stands for (booleans as "true"/"false")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _error(exc: OrderError | RateLimitError) -> dict:
    return {"code": exc.code, "msg": exc.msg}


class _Batch:
    def __init__(self, private: PrivateSide, trading: PerpTrading) -> None:
        self.private = private
        self.trading = trading

    def place(self, r: SignedRequest) -> list[dict]:
        items = _json_list(r.require("batchOrders"), "batchOrders")
        if not 1 <= len(items) <= MAX_BATCH:
            raise OrderError(-4082, f"Invalid number of batch place orders: {len(items)}")
        if not all(isinstance(item, dict) and all(isinstance(k, str) for k in item)
                   for item in items):
            raise _invalid("batchOrders")
        out = []
        for i, item in enumerate(items):
            sub = SignedRequest(r.request, r.account, {k: _text(v) for k, v in item.items()})
            try:
                if i and self.private.on_order is not None:  # the route counted the first
                    # The answer carries the counts after the last order admitted.
                    r.headers = self.private.on_order(r.account)
                req = self.private.order_request(sub)
                out.append(self.trading.place(r.account.id, req).to_json(True))
            except (OrderError, RateLimitError) as exc:
                out.append(_error(exc))
        return out

    def cancel(self, r: SignedRequest) -> list[dict]:
        symbol = r.require("symbol")
        self.trading.state(symbol)
        ids, cids = r.get("orderIdList"), r.get("origClientOrderIdList")
        if ids is None and cids is None:
            raise OrderError(-1102, "Param 'orderIdList' or 'origClientOrderIdList' must be "
                                    "sent, but both were empty/null!")
        name = "orderIdList" if ids is not None else "origClientOrderIdList"
        values = _json_list(ids if ids is not None else cids or "", name)
        if len(values) > MAX_CANCEL_LIST:
            raise OrderError(-4032, "Exceed maximum cancel order size.")
        out = []
        for value in values:
            oid = cid = None
            if ids is not None:
                text = _text(value)
                if not (text.isascii() and text.isdigit()) or len(text) > 20:
                    raise _invalid("orderIdList")
                oid = int(text)
            else:
                cid = _text(value)
            try:
                out.append(self.trading.cancel(r.account.id, symbol, oid, cid).to_json(True))
            except OrderError:
                # The docs' answer for an id that is unknown or no longer open.
                out.append({"code": -2011, "msg": "Unknown order sent."})
        return out

    def countdown(self, r: SignedRequest) -> dict:
        symbol = r.require("symbol")
        self.trading.state(symbol)
        r.require("countdownTime")
        ms = r.int("countdownTime") or 0
        self.trading.set_countdown(r.account.id, symbol, ms)
        return {"symbol": symbol, "countdownTime": str(ms)}

    def test(self, r: SignedRequest) -> dict:
        return self.trading.test(r.account.id, self.private.order_request(r)).to_json(True)


def add_batch_routes(private: PrivateSide, trading: PerpTrading) -> None:
    batch = _Batch(private, trading)
    private.add("POST", "batchOrders", batch.place, order=True)
    private.add("DELETE", "batchOrders", batch.cancel)
    private.add("POST", "countdownCancelAll", batch.countdown)
    private.add("POST", "order/test", batch.test)
