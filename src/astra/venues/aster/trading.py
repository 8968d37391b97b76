"""Aster's private REST client (also SIM's): ccxt's ``aster`` plus what it lacks.

ccxt's ``aster`` (4.5.52 and later) signs every private request with the v3 scheme (EIP-712
by an API wallet's private key, a ``nonce`` in microseconds). Two gaps are closed here:

1. **Nonces.** ccxt takes ``milliseconds() * 1000`` as the nonce, so two requests signed in
   the same millisecond carry the same nonce and the venue refuses the second (-4225 ``Nonce
   Expired``: its "V3 Nonce Mechanism" keeps the most recent 100 nonces per user and refuses
   a repeat). Every v3 request here takes its nonce from ``NONCES``, one source for the whole
   process: ``max(now in µs, previous + 1)``.
2. **v1 credentials.** An API key + secret (what ``astra sim account create`` prints first,
   and what Aster issues for its v1 API) cannot sign v3 at all: ccxt refuses them before any
   request. With a key + secret and no private key, requests are signed as Aster's v1 API
   documents (Binance's scheme): the same endpoints under their v1 paths, ``timestamp``, an
   ``X-MBX-APIKEY`` header and ``signature`` = hex HMAC-SHA256 of the parameter string as
   sent; ``listenKey`` (USER_STREAM) carries the key header only.

Invariants:
- Nonces from ``NONCES`` strictly increase across every client in the process: so per
  signer, and per user (the venue's window is per user, and several API wallets, each in
  its own client, may sign for one user). They run ahead of the clock only while more than
  one request per microsecond is signed, which a signature's cost (~0.1 ms) rules out, so
  they stay within the venue's 5 s tolerance. (Processes sharing one signer are not
  covered: give each gateway its own API wallet.)
- A client signs with exactly one scheme: v3 when it holds a private key (even alongside a
  key + secret), else v1.
- The parameter string signed is byte for byte the one sent; no credential is logged.

Orders (create, cancel) take the faster path of ``native.AsterNative`` (``client.native``):
the same requests and answers, signed without ccxt's per-request EIP-712 encoding.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import ccxt.async_support as ccxt_async

from astra.net.keepalive import KeepAliveHttp
from astra.venues.ccxt_errors import ServerErrorsUnavailable

__all__ = ["NONCES", "AsterPrivate", "MonotonicNonce", "v1_path"]

_PRIVATE_APIS = ("sapiPrivate", "fapiPrivate")

# v3 paths whose v1 counterpart is not ``v1/<same>`` (Aster's futures v1 docs).
_V1_PATHS = {
    ("fapiPrivate", "v3/balance"): "v2/balance",
    ("fapiPrivate", "v3/positionRisk"): "v2/positionRisk",
}


def _clock_us() -> int:
    return time.time_ns() // 1000


class MonotonicNonce:
    """Microsecond nonces that strictly increase, whatever the clock does: each is the
    clock's time, or one more than the previous when the clock has not moved past it."""

    def __init__(self, clock_us: Callable[[], int] = _clock_us) -> None:
        self._clock_us = clock_us
        self._last = 0
        self._lock = threading.Lock()  # ccxt may sign from threads (a sync client, a pool)

    def __call__(self) -> int:
        now = self._clock_us()
        with self._lock:
            self._last = max(now, self._last + 1)
            return self._last


NONCES = MonotonicNonce()


def v1_path(api: str, path: str) -> str:
    """The v1 path of a ccxt ``aster`` private path (``v3/order`` -> ``v1/order``;
    ``v4/account`` already is one)."""
    mapped = _V1_PATHS.get((api, path))
    if mapped is not None:
        return mapped
    return "v1/" + path[3:] if path.startswith("v3/") else path


class AsterPrivate(ServerErrorsUnavailable, ccxt_async.aster):
    """ccxt's ``aster`` with strictly increasing v3 nonces and v1 (HMAC) signing for a key
    + secret; an unclassified server error reads as the venue unavailable.

    ``nonces``: where v3 nonces come from (default the process-wide ``NONCES``);
    ``keepalive``: the connections its orders go out on (``native``; default its own, closed
    with it; a venue's private clients share the venue's).
    """

    def __init__(self, config: dict | None = None, *,
                 nonces: Callable[[], int] | None = None,
                 keepalive: KeepAliveHttp | None = None) -> None:
        super().__init__(config or {})
        self._nonces = nonces or NONCES
        self._keepalive, self._owns_keepalive = keepalive, keepalive is None
        self.hmac_v1 = not self.privateKey and bool(self.apiKey) and bool(self.secret)
        if self.hmac_v1:
            # ccxt's own check (privateKey required) would refuse a key + secret outright.
            self.requiredCredentials = {"apiKey": True, "secret": True, "privateKey": False}

    @property
    def native(self) -> Any:
        """This client's ``native.AsterNative``: its orders signed and sent without ccxt's
        request path (built on first use, kept with the client)."""
        native = self.__dict__.get("_astra_native")
        if native is None:
            from .native import AsterNative

            native = self.__dict__["_astra_native"] = AsterNative(
                self, nonces=self._nonces, v1_path=v1_path)
        return native

    @property
    def keepalive(self) -> KeepAliveHttp:
        """The kept-alive connections ``native`` sends on."""
        if self._keepalive is None:
            tls = self.ssl_context  # ccxt's own, once it has made it; else made as ccxt does
            if not isinstance(tls, ssl.SSLContext):
                tls = ssl.create_default_context(cafile=self.cafile)
                if not self.verify:  # (ccxt's ``verify=False``: no certificate check)
                    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
            self._keepalive = KeepAliveHttp(ssl_context=tls)
        return self._keepalive

    async def close(self, *args: Any, **kwargs: Any) -> None:
        if self._owns_keepalive and self._keepalive is not None:
            await self._keepalive.close()
            self._keepalive = None
        await super().close(*args, **kwargs)

    async def sign_in(self, params: dict | None = None) -> bool:
        if self.hmac_v1:
            return False  # ccxt's sign-in approves a builder fee with a v3 signature: none
        return await super().sign_in(params or {})

    def sign(self, path: str, api: Any = "public", method: str = "GET",
             params: dict | None = None) -> dict:
        params = params or {}
        name = api[0] if isinstance(api, list | tuple) else api
        if name not in _PRIVATE_APIS:
            return super().sign(path, api, method, params)
        if self.hmac_v1:
            return self._sign_v1(name, path, method, params)
        # ccxt puts its own nonce first and then extends with ``params``: ours wins, in
        # ccxt's position, so the signed string keeps ccxt's shape.
        return super().sign(path, api, method, {**params, "nonce": str(self._nonces())})

    def _sign_v1(self, api: str, path: str, method: str, params: dict) -> dict:
        self.check_required_credentials()
        url = f"{self.urls['api'][api]}/{v1_path(api, path)}"
        headers = {"X-MBX-APIKEY": self.apiKey}
        if path.endswith("listenKey"):  # USER_STREAM: the key header, no signature
            query = self.encode_values_with_json(params) if params else ""
        else:
            signed = {**params, "timestamp": self.milliseconds()}
            recv_window = self.safe_integer(self.options, "recvWindow")
            if recv_window is not None:
                signed["recvWindow"] = recv_window
            query = self.encode_values_with_json(signed)
            signature = self.hmac(self.encode(query), self.encode(self.secret), hashlib.sha256)
            query += "&signature=" + signature
        if method == "GET":
            return {"url": f"{url}?{query}" if query else url, "method": method,
                    "body": None, "headers": headers}
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return {"url": url, "method": method, "body": query or None, "headers": headers}
