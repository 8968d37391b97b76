"""The HTTP session a venue's per-call private ccxt clients share.

One per venue: kept-alive connections (aiohttp's for ccxt's calls, ``KeepAliveHttp`` for
the orders Astra signs itself) and one TLS context (verified against certifi's CAs,
as ccxt's own sessions are), and no cookie jar, so requests signed by different users' keys
share nothing but the sockets. Created on first use, closed with the venue.
"""

from __future__ import annotations

import ssl

import aiohttp
import certifi

from astra.net.keepalive import KeepAliveHttp

__all__ = ["PrivateHttp"]


class PrivateHttp:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._keepalive: KeepAliveHttp | None = None
        self._tls: ssl.SSLContext | None = None

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=certifi.where())
        return self._tls

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._context()),
                cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    def keepalive(self) -> KeepAliveHttp:
        """The order path's connections (``astra.net.keepalive``), same TLS verification."""
        if self._keepalive is None:
            self._keepalive = KeepAliveHttp(ssl_context=self._context())
        return self._keepalive

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._keepalive is not None:
            await self._keepalive.close()
            self._keepalive = None
