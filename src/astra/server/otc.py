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
  amount's range and precision are checked by the desk. An amount sent as text (a JSON
  string, a query value) must read as a JSON number would (``assets.DECIMAL_TEXT``):
  ``Decimal()`` alone would take ``"1_000"``, ``" 1"`` or another script's digits.
- An account id (path, body, query, a quote's) is 1..64 of ``A-Za-z0-9._-`` (``ACCOUNT_ID_RE``)
  or a 400 before any database sees it (PostgreSQL refuses a NUL outright: a 500); one of
  that shape that no account has is the desk's 404. A quote's signature that is not 64
  lowercase hex digits is ``INVALID_QUOTE_SIGNATURE`` at once. A query name given twice is a
  400; so is one the route does not take (the stream too: ``?fromAsset=ETH`` is not a stream
  of ETH; only ``apiKey``, the handshake's key, is let through).
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
    InvalidQuoteSignature,
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
from astra.otc.assets import ACCOUNT_ID_RE, DECIMAL_TEXT, MAX_AMOUNT, MAX_PLACES, normal

from .auth import API_KEY, API_KEY_HEADER, API_KEY_QUERY, WS_PROTOCOL
from .errors import error_response
from .params import MAX_SINCE, check_json_nesting, int_param
from .sessions import attach_ws

__all__ = [
    "ACCOUNT_ID_RE",
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
# An OTC account id is text of these characters (the desk issues UUIDs; an id of this shape
# it does not know is a 404). Anything else is a 400 before a database sees it: PostgreSQL
# refuses a NUL in a text parameter outright, which would be a 500 (and no audit row).
_SIGNATURE = re.compile(r"[0-9a-f]{64}")  # what signing.QuoteSigner.sign writes

_encode = msgspec.json.Encoder(decimal_format="number").encode
_decode_request = msgspec.json.Decoder(QuoteRequest).decode
_decode_accept = msgspec.json.Decoder(AcceptQuote).decode
_decode_quote = msgspec.json.Decoder(Quote).decode


class _Peek(msgspec.Struct):
    quote: msgspec.Raw = msgspec.Raw(b"")  # present: an AcceptQuote body, else a bare Quote


_peek = msgspec.json.Decoder(_Peek).decode


class _AmountTexts(msgspec.Struct, rename="camel"):
    """A request-quote body's amounts as sent (a JSON string's text is checked)."""

    from_amount: msgspec.Raw = msgspec.Raw(b"")
    to_amount: msgspec.Raw = msgspec.Raw(b"")


_amount_texts = msgspec.json.Decoder(_AmountTexts).decode

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
    check_json_nesting(raw)  # before the decoder recurses into it
    try:
        return decoder(raw)
    except msgspec.ValidationError as exc:
        raise _bad_input(exc) from None
    except msgspec.DecodeError:
        raise InvalidParameter("body", "not a JSON object") from None


def _amount_text(name: str, text: str) -> None:
    """``text`` (an amount as a string) is a plain decimal number (``DECIMAL_TEXT``: not
    ``1_000``, `` 1``, ``+1`` or another script's digits, which ``Decimal()`` would take), else
    a 400 naming it."""
    if DECIMAL_TEXT.fullmatch(text) is None:
        raise InvalidParameter(name, "must be a decimal number: ASCII digits, at most one "
                               "point, an optional exponent")


def _body_amount_texts(raw: bytes) -> None:
    """The amounts a (decoded, valid) request-quote body gave as JSON strings are plain
    decimal numbers; JSON numbers are strict already."""
    texts = _amount_texts(raw)
    for name, value in (("fromAmount", texts.from_amount), ("toAmount", texts.to_amount)):
        if bytes(value).startswith(b'"'):
            _amount_text(name, msgspec.json.decode(value, type=str))


def _account_id(value: str, name: str = "accountId") -> str:
    """``value`` when it is shaped like an OTC account id (``ACCOUNT_ID_RE``), else a 400."""
    if ACCOUNT_ID_RE.fullmatch(value) is None:
        raise InvalidParameter(name, "not an OTC account id (a UUID: 1 to 64 characters "
                               "A-Z a-z 0-9 . _ -)")
    return value


def _signable(body: AcceptQuote) -> AcceptQuote:
    """A quote's fields are ones the desk could have signed: quantities finite, > 0, at most
    ``MAX_AMOUNT``, at most ``MAX_PLACES`` decimal places (``1E+999999999`` and
    ``1E-999999999`` would each print a billion digits for the signature check),
    an account id of its shape and a signature of 64 lowercase hex digits; anything else is
    refused here, before the desk looks the quote up."""
    quote = body.quote
    for field, value in (("fromAssetQuantity", quote.from_asset_quantity),
                         ("toAssetQuantity", quote.to_asset_quantity)):
        if not (value.is_finite() and 0 < value <= MAX_AMOUNT) or (
                -normal(value).as_tuple().exponent > MAX_PLACES):  # 1E-999999999: no quote's
            raise InvalidParameter(f"quote.{field}", "not a quantity the desk quotes")
    _account_id(quote.account_id, "quote.accountId")
    if _SIGNATURE.fullmatch(quote.signature) is None:  # no quote the desk issued
        raise InvalidQuoteSignature(parameter="quote")
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


def _single(query: Mapping[str, str]) -> dict[str, str]:
    """The query as a dict; a name given twice is a 400 (which one would count?)."""
    out: dict[str, str] = {}
    for name in query:
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
        raw = await self._body(request)
        req = _decode(_decode_request, raw)
        _body_amount_texts(raw)
        _account_id(req.account_id)
        req = _one_amount(req)
        return _answer(await self.desk.request_quote(self._key_id(request), req))

    async def request_quote_get(self, request: web.Request) -> web.Response:
        query = _single(request.query)
        for name in ("fromAmount", "toAmount"):
            if name in query:
                _amount_text(name, query[name])
        try:
            req = msgspec.convert(query, QuoteRequest)
        except msgspec.ValidationError as exc:
            raise _bad_input(exc) from None
        _account_id(req.account_id)
        return _answer(await self.desk.request_quote(self._key_id(request), _one_amount(req)))

    # --- accept-quote --------------------------------------------------------------------

    async def accept(self, request: web.Request) -> web.Response:
        body = _signable(_decode(_decode_accept, await self._body(request)))
        return _answer(await self.desk.accept(self._key_id(request), body))

    async def accept_for(self, request: web.Request) -> web.Response:
        """``POST /otc/accept-quote/{accountId}``: an ``AcceptQuote`` body or a bare Quote."""
        raw = await self._body(request)
        if _decode(_peek, raw).quote:
            body = _decode(_decode_accept, raw)
        else:
            body = AcceptQuote(quote=_decode(_decode_quote, raw))
        account_id = _account_id(request.match_info["accountId"])
        return _answer(await self.desk.accept(self._key_id(request), _signable(body),
                                              account_id))

    # --- reads ---------------------------------------------------------------------------

    async def converts(self, request: web.Request) -> web.Response:
        query = _single(request.query)
        for name in query:
            if name not in ("limit", "before"):  # ?limt=5 is no limit of 5
                raise InvalidParameter(name[:40], "unknown parameter: expected limit, before")
        limit = int_param(query, "limit", DEFAULT_CONVERTS_LIMIT, MAX_CONVERTS_LIMIT)
        before = int_param(query, "before", None, MAX_SINCE, minimum=0)
        message = await self.desk.converts(self._key_id(request),
                                           _account_id(request.match_info["accountId"]),
                                           limit, before)
        return _answer(message)

    async def accounts(self, request: web.Request) -> web.Response:
        return _answer(await self.desk.accounts(self._key_id(request)))

    async def account(self, request: web.Request) -> web.Response:
        return _answer(await self.desk.account(self._key_id(request),
                                               _account_id(request.match_info["accountId"])))

    # --- the quote stream ----------------------------------------------------------------

    def _stream_request(self, request: web.Request) -> QuoteRequest:
        query = _single(request.query)
        query.pop(API_KEY_QUERY, None)  # the handshake's key (auth.py), when sent that way
        for name, value in query.items():
            if name not in STREAM_PARAMETERS:  # not ignored: ?fromAsset=ETH is no stream of ETH
                raise InvalidParameter(name[:40], "unknown parameter: the stream takes from, "
                                       "to and one of fromQty, toQty")
            if name in ("fromQty", "toQty"):
                _amount_text(name, value)
        fields = {STREAM_PARAMETERS[n]: v for n, v in query.items()}
        fields["accountId"] = _account_id(request.match_info["accountId"])
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
