"""Which scope each route needs, and the check the auth middleware applies.

Invariants:
- Every route the gateway serves is in ``ROUTE_SCOPES`` (method, canonical path) -> scope; a
  matched route missing from the table is refused (403, fail closed), never let through.
  ``tests/server/test_scopes.py`` enumerates the built app's routes against the table.
- ``/ws`` is ``read`` (live market streams and replays) except for the private data types
  (``ORDERS``, ``FILLS``, ``BALANCES``), which are ``trade``.
- The check is in memory on the verified ``KeyInfo`` (no database read per request).
"""

from __future__ import annotations

from aiohttp import web

from astra.core import Forbidden

from .params import PRIVATE_DATA_TYPES

__all__ = ["ANY_SCOPE", "PUBLIC", "ROUTE_SCOPES", "check_scope", "required_scope", "route_scope"]

ANY_SCOPE = "any"  # any valid key (the API description)
PUBLIC = "public"  # no key at all: the terminal's static files (they hold no data)

ROUTE_SCOPES: dict[tuple[str, str], str] = {
    # public market data and history
    ("GET", "/markets"): "read",
    ("GET", "/orderbook"): "read",
    ("GET", "/bbo"): "read",
    ("GET", "/trades"): "read",
    ("GET", "/exchanges"): "read",
    ("GET", "/feeds"): "read",  # each live feed's state (server/feeds.py)
    ("GET", "/ws"): "read",  # private data types: trade (required_scope)
    ("GET", "/history/markets"): "read",
    ("GET", "/history/trades"): "read",
    ("GET", "/history/orderbook"): "read",
    ("GET", "/history/candles"): "read",
    ("GET", "/openapi.json"): ANY_SCOPE,
    # trading
    ("POST", "/orders"): "trade",
    ("DELETE", "/orders"): "trade",
    ("GET", "/orders"): "trade",
    ("GET", "/orders/{order_id}"): "trade",
    ("GET", "/fills"): "trade",
    ("GET", "/balances"): "trade",
    ("GET", "/positions"): "trade",
    # the OTC desk
    ("POST", "/request-quote"): "otc",
    ("GET", "/request-quote"): "otc",
    ("POST", "/accept-quote"): "otc",
    ("POST", "/otc/accept-quote/{accountId}"): "otc",
    ("GET", "/converts/{accountId}"): "otc",
    ("GET", "/otc/accounts"): "otc",
    ("GET", "/otc/accounts/{accountId}"): "otc",
    ("GET", "/ws/stream-otc-quotes/{accountId}"): "otc",
    # key management
    ("GET", "/api-keys"): "admin",
    ("POST", "/api-keys"): "admin",
    ("DELETE", "/api-keys/{keyId}"): "admin",
    # the Astra Terminal's static files (server/terminal.py): its calls carry the user's key
    ("GET", "/"): PUBLIC,
    ("GET", "/terminal/{path}"): PUBLIC,
}


def route_scope(method: str, canonical: str | None) -> str | None:
    """The table's scope for a route (HEAD as GET); None when the route is not in it."""
    return ROUTE_SCOPES.get(("GET" if method == "HEAD" else method, canonical))


def required_scope(request: web.BaseRequest) -> str | None:
    """The scope the request's route needs; None when no route matched (the 404/405 path)
    or the matched route is not in the table (the caller refuses it)."""
    match = getattr(request, "match_info", None)
    if match is None or match.http_exception is not None:
        return None
    route = match.route
    canonical = route.resource.canonical if route.resource is not None else None
    scope = route_scope(request.method, canonical)
    if scope == "read" and canonical == "/ws" and (
            request.query.get("dataType") in PRIVATE_DATA_TYPES):
        return "trade"
    return scope


def check_scope(request: web.BaseRequest, scopes: frozenset[str]) -> None:
    """Raise ``Forbidden`` naming the scope when ``scopes`` lacks the route's."""
    match = getattr(request, "match_info", None)
    if match is None or match.http_exception is not None:
        return  # no route: the handler answers 404/405
    scope = required_scope(request)
    if scope is None:
        raise Forbidden(f"{request.method} {request.path} is not open to any API key scope")
    if scope != ANY_SCOPE and scope not in scopes:
        raise Forbidden(f"this API key lacks the '{scope}' scope, which "
                        f"{request.method} {match.route.resource.canonical} needs")
