"""``GET /openapi.json``: the OpenAPI 3.1 document, generated from the msgspec models so the
spec cannot drift from what the server encodes.

Invariant: every constraint stated here is the server's own constant (exchange codes, data
types, balance accounts, the market-symbol grammar, depth/limit/since bounds, order-value and
id bounds), so a client or fuzzer generated from the document sends what the server accepts,
and what the document forbids the server refuses with a 4xx naming the parameter. The
gateway serves the document narrowed to its venues (``openapi_document(venues)``): their
exchange codes only, their order-id forms and balance accounts; without venues it covers
every exchange Astra knows. (Per-market rules, tick, lot and minimum notional, are in
``GET /markets``, not here: a schema-valid order may still be a 422.)
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import msgspec

from astra.core import (
    MAX_MARKET_LENGTH,
    Bbo,
    BookResync,
    BookUpdate,
    ConsolidatedBook,
    ConsolidatedUpdate,
    Error,
    Exchange,
    FeedStatus,
    MarketMetadata,
    OrderBook,
    TradesMessage,
    WsAck,
    WsError,
    market_pattern,
)
from astra.core._otc import (
    AcceptedQuote,
    AcceptQuote,
    ConvertsMessage,
    OtcAccount,
    OtcAccountsMessage,
    QuoteRequest,
    QuoteResponse,
)
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
    SmartOrder,
    SmartOrderRequest,
    SmartPlan,
)
from astra.otc.assets import ASSET_RE, DECIMAL_TEXT, MAX_AMOUNT
from astra.store.journal import CLIENT_ORDER_ID_PATTERN
from astra.trading.service import MAX_ORDER_VALUE, PRICED_TYPES, STOP_TYPES
from astra.venues.base import BALANCE_ACCOUNTS, Capabilities, Venue

from .openapi_feeds import feeds_paths
from .openapi_history import HISTORY_MODELS, history_paths, replay_params
from .openapi_keys import API_KEY_SCHEMAS, api_key_paths
from .otc import ACCOUNT_ID_RE, DEFAULT_CONVERTS_LIMIT, MAX_CONVERTS_LIMIT
from .params import (
    DEFAULT_TRADES_LIMIT,
    MAX_DEPTH,
    MAX_SINCE,
    MAX_TRADES_LIMIT,
    MAX_WS_MESSAGE_BYTES,
    MAX_WS_SUBSCRIPTIONS,
    WS_DATA_TYPES,
)

__all__ = ["openapi_document"]

EXCHANGES = [e.value for e in Exchange]
CLIENT_ORDER_ID_SCHEMA = {
    "type": "string",
    "pattern": f"^{CLIENT_ORDER_ID_PATTERN}$",
}
# Prices and quantities of an order: positive, finite, bounded (check_order's 422 otherwise).
ORDER_VALUE_SCHEMA = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_ORDER_VALUE}


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
        (401, "missing, invalid or expired API key"),
        (403, "the API key lacks this route's scope, or is not allowed from this address"),
        (404, "unknown market, or an exchange this gateway does not serve"),
        (405, "method not allowed: Allow lists the methods"),
        (503, "venue unavailable, or too many API key lookups at once (OVERLOADED; "
              "Retry-After says when to retry)"),
        (504, "venue timed out"),
    )
}


# The order types that need a price, and those that need a stopPrice (check_order's 422).
_PRICED = [t.value for t in PRICED_TYPES]
_STOPPED = [t.value for t in STOP_TYPES]


def _when_type(types: list[str], then: dict, otherwise: dict) -> dict:
    return {"if": {"properties": {"type": {"enum": types}}, "required": ["type"]},
            "then": then, "else": otherwise}


def _tighten(components: dict, market_schema: dict) -> dict:
    """What msgspec cannot say from the types: the order body's bounds, patterns, and which
    order types take a price, a stopPrice and postOnly."""
    order = components["PlaceOrder"]
    props = order["properties"]
    props["market"] = {**props["market"], **market_schema}
    absent = {"not": {"type": "number"}}  # (absent or null)
    order["allOf"] = [
        _when_type(_PRICED, {"required": ["price"], "properties": {"price": {"type": "number"}}},
                   {"properties": {"price": absent}}),
        _when_type(_STOPPED,
                   {"required": ["stopPrice"], "properties": {"stopPrice": {"type": "number"}}},
                   {"properties": {"stopPrice": absent}}),
        _when_type(["LIMIT"], {}, {"properties": {"postOnly": {"const": False}}}),
    ]
    for name in ("quantity", "price", "stopPrice"):
        prop = props[name]
        for option in prop.get("anyOf", [prop]):  # optional fields: {number} | {null}
            if option.get("type") == "number":
                option.update(ORDER_VALUE_SCHEMA)
    cid = props["clientOrderId"]
    for option in cid.get("anyOf", [cid]):
        if option.get("type") == "string":
            option.update(CLIENT_ORDER_ID_SCHEMA)
    return components


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
        (403, "the API key lacks the 'trade' scope, or the exchange refused the "
              "credentials' permissions"),
        (404, "unknown market or order"),
        (409, "clientOrderId reused for a different order"),
        (408, "request body not received in time (REQUEST_TIMEOUT; the connection closes)"),
        (413, "request body over 1 MiB"),
        (422, "order fails the market's tick/lot/notional rules, or insufficient balance"),
        (429, "rate limited (venue or gateway); Retry-After says when to retry"),
        (503, "venue unavailable, or stored credentials unreadable with this server's "
              "ASTRA_MASTER_KEY (CREDENTIALS_UNREADABLE)"),
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


# --- the OTC desk (astra.server.otc) -------------------------------------------------------
_OTC_MODELS = (QuoteRequest, QuoteResponse, AcceptQuote, AcceptedQuote, ConvertsMessage,
               OtcAccount, OtcAccountsMessage)
_DECIMAL = {"type": "string", "format": "decimal"}  # msgspec's schema of a Decimal
# Amounts go out as JSON numbers; a client may send them as numbers or decimal strings.
# (Precision per asset, and the account's limits, are the desk's: a schema-valid size may
# still be a 400 or 422.)
_AMOUNT = {"type": "number", "exclusiveMinimum": 0, "maximum": int(MAX_AMOUNT)}
# (as text: what a JSON number may look like, as the routes read it; not "1_000" or " 1")
_AMOUNT_IN = {"anyOf": [_AMOUNT, {**_DECIMAL, "pattern": f"^{DECIMAL_TEXT.pattern}$"}]}
_ASSET = {"type": "string", "pattern": ASSET_RE.pattern}
_ACCOUNT_ID = {"type": "string", "minLength": 1, "maxLength": 64,
               "pattern": f"^{ACCOUNT_ID_RE.pattern}$"}
_OTC_ERRORS = {
    str(s): {"description": d, "content": {"application/json": {"schema": _ref("Error")}}}
    for s, d in (
        (400, "a bad parameter (named), exactly one amount, INVALID_QUOTE_SIGNATURE (any "
              "field changed, or a signature the desk never issued), UNSUPPORTED_PAIR"),
        (401, "missing or invalid API key"),
        (403, "the account belongs to another API key, or the key lacks the 'otc' scope"),
        (404, "no such OTC account (ACCOUNT_NOT_FOUND)"),
        (409, "QUOTE_ALREADY_ACCEPTED: accepted for another account (the same account gets "
              "its trade again)"),
        (410, "QUOTE_EXPIRED: expiryTime has passed on the server's clock"),
        (422, "INSUFFICIENT_LIQUIDITY, INSUFFICIENT_BALANCE, LIMIT_EXCEEDED, STALE_BOOK"),
        (503, "DESK_HALTED: the kill switch is on; or OVERLOADED (Retry-After)"),
    )
}
# Only where a request body is read, and on the quote stream's handshake.
_OTC_BODY_ERRORS = {
    str(s): {"description": d, "content": {"application/json": {"schema": _ref("Error")}}}
    for s, d in (
        (408, "request body not received in time (REQUEST_TIMEOUT; the connection closes)"),
        (413, "request body over 1 MiB"),
    )
}
_OTC_STREAM_ERRORS = {
    "429": {"description": "RATE_LIMITED: the API key has its most WebSockets open at once "
            "(every WebSocket of the key counts); Retry-After says when to retry",
            "content": {"application/json": {"schema": _ref("Error")}}},
}


def _decimals(node: object, replacement: dict) -> object:
    """``node`` with every Decimal schema replaced (keeping a ``default``, as a number)."""
    if isinstance(node, dict):
        if {k: v for k, v in node.items() if k != "default"} == _DECIMAL:
            out = dict(replacement)
            if "default" in node:
                out["default"] = int(node["default"])
            return out
        return {k: _decimals(v, replacement) for k, v in node.items()}
    if isinstance(node, list):
        return [_decimals(v, replacement) for v in node]
    return node


def _otc_components(components: dict) -> dict:
    """The OTC models' amounts as numbers; bounds and patterns msgspec cannot state."""
    for name in ("QuoteRequest", "Quote"):  # what a client sends
        components[name] = _decimals(components[name], _AMOUNT_IN)
    for name in ("Convert", "OtcAccount"):  # what the server answers
        components[name] = _decimals(components[name], {"type": "number"})
    for name in ("QuoteRequest", "Quote"):
        props = components[name]["properties"]
        props["accountId"] = {**props["accountId"], **_ACCOUNT_ID}
        props["fromAsset"] = {**props["fromAsset"], **_ASSET}
        props["toAsset"] = {**props["toAsset"], **_ASSET}
    components["Quote"]["properties"]["signature"]["pattern"] = "^[0-9a-f]{64}$"
    given = {"not": {"type": "null"}}  # exactly one amount given (absent or null: not)
    components["QuoteRequest"]["oneOf"] = [
        {"required": [name], "properties": {name: given}} for name in ("fromAmount", "toAmount")
    ]
    return components


def _otc(method: str, summary: str, params: list[dict], schema: dict,
         body: dict | None = None) -> dict:
    ok = {"description": "OK", "content": {"application/json": {"schema": schema}}}
    op: dict = {"summary": summary, "parameters": params, "responses": {"200": ok, **_OTC_ERRORS}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        op["responses"].update(_OTC_BODY_ERRORS)
    return {method: op}


def _otc_paths() -> dict:
    account = _param("accountId", "OTC account id (a UUID)", schema=_ACCOUNT_ID, where="path")
    amount = _AMOUNT_IN
    request = [
        _param("accountId", "OTC account to quote for", schema=_ACCOUNT_ID),
        _param("fromAsset", "the asset the client buys", schema=_ASSET),
        _param("toAsset", "the asset the client sells", schema=_ASSET),
        _param("fromAmount", "fromAsset to receive (exactly one amount)", False, amount),
        _param("toAmount", "toAsset to pay (exactly one amount)", False, amount),
    ]
    stream_frame = {"oneOf": [_ref("QuoteResponse"), {
        "type": "object", "required": ["type", "code", "message"],
        "properties": {"type": {"const": "error"}, "code": {"type": "string"},
                       "message": {"type": "string"}, "parameter": {"type": "string"}}}]}
    paths = {
        "/request-quote": {
            **_otc("post", "A firm OTC quote: fromAsset is what the client buys, toAsset what "
                   "it sells; exactly one of fromAmount, toAmount. expiryTime is Unix "
                   "microseconds; accept before it with the signature.",
                   [], _ref("QuoteResponse"), _ref("QuoteRequest")),
            **_otc("get", "The same as POST, with the body's names as query parameters",
                   request, _ref("QuoteResponse")),
        },
        "/accept-quote": _otc(
            "post", "Accept a quote (at most once): the trade booked on the account",
            [], _ref("AcceptedQuote"), _ref("AcceptQuote")),
        "/otc/accept-quote/{accountId}": _otc(
            "post", "Accept a quote for this account (AcceptQuote, or the bare Quote)",
            [account], _ref("AcceptedQuote"),
            {"oneOf": [_ref("AcceptQuote"), _ref("Quote")]}),
        "/converts/{accountId}": _otc(
            "get", "The account's OTC trades, newest first",
            [account,
             _param("limit", f"how many (default {DEFAULT_CONVERTS_LIMIT}, max "
                    f"{MAX_CONVERTS_LIMIT})", False,
                    {"type": "integer", "minimum": 1, "maximum": MAX_CONVERTS_LIMIT,
                     "default": DEFAULT_CONVERTS_LIMIT}),
             _param("before", "only trades before this time (Unix ms)", False,
                    {"type": "integer", "minimum": 0, "maximum": MAX_SINCE})],
            _ref("ConvertsMessage")),
        "/otc/accounts": _otc("get", "This API key's OTC accounts, with balances", [],
                              _ref("OtcAccountsMessage")),
        "/otc/accounts/{accountId}": _otc("get", "One OTC account, with balances", [account],
                                          _ref("OtcAccount")),
        "/ws/stream-otc-quotes/{accountId}": _otc(
            "get", "WebSocket: a fresh signed quote (QuoteResponse) every stream interval; a "
            "refusal in a round is an error frame and the stream goes on. The first quote is "
            "priced before the upgrade: bad parameters are an HTTP 4xx.",
            [account, _param("from", "the asset the client buys", schema=_ASSET),
             _param("to", "the asset the client sells", schema=_ASSET),
             _param("fromQty", "fromAsset to receive (exactly one of fromQty, toQty)", False,
                    amount),
             _param("toQty", "toAsset to pay (exactly one of fromQty, toQty)", False, amount)],
            stream_frame),
    }
    paths["/ws/stream-otc-quotes/{accountId}"]["get"]["responses"].update(_OTC_STREAM_ERRORS)
    return paths


def openapi_document(venues: Mapping[str, Venue] | None = None) -> dict:
    """The document; narrowed to ``venues`` (a gateway's, by code) when given."""
    if not venues:
        return _document(None)
    return _document(tuple(sorted(
        (code, venue.order_id_pattern, tuple(venue.balance_accounts))
        for code, venue in venues.items()
    )))


@cache
def _document(served: tuple[tuple[str, str, tuple[str, ...]], ...] | None) -> dict:
    if served is None:
        exchanges, accounts = EXCHANGES, list(BALANCE_ACCOUNTS)
        id_patterns = [Venue.order_id_pattern]  # any venue's (Binance, Aster, SIM: numeric)
    else:
        exchanges = [code for code, _, _ in served]
        accounts = [a for a in BALANCE_ACCOUNTS if any(a in acc for _, _, acc in served)]
        id_patterns = sorted({pattern for _, pattern, _ in served})
    # SMART-... markets (the consolidated book, the router) are served whatever the venues.
    with_smart = exchanges if "SMART" in exchanges else [*exchanges, "SMART"]
    market_schema = {"type": "string", "pattern": market_pattern(with_smart),
                     "maxLength": MAX_MARKET_LENGTH}
    exchange_schema = {"type": "string", "enum": exchanges}
    # (and SMART parents' ids, the router's own: ``sor-`` + 20 base62 characters)
    order_id_schema = {"type": "string", "pattern": "^(?:" + "|".join(
        f"(?:{p})" for p in [*id_patterns, "sor-[0-9A-Za-z]{20}"]) + ")$"}
    _, components = msgspec.json.schema_components(
        [MarketMetadata, OrderBook, BookUpdate, BookResync, TradesMessage, Error, ExchangeInfo,
         ConsolidatedBook, ConsolidatedUpdate, Bbo, FeedStatus,
         PlaceOrder, Order, Fill, Balance, Position, OrdersMessage, FillsMessage,
         BalancesMessage, ResyncMessage, SmartOrderRequest, SmartOrder, SmartPlan,
         WsAck, WsError, *_OTC_MODELS, *HISTORY_MODELS],
        ref_template="#/components/schemas/{name}",
    )
    market = _param("market", "Astra market symbol, e.g. SIM-SPOT-BTC-USDT",
                    schema=market_schema)
    exchange = _param("exchange", "Exchange code, e.g. SIM", schema=exchange_schema)
    orders = {"type": "array", "items": _ref("Order")}
    _venues = _param("venues", "SMART only: comma-separated member venues (default: all)",
                     False, {"type": "string", "pattern": "^[A-Za-z0-9]+(,[A-Za-z0-9]+)*$"})
    return {
        "openapi": "3.1.0",
        "info": {"title": "Astra API", "version": "1"},
        "security": [{"apiKey": []}],
        "paths": {
            "/markets": _get(
                "Markets of an exchange; exchange=SMART: the consolidated markets, each with "
                "its member venues' markets (members)",
                [_param("exchange", "Exchange code, e.g. SIM, or SMART",
                        schema={"type": "string", "enum": with_smart})],
                {"type": "array", "items": _ref("MarketMetadata")},
            ),
            "/orderbook": _get(
                "L2 order book from the live synced book; on a SMART- market the consolidated "
                "book of its in-sync members (ConsolidatedBook: per-venue quantities, each "
                "member's state; 503 with the members' states when none is in sync)",
                [
                    market,
                    _param("depth", f"levels per side (at most {MAX_DEPTH}; all when absent)",
                           False, {"type": "integer", "minimum": 1, "maximum": MAX_DEPTH}),
                    _venues,
                    _param("feeAdjusted", "SMART only: prices net of each venue's taker fee",
                           False, {"type": "string", "enum": ["true", "false"]}),
                ],
                {"oneOf": [_ref("OrderBook"), _ref("ConsolidatedBook")]},
            ),
            "/bbo": _get(
                "Best bid and offer (with venue) of a single-venue or SMART- market",
                [market, _venues],
                _ref("Bbo"),
            ),
            "/trades": _get(
                "Recent public trades",
                [
                    market,
                    _param(
                        "limit",
                        f"how many (default {DEFAULT_TRADES_LIMIT}, max {MAX_TRADES_LIMIT})",
                        False,
                        {"type": "integer", "minimum": 1, "maximum": MAX_TRADES_LIMIT,
                         "default": DEFAULT_TRADES_LIMIT},
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
                "WebSocket: the subscription in the query (market, dataType). ORDERBOOK sends a "
                "snapshot then updates (BookUpdate), and BookResync at once whenever the book "
                "stops being trustworthy, before its next snapshot; TRADE sends "
                "TradesMessage. BBO sends Bbo whenever the best bid or offer changes. On a "
                "SMART- market ORDERBOOK sends ConsolidatedUpdate (gateway-assigned updateId; "
                "a fresh snapshot whenever a member's state changes). Every market-data "
                "message names its market. More streams on the same connection (up to "
                f"{MAX_WS_SUBSCRIPTIONS}; with neither market nor dataType it opens with "
                "none): send text messages {\"op\":\"subscribe\"|\"unsubscribe\","
                "\"market\":...,\"dataType\":\"ORDERBOOK\"|\"TRADE\"|\"BBO\",\"id\":"
                "optional string or number}; each is answered in order with WsAck "
                "(subscribed: that stream's frames follow it; unsubscribed: none after it) or "
                "WsError (the HTTP error's code, message and parameter, plus the id; the "
                "connection stays open). A message over "
                f"{MAX_WS_MESSAGE_BYTES} bytes closes the connection with 1009. The private "
                "types ORDERS, FILLS, BALANCES (with exchange=, and exchange credentials as "
                "for the private REST API; query-string form only) stream OrdersMessage, "
                "FillsMessage, BalancesMessage, and ResyncMessage when the venue's user "
                "stream restarted.",
                [
                    _param("market", "Astra market symbol (ORDERBOOK, TRADE, BBO)", False,
                           market_schema),
                    _param("exchange", "Exchange code (ORDERS, FILLS, BALANCES)", False,
                           exchange_schema),
                    _param(
                        "dataType",
                        ", ".join(WS_DATA_TYPES) + " (required with market or exchange)",
                        False,
                        schema={"type": "string", "enum": list(WS_DATA_TYPES)},
                    ),
                    *replay_params(_param),
                ],
                {"oneOf": [_ref(n) for n in ("BookUpdate", "BookResync", "TradesMessage",
                                             "ConsolidatedUpdate", "Bbo", "WsAck", "WsError",
                                             "OrdersMessage",
                                             "FillsMessage", "BalancesMessage",
                                             "ResyncMessage")]},
            ),
            "/orders": {
                **_private("post", "Place an order (idempotent by clientOrderId); on a "
                           "SMART- market a routed order (SmartOrderRequest: venues, "
                           "maxSlippageBps, dryRun) answered with its SmartOrder, or its "
                           "SmartPlan for a dry run",
                           [], {"oneOf": [_ref("Order"), _ref("SmartOrder"), _ref("SmartPlan")]},
                           {"oneOf": [_ref("PlaceOrder"), _ref("SmartOrderRequest")]}),
                **_private("get", "Open orders of a market", [market], orders),
                **_private(
                    "delete",
                    "Cancel an order (orderId or clientOrderId), or every open order of the "
                    "market when neither is given",
                    [market, _param("orderId", "venue order id", False, order_id_schema),
                     _param("clientOrderId", "client order id", False,
                            CLIENT_ORDER_ID_SCHEMA)],
                    {"oneOf": [_ref("Order"), {"type": "object"}]},
                ),
            },
            "/orders/{orderId}": _private(
                "get", "One order",
                [market, _param("orderId", "venue order id", schema=order_id_schema,
                                where="path")],
                _ref("Order")),
            "/fills": _private(
                "get", "Fills of a market",
                [market, _param("since", "ms since the epoch", False,
                                {"type": "integer", "minimum": 0, "maximum": MAX_SINCE})],
                {"type": "array", "items": _ref("Fill")}),
            "/balances": _private(
                "get", "Balances on an exchange",
                [exchange, _param(
                    "account", "the venue account to read (SIM and ASTER: spot or swap)", False,
                    {"type": "string", "enum": accounts})],
                {"type": "array", "items": _ref("Balance")}),
            "/positions": _private(
                "get", "Open positions on an exchange", [exchange],
                {"type": "array", "items": _ref("Position")}),
            **_otc_paths(),
            **history_paths(market_schema, _param, _get, _ref),
            **api_key_paths(_param, _ref, _ERRORS),
            **feeds_paths(with_smart, market_schema, _param, _get, _ref),
        },
        "components": {
            "schemas": {**_otc_components(_tighten(components, market_schema)),
                        **API_KEY_SCHEMAS},
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
