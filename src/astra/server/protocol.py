"""The gateway's HTTP connection layer: aiohttp's per-connection protocol, hardened.

``GatewayRunner`` is an ``aiohttp.web.AppRunner`` whose connections are served by
``GatewayProtocol`` (a ``RequestHandler``), with ``RedactingAccessLogger`` as access log. An
app with a front door (``errors.FRONT_DOOR``: the gateway's) has its requests handled by the
door itself (``FrontDoor.serving``), which resolves the route and answers in one frame.

Invariants:
- Nothing from a request's request line, headers or URL reaches a log record or a response
  body unredacted at this layer. A request aiohttp's parser rejects (a control character in a
  header, a line over ``max_line_size``, a garbled request line) is answered 400
  ``{"code": "BAD_REQUEST", "message": ...}`` with a fixed message and logged with the peer
  and the error's class only: aiohttp's own handler echoes the offending line, which may hold
  an API key or an exchange secret, into both. Other protocol-level errors (500, 504) are JSON
  too, and logged with the exception's type and stack frames but not its text.
- The access log (``aiohttp.access``, off unless that logger is enabled for INFO) records
  peer, method, path, status, size and duration; query values whose name looks secret
  (``apiKey``, ``*key*``, ``*secret*``, ``*token*``, ``*signature*``, ``*pass*``) are
  ``[REDACTED]``, and no header is logged.
- ``aiohttp.websocket``'s "client protocols don't overlap" warning (which lists the offered
  subprotocols, where a browser puts its API key) is rewritten without the values.
- A connection must deliver the complete headers of a request within ``header_timeout``
  seconds of opening, or of its first byte once idle between requests; otherwise it is
  answered 408 (JSON) and closed. Slow-header clients cannot hold sockets open. Idle
  keep-alive connections are closed after ``keepalive_timeout`` (aiohttp's own timer).
"""

from __future__ import annotations

import asyncio
import logging
import re
import traceback
from typing import Any
from urllib.parse import parse_qsl, quote

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong

from astra.core import Error

from .errors import FRONT_DOOR

__all__ = [
    "GatewayProtocol",
    "GatewayRunner",
    "RedactingAccessLogger",
    "install_log_scrubbers",
    "redact_query",
]

log = logging.getLogger("astra.server.http")
REDACTED = "[REDACTED]"
_SECRET_NAME = re.compile(r"key|secret|token|signature|pass|auth", re.IGNORECASE)
_encode = msgspec.json.Encoder().encode


def redact_query(query_string: str) -> str:
    """``query_string`` with the value of every secret-looking parameter replaced."""
    if not query_string:
        return ""
    pairs = parse_qsl(query_string, keep_blank_values=True)
    return "&".join(
        f"{quote(k, safe='')}={REDACTED if _SECRET_NAME.search(k) else quote(v, safe='')}"
        for k, v in pairs
    )


class RedactingAccessLogger(AbstractAccessLogger):
    """``<peer> "<method> <path>[?<redacted query>]" <status> <bytes> <seconds>``; the
    ``log_format`` aiohttp passes is ignored (its ``%r``/``%{...}i`` would log secrets)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = request.path[:512]
        query = redact_query(request.query_string)[:1024]
        self.logger.info(
            '%s "%s %s%s" %d %d %.6f',
            request.remote,
            request.method,
            path,
            "?" + query if query else "",
            response.status,
            response.body_length,
            time,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def _json_error(status: int, code: str, message: str) -> web.Response:
    resp = web.Response(
        status=status,
        body=_encode(Error(code=code, message=message)),
        content_type="application/json",
    )
    resp.force_close()
    return resp


_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


class GatewayProtocol(web.RequestHandler):
    """aiohttp's connection handler with JSON, secret-free errors and a header timeout."""

    def __init__(self, manager: web.Server, *, header_timeout: float = 10.0, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._last_payload: Any = None  # the latest request's body stream
        self.auth_memo: Any = None  # the last verified API key header (auth.ApiKeyAuth)

    # --- parser and handler errors -----------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            # The parser's message quotes the offending bytes: keep it out of logs and body.
            level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.INFO
            log.log(level, "malformed request from %s: %s", request.remote, type(exc).__name__)
            text = (
                "a request line or header is too long"
                if isinstance(exc, LineTooLong)
                else "malformed HTTP request: the request line or a header could not be parsed"
            )
            code = "BAD_REQUEST"
        elif status == 504:
            log.info("request from %s timed out in its handler", request.remote)
            code, text = "TIMEOUT", "the request timed out"
        else:
            frames = "".join(traceback.format_tb(exc.__traceback__)) if exc is not None else ""
            log.error(
                "error handling a request from %s: %s\n%s",
                request.remote,
                type(exc).__name__ if exc is not None else "unknown",
                frames,
            )
            code, text = "INTERNAL_ERROR", "internal error"
        if request.writer.output_size > 0:  # a response was started: the connection is broken
            raise ConnectionError("response already started, cannot send an error")
        return _json_error(status, code, text)

    # --- header read timeout -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a request's headers are complete
            self._disarm()
            if self._messages:
                self._last_payload = self._messages[-1][1]
        elif data and self._awaiting_request():  # the first bytes of the next request
            self._arm()

    def _awaiting_request(self) -> bool:
        if self._upgraded or self._request_in_progress or self._messages:
            return False
        payload = self._last_payload
        return payload is None or payload.is_eof()

    def _arm(self) -> None:
        if self._header_timer is None and self._header_timeout > 0:
            self._header_timer = self._loop.call_later(self._header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or not self._awaiting_request():
            return
        log.info("closing a connection from %s: no complete request headers within %ss",
                 self.peername, self._header_timeout)
        body = _encode(Error(code="REQUEST_TIMEOUT", message=(
            f"request headers not received within {self._header_timeout:g} seconds")))
        transport.write(_REQUEST_TIMEOUT % (len(body), body))
        self.force_close()


class _GatewayServer(web.Server):
    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout

    def __call__(self) -> GatewayProtocol:
        return GatewayProtocol(
            self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs
        )


class GatewayRunner(web.AppRunner):
    """An ``AppRunner`` serving its connections with ``GatewayProtocol``.

    ``header_timeout`` (seconds, 0 disables) bounds how long a connection may take to send a
    request's headers; the other keyword arguments are ``AppRunner``'s (``keepalive_timeout``
    among them), with ``RedactingAccessLogger`` as the default access log class.
    """

    def __init__(self, app: web.Application, *, header_timeout: float = 10.0, **kwargs: Any):
        kwargs.setdefault("access_log_class", RedactingAccessLogger)
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup; aiohttp's own Server
        # The app's front door (errors.FrontDoor), when it can, handles requests itself: the
        # route resolved and answered in one frame, in place of Application._handle.
        door = self.app.get(FRONT_DOOR)
        handler = door.serving(self.app) if door is not None else None
        # Rebuilt with the same arguments, so each connection gets a GatewayProtocol.
        return _GatewayServer(
            handler or plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            header_timeout=self._header_timeout,
            **plain._kwargs,
        )


class _SubprotocolScrubber(logging.Filter):
    """Drops the offered subprotocols (a browser's API key) from aiohttp.websocket records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "overlap" in str(record.msg) and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.msg = "%s: no offered WebSocket subprotocol is served (values not logged)"
            record.args = args[:1]
        return True


_SCRUBBER = _SubprotocolScrubber()


def install_log_scrubbers() -> None:
    """Install the filters on aiohttp's loggers that log request values (idempotent)."""
    ws_log = logging.getLogger("aiohttp.websocket")
    if _SCRUBBER not in ws_log.filters:
        ws_log.addFilter(_SCRUBBER)
