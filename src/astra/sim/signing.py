"""Request authentication for the simulator, as Aster does it: pure and transport-free.

Two schemes:

- **v1 (HMAC)**: ``X-MBX-APIKEY`` header, ``signature`` = hex HMAC-SHA256 of *totalParams*
  (the raw query string concatenated with the raw request body, no separator, without the
  ``signature`` parameter) keyed by the API secret, plus ``timestamp``/``recvWindow``.
- **v3 (EIP-712)**: ``user``, ``signer``, ``nonce`` (µs) and ``signature`` parameters; the
  signature is an EIP-712 signature of ``Message(string msg)`` in the domain
  ``AsterSignTransaction``/``1``/chain 1666/zero contract, where ``msg`` is the parameter string
  exactly as sent (without ``signature``). Replay is stopped by ``NonceWindow``.

Invariants:
- Payloads are verified byte-for-byte as sent: nothing here decodes, re-encodes or reorders
  the parameter string, so any change to what was signed fails verification.
- Every rejection is an ``AuthError`` carrying the venue's ``code``/``msg`` and an HTTP status
  (4xx); malformed input of any kind (garbage signatures, non-ASCII, huge numbers) never
  raises anything else.
- A v3 nonce is recorded only after the signature has been verified, so forged requests
  cannot burn a user's nonces.

Messages are those of the docs' error lists (futures wording, which is Binance's and what the
live venue sends; the spot seed rephrases a few); -4225 ``Nonce Expired`` is the response the
futures v3 docs show for a reused nonce (the ``/fapi/v3/noop`` demo).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from eth_account import Account
from eth_account.messages import encode_typed_data

__all__ = [
    "DEFAULT_RECV_WINDOW_MS",
    "MAX_RECV_WINDOW_MS",
    "NONCE_TOLERANCE_US",
    "NONCE_WINDOW_SIZE",
    "AuthError",
    "Authenticator",
    "CredentialRegistry",
    "Creds",
    "NonceWindow",
    "check_timestamp",
    "recover_v3_signer",
    "split_signed",
    "verify_hmac",
]

DEFAULT_RECV_WINDOW_MS = 5_000
MAX_RECV_WINDOW_MS = 60_000  # docs: "It must not exceed 60 seconds"
AHEAD_TOLERANCE_MS = 1_000  # docs' pseudocode: timestamp < serverTime + 1000
NONCE_TOLERANCE_US = 10_000_000  # V3 Nonce Mechanism: within 10 s of server time
NONCE_WINDOW_SIZE = 100  # V3 Nonce Mechanism: "the most recent 100 nonces"
API_KEY_HEADER = "X-MBX-APIKEY"
# The documented keys are 64 alphanumerics; only consulted for keys that are *not* registered,
# to tell "malformed" (-2014) from "unknown" (-2015), so a registry may issue any shape.
API_KEY_RE = re.compile(r"[A-Za-z0-9]{64}")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_SIGNATURE_RE = re.compile(r"(0x)?[0-9a-fA-F]{130}")  # r, s, v: 65 bytes
_DIGITS_RE = re.compile(r"[0-9]{1,20}")  # ASCII only: str.isdigit() accepts '²'

_DOMAIN = {
    "name": "AsterSignTransaction",
    "version": "1",
    "chainId": 1666,
    "verifyingContract": "0x0000000000000000000000000000000000000000",
}
_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Message": [{"name": "msg", "type": "string"}],
}

MSG_BAD_SIGNATURE = "Signature for this request is not valid."
MSG_OUTSIDE_WINDOW = "Timestamp for this request is outside of the recvWindow."
MSG_AHEAD = "Timestamp for this request was 1000ms ahead of the server's time."
MSG_BAD_KEY_FMT = "API-key format invalid."
MSG_REJECTED_KEY = "Invalid API-key, IP, or permissions for action."
MSG_NONCE_EXPIRED = "Nonce Expired"


class AuthError(Exception):
    """A rejected request: the REST layer answers ``{"code", "msg"}`` with HTTP ``status``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code, self.msg, self.status = code, msg, status


def _mandatory(name: str) -> AuthError:
    return AuthError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _bad_signature() -> AuthError:
    return AuthError(-1022, MSG_BAD_SIGNATURE)


def _int_param(params: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = params.get(name)
    if text is None or text == "":
        if default is None:
            raise _mandatory(name)
        return default
    if not _DIGITS_RE.fullmatch(text):
        raise AuthError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(text)


def split_signed(query: str, body: str) -> tuple[str, str]:
    """(totalParams without ``signature``, signature) from the raw query string and body.

    ``signature`` may be in either part; the other pairs keep their raw bytes and order.
    """
    payload: list[str] = []
    found: list[str] = []
    for part in (query, body):
        kept = []
        for pair in part.split("&") if part else ():
            key, _, value = pair.partition("=")
            if key == "signature":
                found.append(value)
            else:
                kept.append(pair)
        payload.append("&".join(kept))
    if len(found) > 1:  # which one was meant is ambiguous: refuse rather than guess
        raise AuthError(-1101, "Duplicate values for a parameter detected.")
    if not found or not found[0]:
        raise _mandatory("signature")
    return "".join(payload), found[0]


def verify_hmac(secret: str, payload: str, signature: str) -> bool:
    """Whether ``signature`` is the hex HMAC-SHA256 of ``payload`` (case-insensitive)."""
    if not signature.isascii():  # compare_digest raises TypeError on non-ASCII str
        return False
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.lower())


def check_timestamp(params: Mapping[str, str], now_ms: int) -> int:
    """Check ``timestamp``/``recvWindow`` per the docs' pseudocode; return the timestamp."""
    timestamp = _int_param(params, "timestamp")
    recv_window = _int_param(params, "recvWindow", DEFAULT_RECV_WINDOW_MS)
    if recv_window > MAX_RECV_WINDOW_MS:
        raise AuthError(-1130, "Data sent for parameter 'recvWindow' is not valid.")
    if timestamp >= now_ms + AHEAD_TOLERANCE_MS:
        raise AuthError(-1021, MSG_AHEAD)
    if now_ms - timestamp > recv_window:
        raise AuthError(-1021, MSG_OUTSIDE_WINDOW)
    return timestamp


def recover_v3_signer(msg: str, signature: str) -> str:
    """The checksummed address whose key made ``signature`` over ``Message(msg)``."""
    if not _SIGNATURE_RE.fullmatch(signature):
        raise _bad_signature()
    data = {"types": _TYPES, "primaryType": "Message", "domain": _DOMAIN, "message": {"msg": msg}}
    try:
        return Account.recover_message(encode_typed_data(full_message=data), signature=signature)
    except Exception as exc:  # bad v, s out of range, r not on the curve...: all "invalid"
        raise _bad_signature() from exc


def _now_us() -> int:
    return time.time_ns() // 1000


class NonceWindow:
    """Replay protection per the v3 docs' "V3 Nonce Mechanism", per user (lowercased).

    A nonce more than 10 s from server time is -1021 (the code Aster's clients already treat
    as a clock problem; ccxt maps it to ``InvalidNonce``). A nonce already held, or one below
    the minimum of a full window, is -4225 ``Nonce Expired`` (what the docs show for a reused
    nonce). On a full window the *smallest* nonce is evicted: nonces are timestamps, so that is
    the oldest, and it keeps every evicted nonce below the window's minimum, so a replay of it
    is always caught as expired (evicting by arrival order would let one back in).
    """

    def __init__(
        self,
        size: int = NONCE_WINDOW_SIZE,
        tolerance_us: int = NONCE_TOLERANCE_US,
        clock_us: Callable[[], int] = _now_us,
    ) -> None:
        self.size, self.tolerance_us, self._clock_us = size, tolerance_us, clock_us
        self._users: dict[str, tuple[list[int], set[int]]] = {}  # min-heap and its members

    def check_time(self, nonce: int, now_us: int | None = None) -> None:
        now = self._clock_us() if now_us is None else now_us
        if abs(nonce - now) > self.tolerance_us:
            raise AuthError(-1021, MSG_OUTSIDE_WINDOW)

    def accept(self, user: str, nonce: int, now_us: int | None = None) -> None:
        """Admit ``nonce`` for ``user`` and remember it, or raise ``AuthError``."""
        self.check_time(nonce, now_us)
        heap, held = self._users.setdefault(user.lower(), ([], set()))
        if nonce in held:
            raise AuthError(-4225, MSG_NONCE_EXPIRED)
        if len(heap) >= self.size:
            if nonce < heap[0]:
                raise AuthError(-4225, MSG_NONCE_EXPIRED)
            held.discard(heapq.heappushpop(heap, nonce))
        else:
            heapq.heappush(heap, nonce)
        held.add(nonce)

    def held(self, user: str) -> list[int]:
        """The nonces remembered for ``user``, ascending (for inspection and tests)."""
        entry = self._users.get(user.lower())
        return sorted(entry[0]) if entry else []


class Creds(Protocol):
    @property
    def api_secret(self) -> str: ...
    @property
    def user(self) -> str: ...  # the account's main wallet address
    @property
    def signer(self) -> str: ...  # its API wallet address


class CredentialRegistry(Protocol):
    def by_api_key(self, key: str) -> Creds | None: ...

    def by_signer(self, address: str) -> Creds | None:
        """``address`` is given lowercased: registries key signers by lowercased address."""
        ...


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # plain dicts are case-sensitive; aiohttp's CIMultiDict is not
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


class Authenticator:
    """Authenticates requests against a ``CredentialRegistry``; returns the ``Creds``.

    v3 choices: an unknown ``signer`` is -2015 (the signer plays the API key's role); a
    signature not made by the registered signer is -1022; a ``user`` that is neither the
    signer's account nor the signer itself is -2015 (a valid signature, no permission for
    that account). ``user == signer`` is accepted for the signer's own account because ccxt
    sends ``user`` = the address of the key it holds, which is the API wallet when a client
    holds only that key. ``require_user=False`` follows the current v3 docs, whose endpoint
    tables and demo omit ``user`` (the account is then the signer's).
    """

    def __init__(
        self,
        registry: CredentialRegistry,
        nonces: NonceWindow | None = None,
        clock: Callable[[], float] = time.time,
        require_user: bool = True,
    ) -> None:
        self.registry = registry
        self.nonces = nonces or NonceWindow(clock_us=lambda: int(clock() * 1_000_000))
        self._clock = clock
        self.require_user = require_user

    def api_key_only(self, headers: Mapping[str, str]) -> Creds:
        """USER_STREAM v1 endpoints (listenKey): a valid ``X-MBX-APIKEY``, no signature."""
        key = _header(headers, API_KEY_HEADER)
        if not key:
            raise AuthError(-2014, MSG_BAD_KEY_FMT, 401)
        creds = self.registry.by_api_key(key)
        if creds is None:
            if not API_KEY_RE.fullmatch(key):
                raise AuthError(-2014, MSG_BAD_KEY_FMT, 401)
            raise AuthError(-2015, MSG_REJECTED_KEY, 401)
        return creds

    def v1(
        self,
        headers: Mapping[str, str],
        query: str,
        body: str,
        params: Mapping[str, str],
        now_ms: int | None = None,
    ) -> Creds:
        """SIGNED (TRADE/USER_DATA) v1: key, then signature present, timestamp, HMAC."""
        creds = self.api_key_only(headers)
        payload, signature = split_signed(query, body)
        check_timestamp(params, int(self._clock() * 1000) if now_ms is None else now_ms)
        if not verify_hmac(creds.api_secret, payload, signature):
            raise _bad_signature()
        return creds

    def v3(
        self, query: str, body: str, params: Mapping[str, str], now_us: int | None = None
    ) -> Creds:
        """v3 EIP-712: cheap checks first, the ECDSA recovery last, the nonce recorded after."""
        payload, signature = split_signed(query, body)
        now = int(self._clock() * 1_000_000) if now_us is None else now_us
        nonce = _int_param(params, "nonce")
        signer = params.get("signer") or ""
        if not _ADDRESS_RE.fullmatch(signer):
            raise _mandatory("signer")
        user = params.get("user") or ""
        if (user and not _ADDRESS_RE.fullmatch(user)) or (self.require_user and not user):
            raise _mandatory("user")
        self.nonces.check_time(nonce, now)
        creds = self.registry.by_signer(signer.lower())
        if creds is None:
            raise AuthError(-2015, MSG_REJECTED_KEY, 401)
        recovered = recover_v3_signer(payload, signature).lower()
        if recovered != signer.lower() or recovered != creds.signer.lower():
            raise _bad_signature()
        if user and user.lower() not in (creds.user.lower(), recovered):
            raise AuthError(-2015, MSG_REJECTED_KEY, 401)
        self.nonces.accept(creds.user, nonce, now)
        return creds
