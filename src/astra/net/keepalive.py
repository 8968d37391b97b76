"""HTTP/1.1 requests on kept-alive connections: the order path's client to a venue.

An order's venue leg is one small request and one small answer on a connection that stays
open. ``aiohttp.ClientSession.request`` spends ~150-300 µs of Python per such request
(request and response objects, a connector, trace hooks, a timer, a payload writer, a
cookie filter) where the wire needs a formatted header block and a response parser:
``KeepAliveHttp`` writes the request in one ``transport.write`` and reads the answer with
``httptools`` (llhttp, the parser uvicorn uses), ~3x less per request (``benchmarks/
bench_trading.py``). The SDK's REST calls use it too; everything else Astra sends (market
data, account reads through ccxt, WebSockets) stays on aiohttp.

Invariants:
- One request at a time per connection (no pipelining); a connection goes back to the idle
  pool only after a complete answer that lets it stay open (HTTP/1.1 keep-alive, no
  ``Connection: close``), so an answer can never be read as another request's.
- A request that did not complete (timeout, cancel, a malformed or oversized answer, the peer
  closing) closes its connection: nothing late is read on a reused socket.
- A request is written once and never retried: whether a failed POST reached the venue is the
  caller's question (the order journal's reconciliation), as with aiohttp. Failures raise
  ``ConnectFailed`` (no connection: certainly not sent), ``ConnectionError`` (sent, no
  complete answer), ``TimeoutError`` or ``BadAnswer``.
- An idle connection is not reused after ``idle_seconds`` (below the usual server keep-alive
  timeouts, as aiohttp's 15 s), nor once its peer has closed it: a request is not written
  into a socket the server is closing when it can be known.
- Header names and values, the method and the URL's target are checked for CR, LF and NUL
  (and the request line for blanks) before anything is written (no header injection or
  second request from a key, secret or path a user supplied); answers are bounded
  (``max_body`` bytes, ``MAX_HEADER_BYTES`` of headers, counted as they arrive).
- An answer is complete only when its parser says so, or, for a body delimited by the
  connection's end, when the peer closed it cleanly: a reset, or this client's own abort
  (``close``), fails the request rather than returning a truncated body.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

__all__ = ["MAX_HEADER_BYTES", "Answer", "BadAnswer", "ConnectFailed", "KeepAliveHttp"]

MAX_HEADER_BYTES = 64 * 1024
_FORBIDDEN = ("\r", "\n", "\0")
_FORBIDDEN_IN_LINE = (*_FORBIDDEN, " ", "\t")  # the request line's separators too


class BadAnswer(Exception):
    """The peer's answer is not HTTP/1.1 this client reads (malformed, or over the limits)."""


class ConnectFailed(ConnectionError):
    """No connection could be made (refused, unreachable, a name that does not resolve, a
    TLS handshake refused): the request was certainly not sent."""


class Answer(NamedTuple):
    status: int
    reason: str
    headers: dict[str, str]  # names as sent; a repeated header keeps its last value
    body: bytes


class _Origin(NamedTuple):
    scheme: str
    host: str
    port: int
    host_header: str


class _Connection(asyncio.Protocol):
    """One socket and its parser; ``exchange`` runs one request on it."""

    def __init__(self, max_body: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._head_bytes = 0  # bytes fed before the headers were complete, this request
        self._reset()

    def _reset(self) -> None:
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._headers_done = False
        self._complete = False
        self._keep_alive = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        headers = {k.lower() for k in self._headers}
        if exc is None and self._headers_done \
                and not {"content-length", "transfer-encoding"} & headers:
            self._answer()  # a body delimited by the connection's end (RFC 9112 6.3)
        else:
            waiter.set_exception(ConnectionError("the venue closed the connection before "
                                                 "its answer was complete"))

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():  # nothing asked: an unsolicited answer
            self.abort()
            return
        try:
            self._parser.feed_data(data)
            if not self._headers_done:
                # httptools holds a header until its end: bound what it may hold meanwhile.
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEADER_BYTES:
                    self._fail(BadAnswer(f"the answer's headers exceed {MAX_HEADER_BYTES} "
                                         "bytes"))
        except httptools.HttpParserUpgrade:
            self._fail(BadAnswer("the venue answered with a protocol upgrade"))
        except httptools.HttpParserError as exc:
            # A callback's own refusal arrives wrapped ("`on_body` callback error").
            cause = exc.__context__
            self._fail(cause if isinstance(cause, BadAnswer) else BadAnswer(str(exc)[:200]))

    def eof_received(self) -> bool:
        return False  # close: a half-closed connection is of no further use

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        if self._complete:  # a second answer to one request
            raise BadAnswer("the venue sent an answer nobody asked for")

    def on_status(self, reason: bytes) -> None:
        # (called once per piece of the status line as it arrives)
        self._reason = (self._reason + reason.decode("latin-1"))[:200]

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise BadAnswer(f"the answer's headers exceed {MAX_HEADER_BYTES} bytes")
        self._headers[name.decode("latin-1")] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            raise BadAnswer(f"the answer's body exceeds {self._max_body} bytes")
        self._body.append(body)

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:  # interim (100 Continue): wait on
            self._reset()
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()  # (the parser's, while it is set)
        self._answer()

    def _answer(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(self._parser.get_status_code(), self._reason,
                                     self._headers, b"".join(self._body)))

    # -- use
    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def abort(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():  # (not a body "ended by the close")
            waiter.set_exception(ConnectionError("the connection was closed before its "
                                                 "answer was complete"))
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def reusable(self) -> bool:
        return (self._complete and not self.closed and self.transport is not None
                and not self.transport.is_closing() and self._keep_alive)

    async def exchange(self, request: bytes) -> Answer:
        if self.closed or self.transport is None or self.transport.is_closing():
            # (a peer that closed right after accepting): a write would be dropped unseen
            raise ConnectFailed("the connection closed before the request was written")
        self._reset()
        self._head_bytes = 0
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(request)  # type: ignore[union-attr]
            return await waiter
        finally:
            self._waiter = None


class KeepAliveHttp:
    """Kept-alive HTTP/1.1 connections per origin (scheme, host, port). ``request`` sends one
    request and returns its ``Answer``; ``close`` (or leaving ``async with``) closes every
    connection."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, max_idle: int = 16,
                 idle_seconds: float = 15.0, max_body: int = 16 * 1024 * 1024) -> None:
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._idle_seconds = idle_seconds
        self._max_body = max_body
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._origins: dict[str, tuple[_Origin, str]] = {}  # url prefix memo
        self._busy: set[_Connection] = set()
        self._closed = False

    async def request(self, method: str, url: str, *, body: bytes | None = None,
                      headers: Mapping[str, str] | None = None) -> Answer:
        """``method url`` with ``headers`` and ``body`` (``Content-Length`` is added); the
        caller bounds the time (``asyncio.timeout``: the connection is closed on expiry)."""
        if self._closed:
            raise ConnectionError("this HTTP client is closed")
        origin, target = self._split(url)
        if any(c in method or c in target for c in _FORBIDDEN_IN_LINE):
            raise ValueError(f"{method[:10]!r} {target[:60]!r}: blanks, CR, LF and NUL are "
                             "not allowed in the request line")
        head = [f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
        for name, value in (headers or {}).items():
            if any(c in name or c in value for c in _FORBIDDEN):
                raise ValueError(f"header {name[:40]!r}: CR, LF and NUL are not allowed")
            head.append(f"{name}: {value}\r\n")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body) if body else 0}\r\n")
        head.append("\r\n")
        raw = "".join(head).encode("latin-1")
        if body:
            raw += body
        conn = self._take(origin) or await self._connect(origin)
        if self._closed:  # closed while connecting: nothing was written
            conn.abort()
            raise ConnectFailed("this HTTP client was closed while connecting")
        self._busy.add(conn)
        try:
            answer = await conn.exchange(raw)
        except BaseException:
            conn.abort()  # incomplete: nothing late may be read as another answer
            raise
        finally:
            self._busy.discard(conn)
        self._give_back(origin, conn)
        return answer

    def _split(self, url: str) -> tuple[_Origin, str]:
        # The origin of a URL is parsed once per prefix (the venue's base URL).
        cut = url.find("/", url.find("//") + 2)
        prefix = url if cut < 0 else url[:cut]
        found = self._origins.get(prefix)
        if found is None:
            parts = urlsplit(prefix)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url[:80]!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            default = port == (443 if parts.scheme == "https" else 80)
            host = parts.hostname
            shown = f"[{host}]" if ":" in host else host
            found = (_Origin(parts.scheme, host, port,
                             shown if default else f"{shown}:{port}"), prefix)
            if len(self._origins) < 64:
                self._origins[prefix] = found
        target = url[cut:] if cut >= 0 else "/"
        return found[0], target

    def _take(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the likeliest to be warm and open
            if conn.reusable() and now - conn.idle_since < self._idle_seconds:
                return conn
            conn.abort()
        return None

    def _give_back(self, origin: _Origin, conn: _Connection) -> None:
        if self._closed or not conn.reusable() or self._max_idle <= 0:
            conn.abort()
            return
        idle = self._idle.setdefault(origin, deque())
        if len(idle) >= self._max_idle:
            idle.popleft().abort()  # the least recently used
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            tls = self._ssl if self._ssl is not None else ssl.create_default_context()
        max_body = self._max_body
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(max_body), origin.host, origin.port, ssl=tls,
                server_hostname=origin.host if tls is not None else None)
        except TimeoutError:
            raise
        except OSError as exc:  # (a name that does not resolve and a TLS refusal are too)
            raise ConnectFailed(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
        return conn

    async def __aenter__(self) -> KeepAliveHttp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
        for conn in list(self._busy):
            conn.abort()
