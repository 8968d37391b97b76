"""The SDK's HTTP transport: kept-alive connections, the API key header, error mapping, retries.

Invariants:
- Every non-2xx answer raises an ``AstraError`` rebuilt from the server's JSON body
  (``AstraError.from_model``: ``except MarketNotFound`` works), with ``.status`` the HTTP
  status, ``.code``, ``.message``, ``.parameter``; a body that is not the API's error JSON
  still raises, with code ``HTTP_<status>``.
- A request that got no HTTP answer raises ``TransportError`` (``.sent``: whether the
  request may have reached the server).
- Retries only where safe: a request is retried only when the caller marks it
  ``idempotent`` (GETs; ``POST /orders`` carrying a ``clientOrderId``, on which the server is
  idempotent), on a connection error, a timeout, or 429/503 (waiting ``Retry-After`` when the
  server gives one, else exponential backoff), at most ``retries`` times, and never waiting
  longer than ``max_retry_wait`` at once. Anything else is sent exactly once.
- Requests go out on the client's own kept-alive connections (``astra.net.keepalive``: one
  write per request, no resend of anything, ~0.15 ms less per request than aiohttp's
  client); WebSocket streams on an aiohttp session.
- A session passed in is the caller's: every request and stream uses it, and it is never
  closed (nor changed: aiohttp's own single resend of a DELETE on a dropped connection
  stays on in it).
- ``close()`` is final: a request, or a stream's reconnection, after it raises
  ``ClientClosed`` instead of opening a new session (which nothing would close).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec

from astra.core import AstraError, Error
from astra.net.keepalive import BadAnswer, ConnectFailed, KeepAliveHttp

__all__ = ["API_KEY_HEADER", "RETRY_STATUSES", "ClientClosed", "Transport", "TransportError",
           "api_error", "query_params"]

API_KEY_HEADER = "x-astra-api-key"
RETRY_STATUSES = frozenset({429, 503})  # the server said "later", and nothing was done

_decode_error = msgspec.json.Decoder(Error).decode
# Decimals (OTC amounts) go out as JSON numbers with their own digits, as the server's.
_encode = msgspec.json.Encoder(decimal_format="number").encode


class TransportError(AstraError):
    """No HTTP answer: connection refused or reset, or no answer within the timeout.

    ``sent`` is False only when the request surely never reached the server (the connection
    could not be made); otherwise it may have been processed."""

    code = "TRANSPORT_ERROR"
    status = 0
    default_message = "no answer from the server"

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class ClientClosed(RuntimeError):
    """The client was closed: make a new one to talk to the gateway again."""


def api_error(status: int, body: bytes, retry_after: str | None = None) -> AstraError:
    """The exception for a non-2xx answer (``status``, its body, its Retry-After header)."""
    try:
        err = AstraError.from_model(_decode_error(body))
    except (msgspec.ValidationError, msgspec.DecodeError):
        err = AstraError(body[:200].decode("utf-8", "replace") or f"HTTP {status}")
        err.code = f"HTTP_{status}"
    err.status = status  # the answer's own status (an unknown code's class says 500)
    if err.retry_after is None and retry_after is not None:
        with contextlib.suppress(ValueError):
            err.retry_after = float(retry_after)
    return err


def query_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Query parameters as the server reads them: None left out, booleans ``true``/``false``,
    sequences comma-joined."""
    out: dict[str, str] = {}
    for name, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list | tuple | set | frozenset):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = str(value)
    return out


class Transport:
    """HTTP to one gateway. ``await request(...)`` -> the answer's body (bytes)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.25,
        max_retry_wait: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.headers = {API_KEY_HEADER: f"Bearer {api_key}", **(headers or {})}
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self._session = session
        self._own_session = session is None
        self._http = KeepAliveHttp() if session is None else None
        self.closed = False

    @property
    def ws_url(self) -> str:
        if self.url.startswith("https://"):
            return "wss://" + self.url[len("https://"):]
        return "ws://" + self.url.removeprefix("http://")

    @property
    def session(self) -> aiohttp.ClientSession:
        if self.closed:
            raise ClientClosed(f"the client of {self.url} is closed")
        if self._session is None or self._session.closed:
            if not self._own_session:
                raise RuntimeError("the aiohttp session given to the client is closed")
            self._session = aiohttp.ClientSession()
            # aiohttp resends a DELETE (an "idempotent" method) once on a dropped connection,
            # on its own; a cancel or a key revocation must go once, so ours does not.
            # (No public switch exists as of aiohttp 3.14; a session passed in is left as is.)
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    async def close(self) -> None:
        self.closed = True
        if self._http is not None:
            await self._http.close()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
    ) -> bytes:
        """The body of a 2xx answer to ``method path``; raises on anything else.
        ``idempotent`` (default: GET only) allows retries."""
        retry = (method == "GET") if idempotent is None else idempotent
        data = None if body is None else _encode(body)
        headers = self.headers if data is None else {
            **self.headers, "content-type": "application/json"}
        attempt = 0
        while True:
            try:
                return await self._once(method, path, query_params(params), data, headers)
            except AstraError as err:
                wait = self._retry_wait(err, attempt) if retry else None
                if wait is None:
                    raise
            attempt += 1
            await asyncio.sleep(wait)

    def _retry_wait(self, err: AstraError, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None: do not."""
        if attempt >= self.retries:
            return None
        if not (isinstance(err, TransportError) or err.status in RETRY_STATUSES):
            return None
        wait = err.retry_after if err.retry_after is not None else self.backoff * 2**attempt
        return wait if wait <= self.max_retry_wait else None

    async def _once(self, method: str, path: str, params: dict[str, str], data: bytes | None,
                    headers: dict[str, str]) -> bytes:
        if self._http is not None:
            return await self._once_kept_alive(method, path, params, data, headers)
        try:
            async with asyncio.timeout(self.timeout):
                async with self.session.request(
                    method, self.url + path, params=params, data=data, headers=headers
                ) as resp:
                    body = await resp.read()
        except TimeoutError:
            raise TransportError(f"{method} {path}: no answer within {self.timeout:g} s") \
                from None
        except aiohttp.ClientConnectorError as exc:
            raise TransportError(f"{method} {path}: cannot connect to {self.url}: "
                                 f"{exc.os_error or exc}", sent=False) from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}",
                                 sent=True) from None
        if resp.status >= 300:
            raise api_error(resp.status, body, resp.headers.get("Retry-After"))
        return body

    async def _once_kept_alive(self, method: str, path: str, params: dict[str, str],
                               data: bytes | None, headers: dict[str, str]) -> bytes:
        if self.closed:
            raise ClientClosed(f"the client of {self.url} is closed")
        url = self.url + path + ("?" + urlencode(params) if params else "")
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._http.request(method, url, body=data, headers=headers)
        except TimeoutError:
            raise TransportError(f"{method} {path}: no answer within {self.timeout:g} s") \
                from None
        except ConnectFailed as exc:
            raise TransportError(f"{method} {path}: {exc}", sent=False) from None
        except (OSError, BadAnswer) as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}",
                                 sent=True) from None
        if answer.status >= 300:
            retry_after = next((v for k, v in answer.headers.items()
                                if k.lower() == "retry-after"), None)
            raise api_error(answer.status, answer.body, retry_after)
        return answer.body
