"""``AsyncAstra``: one typed method per endpoint of the gateway, and the WebSocket streams.

Invariants:
- Answers are decoded with msgspec into the server's own models (``astra.core``), or into
  ``_models`` for the few the server builds as plain dicts; a ``SMART-`` market's book and
  orders decode as ``ConsolidatedBook`` / ``SmartOrder``.
- Only reads are retried, and ``POST /orders`` when it carries a ``clientOrderId`` (the
  server answers the same order for the same id); every other POST and DELETE is sent once.
- Parameters keep the API's names in the query or body (``feeAdjusted``, ``clientOrderId``);
  ``None`` is "not sent" (the server's default).
- An id in a path (order, account, key) is quoted as one segment: it cannot reach another
  route or add a query; a non-finite OTC amount is refused here (JSON has no NaN), as the
  server refuses a bad parameter (``InvalidParameter`` naming it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from decimal import Decimal
from functools import cache
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import msgspec

from astra.core import (
    AstraError,
    Bbo,
    BookResync,
    Candle,
    ConsolidatedBook,
    FeedStatus,
    HistoricalBook,
    HistoryMarket,
    InvalidParameter,
    MarketMetadata,
    OrderBook,
    Trade,
    TradesMessage,
    TradesPage,
)
from astra.core._otc import (
    AcceptedQuote,
    AcceptQuote,
    Convert,
    ConvertsMessage,
    OtcAccount,
    OtcAccountsMessage,
    Quote,
    QuoteRequest,
    QuoteResponse,
)
from astra.core._trading import (
    Balance,
    Fill,
    Order,
    OrderType,
    PlaceOrder,
    Position,
    Side,
    SmartOrder,
    SmartOrderRequest,
    SmartPlan,
    TimeInForce,
)

from ._book import SMART_PREFIX, LocalBook
from ._http import Transport
from ._models import ApiKey, CanceledOrders, CreatedApiKey, ExchangeInfo
from ._streams import watch_book, watch_private, watch_quotes, watch_trades

__all__ = ["AsyncAstra", "TimeArg"]

TimeArg = int | str | dt.datetime  # Unix ms, ISO 8601 text, or a datetime (naive = UTC)
Amount = Decimal | str | int | float


class _Keys(msgspec.Struct):
    keys: list[ApiKey]


@cache
def _decoder(kind: Any) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(kind)


def _decode(kind: Any, body: bytes) -> Any:
    return _decoder(kind).decode(body)


def _time(value: TimeArg | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def _amount(value: Amount | None, parameter: str) -> Decimal | None:
    # Through str: a float's shortest repr (0.1), never its binary expansion.
    if value is None:
        return None
    amount = Decimal(str(value))
    if not amount.is_finite():  # JSON has no NaN/Infinity: refuse it as the server would
        raise InvalidParameter(parameter, f"expected a finite number, got {value!r}")
    return amount


def _segment(value: str, parameter: str) -> str:
    """``value`` as one path segment: quoted, so that an id can never reach another route
    (``../api-keys``) nor add a query (``x?market=``)."""
    text = str(value)
    if text in ("", ".", ".."):
        raise InvalidParameter(parameter, f"not an id: {text!r}")
    return quote(text, safe="")


def _is_smart(market: str) -> bool:
    return market.startswith(SMART_PREFIX)


class AsyncAstra:
    """An async client of one Astra gateway.

    ``async with AsyncAstra("http://127.0.0.1:8080", key) as astra: await astra.markets("SIM")``

    ``session``: an ``aiohttp.ClientSession`` of yours (used, never closed); ``timeout``:
    seconds per HTTP request; ``retries``: how many times a safe request is retried;
    ``headers``: sent with every request (e.g. ``x-astra-exchange-*`` credentials);
    ``backoff``/``max_backoff``: the streams' reconnection delays.
    """

    def __init__(self, url: str, api_key: str, *, session: aiohttp.ClientSession | None = None,
                 timeout: float = 30.0, retries: int = 3,
                 headers: Mapping[str, str] | None = None, backoff: float = 0.1,
                 max_backoff: float = 5.0) -> None:
        self.transport = Transport(url, api_key, session=session, timeout=timeout,
                                   retries=retries, headers=headers)
        self._feed_options = {"backoff": backoff, "max_backoff": max_backoff}

    async def __aenter__(self) -> AsyncAstra:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session this client made (a session passed in stays open)."""
        await self.transport.close()

    @property
    def url(self) -> str:
        return self.transport.url

    async def _get(self, kind: Any, path: str, **params: Any) -> Any:
        return _decode(kind, await self.transport.request("GET", path, params=params))

    # --- market data ------------------------------------------------------------------------

    async def markets(self, exchange: str) -> list[MarketMetadata]:
        """``GET /markets?exchange=``: every market of a venue (or ``SMART``)."""
        return await self._get(list[MarketMetadata], "/markets", exchange=exchange)

    async def orderbook(self, market: str, depth: int | None = None, *,
                        venues: Sequence[str] | None = None,
                        fee_adjusted: bool | None = None) -> OrderBook | ConsolidatedBook:
        """``GET /orderbook``: the live book; a ``ConsolidatedBook`` on ``SMART-`` markets
        (``venues``, ``fee_adjusted``: SMART only)."""
        kind = ConsolidatedBook if _is_smart(market) else OrderBook
        return await self._get(kind, "/orderbook", market=market, depth=depth, venues=venues,
                               feeAdjusted=fee_adjusted)

    async def bbo(self, market: str, *, venues: Sequence[str] | None = None) -> Bbo:
        return await self._get(Bbo, "/bbo", market=market, venues=venues)

    async def trades(self, market: str, limit: int | None = None) -> list[Trade]:
        """``GET /trades``: recent trades, oldest first."""
        return (await self._get(TradesMessage, "/trades", market=market, limit=limit)).trades

    async def exchanges(self) -> list[ExchangeInfo]:
        return await self._get(list[ExchangeInfo], "/exchanges")

    async def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``: the API description, as a dict."""
        return await self._get(dict[str, Any], "/openapi.json")

    async def feeds(self, venue: str | None = None,
                    market: str | None = None) -> list[FeedStatus]:
        """``GET /feeds``: each live feed's state (synced, connecting, resyncing,
        disconnected), its resyncs and their reasons, update counts and latency; ``venue``
        (or ``SMART``) and ``market`` narrow the list."""
        return await self._get(list[FeedStatus], "/feeds", venue=venue, market=market)

    # --- trading ------------------------------------------------------------------------

    async def place_order(self, market: str, side: Side | str, type: OrderType | str,
                          quantity: float, price: float | None = None, *,
                          stop_price: float | None = None,
                          time_in_force: TimeInForce | str | None = None,
                          post_only: bool = False, reduce_only: bool = False,
                          client_order_id: str | None = None) -> Order | SmartOrder:
        """``POST /orders``. Retried on a dropped connection or a 503 only when
        ``client_order_id`` is given (the server answers the first order to a repeat);
        without one the request is sent once. A ``SMART-`` market answers a ``SmartOrder``.
        A venue that did not confirm in time answers status ``UNKNOWN`` (HTTP 202): the
        gateway reconciles it by its client order id; read it again with ``order()``."""
        body = PlaceOrder(market=market, side=Side(side), type=OrderType(type),
                          quantity=quantity, price=price, stop_price=stop_price,
                          time_in_force=None if time_in_force is None
                          else TimeInForce(time_in_force),
                          post_only=post_only, reduce_only=reduce_only,
                          client_order_id=client_order_id)
        return await self._post_order(body)

    async def place_smart_order(self, market: str, side: Side | str, type: OrderType | str,
                                quantity: float, price: float | None = None, *,
                                venues: Sequence[str] | None = None,
                                max_slippage_bps: float | None = None, dry_run: bool = True,
                                time_in_force: TimeInForce | str | None = None,
                                client_order_id: str | None = None) -> SmartPlan | SmartOrder:
        """A routed order on a ``SMART-`` market: by default a dry run (the router's
        ``SmartPlan``, nothing sent); ``dry_run=False`` executes it (``SmartOrder``)."""
        body = SmartOrderRequest(
            market=market, side=Side(side), type=OrderType(type), quantity=quantity,
            price=price, venues=None if venues is None else list(venues),
            max_slippage_bps=max_slippage_bps, dry_run=dry_run,
            time_in_force=None if time_in_force is None else TimeInForce(time_in_force),
            client_order_id=client_order_id)
        return await self._post_order(body)

    async def _post_order(self, body: PlaceOrder) -> Any:
        raw = await self.transport.request("POST", "/orders", body=body,
                                           idempotent=body.client_order_id is not None)
        if getattr(body, "dry_run", False):
            return _decode(SmartPlan, raw)
        return _decode(SmartOrder if _is_smart(body.market) else Order, raw)

    async def orders(self, market: str) -> list[Order] | list[SmartOrder]:
        """``GET /orders?market=``: open orders (SMART: open parents)."""
        kind = list[SmartOrder] if _is_smart(market) else list[Order]
        return await self._get(kind, "/orders", market=market)

    async def order(self, order_id: str, market: str) -> Order | SmartOrder:
        """``GET /orders/{orderId}?market=``."""
        kind = SmartOrder if _is_smart(market) else Order
        return await self._get(kind, f"/orders/{_segment(order_id, 'orderId')}", market=market)

    async def cancel_order(self, market: str, order_id: str | None = None, *,
                           client_order_id: str | None = None) -> Order | SmartOrder:
        """``DELETE /orders`` of one order, by ``order_id`` or ``client_order_id``."""
        if order_id is None and client_order_id is None:
            raise ValueError("give order_id or client_order_id (cancel_all_orders cancels "
                             "every open order)")
        raw = await self.transport.request("DELETE", "/orders", params={
            "market": market, "orderId": order_id, "clientOrderId": client_order_id})
        return _decode(SmartOrder if _is_smart(market) else Order, raw)

    async def cancel_all_orders(self, market: str) -> int:
        """``DELETE /orders?market=``: every open order of the market; how many were."""
        raw = await self.transport.request("DELETE", "/orders", params={"market": market})
        return _decode(CanceledOrders, raw).canceled

    async def fills(self, market: str, since: int | None = None) -> list[Fill]:
        return await self._get(list[Fill], "/fills", market=market, since=since)

    async def balances(self, exchange: str, account: str | None = None) -> list[Balance]:
        return await self._get(list[Balance], "/balances", exchange=exchange, account=account)

    async def positions(self, exchange: str) -> list[Position]:
        return await self._get(list[Position], "/positions", exchange=exchange)

    # --- the OTC desk ---------------------------------------------------------------------

    async def request_quote(self, account_id: str, from_asset: str, to_asset: str, *,
                            from_amount: Amount | None = None, to_amount: Amount | None = None,
                            method: Literal["POST", "GET"] = "POST") -> QuoteResponse:
        """A firm, signed, expiring quote: buy ``from_asset``, sell ``to_asset``; exactly one
        of ``from_amount`` (in ``from_asset``) and ``to_amount``. Sent once (never retried:
        each request is a new quote)."""
        req = QuoteRequest(account_id=account_id, from_asset=from_asset, to_asset=to_asset,
                           from_amount=_amount(from_amount, "fromAmount"),
                           to_amount=_amount(to_amount, "toAmount"))
        if method == "GET":
            params = msgspec.to_builtins(req)
            raw = await self.transport.request("GET", "/request-quote", params=params,
                                               idempotent=False)
        else:
            raw = await self.transport.request("POST", "/request-quote", body=req)
        return _decode(QuoteResponse, raw)

    async def accept_quote(self, quote: QuoteResponse | Quote, *,
                           account_id: str | None = None) -> AcceptedQuote:
        """Accept a quote before its ``expiryTime``, sent back unchanged. With
        ``account_id``: ``POST /otc/accept-quote/{accountId}``. A repeat answers the same
        trade (the desk books it at most once)."""
        if isinstance(quote, QuoteResponse):
            body = AcceptQuote(quote=quote.quote, quote_id=quote.quote_id)
        else:
            body = AcceptQuote(quote=quote)
        path = "/accept-quote" if account_id is None else \
            f"/otc/accept-quote/{_segment(account_id, 'accountId')}"
        return _decode(AcceptedQuote, await self.transport.request("POST", path, body=body))

    async def converts(self, account_id: str, limit: int | None = None,
                       before: int | None = None) -> list[Convert]:
        """The account's OTC trades, newest first (``before``: Unix ms)."""
        path = f"/converts/{_segment(account_id, 'accountId')}"
        return (await self._get(ConvertsMessage, path, limit=limit,
                                before=before)).converts

    async def otc_accounts(self) -> list[OtcAccount]:
        return (await self._get(OtcAccountsMessage, "/otc/accounts")).accounts

    async def otc_account(self, account_id: str) -> OtcAccount:
        path = f"/otc/accounts/{_segment(account_id, 'accountId')}"
        return await self._get(OtcAccount, path)

    # --- history ----------------------------------------------------------------------------

    async def history_markets(self) -> list[HistoryMarket]:
        return await self._get(list[HistoryMarket], "/history/markets")

    async def history_trades(self, market: str, start: TimeArg | None = None,
                             end: TimeArg | None = None, limit: int | None = None,
                             cursor: str | None = None) -> TradesPage:
        """One page; pass ``page.next_cursor`` back as ``cursor`` until it is None."""
        return await self._get(TradesPage, "/history/trades", market=market,
                               start=_time(start), end=_time(end), limit=limit, cursor=cursor)

    async def history_orderbook(self, market: str, time: TimeArg,
                                depth: int | None = None) -> HistoricalBook:
        return await self._get(HistoricalBook, "/history/orderbook", market=market,
                               time=_time(time), depth=depth)

    async def history_candles(self, market: str, interval: str, start: TimeArg | None = None,
                              end: TimeArg | None = None) -> list[Candle]:
        return await self._get(list[Candle], "/history/candles", market=market,
                               interval=interval, start=_time(start), end=_time(end))

    # --- API keys (admin scope) -----------------------------------------------------------

    async def api_keys(self) -> list[ApiKey]:
        return (await self._get(_Keys, "/api-keys")).keys

    async def create_api_key(self, scopes: Iterable[str], label: str | None = None, *,
                             expires_at: TimeArg | None = None,
                             allow_ips: Sequence[str] | None = None) -> CreatedApiKey:
        """A new key; its ``token`` is in this answer only."""
        body: dict[str, Any] = {"scopes": list(scopes)}
        if label is not None:
            body["label"] = label
        if expires_at is not None:
            body["expiresAt"] = expires_at if isinstance(expires_at, int) else _time(expires_at)
        if allow_ips is not None:
            body["allowIps"] = list(allow_ips)
        return _decode(CreatedApiKey,
                       await self.transport.request("POST", "/api-keys", body=body))

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        """Revoke at once: the key's open WebSockets close, its next request is a 401."""
        path = f"/api-keys/{_segment(key_id, 'keyId')}"
        return _decode(ApiKey, await self.transport.request("DELETE", path))

    # --- streams ----------------------------------------------------------------------------

    def watch_orderbook(self, market: str, depth: int | None = None, *,
                        yield_resyncs: bool = False) -> AsyncIterator[LocalBook]:
        """The live book as a ``LocalBook`` (one object, updated), after every snapshot and
        update; it checks ``updateId`` continuity and resyncs itself (reconnecting) on a
        gap, and reconnects with backoff when the connection drops. ``depth`` cuts its
        ``bids``/``asks``; ``yield_resyncs``: also yield while it waits for a snapshot."""
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)
                                  or depth < 1):
            raise InvalidParameter("depth", f"expected a positive integer, got {depth!r}")
        return watch_book(self.transport, market, depth, yield_resyncs, self._feed_options)

    def watch_trades(self, market: str) -> AsyncIterator[TradesMessage | BookResync]:
        return watch_trades(self.transport, market, self._feed_options)

    def watch_orders(self, exchange: str) -> AsyncIterator[Any]:
        """``OrdersMessage``s of the account on ``exchange``; ``ResyncMessage`` when events
        may have been missed (re-read ``orders()``)."""
        return watch_private(self.transport, exchange, "ORDERS", self._feed_options)

    def watch_fills(self, exchange: str) -> AsyncIterator[Any]:
        return watch_private(self.transport, exchange, "FILLS", self._feed_options)

    def watch_balances(self, exchange: str) -> AsyncIterator[Any]:
        return watch_private(self.transport, exchange, "BALANCES", self._feed_options)

    def watch_quotes(self, account_id: str, from_asset: str, to_asset: str, *,
                     from_amount: Amount | None = None, to_amount: Amount | None = None
                     ) -> AsyncIterator[QuoteResponse | AstraError]:
        """``WS /ws/stream-otc-quotes/{accountId}``: a fresh quote each round; a refused
        round is yielded as its ``AstraError`` (not raised: the stream goes on)."""
        params = {"from": from_asset, "to": to_asset, "fromQty": _amount(from_amount, "fromQty"),
                  "toQty": _amount(to_amount, "toQty")}
        return watch_quotes(self.transport, _segment(account_id, "accountId"), params,
                            self._feed_options)
