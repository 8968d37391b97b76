"""``GET /openapi.json``: the OpenAPI 3.1 document, generated from the msgspec models so the
spec cannot drift from what the server encodes."""

from __future__ import annotations

from functools import cache

import msgspec

from astra.core import BookUpdate, Error, MarketMetadata, OrderBook, TradesMessage
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


@cache
def openapi_document() -> dict:
    _, components = msgspec.json.schema_components(
        [MarketMetadata, OrderBook, BookUpdate, TradesMessage, Error, ExchangeInfo],
        ref_template="#/components/schemas/{name}",
    )
    market = _param("market", "Astra market symbol, e.g. SIM-SPOT-BTC-USDT")
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
                "snapshot then updates (BookUpdate); TRADE sends TradesMessage.",
                [
                    market,
                    _param(
                        "dataType", "ORDERBOOK or TRADE", schema={"enum": ["ORDERBOOK", "TRADE"]}
                    ),
                ],
                {"oneOf": [_ref("BookUpdate"), _ref("TradesMessage")]},
            ),
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
