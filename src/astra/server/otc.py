"""The OTC desk's HTTP and WebSocket routes (seed 001 "OTC": request-quote, accept-quote).

``otc_routes(desk)`` serves ``POST``/``GET /request-quote``, ``POST /accept-quote``,
``POST /otc/accept-quote/{accountId}``, ``GET /converts/{accountId}``, ``GET /otc/accounts``,
``GET /otc/accounts/{accountId}`` and ``WS /ws/stream-otc-quotes/{accountId}``. The routes
decode and encode; pricing, signing, ownership and booking are the desk's (``astra.otc``).

Invariants:
- Every body and query is decoded strictly (msgspec, unknown fields refused) before the desk
  is asked: a malformed one is a 400 naming the field at fault (``quote.expiryTime`` for a
  nested one), never a 500; a quote's quantity that no quote can have (NaN, <= 0, past
  ``MAX_AMOUNT``) is refused before the desk prints it to check the signature. Exactly one
  of ``fromAmount``/``toAmount`` is given (400 naming the extra or the missing one); an
  amount's range and precision are checked by the desk.
- Answers are encoded with ``decimal_format="number"``: amounts are JSON numbers, as the
  reference shows, with the Decimal's own digits (never a float's rounding).
- The caller's identity is the verified API key (``request[API_KEY]``), and nothing else: an
  ``accountId`` in a body, path or query is only a claim the desk checks (404 unknown, 403
  another key's).
- The quote stream prices its first quote before the upgrade, so bad parameters, an unknown
  account or an unsupported pair are a plain HTTP 4xx and no socket. Afterwards it sends one
  frame per ``desk.stream_interval`` seconds: a ``QuoteResponse``, or
  ``{"type":"error","code","message","parameter"?}`` when the desk refuses that round (the
  stream goes on). Frames are sent one at a time and the next quote is priced only once the
  last was handed to the socket: a client that stops reading holds back its own stream only
  (and the heartbeat ends it). Its key's revocation closes it (``attach_ws``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping
from typing import Protocol

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from astra.core import (
    AstraError,
    InvalidParameter,
    MissingParameter,
    RequestTimeout,
    Unauthorized,
    WebSocketUpgradeRequired,
)
from astra.core._otc import (
    AcceptedQuote,
    AcceptQuote,
    ConvertsMessage,
    OtcAccount,
    OtcAccountsMessage,
    Quote,
    QuoteRequest,
    QuoteResponse,
)
from astra.otc.assets import MAX_AMOUNT

from .auth import API_KEY, API_KEY_HEADER, WS_PROTOCOL
from .errors import error_response
from .params import MAX_SINCE, int_param
from .sessions import attach_ws

__all__ = [
    "DEFAULT_CONVERTS_LIMIT",
    "MAX_CONVERTS_LIMIT",
    "STREAM_PARAMETERS",
    "OtcDesk",
    "otc_routes",
]

log = logging.getLogger(__name__)

DEFAULT_CONVERTS_LIMIT = 100  # GET /converts/{accountId}?limit=
MAX_CONVERTS_LIMIT = 1000
DEFAULT_BODY_TIMEOUT = 30.0  # seconds to receive a request body (as the private API's)
# WS /ws/stream-otc-quotes query names -> the QuoteRequest field each one fills.
STREAM_PARAMETERS = {"from": "fromAsset", "to": "toAsset", "fromQty": "fromAmount",
                     "toQty": "toAmount"}
_FROM_REQUEST = {field: name for name, field in STREAM_PARAMETERS.items()}

_encode = msgspec.json.Encoder(decimal_format="number").encode
_decode_request = msgspec.json.Decoder(QuoteRequest).decode
_decode_accept = msgspec.json.Decoder(AcceptQuote).decode
_decode_quote = msgspec.json.Decoder(Quote).decode


class _Peek(msgspec.Struct):
    quote: msgspec.Raw = msgspec.Raw(b"")  # present: an AcceptQuote body, else a bare Quote


_peek = msgspec.json.Decoder(_Peek).decode

# msgspec's messages: the path of the field at fault, so the 400 names it.
_AT = re.compile(r" - at `\$((?:\.\w+|\[\d+\])*)`$")
_UNKNOWN = re.compile(r"unknown field `([^`]{1,64})`")
_MISSING = re.compile(r"missing required field `(\w+)`")


class OtcDesk(Protocol):
    """What the routes need of ``astra.otc.desk.Desk`` (spec section 5)."""

    stream_interval: float

    async def request_quote(self, key_id: str, req: QuoteRequest) -> QuoteResponse: ...

    async def accept(self, key_id: str, body: AcceptQuote,
                     account_id: str | None = None) -> AcceptedQuote: ...

    async def converts(self, key_id: str, account_id: str, limit: int,
                       before_ms: int | None) -> ConvertsMessage: ...

    async def accounts(self, key_id: str) -> OtcAccountsMessage: ...

    async def account(self, key_id: str, account_id: str) -> OtcAccount: ...


def _answer(body: msgspec.Struct, status: int = 200) -> web.Response:
    return web.Response(body=_encode(body), status=status, content_type="application/json")


def _bad_input(exc: msgspec.ValidationError, names: Mapping[str, str] | None = None
               ) -> AstraError:
    """The 400 for a msgspec validation error, naming the field (``names`` renames it)."""
    text = str(exc)
    at = _AT.search(text)
    path = [p for p in re.split(r"\.|(?=\[)", at[1]) if p] if at else []
    unknown, missing = _UNKNOWN.search(text), _MISSING.search(text)
    if unknown or missing:  # the field inside the object the path names
        path.append((unknown or missing)[1])
    field = ".".join(path).replace(".[", "[") or "body"
    if names is not None:
        field = names.get(field, field)
    if missing and not unknown:
        return MissingParameter(field)
    return InvalidParameter(field, (text[:at.start()] if at else text)[:200])


def _decode(decoder, raw: bytes):
    try:
        return decoder(raw)
    except msgspec.ValidationError as exc:
        raise _bad_input(exc) from None
    except msgspec.DecodeError:
        raise InvalidParameter("body", "not a JSON object") from None


def _signed_numbers(body: AcceptQuote) -> AcceptQuote:
    """A quote's quantities are amounts the desk could have signed (finite, > 0, at most
    ``MAX_AMOUNT``): anything else is refused here, before it is printed for the signature
    check (``1E+999999999`` has a billion digits)."""
    quote = body.quote
    for field, value in (("fromAssetQuantity", quote.from_asset_quantity),
                         ("toAssetQuantity", quote.to_asset_quantity)):
        if not (value.is_finite() and 0 < value <= MAX_AMOUNT):
            raise InvalidParameter(f"quote.{field}", "not a quantity the desk quotes")
    return body


def _one_amount(req: QuoteRequest, names: Mapping[str, str] | None = None) -> QuoteRequest:
    """Exactly one of the two amounts (the reference's rule): the 400 names the one to drop
    (both given) or asks for ``fromAmount`` (neither)."""
    def name(field: str) -> str:
        return names.get(field, field) if names is not None else field

    given = (req.from_amount is not None) + (req.to_amount is not None)
    if given == 2:
        raise InvalidParameter(name("toAmount"), f"give exactly one of {name('fromAmount')} "
                               f"and {name('toAmount')}, not both")
    if given == 0:
        raise InvalidParameter(name("fromAmount"), f"give exactly one of {name('fromAmount')} "
                               f"and {name('toAmount')}")
    return req


def _single(query: Mapping[str, str], allowed: frozenset[str] | None = None) -> dict[str, str]:
    """The query as a dict; a name given twice is a 400 (which one would count?)."""
    out: dict[str, str] = {}
    for name in query:
        if allowed is not None and name not in allowed:
            continue
        if name in out:
            raise InvalidParameter(name[:40], "given more than once")
        out[name] = query[name]
    return out


class _Otc:
    def __init__(self, desk: OtcDesk, body_timeout: float) -> None:
        self.desk = desk
        self.body_timeout = body_timeout

    @staticmethod
    def _key_id(request: web.Request) -> str:
        key = request.get(API_KEY)
        if key is None:  # only a gateway built without auth: the desk needs an owner
            raise Unauthorized("the OTC desk needs an API key", parameter=API_KEY_HEADER)
        return key.key_id

    async def _body(self, request: web.Request) -> bytes:
        try:
            async with asyncio.timeout(self.body_timeout):
                return await request.read()
        except TimeoutError:
            raise _BodyTimeout(self.body_timeout) from None

    # --- request-quote -------------------------------------------------------------------

    async def request_quote_post(self, request: web.Request) -> web.Response:
        req = _one_amount(_decode(_decode_request, await self._body(request)))
        return _answer(await self.desk.request_quote(self._key_id(request), req))

    async def request_quote_get(self, request: web.Request) -> web.Response:
        try:
            req = msgspec.convert(_single(request.query), QuoteRequest)
        except msgspec.ValidationError as exc:
            raise _bad_input(exc) from None
        return _answer(await self.desk.request_quote(self._key_id(request), _one_amount(req)))

    # --- accept-quote --------------------------------------------------------------------

    async def accept(self, request: web.Request) -> web.Response:
        body = _signed_numbers(_decode(_decode_accept, await self._body(request)))
        return _answer(await self.desk.accept(self._key_id(request), body))

    async def accept_for(self, request: web.Request) -> web.Response:
        """``POST /otc/accept-quote/{accountId}``: an ``AcceptQuote`` body or a bare Quote."""
        raw = await self._body(request)
        if _decode(_peek, raw).quote:
            body = _decode(_decode_accept, raw)
        else:
            body = AcceptQuote(quote=_decode(_decode_quote, raw))
        account_id = request.match_info["accountId"]
        return _answer(await self.desk.accept(self._key_id(request), _signed_numbers(body),
                                              account_id))

    # --- reads ---------------------------------------------------------------------------

    async def converts(self, request: web.Request) -> web.Response:
        limit = int_param(request.query, "limit", DEFAULT_CONVERTS_LIMIT, MAX_CONVERTS_LIMIT)
        before = int_param(request.query, "before", None, MAX_SINCE, minimum=0)
        message = await self.desk.converts(self._key_id(request),
                                           request.match_info["accountId"], limit, before)
        return _answer(message)

    async def accounts(self, request: web.Request) -> web.Response:
        return _answer(await self.desk.accounts(self._key_id(request)))

    async def account(self, request: web.Request) -> web.Response:
        return _answer(await self.desk.account(self._key_id(request),
                                               request.match_info["accountId"]))

    # --- the quote stream ----------------------------------------------------------------

    def _stream_request(self, request: web.Request) -> QuoteRequest:
        fields = {STREAM_PARAMETERS[n]: v
                  for n, v in _single(request.query, frozenset(STREAM_PARAMETERS)).items()}
        fields["accountId"] = request.match_info["accountId"]
        try:
            req = msgspec.convert(fields, QuoteRequest)
        except msgspec.ValidationError as exc:
            raise _bad_input(exc, _FROM_REQUEST) from None
        return _one_amount(req, _FROM_REQUEST)

    async def _quote(self, key_id: str, req: QuoteRequest) -> QuoteResponse:
        """The desk's quote; its refusals name the stream's own parameters (``fromQty``)."""
        try:
            return await self.desk.request_quote(key_id, req)
        except AstraError as err:
            if err.parameter in _FROM_REQUEST:
                name = _FROM_REQUEST[err.parameter]
                err.message = err.message.replace(f"'{err.parameter}'", f"'{name}'")
                err.parameter = name
            raise

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """``WS /ws/stream-otc-quotes/{accountId}?from=&to=&fromQty=|toQty=``."""
        req = self._stream_request(request)
        key_id = self._key_id(request)
        protocol = request.get(WS_PROTOCOL)
        ws = web.WebSocketResponse(protocols=(protocol,) if protocol else (), heartbeat=30.0,
                                   max_msg_size=4096)
        if not ws.can_prepare(request).ok:  # a plain GET: no quote is priced for it
            raise WebSocketUpgradeRequired()
        first = await self._quote(key_id, req)  # a refusal here is the handshake's answer
        await ws.prepare(request)
        attach_ws(request, ws)  # its key's revocation closes it from now on
        pusher = asyncio.create_task(self._push(ws, key_id, req, first))
        try:
            async for _ in ws:  # client messages are ignored
                if pusher.done():
                    break
        finally:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pusher
            if not ws.closed:
                await ws.close(code=WSCloseCode.OK)
        return ws

    async def _push(self, ws: web.WebSocketResponse, key_id: str, req: QuoteRequest,
                    first: QuoteResponse) -> None:
        loop = asyncio.get_running_loop()
        interval = max(float(self.desk.stream_interval), 0.01)
        frame = _encode(first)
        due = loop.time()
        while not ws.closed:
            try:
                await ws.send_frame(frame, WSMsgType.TEXT)
            except (ConnectionError, RuntimeError):
                return  # the socket is closing: the handler's loop ends with it
            due += interval
            now = loop.time()
            if due < now:  # priced late (a slow round): skip the rounds already missed
                due += (now - due) // interval * interval + interval
            await asyncio.sleep(due - now)
            try:
                frame = _encode(await self._quote(key_id, req))
            except AstraError as err:  # a refusal this round (halted, limits, depth)
                frame = _encode(_error_frame(err))
            except Exception:  # a bug must not kill the stream silently: log, say so, go on
                log.exception("pricing a streamed OTC quote failed")
                frame = _encode(_error_frame(AstraError()))


def _error_frame(err: AstraError) -> dict:
    out = {"type": "error", "code": err.code, "message": err.message}
    if err.parameter is not None:
        out["parameter"] = err.parameter
    return out


class _BodyTimeout(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


async def _timed_out(request: web.Request, seconds: float) -> web.Response:
    resp = error_response(RequestTimeout(
        f"request body not received within {seconds:g} seconds", parameter="body"))
    # Sent now and the connection closed: aiohttp would otherwise go on reading the body.
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()
    return resp


def _with_body_timeout(handler):
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _BodyTimeout as exc:
            return await _timed_out(request, exc.seconds)

    wrapped.__name__ = handler.__name__
    return wrapped


def otc_routes(desk: OtcDesk, body_timeout: float = DEFAULT_BODY_TIMEOUT) -> list[web.RouteDef]:
    """The desk's routes, for ``app.add_routes`` behind the auth middleware."""
    o = _Otc(desk, body_timeout)
    return [
        web.post("/request-quote", _with_body_timeout(o.request_quote_post)),
        # (no HEAD: it would issue a quote nobody reads)
        web.get("/request-quote", o.request_quote_get, allow_head=False),
        web.post("/accept-quote", _with_body_timeout(o.accept)),
        web.post("/otc/accept-quote/{accountId}", _with_body_timeout(o.accept_for)),
        web.get("/converts/{accountId}", o.converts),
        web.get("/otc/accounts", o.accounts),
        web.get("/otc/accounts/{accountId}", o.account),
        web.get("/ws/stream-otc-quotes/{accountId}", o.stream, allow_head=False),
    ]
