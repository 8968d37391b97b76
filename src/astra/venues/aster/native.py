"""Aster's (and SIM's) order entry signed and sent by Astra itself, not through ccxt's request path.

ccxt's ``aster`` spends more on a signed order than the simulator takes to match it: EIP-712
typed-data encoding rebuilt per request (a dozen Keccak hashes, the domain each time), a
wallet-address check, header and proxy bookkeeping. ``AsterNative`` signs the same
parameter string, byte for byte, with the domain separator computed once and one Keccak per
request around libsecp256k1 (``coincurve``, already ccxt's signer), and sends it on the
client's kept-alive connections (``client.keepalive``: ``astra.net.keepalive``, a venue's
shared by its private clients).

What stays ccxt's, so behaviour is the same as before: the request parameters (ccxt's
``create_order_request``; ``order_request`` builds a plain MARKET/LIMIT order the way that
code does, key for key, and leaves everything else to it; the rounding to the market's
precision is ccxt's, remembered per value), the answer's classification
(``handle_errors``/``handle_http_status_code``: the venue's codes become the same ccxt
exceptions, which ``astra.trading.errors`` maps to Astra errors with ``venue`` and
``venueCode``), the ``on_rest_response`` hook (where the venue limiter sees 429/418 and
``Retry-After``), and, for ``create_order``/``cancel_order``, ``parse_order``; ``place`` and
``cancel`` answer the Astra ``Order`` itself (``orders.decode_order``: the same one, read
without ccxt). Transport failures become the exceptions ccxt raises for them
(``RequestTimeout``, ``ExchangeNotAvailable``, ``ExchangeError``) chained to the
transport's error, so "sent or not" is judged as with aiohttp's. Tests hold each
restatement to ccxt's own code (``tests/venues/aster/test_native_orders.py``).

Invariants:
- The string signed is the string sent: ``nonce``, ``user``, ``signer``, then the request's
  parameters in ccxt's order and encoding (v3), or the parameters, ``timestamp`` and
  ``recvWindow`` then ``signature`` (v1 HMAC, key + secret and no private key), as
  ``AsterPrivate`` signs them. v3 nonces come from the process-wide ``NONCES``.
- Signatures are deterministic (RFC 6979), so a v3 signature here equals ccxt's for the same
  string (tests compare them), and the v1 one equals the venue docs' example.
- No secret leaves this object: it is read from the ccxt client (whose secrets the client
  cache has registered with the log redactor) and never logged or put in an exception.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

import msgspec
from ccxt.base.errors import ExchangeError, ExchangeNotAvailable, RequestTimeout
from coincurve import PrivateKey
from Crypto.Hash import keccak as _keccak

from astra.core._trading import Order
from astra.net.keepalive import BadAnswer
from astra.venues.ccxt_normalize import order_from_ccxt

from .orders import decode_order

__all__ = ["ASTER_DOMAIN_SEPARATOR", "AsterNative", "eip712_digest", "v3_signature"]

_ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
_FORM = "application/x-www-form-urlencoded"
# What ``urllib.parse.quote(text, safe="~()*!.'")`` (ccxt's encode_uri_component) returns as is
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~()*!'-]*")
_MEMO_TYPES = frozenset({str, float, int})
_MEMO_SIZE = 4096
_PLAIN_TIF = frozenset({"GTC", "IOC", "FOK"})  # no post-only reading: ccxt's is_post_only is False
_decode = msgspec.json.Decoder().decode


def _k(data: bytes) -> bytes:
    return _keccak.new(digest_bits=256, data=data).digest()


def _domain_separator(name: str = "AsterSignTransaction", version: str = "1",
                      chain_id: int = 1666, contract: str = _ZERO_ADDRESS) -> bytes:
    type_hash = _k(b"EIP712Domain(string name,string version,uint256 chainId,"
                   b"address verifyingContract)")
    return _k(type_hash + _k(name.encode()) + _k(version.encode())
              + chain_id.to_bytes(32, "big") + bytes.fromhex(contract[2:]).rjust(32, b"\0"))


ASTER_DOMAIN_SEPARATOR = _domain_separator()
_MESSAGE_TYPE_HASH = _k(b"Message(string msg)")


def eip712_digest(msg: str, domain_separator: bytes = ASTER_DOMAIN_SEPARATOR) -> bytes:
    """The EIP-712 hash of ``Message(string msg)`` in Aster's signing domain."""
    struct_hash = _k(_MESSAGE_TYPE_HASH + _k(msg.encode()))
    return _k(b"\x19\x01" + domain_separator + struct_hash)


def v3_signature(key: PrivateKey, msg: str) -> str:
    """``0x`` + r, s, v (27/28) hex: what ccxt's ``sign_message`` gives for the same ``msg``
    (v upper-case, as ccxt's ``int_to_base16`` writes it)."""
    sig = key.sign_recoverable(eip712_digest(msg), hasher=None)
    return "0x" + sig[:64].hex() + format(27 + sig[64], "02X")


class AsterNative:
    """Signed private requests for the credentials ccxt ``client`` (an ``AsterPrivate``) holds,
    on its session; ``create_order``/``cancel_order`` take and return what ccxt's do."""

    def __init__(self, client: Any, *, nonces: Callable[[], int],
                 v1_path: Callable[[str, str], str]) -> None:
        self.client = client
        self._nonces = nonces  # the process-wide ``trading.NONCES`` (via ``client.native``)
        self._v1_path = v1_path
        self.hmac_v1 = bool(getattr(client, "hmac_v1", False))
        if self.hmac_v1:
            self._key = None
            self._secret = client.secret.encode()
            self._headers = {"X-MBX-APIKEY": client.apiKey, "Content-Type": _FORM}
            self._user = self._signer = ""
        else:
            client.check_required_credentials()
            raw = client.privateKey[2:] if client.privateKey.startswith("0x") else client.privateKey
            self._key = PrivateKey(bytes.fromhex(raw[-64:]))
            self._secret = b""
            self._headers = {"Content-Type": _FORM}
            address = "0x" + _k(self._key.public_key.format(compressed=False)[1:])[-20:].hex()
            # ccxt's user: the cached main wallet when ccxt_config seeded it, else the key's.
            options = client.options
            self._user = options.get("cachedWalletAddress") or address
            self._signer = options.get("signerAddress") or self._user
        recv_window = client.safe_integer(client.options, "recvWindow")
        self._recv_window = recv_window
        self._quote = client.encode_uri_component
        self._timeout = client.timeout / 1000
        self._memo: dict[tuple, Any] = {}  # ``_precise``'s
        self._memo_markets: Any = None

    # -- signing -------------------------------------------------------------------------------

    def _encode(self, values: dict[str, Any]) -> str:
        """ccxt's ``encode_values_with_json``: key=quoted value, JSON for lists and dicts (a
        value of characters the quoting keeps as they are is not run through it)."""
        quote, unquoted, parts = self._quote, _UNQUOTED.fullmatch, []
        for key, value in values.items():
            text = self.client.json(value) if isinstance(value, list | dict) else str(value)
            parts.append(f"{key}={text if unquoted(text) else quote(text)}")
        return "&".join(parts)

    def v1_signature(self, query: str) -> str:
        """Hex HMAC-SHA256 of ``query`` keyed by the secret (v1 credentials)."""
        return hmac.new(self._secret, query.encode(), hashlib.sha256).hexdigest()

    def signed_query(self, params: dict[str, Any]) -> str:
        """The parameter string sent, ``signature`` last."""
        if self.hmac_v1:
            signed = {**params, "timestamp": self.client.milliseconds()}
            if self._recv_window is not None:
                signed["recvWindow"] = self._recv_window
            query = self._encode(signed)
            return query + "&signature=" + self.v1_signature(query)
        head = f"nonce={self._nonces()}&user={self._user}&signer={self._signer}"
        query = head + "&" + self._encode(params) if params else head
        return query + "&signature=" + v3_signature(self._key, query)

    # -- requests ------------------------------------------------------------------------------

    async def request(self, api: str, path: str, method: str, params: dict[str, Any]) -> Any:
        """One signed request to ``api`` (``sapiPrivate``/``fapiPrivate``) ``path`` (the v3
        path; v1 credentials go to its v1 counterpart); the decoded answer, or ccxt's
        exception for it."""
        client = self.client
        if self.hmac_v1:
            path = self._v1_path(api, path)
        url = f"{client.urls['api'][api]}/{path}"
        query = self.signed_query(params)
        body: str | None = None
        headers = self._headers
        if method == "GET":
            url, headers = f"{url}?{query}", {k: v for k, v in headers.items()
                                              if k != "Content-Type"}
        else:
            body = query
        try:
            async with asyncio.timeout(self._timeout):
                answer = await client.keepalive.request(
                    method, url, body=body.encode() if body else None, headers=headers)
        except TimeoutError as e:  # (before OSError: a TimeoutError is one)
            raise RequestTimeout(f"{client.id} {method}") from e
        except OSError as e:  # (ConnectFailed, a refused name among them, or a drop)
            raise ExchangeNotAvailable(f"{client.id} {method}") from e
        except (BadAnswer, ValueError) as e:
            raise ExchangeError(f"{client.id} {method}") from e
        status, reason, answer_headers = answer.status, answer.reason, answer.headers
        text = answer.body.decode("utf-8", errors="replace")
        # ccxt's order of things: the hook (the limiter sees 429/418), then the venue's error
        # codes, then the HTTP status.
        text = client.on_rest_response(status, reason, url, method, answer_headers, text,
                                       headers, body)
        try:
            data = _decode(text) if text[:1] in ("{", "[") else None
        except msgspec.DecodeError:
            data = None
        client.handle_errors(status, reason, url, method, answer_headers, text, data, headers,
                             body)
        client.handle_http_status_code(status, reason, url, method, text)
        return data

    async def create_order(self, symbol: str, type: str, side: str, amount: Any,
                           price: Any = None, params: dict | None = None) -> dict:
        """ccxt's ``create_order``, natively signed and sent."""
        market, raw = await self._create(symbol, type, side, amount, price, params)
        return self.client.parse_order(raw, market)

    async def place(self, symbol: str, type: str, side: str, amount: Any, price: Any = None,
                    params: dict | None = None, *, market: str) -> Order:
        """``create_order``'s order as the Astra ``Order`` on ``market`` (an Astra symbol),
        read from the venue's answer by ``orders.decode_order`` (ccxt's ``parse_order`` and
        ``order_from_ccxt`` only for an answer it does not read: the same result)."""
        ccxt_market, raw = await self._create(symbol, type, side, amount, price, params)
        return decode_order(raw, market, self._through_ccxt(ccxt_market, market))

    async def _create(self, symbol: str, type: str, side: str, amount: Any, price: Any,
                      params: dict | None) -> tuple[dict, Any]:
        market = self.client.market(symbol)
        request = self.order_request(market, symbol, type, side, amount, price, params or {})
        api = "fapiPrivate" if market["swap"] else "sapiPrivate"
        return market, await self.request(api, "v3/order", "POST", request)

    def amount_to_precision(self, symbol: str, amount: Any) -> Any:
        """The client's ``amount_to_precision(symbol, amount)``, remembered (``_precise``)."""
        return self._precise(0, self.client.amount_to_precision, symbol, amount)

    def price_to_precision(self, symbol: str, price: Any) -> Any:
        """The client's ``price_to_precision(symbol, price)``, remembered (``_precise``)."""
        return self._precise(1, self.client.price_to_precision, symbol, price)

    def _precise(self, kind: int, fn: Callable[[str, Any], Any], symbol: str,
                 value: Any) -> Any:
        """``fn(symbol, value)`` remembered per value: ccxt's decimal rounding costs more
        than an order's signature, and it is a function of the market's precision alone
        (the memo starts over when the client's markets are replaced; a failure is never
        remembered)."""
        if value.__class__ not in _MEMO_TYPES:
            return fn(symbol, value)
        markets = self.client.markets
        if markets is not self._memo_markets:
            self._memo.clear()
            self._memo_markets = markets
        key = (kind, symbol, value.__class__, value)
        found = self._memo.get(key)
        if found is None:
            found = fn(symbol, value)
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = found
        return found

    def _plain(self, market: dict, kind: str | None, side: Any, price: Any, params: dict,
               tif: Any, cid: Any) -> bool:
        """Whether ``order_request`` builds this order itself (see there)."""
        safe_string = self.client.safe_string  # ccxt's test of a precision that is there
        precision = market["precision"]
        if kind == "MARKET":
            if price is not None:  # (ccxt: a quote quantity from it, on spot)
                return False
        elif kind != "LIMIT" or price is None or tif is None \
                or safe_string(precision, "price") is None:
            return False
        return (len(params) == (cid is not None) + (tif is not None)
                and (tif is None or (tif.__class__ is str and tif in _PLAIN_TIF))
                and (cid is None or (cid.__class__ is str and cid != ""))
                and isinstance(side, str) and safe_string(precision, "amount") is not None)

    def order_request(self, market: dict, symbol: str, type: str, side: str, amount: Any,
                      price: Any, params: dict) -> dict:
        """ccxt's ``create_order_request(symbol, type, side, amount, price, params)``, key
        for key and in its order. A plain order (MARKET without a price; LIMIT with a price
        and a GTC/IOC/FOK ``timeInForce``; no parameter but ``clientOrderId`` and
        ``timeInForce``) is built here, as ccxt's own code builds it for those inputs (ccxt
        spends more on its general case than on the order's signature); anything else is
        ccxt's to build (and to refuse)."""
        client = self.client
        kind = type.upper() if isinstance(type, str) else None  # (``type``: the order's)
        tif = params.get("timeInForce")
        cid = params.get("clientOrderId")
        if not self._plain(market, kind, side, price, params, tif, cid):
            return client.create_order_request(symbol, type, side, amount, price, params)
        request: dict[str, Any] = {"symbol": market["id"], "side": side.upper()}
        if cid is not None:
            request["newClientOrderId"] = cid
        request["type"] = kind
        request["quantity"] = self.amount_to_precision(symbol, amount)
        if kind == "LIMIT":
            request["price"] = self.price_to_precision(symbol, price)
        if market["swap"] is True and client.safe_bool(client.options, "builderFee", False):
            request["builder"] = client.safe_string(client.options, "builder")
            request["feeRate"] = client.safe_string(client.options, "builderRate")
        if tif is not None:  # (ccxt: the parameters it does not consume, last)
            request["timeInForce"] = tif
        return request

    def _through_ccxt(self, ccxt_market: dict, market: str) -> Callable[[Any], Order]:
        parse = self.client.parse_order
        return lambda raw: order_from_ccxt(parse(raw, ccxt_market), market)

    async def cancel_order(self, id: str, symbol: str, params: dict | None = None) -> dict:
        """ccxt's ``cancel_order``, natively signed and sent."""
        market, raw = await self._cancel(id, symbol, params)
        return self.client.parse_order(raw, market)

    async def cancel(self, id: str, symbol: str, params: dict | None = None, *,
                     market: str) -> Order:
        """``cancel_order``'s order as the Astra ``Order`` on ``market`` (as ``place``)."""
        ccxt_market, raw = await self._cancel(id, symbol, params)
        return decode_order(raw, market, self._through_ccxt(ccxt_market, market))

    async def _cancel(self, id: str, symbol: str, params: dict | None) -> tuple[dict, Any]:
        client = self.client
        market = client.market(symbol)
        params = dict(params or {})
        request: dict[str, Any] = {"symbol": market["id"]}
        cid = params.pop("origClientOrderId", None)
        other = params.pop("clientOrderId", None)
        cid = cid if cid is not None else other
        if cid is not None:
            request["origClientOrderId"] = cid
        else:
            request["orderId"] = id
        api = "fapiPrivate" if market["swap"] else "sapiPrivate"
        return market, await self.request(api, "v3/order", "DELETE", {**request, **params})
