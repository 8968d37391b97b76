"""map_venue_error: ccxt's exceptions, built the way ccxt builds them, onto Astra's codes."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import ccxt
import ccxt.async_support as ccxt_async
import msgspec
import pytest
from aiohttp import web

from astra.core import (
    AstraError,
    CredentialsForbidden,
    DuplicateOrder,
    Error,
    Exchange,
    InsufficientBalance,
    InvalidCredentials,
    InvalidOrder,
    OrderNotFound,
    OrderStatusUnknown,
    RateLimited,
    VenueError,
    VenueTimeout,
    VenueUnavailable,
)
from astra.core.credentials import ExchangeCredentials
from astra.trading.credentials import REDACTOR, redacting
from astra.trading.errors import DEFAULT_RETRY_AFTER, MAX_MESSAGE, map_venue_error, sanitize
from astra.venues.venue_answers import banned_until, http_status_of, parse_retry_after

SIG = "9f2c4e7a1b3d5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4"
API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SIGNED_URL = (
    "https://fapi.asterdex.com/fapi/v1/order?symbol=BTCUSDT&side=BUY&type=LIMIT"
    f"&quantity=1&price=1&timestamp=1700000000000&apiKey={API_KEY}&signature={SIG}"
)
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    418: "I'm a teapot",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
CCXT_IDS = {"HUOBI": "htx"}


def ccxt_raise(exchange, status: int, body: str, url: str = SIGNED_URL) -> ccxt.BaseError:
    """What ``exchange.fetch`` raises for this answer: its ``handle_errors``, then the
    default HTTP-status handler, in ccxt's order."""
    try:
        response = json.loads(body)
    except ValueError:
        response = None
    with pytest.raises(ccxt.BaseError) as info:
        exchange.handle_errors(
            status, REASONS[status], url, "POST", {}, body, response, {}, "symbol=BTCUSDT"
        )
        exchange.handle_http_status_code(status, REASONS[status], url, "POST", body)
    return info.value


async def raised(venue: str, status: int, body: str, url: str = SIGNED_URL) -> ccxt.BaseError:
    exchange = getattr(ccxt_async, CCXT_IDS.get(venue, venue.lower()))({"timeout_on_exit": 0})
    try:
        return ccxt_raise(exchange, status, body, url)
    finally:
        await exchange.close()


# (venue, HTTP status, body from the venue's docs, ccxt class, Astra class, venue code)
CASES = [
    # Aster (Binance-style codes; ccxt quotes the whole body)
    ("ASTER", 400, '{"code":-2018,"msg":"Balance is insufficient."}',
     ccxt.InsufficientFunds, InsufficientBalance, "-2018"),
    ("ASTER", 400, '{"code":-2019,"msg":"Margin is insufficient."}',
     ccxt.InsufficientFunds, InsufficientBalance, "-2019"),
    ("ASTER", 400, '{"code":-2013,"msg":"Order does not exist."}',
     ccxt.OrderNotFound, OrderNotFound, "-2013"),
    ("ASTER", 400, '{"code":-4003,"msg":"Quantity less than zero."}',
     ccxt.InvalidOrder, InvalidOrder, "-4003"),
    ("ASTER", 400, '{"code":-2020,"msg":"Unable to fill."}',
     ccxt.OrderNotFillable, InvalidOrder, "-2020"),
    ("ASTER", 400, '{"code":-2021,"msg":"Order would immediately trigger."}',
     ccxt.OrderImmediatelyFillable, InvalidOrder, "-2021"),
    ("ASTER", 429, '{"code":-1003,"msg":"Too many requests; current limit is 2400 per minute."}',
     ccxt.RateLimitExceeded, RateLimited, "-1003"),
    ("ASTER", 401, '{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}',
     ccxt.AuthenticationError, InvalidCredentials, "-2015"),
    ("ASTER", 400, '{"code":-1022,"msg":"Signature for this request is not valid."}',
     ccxt.AuthenticationError, InvalidCredentials, "-1022"),
    ("ASTER", 400, '{"code":-1011,"msg":"This IP cannot access this route."}',
     ccxt.PermissionDenied, CredentialsForbidden, "-1011"),
    ("ASTER", 400, '{"code":-2023,"msg":"User in liquidation mode now."}',
     ccxt.AccountSuspended, CredentialsForbidden, "-2023"),
    # -2025 "max open orders": ccxt says RateLimitExceeded, but waiting does not help
    ("ASTER", 400, '{"code":-2025,"msg":"Reach max open order limit."}',
     ccxt.RateLimitExceeded, InvalidOrder, "-2025"),
    ("ASTER", 400, '{"code":-1021,"msg":"Timestamp for this request is outside of the '
     'recvWindow."}',
     ccxt.InvalidNonce, VenueError, "-1021"),
    ("ASTER", 400, '{"code":-9999,"msg":"Something new."}',
     ccxt.ExchangeError, VenueError, "-9999"),
    # Binance
    ("BINANCE", 400, '{"code":-2011,"msg":"Unknown order sent."}',
     ccxt.OrderNotFound, OrderNotFound, "-2011"),
    ("BINANCE", 400, '{"code":-1013,"msg":"Filter failure: LOT_SIZE"}',
     ccxt.InvalidOrder, InvalidOrder, "-1013"),
    ("BINANCE", 400, '{"code":-2010,"msg":"Duplicate order sent."}',
     ccxt.InvalidOrder, DuplicateOrder, "-2010"),
    # ccxt quotes only the message here (not the body): no venue code to report
    ("BINANCE", 400, '{"code":-2010,"msg":"Account has insufficient balance for requested '
     'action."}',
     ccxt.InsufficientFunds, InsufficientBalance, None),
    ("BINANCE", 400, '{"code":-2010,"msg":"Order would immediately match and take."}',
     ccxt.OrderImmediatelyFillable, InvalidOrder, None),
    ("BINANCE", 429, '{"code":-1003,"msg":"Too much request weight used; current limit is 6000."}',
     ccxt.DDoSProtection, RateLimited, "-1003"),
    ("BINANCE", 401, '{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}',
     ccxt.AuthenticationError, InvalidCredentials, "-2015"),
    # OKX: the per-order sCode wins over the envelope's code
    ("OKX", 200, '{"code":"1","data":[{"clOrdId":"","ordId":"","sCode":"51008",'
     '"sMsg":"Order failed. Insufficient USDT balance in account.","tag":""}],'
     '"msg":"All operations failed"}',
     ccxt.InsufficientFunds, InsufficientBalance, "51008"),
    ("OKX", 200, '{"code":"51603","data":[],"msg":"Order does not exist"}',
     ccxt.OrderNotFound, OrderNotFound, "51603"),
    ("OKX", 200, '{"code":"1","data":[{"clOrdId":"c1","ordId":"","sCode":"51016",'
     '"sMsg":"Duplicated clOrdId","tag":""}],"msg":""}',
     ccxt.InvalidOrder, DuplicateOrder, "51016"),
    ("OKX", 429, '{"code":"50011","data":[],"msg":"Too Many Requests"}',
     ccxt.RateLimitExceeded, RateLimited, "50011"),
    ("OKX", 401, '{"code":"50113","data":[],"msg":"Invalid Sign"}',
     ccxt.AuthenticationError, InvalidCredentials, "50113"),
    ("OKX", 401, '{"code":"50110","data":[],"msg":"Your IP is not in the whitelist."}',
     ccxt.PermissionDenied, CredentialsForbidden, "50110"),
    ("OKX", 200, '{"code":"50001","data":[],"msg":"Service temporarily unavailable."}',
     ccxt.OnMaintenance, VenueUnavailable, "50001"),
    # KuCoin
    ("KUCOIN", 400, '{"code":"200004","msg":"Balance insufficient!"}',
     ccxt.InsufficientFunds, InsufficientBalance, "200004"),
    ("KUCOIN", 400, '{"code":"400100","msg":"order_not_exist_or_not_allow_to_cancel"}',
     ccxt.OrderNotFound, OrderNotFound, "400100"),
    ("KUCOIN", 429, '{"code":"429000","msg":"Too many requests in a short period of time."}',
     ccxt.RateLimitExceeded, RateLimited, "429000"),
    ("KUCOIN", 401, '{"code":"400003","msg":"KC-API-KEY not exists"}',
     ccxt.AuthenticationError, InvalidCredentials, "400003"),
    ("KUCOIN", 400, '{"code":"400100","msg":"Order size below the minimum requirement."}',
     ccxt.InvalidOrder, InvalidOrder, "400100"),
    # Kraken: the error strings are the codes
    ("KRAKEN", 200, '{"error":["EOrder:Insufficient funds"]}',
     ccxt.InsufficientFunds, InsufficientBalance, "EOrder:Insufficient funds"),
    ("KRAKEN", 200, '{"error":["EOrder:Unknown order"]}',
     ccxt.InvalidOrder, OrderNotFound, "EOrder:Unknown order"),
    ("KRAKEN", 200, '{"error":["EAPI:Rate limit exceeded"]}',
     ccxt.DDoSProtection, RateLimited, "EAPI:Rate limit exceeded"),
    ("KRAKEN", 200, '{"error":["EAPI:Invalid key"]}',
     ccxt.AuthenticationError, InvalidCredentials, "EAPI:Invalid key"),
    ("KRAKEN", 200, '{"error":["EGeneral:Permission denied"]}',
     ccxt.PermissionDenied, CredentialsForbidden, "EGeneral:Permission denied"),
    ("KRAKEN", 200, '{"error":["EOrder:Invalid price:XBTUSD price can only be specified up to '
     '1 decimals."]}',
     ccxt.ExchangeError, InvalidOrder, "EOrder:Invalid price:XBTUSD price can only be "
     "specified up to 1 decimals."),
    # Coinbase Advanced Trade
    ("COINBASE", 200, '{"success":false,"failure_reason":"UNKNOWN_FAILURE_REASON","order_id":"",'
     '"error_response":{"error":"INSUFFICIENT_FUND","message":"Insufficient balance in source '
     'account","error_details":"","preview_failure_reason":"PREVIEW_INSUFFICIENT_FUND"}}',
     ccxt.InsufficientFunds, InsufficientBalance, "INSUFFICIENT_FUND"),
    ("COINBASE", 401, '{"error":"unauthorized","error_details":"Unauthorized",'
     '"message":"Unauthorized"}',
     ccxt.AuthenticationError, InvalidCredentials, "unauthorized"),
    ("COINBASE", 429, '{"error":"rate_limit_exceeded","message":"Too many requests"}',
     ccxt.RateLimitExceeded, RateLimited, "rate_limit_exceeded"),
    ("COINBASE", 403, '{"error":"PERMISSION_DENIED","error_details":"Missing required scopes",'
     '"message":"Missing required scopes"}',
     ccxt.PermissionDenied, CredentialsForbidden, "PERMISSION_DENIED"),
    ("COINBASE", 404, '{"error":"NOT_FOUND","error_details":"order with this orderID was not '
     'found","message":"order with this orderID was not found"}',
     ccxt.ExchangeError, OrderNotFound, "NOT_FOUND"),
    ("COINBASE", 400, '{"error":"INVALID_ARGUMENT","error_details":"Too many decimals in order '
     'amount","message":"Too many decimals in order amount"}',
     ccxt.BadRequest, InvalidOrder, "INVALID_ARGUMENT"),
    # HTX (Astra's HUOBI)
    ("HUOBI", 200, '{"status":"error","err-code":"account-frozen-balance-insufficient-error",'
     '"err-msg":"trade account balance is not enough, left: `0.0001`","data":null}',
     ccxt.InsufficientFunds, InsufficientBalance, "account-frozen-balance-insufficient-error"),
    ("HUOBI", 200, '{"status":"error","err-code":"base-record-invalid","err-msg":"record invalid",'
     '"data":null}',
     ccxt.OrderNotFound, OrderNotFound, "base-record-invalid"),
    ("HUOBI", 200, '{"status":"error","err-code":"order-value-min-error","err-msg":"Order total '
     'cannot be lower than: `5`","data":null}',
     ccxt.InvalidOrder, InvalidOrder, "order-value-min-error"),
    ("HUOBI", 200, '{"status":"error","err-code":"api-signature-not-valid","err-msg":"Signature '
     'not valid: Incorrect Access key","data":null}',
     ccxt.AuthenticationError, InvalidCredentials, "api-signature-not-valid"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("venue", "status", "body", "ccxt_cls", "astra_cls", "venue_code"),
    CASES,
    ids=[f"{c[0]}-{c[3].__name__}-{c[5]}" for c in CASES],
)
async def test_ccxt_errors_map(venue, status, body, ccxt_cls, astra_cls, venue_code):
    exc = await raised(venue, status, body)
    assert type(exc) is ccxt_cls  # the fixture is what ccxt really raises for that answer
    for sent in (False, True):  # a definite answer is the same whether or not it was an order
        err = map_venue_error(exc, venue, sent=sent)
        assert type(err) is astra_cls
        assert (err.code, err.status) == (astra_cls.code, astra_cls.status)
        assert err.venue == venue
        assert err.venue_code == venue_code
        assert err.message.startswith(f"{venue}: ") or err.message.startswith(f"venue {venue}")
        assert len(err.message) <= MAX_MESSAGE + len(venue) + 2
        assert SIG not in err.message and API_KEY not in err.message
        if astra_cls is RateLimited:
            assert err.retry_after == DEFAULT_RETRY_AFTER


async def test_error_body_carries_venue_and_code():
    exc = await raised("ASTER", 400, '{"code":-2018,"msg":"Balance is insufficient."}')
    assert str(exc) == 'aster {"code":-2018,"msg":"Balance is insufficient."}'  # ccxt's form
    err = map_venue_error(exc, Exchange.ASTER, sent=True)
    assert msgspec.json.encode(err.to_model()) == (
        b'{"code":"INSUFFICIENT_BALANCE","message":"ASTER: Balance is insufficient.",'
        b'"venue":"ASTER","venueCode":"-2018"}'
    )
    back = AstraError.from_model(
        msgspec.json.decode(msgspec.json.encode(err.to_model()), type=Error)
    )
    assert type(back) is InsufficientBalance and back.to_model() == err.to_model()


@pytest.mark.parametrize(
    ("cls", "code", "status"),
    [
        (InsufficientBalance, "INSUFFICIENT_BALANCE", 422),
        (InvalidOrder, "INVALID_ORDER", 422),
        (OrderNotFound, "ORDER_NOT_FOUND", 404),
        (DuplicateOrder, "DUPLICATE_ORDER", 409),
        (OrderStatusUnknown, "ORDER_STATUS_UNKNOWN", 202),
        (RateLimited, "RATE_LIMITED", 429),
        (InvalidCredentials, "INVALID_EXCHANGE_CREDENTIALS", 401),
        (CredentialsForbidden, "EXCHANGE_CREDENTIALS_FORBIDDEN", 403),
        (VenueUnavailable, "VENUE_UNAVAILABLE", 503),
        (VenueTimeout, "VENUE_TIMEOUT", 504),
        (VenueError, "VENUE_ERROR", 502),
    ],
)
def test_code_table(cls, code, status):
    assert (cls.code, cls.status) == (code, status)
    assert AstraError.from_code(code) is cls


def test_order_errors_are_not_venue_failures():
    # `except VenueError` (a venue-side failure) must never swallow a refusal or an order
    # whose status is unknown: the latter is not a failure at all.
    for cls in (InsufficientBalance, InvalidOrder, OrderNotFound, DuplicateOrder,
                OrderStatusUnknown):  # fmt: skip
        assert not issubclass(cls, VenueError)


# --- rate limits ------------------------------------------------------------------------------


async def test_rate_limit_retry_after():
    exc = await raised("BINANCE", 429, '{"code":-1003,"msg":"Too much request weight used."}')
    assert http_status_of(exc) == 429
    assert map_venue_error(exc, "BINANCE", sent=False, retry_after=7.5).retry_after == 7.5
    # A 418's body says until when the IP is banned.
    until_ms = int((time.time() + 120) * 1000)
    ban = await raised(
        "BINANCE",
        418,
        f'{{"code":-1003,"msg":"Way too much request weight used; IP banned until {until_ms}. '
        'Please use the websocket for live updates to avoid bans."}',
    )
    assert http_status_of(ban) == 418
    err = map_venue_error(ban, "BINANCE", sent=True)
    assert type(err) is RateLimited and err.venue_code == "-1003"
    assert 60 < err.retry_after <= 120


def test_banned_until_and_retry_after_parsing():
    assert banned_until("IP banned until 1700000120000.", now=1_700_000_000.0) == 120.0
    assert banned_until("IP banned until 1600000000000.", now=1_700_000_000.0) == 0.0
    assert banned_until("nothing here") is None
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad) is None


# --- network failures: sent or not ------------------------------------------------------------


def _timeout() -> ccxt.RequestTimeout:
    # What ccxt's fetch raises on a timeout: "<id> <method> <url>" from asyncio.TimeoutError.
    try:
        try:
            raise TimeoutError()  # asyncio.TimeoutError is TimeoutError
        except TimeoutError as e:
            raise ccxt.RequestTimeout(" ".join(["aster", "POST", SIGNED_URL])) from e
    except ccxt.RequestTimeout as exc:
        return exc


def test_timeout_sent_is_status_unknown():
    exc = _timeout()
    unknown = map_venue_error(exc, "ASTER", sent=True)
    assert type(unknown) is OrderStatusUnknown
    assert (unknown.code, unknown.status, unknown.venue) == ("ORDER_STATUS_UNKNOWN", 202, "ASTER")
    assert "unknown" in unknown.message
    timeout = map_venue_error(exc, "ASTER", sent=False)
    assert type(timeout) is VenueTimeout and timeout.status == 504
    for err in (unknown, timeout):
        wire = msgspec.json.encode(err.to_model()).decode()
        assert SIG not in wire and API_KEY not in wire and "signature" not in wire
    # The same for a bare asyncio timeout.
    assert type(map_venue_error(TimeoutError(), "OKX", sent=True)) is OrderStatusUnknown
    assert type(map_venue_error(TimeoutError(), "OKX", sent=False)) is VenueTimeout


async def test_venue_timeout_codes_sent_is_status_unknown():
    okx = await raised(
        "OKX",
        200,
        '{"code":"50004","data":[],"msg":"API endpoint request timeout (does not mean that '
        'the request was successful or failed, please check the request result)."}',
    )
    assert type(okx) is ccxt.RequestTimeout
    err = map_venue_error(okx, "OKX", sent=True)
    assert type(err) is OrderStatusUnknown and err.venue_code == "50004"
    binance = await raised(
        "BINANCE",
        400,
        '{"code":-1007,"msg":"Timeout waiting for response from backend server. Send status '
        'unknown; execution status unknown."}',
    )
    assert type(map_venue_error(binance, "BINANCE", sent=True)) is OrderStatusUnknown
    assert type(map_venue_error(binance, "BINANCE", sent=False)) is VenueTimeout


async def test_http_status_errors_never_quote_the_url():
    html = "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
    exc = await raised("ASTER", 503, html)
    assert type(exc) is ccxt.ExchangeNotAvailable and SIG in str(exc)  # ccxt quotes it all
    err = map_venue_error(exc, "ASTER", sent=False)
    assert type(err) is VenueUnavailable
    assert err.message == "venue ASTER is unavailable (HTTP 503)"
    # A 5xx after sending an order: the order may exist.
    assert type(map_venue_error(exc, "ASTER", sent=True)) is OrderStatusUnknown
    # A 4xx is a definite refusal even for an order.
    bad = await raised("ASTER", 400, "Bad Request")
    assert type(bad) is ccxt.ExchangeNotAvailable  # ccxt's default for an unparsed 400
    err = map_venue_error(bad, "ASTER", sent=True)
    assert type(err) is VenueError and err.message == "venue ASTER answered HTTP 400"
    assert SIG not in err.message


def test_network_errors():
    disconnected = aiohttp.ServerDisconnectedError()
    assert type(map_venue_error(disconnected, "KRAKEN", sent=False)) is VenueUnavailable
    assert type(map_venue_error(disconnected, "KRAKEN", sent=True)) is OrderStatusUnknown
    # ccxt's wrapping of an aiohttp error it does not know (a broken answer) is no answer.
    try:
        try:
            raise aiohttp.ClientPayloadError("Response payload is not completed")
        except aiohttp.ClientError as e:
            raise ccxt.ExchangeError(" ".join(["kraken", "POST", SIGNED_URL])) from e
    except ccxt.ExchangeError as exc:
        wrapped = exc
    assert type(map_venue_error(wrapped, "KRAKEN", sent=True)) is OrderStatusUnknown
    assert type(map_venue_error(wrapped, "KRAKEN", sent=False)) is VenueUnavailable
    # A request that never left (DNS failure) is a plain failure even for an order.
    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except OSError as e:
            raise ccxt.ExchangeNotAvailable(" ".join(["okx", "POST", SIGNED_URL])) from e
    except ccxt.ExchangeNotAvailable as exc:
        dns = exc
    err = map_venue_error(dns, "OKX", sent=True)
    assert type(err) is VenueUnavailable and SIG not in err.message
    # A bad or empty answer, or a crash reading one: unknown for an order, else a venue error.
    for exc in (ccxt.NullResponse("okx fetch() returned an empty response"), KeyError("data")):
        assert type(map_venue_error(exc, "OKX", sent=True)) is OrderStatusUnknown
        assert type(map_venue_error(exc, "OKX", sent=False)) is VenueError


class _Loopback:
    """A venue on 127.0.0.1 that never answers, or drops the connection."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None

    async def hang(self, request: web.Request) -> web.Response:
        await asyncio.wait_for(self.release.wait(), 10)
        return web.json_response({})

    async def drop(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        return web.json_response({})

    async def __aenter__(self) -> int:
        app = web.Application()
        app.router.add_post("/api/v3/order", self.hang)
        app.router.add_post("/drop", self.drop)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self.runner is not None
        await self.runner.cleanup()


async def test_real_ccxt_network_failures_on_loopback():
    async with _Loopback() as port:
        ex = ccxt_async.binance({"timeout": 200, "enableRateLimit": False, "timeout_on_exit": 0})
        try:
            query = f"symbol=BTCUSDT&timestamp=1&signature={SIG}"
            headers = {"X-MBX-APIKEY": API_KEY}
            with pytest.raises(ccxt.RequestTimeout) as info:
                await ex.fetch(f"http://127.0.0.1:{port}/api/v3/order?{query}", "POST", headers)
            assert SIG in str(info.value)  # ccxt's message has the signed URL
            for sent, cls in ((True, OrderStatusUnknown), (False, VenueTimeout)):
                err = map_venue_error(info.value, "BINANCE", sent=sent)
                assert type(err) is cls
                assert SIG not in repr(err) and "127.0.0.1" not in err.message

            with pytest.raises(ccxt.NetworkError) as info:
                await ex.fetch(f"http://127.0.0.1:{port}/drop?{query}", "POST", headers)
            err = map_venue_error(info.value, "BINANCE", sent=True)
            assert type(err) is OrderStatusUnknown

            # Connection refused: the order never left.
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                closed_port = s.getsockname()[1]
            with pytest.raises(ccxt.NetworkError) as info:
                await ex.fetch(f"http://127.0.0.1:{closed_port}/api/v3/order?{query}", "POST")
            err = map_venue_error(info.value, "BINANCE", sent=True)
            assert type(err) is VenueUnavailable and SIG not in err.message
        finally:
            await ex.close()


# --- what a message may show ------------------------------------------------------------------


async def test_registered_secrets_never_survive():
    creds = ExchangeCredentials(
        "KUCOIN", api_key="65f0c0ffee0123456789abcd", secret="s3cr3t-" + "x" * 30,
        passphrase="my passphrase 42",
    )  # fmt: skip
    body = json.dumps(
        {
            "code": "400003",
            "msg": f"KC-API-KEY not exists: {creds.api_key} (passphrase {creds.passphrase!r},"
            f" secret {creds.secret})",
        }
    )
    exc = await raised("KUCOIN", 401, body)
    assert creds.api_key in str(exc)  # the venue echoed it, ccxt kept it
    with redacting(creds):
        err = map_venue_error(exc, "KUCOIN", sent=False)
    assert type(err) is InvalidCredentials and err.venue_code == "400003"
    wire = msgspec.json.encode(err.to_model()).decode()
    for secret in creds.secret_values():
        assert secret not in str(err) and secret not in repr(err) and secret not in wire
    assert "[REDACTED]" in str(err)


def test_ccxt_message_without_json_is_quoted_safely():
    with REDACTOR.redacting(API_KEY):
        err = map_venue_error(
            ccxt.InvalidOrder(f"binance createOrder() key {API_KEY} needs a price argument"),
            "BINANCE",
            sent=False,
        )
    assert err.message == "BINANCE: createOrder() key [REDACTED] needs a price argument"
    # A network message is never quoted, whatever it holds.
    err = map_venue_error(ccxt.NetworkError(f"binance GET {SIGNED_URL}"), "BINANCE", sent=False)
    assert err.message == "venue BINANCE is unavailable"


def test_sanitize():
    text = (
        f"POST {SIGNED_URL} X-MBX-APIKEY: {API_KEY} then signature={SIG}&recvWindow=5000 "
        f'and {{"apiKey":"{API_KEY}"}}\n\n  spaced'
    )
    out = sanitize(text, limit=1000)
    assert SIG not in out and API_KEY not in out
    assert "https://fapi.asterdex.com/fapi/v1/order " in out  # the path stays, the query goes
    assert "X-MBX-APIKEY: [REDACTED]" in out and "signature=[REDACTED]" in out
    assert "\n" not in out and "  " not in out
    assert sanitize("x" * 500).endswith("…") and len(sanitize("x" * 500)) == MAX_MESSAGE
    assert sanitize("Signature for this request is not valid.") == (
        "Signature for this request is not valid."
    )


def test_options():
    bad_request = ccxt.BadRequest(
        'okx {"code":"50014","data":[],"msg":"Parameter ccy can not be empty"}'
    )
    assert type(map_venue_error(bad_request, "OKX", sent=False)) is InvalidOrder
    err = map_venue_error(bad_request, "OKX", sent=False, order=False)
    assert type(err) is VenueError and err.venue_code == "50014"
    # An AstraError goes through, with the venue filled in.
    own = RateLimited(retry_after=3.0)
    assert map_venue_error(own, "OKX", sent=True) is own and own.venue == "OKX"
