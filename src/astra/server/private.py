"""The private REST API (seed 001): ``POST/GET/DELETE /orders``, ``GET /orders/{orderId}``,
``GET /fills``, ``GET /balances``, ``GET /positions``.

Orders on a ``SMART-`` market go to the smart order router (``astra.routing``): the body is
``SmartOrderRequest`` (``PlaceOrder`` plus ``venues``, ``maxSlippageBps``, ``dryRun``), each
member venue's credentials are resolved as for a single venue (headers, else stored), and the
order ids are the router's parent ids (``sor-...``). A body for any other market keeps the
strict ``PlaceOrder`` decoding (unknown fields refused).

Credentials come from the request's ``x-astra-exchange-*`` headers (used for that request
only) or from the credential store for the caller's Astra key; see
``astra.trading.credentials``. Every body is validated before any venue is called: unknown
fields, a misspelt enum or a missing market are 400s naming the field. Parameters are
checked before credentials are looked at (a bad ``market`` is named ``market``, never
``exchange`` nor a credential header), and order ids in the venue's form (numeric on
Binance, Aster and SIM) before any venue is called. Stored credentials that this
``ASTRA_MASTER_KEY`` cannot decrypt are a 503 ``CREDENTIALS_UNREADABLE`` (no ``venue``:
no venue was asked; the exchange is named in the message).

A request body must arrive within ``body_timeout`` seconds of the handler starting to read it,
else the answer is 408 ``REQUEST_TIMEOUT`` and the connection is closed: a client announcing
a body it never sends cannot hold a connection and its handler forever (the protocol's header
timeout ends once the headers are in).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import msgspec
from aiohttp import web

from astra.core import (
    ContractUnits,
    CredentialsUnreadable,
    InvalidParameter,
    MissingParameter,
    RequestTimeout,
)
from astra.core._trading import (
    BalancesMessage,
    FillsMessage,
    OrdersMessage,
    OrderStatus,
    PlaceOrder,
    ResyncMessage,
    SmartOrderRequest,
)
from astra.marketdata.smart import is_smart
from astra.net import BoundedSender
from astra.routing.router import SmartRouter
from astra.store import MASTER_KEY_ENV, CredentialStoreError, MasterKeyError
from astra.trading.credentials import REDACTOR, CredentialSource, resolve_credentials
from astra.trading.service import TradingService
from astra.venues.ccxt_normalize import fill_in_base, order_in_base

from .auth import API_KEY, WS_PROTOCOL
from .errors import error_response, json_response
from .params import MAX_SINCE, check_json_nesting, int_param, required
from .sessions import attach_ws

__all__ = ["DEFAULT_BODY_TIMEOUT", "private_routes", "private_ws"]

DEFAULT_BODY_TIMEOUT = 30.0  # seconds to receive a request body (1 MiB at most)
log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_decode_order = msgspec.json.Decoder(PlaceOrder).decode
_decode_smart = msgspec.json.Decoder(SmartOrderRequest).decode


class _MarketOnly(msgspec.Struct):
    market: str


_peek_market = msgspec.json.Decoder(_MarketOnly).decode
# msgspec's messages: the field at fault, so the 400 names it (else the whole ``body``).
_FIELD = re.compile(r"unknown field `(\w+)`|at `\$\.(\w+)`|missing required field `(\w+)`")


class _Private:
    def __init__(self, service: TradingService, store: CredentialSource | None,
                 body_timeout: float = DEFAULT_BODY_TIMEOUT,
                 router: SmartRouter | None = None) -> None:
        self.service = service
        self.store = store
        self.body_timeout = body_timeout
        self.router = router

    def _smart(self, symbol: str | None) -> bool:
        """A ``SMART-`` market handled by the router (none configured: refused as today)."""
        return self.router is not None and symbol is not None and is_smart(symbol)

    def _creds_for(self, request: web.Request):
        """Each member venue's credentials for this request (headers, else stored)."""
        return lambda exchange: self._creds(request, exchange)

    def _creds(self, request: web.Request, exchange: str):
        key = request.get(API_KEY)
        try:
            return resolve_credentials(
                request.headers, exchange, key_id=key.key_id if key else None, store=self.store
            )
        except CredentialStoreError as exc:
            # Stored under another ASTRA_MASTER_KEY, or a row that fails authentication: the
            # operator's to fix, and no reason to fail the request as a bug (500).
            log.warning("stored %s credentials unusable: %s", exchange, exc)
            detail = ("" if isinstance(exc, MasterKeyError) else
                      " (the stored row failed authentication: store the credentials again)")
            raise CredentialsUnreadable(
                f"stored {exchange} credentials for this API key cannot be decrypted with this "
                f"{MASTER_KEY_ENV}{detail}; send the x-astra-exchange-* headers, or ask the "
                "operator to start the gateway with the master key they were stored with",
            ) from None

    @staticmethod
    def _key_id(request: web.Request) -> str:
        key = request.get(API_KEY)
        return key.key_id if key is not None else "anonymous"

    async def _market(self, request: web.Request, symbol: str | None = None) -> tuple[str, Any]:
        """``market`` (the query's, or ``symbol``) checked before anything else: a bad one is
        refused naming ``market``, not a credential header or ``exchange``."""
        symbol = required(request.query, "market") if symbol is None else symbol
        venue, _ = await self.service.market(symbol)
        return symbol, venue

    async def place(self, request: web.Request) -> web.Response:
        try:
            if request.content.is_eof():  # the whole body is in (nearly always): no timer
                raw = await request.read()
            else:
                async with asyncio.timeout(self.body_timeout):
                    raw = await request.read()
        except TimeoutError:
            resp = error_response(RequestTimeout(
                f"request body not received within {self.body_timeout:g} seconds",
                parameter="body"))
            # Sent now and the connection closed: aiohttp would otherwise linger, reading the
            # rest of the body for up to 10 s more.
            resp.force_close()
            await resp.prepare(request)
            await resp.write_eof()
            request.protocol.force_close()  # the transport flushes the answer, then closes
            return resp
        check_json_nesting(raw)  # before any decoder recurses into it
        smart = self._smart_body(raw)
        try:
            body = _decode_smart(raw) if smart else _decode_order(raw)
        except msgspec.ValidationError as exc:
            match = _FIELD.search(str(exc))
            if match and match[3]:
                raise MissingParameter(match[3]) from None
            field = (match[1] or match[2]) if match else "body"
            raise InvalidParameter(field, str(exc)[:200]) from None
        except msgspec.DecodeError:
            raise InvalidParameter("body", "not a JSON object") from None
        if smart:
            return await self._place_smart(request, body)
        resolved = await self.service.market(body.market)  # (a bad market named first)
        creds = self._creds(request, resolved[0].code)
        key_id = self._key_id(request)
        order = await self.service.place(key_id, creds, body, resolved=resolved)
        return json_response(order, 202 if order.status == OrderStatus.UNKNOWN else 200)

    def _smart_body(self, raw: bytes) -> bool:
        # A cheap byte test first: bodies for single venues pay nothing more.
        if self.router is None or b'"SMART-' not in raw:
            return False
        try:
            return is_smart(_peek_market(raw).market)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return False  # the strict decode names what is wrong

    async def _place_smart(self, request: web.Request, body: SmartOrderRequest) -> web.Response:
        key_id, creds_for = self._key_id(request), self._creds_for(request)
        if not body.dry_run:
            await self.router.reconcile_key(key_id, creds_for, body.market, unknown_only=True)
        result = await self.router.place(key_id, creds_for, body)
        status = 202 if getattr(result, "status", None) == OrderStatus.UNKNOWN else 200
        return json_response(result, status)

    async def _smart_cancel(self, request: web.Request, market: str) -> web.Response:
        await self.router.engine.smart_market(market)  # unknown SMART markets named first
        oid = request.query.get("orderId")
        key_id, creds_for = self._key_id(request), self._creds_for(request)
        if oid is None and request.query.get("clientOrderId") is not None:
            parent = await asyncio.to_thread(self.router.journal.by_client_id, key_id,
                                             request.query["clientOrderId"])
            if parent is None:
                raise InvalidParameter("clientOrderId", "no SMART order with this "
                                       "clientOrderId for this API key")
            oid = parent.parent_id
        if oid is None:
            canceled = await self.router.cancel_all(key_id, creds_for, market)
            return json_response({"market": market, "canceled": canceled})
        return json_response(await self.router.cancel(key_id, creds_for, market, oid))

    async def cancel(self, request: web.Request) -> web.Response:
        if self._smart(request.query.get("market")):
            return await self._smart_cancel(request, request.query["market"])
        market, venue = await self._market(request)
        oid, cid = request.query.get("orderId"), request.query.get("clientOrderId")
        self.service.check_order_ids(venue, oid, cid)
        creds = self._creds(request, venue.code)
        if oid is None and cid is None:
            canceled = await self.service.cancel_all(self._key_id(request), creds, market)
            return json_response({"market": market, "canceled": canceled})
        order = await self.service.cancel(self._key_id(request), creds, market, oid, cid)
        return json_response(order)

    async def open_orders(self, request: web.Request) -> web.Response:
        if self._smart(market := request.query.get("market")):
            await self.router.engine.smart_market(market)
            orders = await self.router.list_open(self._key_id(request),
                                                 self._creds_for(request), market)
            return json_response(orders)
        market, venue = await self._market(request)
        creds = self._creds(request, venue.code)
        key_id = self._key_id(request)
        await self.service.reconcile_pending(key_id, venue.code, creds)
        return json_response(await self.service.open_orders(key_id, creds, market))

    async def get_order(self, request: web.Request) -> web.Response:
        if self._smart(market := request.query.get("market")):
            await self.router.engine.smart_market(market)
            order = await self.router.get(self._key_id(request), self._creds_for(request),
                                          market, request.match_info["order_id"])
            return json_response(order)
        market, venue = await self._market(request)
        order_id = request.match_info["order_id"]
        self.service.check_order_ids(venue, order_id)
        creds = self._creds(request, venue.code)
        order = await self.service.get_order(self._key_id(request), creds, market, order_id)
        return json_response(order)

    async def fills(self, request: web.Request) -> web.Response:
        market, venue = await self._market(request)
        since = int_param(request.query, "since", None, MAX_SINCE, minimum=0)
        creds = self._creds(request, venue.code)
        return json_response(await self.service.fills(self._key_id(request), creds, market, since))

    async def balances(self, request: web.Request) -> web.Response:
        exchange = required(request.query, "exchange")
        account = request.query.get("account")
        self.service.check_balance_account(self.service._venue(exchange), account)
        creds = self._creds(request, exchange)
        balances = await self.service.balances(self._key_id(request), creds, exchange, account)
        return json_response(balances)

    async def positions(self, request: web.Request) -> web.Response:
        exchange = required(request.query, "exchange")
        self.service._venue(exchange)  # an unknown exchange is named before the credentials
        creds = self._creds(request, exchange)
        return json_response(await self.service.positions(self._key_id(request), creds, exchange))

    async def ws(self, request: web.Request) -> web.StreamResponse:
        """``WS /ws?dataType=ORDERS|FILLS|BALANCES&exchange=``: the account's normalized
        updates from the venue's user data stream; ``{"type":"resync"}`` when the upstream
        stream restarted (events may have been missed: re-read over REST)."""
        exchange = required(request.query, "exchange")
        data_type = required(request.query, "dataType")
        venue = self.service._venue(exchange)
        if not hasattr(venue, "run_user_stream"):
            raise InvalidParameter("dataType", f"{exchange} has no private stream yet")
        creds = self._creds(request, exchange)
        protocol = request.get(WS_PROTOCOL)
        ws = web.WebSocketResponse(
            protocols=(protocol,) if protocol else (), heartbeat=30.0, max_msg_size=4096
        )
        await ws.prepare(request)
        attach_ws(request, ws)  # its key's revocation closes it from now on
        client = BoundedSender(ws, request.transport, 5000)
        units = {symbol: u for symbol, m in (await venue.load_markets()).items()
                 if m.metadata is not None and (u := ContractUnits.of(m.metadata)) is not None}
        sink = _StreamSink(client, data_type, exchange, units)
        writer = asyncio.create_task(client.writer())
        with REDACTOR.redacting(creds):
            upstream = asyncio.create_task(venue.run_user_stream(creds.ccxt_config(), sink))
            try:
                async for _ in ws:  # client messages are ignored
                    if writer.done() or upstream.done():
                        break
            finally:
                upstream.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await upstream
                client.close(1000, "")
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await asyncio.wait_for(writer, 5)
        return ws


class _StreamSink:
    """Encodes a user stream's events once each, for the data type a client asked for."""

    def __init__(self, client: BoundedSender, data_type: str, exchange: str,
                 units: dict[str, ContractUnits]) -> None:
        self.client, self.data_type, self.exchange = client, data_type, exchange
        self.units = units  # markets whose venue quantities are contracts: base units out

    def on_orders(self, orders: list, fills: list) -> None:
        units = self.units
        if units:
            orders = [order_in_base(o, units.get(o.market)) for o in orders]
            fills = [fill_in_base(f, units.get(f.market)) for f in fills]
        if self.data_type == "ORDERS":
            self.client.deliver(_encode(OrdersMessage(orders=orders)))
        elif self.data_type == "FILLS" and fills:
            self.client.deliver(_encode(FillsMessage(fills=fills)))

    def on_balances(self, balances: list) -> None:
        if self.data_type == "BALANCES":
            self.client.deliver(_encode(BalancesMessage(exchange=self.exchange,
                                                        balances=balances)))

    def on_resync(self, reason: str) -> None:
        self.client.deliver(_encode(ResyncMessage(exchange=self.exchange, reason=reason)))


def private_ws(service: TradingService, store: CredentialSource | None):
    """The handler ``/ws`` delegates private data types to."""
    return _Private(service, store).ws


def private_routes(service: TradingService, store: CredentialSource | None,
                   body_timeout: float = DEFAULT_BODY_TIMEOUT,
                   router: SmartRouter | None = None) -> list:
    p = _Private(service, store, body_timeout, router)
    return [
        web.post("/orders", p.place),
        web.delete("/orders", p.cancel),
        web.get("/orders", p.open_orders),
        web.get("/orders/{order_id}", p.get_order),
        web.get("/fills", p.fills),
        web.get("/balances", p.balances),
        web.get("/positions", p.positions),
    ]
