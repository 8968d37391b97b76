"""``GET /openapi.json``: the OpenAPI 3.1 document, generated from the msgspec models so the
spec cannot drift from what the server encodes."""

from __future__ import annotations

from functools import cache

import msgspec

from astra.core import BookUpdate, Error, MarketMetadata, OrderBook, TradesMessage
from astra.core._trading import (
    Balance,
    BalancesMessage,
    Fill,
    FillsMessage,
    Order,
    OrdersMessage,
    PlaceOrder,
    Position,
    ResyncMessage,
)
from astra.venues.base import Capabilities

__all__ = ["openapi_document"]


class ExchangeInfo(msgspec.Struct):
    exchange: str
    capabilities: Capabilities


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(
    name: str,
    description: str,
    required: bool = True,
    schema: dict | None = None,
    where: str = "query",
) -> dict:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_ERRORS = {
    str(s): {"description": d, "content": {"application/json": {"schema": _ref("Error")}}}
    for s, d in (
        (400, "bad request: the message names the parameter"),
        (401, "missing or invalid API key"),
        (404, "unknown market"),
        (503, "venue unavailable"),
        (504, "venue timed out"),
    )
}


def _get(summary: str, params: list[dict], schema: dict) -> dict:
    ok = {"description": "OK", "content": {"application/json": {"schema": schema}}}
    return {"get": {"summary": summary, "parameters": params, "responses": {"200": ok, **_ERRORS}}}


# Exchange credentials of the private endpoints: per request in headers, or stored on the
# server for the API key (``astra credentials set``).
_CREDENTIAL_HEADERS = [
    _param(name, description, False, where="header")
    for name, description in (
        ("x-astra-exchange-key", "exchange API key"),
        ("x-astra-exchange-secret", "exchange API secret"),
        ("x-astra-exchange-passphrase", "passphrase (OKX, KuCoin)"),
        ("x-astra-exchange-private-key", "wallet private key (Aster v3, SIM)"),
        ("x-astra-exchange-account", "main wallet address (Aster v3, SIM)"),
    )
]
_TRADING_ERRORS = {
    str(s): {"description": d, "content": {"application/json": {"schema": _ref("Error")}}}
    for s, d in (
        (401, "missing Astra API key, or missing/invalid exchange credentials"),
        (403, "the exchange refused the credentials' permissions"),
        (404, "unknown market or order"),
        (409, "clientOrderId reused for a different order"),
        (422, "order fails the market's tick/lot/notional rules, or insufficient balance"),
        (429, "rate limited (venue or gateway); Retry-After says when to retry"),
        (503, "venue unavailable"),
        (504, "venue timed out"),
    )
}


def _private(method: str, summary: str, params: list[dict], schema: dict,
             body: dict | None = None) -> dict:
    ok = {"description": "OK", "content": {"application/json": {"schema": schema}}}
    op: dict = {
        "summary": summary,
        "parameters": params + _CREDENTIAL_HEADERS,
        "responses": {"200": ok, **_ERRORS, **_TRADING_ERRORS},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if method == "post":
        op["responses"]["202"] = {
            "description": "sent, outcome unknown (venue timeout): status UNKNOWN, reconciled "
            "by clientOrderId; retry with the same clientOrderId to learn the outcome",
            "content": {"application/json": {"schema": _ref("Order")}},
        }
    return {method: op}


@cache
def openapi_document() -> dict:
    _, components = msgspec.json.schema_components(
        [MarketMetadata, OrderBook, BookUpdate, TradesMessage, Error, ExchangeInfo,
         PlaceOrder, Order, Fill, Balance, Position, OrdersMessage, FillsMessage,
         BalancesMessage, ResyncMessage],
        ref_template="#/components/schemas/{name}",
    )
    market = _param("market", "Astra market symbol, e.g. SIM-SPOT-BTC-USDT")
    exchange = _param("exchange", "Exchange code, e.g. SIM")
    orders = {"type": "array", "items": _ref("Order")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Astra API", "version": "1"},
        "security": [{"apiKey": []}],
        "paths": {
            "/markets": _get(
                "Markets of an exchange",
                [_param("exchange", "Exchange code")],
                {"type": "array", "items": _ref("MarketMetadata")},
            ),
            "/orderbook": _get(
                "L2 order book from the live synced book",
                [
                    market,
                    _param("depth", "levels per side", False, {"type": "integer", "minimum": 1}),
                ],
                _ref("OrderBook"),
            ),
            "/trades": _get(
                "Recent public trades",
                [
                    market,
                    _param(
                        "limit",
                        "how many (default 100, max 1000)",
                        False,
                        {"type": "integer", "minimum": 1, "maximum": 1000},
                    ),
                ],
                _ref("TradesMessage"),
            ),
            "/exchanges": _get(
                "Venues served and their capabilities",
                [],
                {"type": "array", "items": _ref("ExchangeInfo")},
            ),
            "/ws": _get(
                "WebSocket: one subscription per connection. ORDERBOOK sends a "
                "snapshot then updates (BookUpdate); TRADE sends TradesMessage. The private "
                "types ORDERS, FILLS, BALANCES (with exchange=, and exchange credentials as "
                "for the private REST API) stream OrdersMessage, FillsMessage, "
                "BalancesMessage, and ResyncMessage when the venue's user stream restarted.",
                [
                    _param("market", "Astra market symbol (ORDERBOOK, TRADE)", False),
                    _param("exchange", "Exchange code (ORDERS, FILLS, BALANCES)", False),
                    _param(
                        "dataType",
                        "ORDERBOOK, TRADE, ORDERS, FILLS or BALANCES",
                        schema={"enum": ["ORDERBOOK", "TRADE", "ORDERS", "FILLS", "BALANCES"]},
                    ),
                ],
                {"oneOf": [_ref(n) for n in ("BookUpdate", "TradesMessage", "OrdersMessage",
                                             "FillsMessage", "BalancesMessage",
                                             "ResyncMessage")]},
            ),
            "/orders": {
                **_private("post", "Place an order (idempotent by clientOrderId)", [],
                           _ref("Order"), _ref("PlaceOrder")),
                **_private("get", "Open orders of a market", [market], orders),
                **_private(
                    "delete",
                    "Cancel an order (orderId or clientOrderId), or every open order of the "
                    "market when neither is given",
                    [market, _param("orderId", "venue order id", False),
                     _param("clientOrderId", "client order id", False)],
                    {"oneOf": [_ref("Order"), {"type": "object"}]},
                ),
            },
            "/orders/{orderId}": _private(
                "get", "One order", [market, _param("orderId", "venue order id", where="path")],
                _ref("Order")),
            "/fills": _private(
                "get", "Fills of a market",
                [market, _param("since", "ms since the epoch", False, {"type": "integer"})],
                {"type": "array", "items": _ref("Fill")}),
            "/balances": _private(
                "get", "Balances on an exchange",
                [exchange, _param("account", "spot or swap wallet", False)],
                {"type": "array", "items": _ref("Balance")}),
            "/positions": _private(
                "get", "Open positions on an exchange", [exchange],
                {"type": "array", "items": _ref("Position")}),
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-astra-api-key",
                    "description": "Bearer <id>.<secret>",
                }
            },
        },
    }
