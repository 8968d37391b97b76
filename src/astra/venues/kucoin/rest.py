"""KuCoin REST for market data: connect tokens, book snapshots, recent trades, instruments.

Invariants:
- Every request has a total timeout; a non-2xx status, or a body whose ``code`` is not
  ``"200000"``, raises ``RestError`` carrying the HTTP status, the venue's code and, for
  429/418 (or KuCoin's ``429000``), how long to wait: ``Retry-After`` (seconds) or KuCoin's
  ``gw-ratelimit-reset`` (milliseconds). Callers back off by at least that long.
- Signed requests (the full-depth spot snapshot) use API-key version 2: ``KC-API-SIGN`` is
  base64(HMAC-SHA256(secret, timestamp + method + path?query + body)) and the passphrase is
  sent HMAC'd with the secret. Secrets never appear in reprs or logs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field

import aiohttp
import msgspec

from .schemas import Response

__all__ = ["POOL_WINDOW", "PUBLIC_POOL", "WEIGHTS", "KucoinCredentials", "RestError", "get",
           "post"]

# Documented request weights (KuCoin's REST docs; ccxt's kucoin costs, and its kucoinfutures
# costs' "PW" notes at half the cost), counted against the Public resource pool: 2000 per
# 30 s per IP. The venue's ``KucoinVenue.public_limiter`` takes them.
PUBLIC_POOL = 2000  # weight per POOL_WINDOW seconds
POOL_WINDOW = 30.0
WEIGHTS = {
    "spot": {"markets": 4, "snapshot": 4, "full_snapshot": 3, "trades": 3, "bullet": 10},
    "futures": {"markets": 3, "snapshot": 3, "trades": 5, "bullet": 10},
}

_TIMEOUT = aiohttp.ClientTimeout(total=10.0)
_OK = "200000"


@dataclass(frozen=True, slots=True)
class KucoinCredentials:
    """An API key with General (read) permission: only used for the full-depth snapshot."""

    api_key: str
    api_secret: str = field(repr=False)
    api_passphrase: str = field(repr=False)

    def headers(self, method: str, path_query: str, body: str = "") -> dict[str, str]:
        ts = str(int(time.time() * 1000))
        secret = self.api_secret.encode()
        payload = f"{ts}{method}{path_query}{body}".encode()
        sign = base64.b64encode(hmac.new(secret, payload, hashlib.sha256).digest()).decode()
        passphrase = base64.b64encode(
            hmac.new(secret, self.api_passphrase.encode(), hashlib.sha256).digest()
        ).decode()
        return {
            "KC-API-KEY": self.api_key,
            "KC-API-SIGN": sign,
            "KC-API-TIMESTAMP": ts,
            "KC-API-PASSPHRASE": passphrase,
            "KC-API-KEY-VERSION": "2",
        }


class RestError(Exception):
    def __init__(
        self, message: str, *, status: int, code: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.retry_after = status, code, retry_after


class _Status(msgspec.Struct):
    code: str = ""
    msg: str = ""


_decode_status = msgspec.json.Decoder(_Status).decode


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    reset = resp.headers.get("gw-ratelimit-reset")  # ms until the quota refills
    if reset is not None and reset.isdigit():
        return int(reset) / 1000
    return None


async def _request(
    session: aiohttp.ClientSession,
    method: str,
    base: str,
    path_query: str,
    credentials: KucoinCredentials | None,
) -> bytes:
    headers = credentials.headers(method, path_query) if credentials else None
    url = base.rstrip("/") + path_query
    async with session.request(method, url, headers=headers, timeout=_TIMEOUT) as resp:
        body = await resp.read()
        limited = resp.status in (429, 418)
        try:
            status = _decode_status(body)
        except msgspec.DecodeError:  # an HTML error page from a proxy, or nothing
            status = _Status()
        if limited or status.code == "429000":
            raise RestError(
                f"{path_query}: rate limited ({resp.status})",
                status=resp.status,
                code=status.code,
                retry_after=_retry_after(resp) or 1.0,
            )
        if resp.status >= 300 or status.code != _OK:
            raise RestError(
                f"{path_query}: HTTP {resp.status} code {status.code!r} {status.msg!r}",
                status=resp.status,
                code=status.code,
            )
        return body


async def get(
    session: aiohttp.ClientSession,
    base: str,
    path_query: str,
    decode: type,
    credentials: KucoinCredentials | None = None,
    strict: bool = True,
):
    """``GET base+path_query`` and return its ``data`` decoded as ``decode``."""
    body = await _request(session, "GET", base, path_query, credentials)
    return _data(body, decode, strict, path_query)


async def post(session: aiohttp.ClientSession, base: str, path: str, decode: type):
    """``POST base+path`` (no body) and return its ``data`` decoded as ``decode``."""
    return _data(await _request(session, "POST", base, path, None), decode, True, path)


def _data(body: bytes, decode: type, strict: bool, what: str):
    data = msgspec.json.decode(body, type=Response[decode], strict=strict).data
    if data is msgspec.UNSET:
        raise RestError(f"{what}: response without data", status=200, code=_OK)
    return data
