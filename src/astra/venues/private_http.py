"""The HTTP session a venue's per-call private ccxt clients share.

One per venue: kept-alive connections and one TLS context (verified against certifi's CAs,
as ccxt's own sessions are), and no cookie jar, so requests signed by different users' keys
share nothing but the sockets. Created on first use, closed with the venue.
"""

from __future__ import annotations

import ssl

import aiohttp
import certifi

__all__ = ["PrivateHttp"]


class PrivateHttp:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            tls = ssl.create_default_context(cafile=certifi.where())
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls), cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
