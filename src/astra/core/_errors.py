"""Astra's error tree: each exception class is one API error code with one HTTP status.

Invariants:
- Every concrete class has a distinct ``code`` (the wire string) and an HTTP ``status``;
  ``AstraError.from_code(code)`` finds the class back (used by clients to re-raise).
- ``str(err) == err.message`` and ``err.to_model()`` is the ``Error`` body the server sends.
- Parameter errors (``InvalidParameter``, ``MissingParameter``) always name the parameter in
  the message and set ``parameter``; market and exchange errors set ``parameter`` to
  ``"market"`` / ``"exchange"``.
- Venue errors (``VenueError`` and its subclasses) always carry ``venue``.
- Exchange-credential errors (``MissingCredentials``, ``InvalidCredentials``,
  ``CredentialsForbidden``) set ``venue`` to the exchange concerned and never quote a
  credential value: their messages name headers or fields only.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._models import Error, Exchange, FeedState

__all__ = [
    "AstraError",
    "BookNotInSync",
    "Conflict",
    "CredentialsForbidden",
    "CredentialsUnreadable",
    "DeskHalted",
    "DuplicateOrder",
    "FeedUnavailable",
    "Forbidden",
    "InsufficientBalance",
    "InvalidCredentials",
    "InvalidMarket",
    "InvalidOrder",
    "InvalidParameter",
    "InvalidQuoteSignature",
    "LimitExceeded",
    "MarketNotFound",
    "MethodNotAllowed",
    "MissingCredentials",
    "MissingParameter",
    "NoHistory",
    "NotFound",
    "OrderNotFound",
    "OrderStatusUnknown",
    "OtcAccountNotFound",
    "PayloadTooLarge",
    "QuoteAlreadyAccepted",
    "QuoteExpired",
    "RateLimited",
    "RecordUnreadable",
    "StaleBook",
    "Unauthorized",
    "UnknownExchange",
    "Unprocessable",
    "UnsupportedPair",
    "VenueError",
    "VenueTimeout",
    "VenueUnavailable",
    "WebSocketUpgradeRequired",
]

_BY_CODE: dict[str, type[AstraError]] = {}


class AstraError(Exception):
    """Base of all API errors; on its own it is an internal error (500)."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "internal error"
    feed: FeedState | None = None  # set by FeedUnavailable
    members: list | None = None  # MemberStates: set by FeedUnavailable for a SMART market

    def __init_subclass__(
        cls, *, code: str | None = None, status: int | None = None, message: str | None = None
    ) -> None:
        # Lets each subclass be one line: class NotFound(AstraError, code=..., status=...).
        super().__init_subclass__()
        if code is not None:
            if code in _BY_CODE:
                raise TypeError(f"duplicate error code {code!r}")
            cls.code = code
            _BY_CODE[code] = cls
        if status is not None:
            cls.status = status
        if message is not None:
            cls.default_message = message

    def __init__(
        self,
        message: str | None = None,
        *,
        parameter: str | None = None,
        venue: str | None = None,
        venue_code: str | int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)
        self.parameter = parameter
        self.venue = venue
        # Venues use both numeric (Binance -1121) and textual codes; the wire always says text.
        self.venue_code = None if venue_code is None else str(venue_code)
        self.retry_after = retry_after

    def __repr__(self) -> str:
        extra = "".join(
            f", {k}={v!r}"
            for k in ("parameter", "venue", "venue_code", "retry_after")
            if (v := getattr(self, k)) is not None
        )
        return f"{type(self).__name__}({self.message!r}{extra})"

    def to_model(self) -> Error:
        return Error(
            code=self.code,
            message=self.message,
            parameter=self.parameter,
            venue=self.venue,
            venue_code=self.venue_code,
            retry_after=self.retry_after,
            feed=self.feed,
            members=self.members,
        )

    @staticmethod
    def from_code(code: str) -> type[AstraError]:
        """The class for a wire ``code``; ``AstraError`` itself for unknown codes."""
        return _BY_CODE.get(code, AstraError)

    @classmethod
    def from_model(cls, model: Error) -> AstraError:
        """Rebuild the exception a server sent (client side)."""
        klass = _BY_CODE.get(model.code, AstraError)
        # Subclass constructors take different arguments; the fields are what matter here.
        err = klass.__new__(klass)
        AstraError.__init__(
            err,
            model.message,
            parameter=model.parameter,
            venue=model.venue,
            venue_code=model.venue_code,
            retry_after=model.retry_after,
        )
        err.feed = model.feed
        err.members = model.members
        if klass is AstraError and model.code != AstraError.code:
            err.code = model.code  # keep a code this version does not know
        return err


class InvalidParameter(AstraError, code="INVALID_PARAMETER", status=400):
    def __init__(self, parameter: str, reason: str | None = None, **extra: Any) -> None:
        msg = f"invalid parameter '{parameter}'" + (f": {reason}" if reason else "")
        super().__init__(msg, parameter=parameter, **extra)


class MissingParameter(AstraError, code="MISSING_PARAMETER", status=400):
    def __init__(self, parameter: str, **extra: Any) -> None:
        super().__init__(f"missing required parameter '{parameter}'", parameter=parameter, **extra)


class InvalidMarket(AstraError, code="INVALID_MARKET", status=400):
    """A malformed market symbol. ``position`` is the 1-based ``-``-separated part at fault."""

    # Class-level defaults so instances rebuilt by from_model() still have the attributes.
    market: str | None = None
    position: int | None = None

    def __init__(
        self,
        message: str,
        *,
        market: str | None = None,
        position: int | None = None,
        parameter: str | None = "market",
        **extra: Any,
    ) -> None:
        super().__init__(message, parameter=parameter, **extra)
        self.market = market
        self.position = position


class MarketNotFound(AstraError, code="MARKET_NOT_FOUND", status=404):
    """A well-formed market symbol that names no known market."""

    market: str | None = None

    def __init__(self, market: str, message: str | None = None, **extra: Any) -> None:
        extra.setdefault("parameter", "market")
        super().__init__(message or f"market '{market}' not found", **extra)
        self.market = market


class UnknownExchange(AstraError, code="UNKNOWN_EXCHANGE", status=400):
    exchange: str | None = None

    def __init__(self, exchange: str, message: str | None = None, **extra: Any) -> None:
        extra.setdefault("parameter", "exchange")
        known = ", ".join(Exchange)
        super().__init__(
            message or f"unknown exchange '{exchange}': expected one of {known}", **extra
        )
        self.exchange = exchange


class ExchangeNotServed(AstraError, code="EXCHANGE_NOT_SERVED", status=404):
    """A valid exchange code (an ``Exchange``) that this gateway is not configured to serve:
    404 like a market of that exchange, not 400, since the request itself is well formed."""

    exchange: str | None = None

    def __init__(self, exchange: str, served: tuple[str, ...] | list[str] = (),
                 **extra: Any) -> None:
        extra.setdefault("parameter", "exchange")
        serves = ", ".join(sorted(served)) or "no venue"
        super().__init__(f"exchange {exchange} is not served here: this gateway serves {serves}",
                         **extra)
        self.exchange = exchange


class Unauthorized(
    AstraError, code="UNAUTHORIZED", status=401, message="missing or invalid API key"
):
    pass


class Forbidden(AstraError, code="FORBIDDEN", status=403, message="forbidden"):
    pass


# Exchange credentials (the user's own keys on a venue), distinct from the Astra API key
# (``Unauthorized``): a client must be able to tell "your Astra key is wrong" from "bring your
# exchange key". Not subclasses of Unauthorized/Forbidden, so the Astra key's handling (e.g. a
# WWW-Authenticate challenge) never applies to them by accident.
class MissingCredentials(
    AstraError,
    code="EXCHANGE_CREDENTIALS_REQUIRED",
    status=401,
    message="exchange credentials required",
):
    """No usable exchange credentials: none sent nor stored, or some required part missing.

    ``parameter`` names the first missing header (or field), ``venue`` the exchange.
    """


class InvalidCredentials(
    AstraError,
    code="INVALID_EXCHANGE_CREDENTIALS",
    status=401,
    message="invalid exchange credentials",
):
    """Exchange credentials that are malformed, or that the venue rejected as unknown/invalid.

    ``parameter`` names the header (or field) at fault when one is; never its value.
    """


class CredentialsForbidden(
    AstraError,
    code="EXCHANGE_CREDENTIALS_FORBIDDEN",
    status=403,
    message="the exchange credentials are not permitted to do this",
):
    """Valid exchange credentials without the permission the request needs (e.g. a read-only
    key placing an order, an IP not on the key's allow-list)."""


class CredentialsUnreadable(
    AstraError,
    code="CREDENTIALS_UNREADABLE",
    status=503,
    message="stored credentials cannot be decrypted with this ASTRA_MASTER_KEY",
):
    """Exchange credentials stored on the server for the API key exist but cannot be read:
    encrypted under another ``ASTRA_MASTER_KEY``, or the row failed authentication.

    503, not 500 and not 4xx: nothing in the request is wrong (a 4xx would tell the client to
    change it), and it is no bug (500); the server cannot serve this key's stored credentials
    until its operator starts it with the right master key or stores them again. Header
    credentials still work meanwhile. The message names the exchange; ``venue`` stays unset,
    as it marks a venue's own rejection and no venue was asked."""


class Overloaded(
    AstraError, code="OVERLOADED", status=503, message="the server is busy: retry shortly"
):
    """The server refuses work it cannot take now (e.g. too many API-key lookups pending);
    nothing in the request is wrong. Carries ``retry_after``."""


class RequestTimeout(
    AstraError, code="REQUEST_TIMEOUT", status=408, message="the request was not received in time"
):
    """The client did not send its whole request (e.g. the body it announced) in time."""


class NotFound(AstraError, code="NOT_FOUND", status=404, message="not found"):
    pass


class MethodNotAllowed(
    AstraError, code="METHOD_NOT_ALLOWED", status=405, message="method not allowed"
):
    """The path exists but not for this method; the server also sends ``Allow``."""


class PayloadTooLarge(
    AstraError, code="PAYLOAD_TOO_LARGE", status=413, message="request body too large"
):
    pass


class WebSocketUpgradeRequired(
    AstraError,
    code="WEBSOCKET_UPGRADE_REQUIRED",
    status=400,
    message="this endpoint is a WebSocket: send a GET with 'Connection: Upgrade', "
    "'Upgrade: websocket', 'Sec-WebSocket-Version: 13' and a Sec-WebSocket-Key",
):
    """A plain HTTP request (or a malformed handshake) on a WebSocket endpoint."""


class Conflict(AstraError, code="CONFLICT", status=409, message="conflict"):
    pass


class Unprocessable(AstraError, code="UNPROCESSABLE", status=422, message="unprocessable request"):
    pass


# History (``astra.history.query``): a past moment the record cannot answer for.
class NoHistory(AstraError, code="NO_HISTORY", status=404, message="nothing recorded then"):
    """A time outside what is recorded for the market (before its first row or after its
    last); the message states the recorded range. (A time older than the retention keeps
    is a 400 naming the parameter: no record can ever answer it.)"""


class BookNotInSync(
    AstraError, code="BOOK_NOT_IN_SYNC", status=409,
    message="the recorded book was not in sync at that time",
):
    """The book at a past moment that fell in a gap of the record: after a resync (the
    message names its time and reason, and when the next snapshot came) or while the
    recorder was not running. ``parameter`` is ``time``."""


class RecordUnreadable(
    AstraError, code="RECORD_UNREADABLE", status=500,
    message="a file of the market data record is unreadable",
):
    """A file in the record (``astra.tape``) that is not Parquet, is damaged, or is not of
    the record's schema (put there by hand, or a disk fault): the message names it (its path
    under the record's root) so the operator can move it away. Never guessed around: the
    rows it should hold are unknown."""


class RateLimited(AstraError, code="RATE_LIMITED", status=429, message="rate limit exceeded"):
    """``retry_after`` (seconds) also belongs in the HTTP ``Retry-After`` header."""


# Trading errors a venue reports about an order or an account (``astra.trading.errors`` maps
# ccxt's exceptions onto them). They set ``venue`` and, when the venue gave one,
# ``venue_code``; they are not VenueErrors (502): the venue worked, the request was refused.
class InsufficientBalance(
    AstraError, code="INSUFFICIENT_BALANCE", status=422, message="insufficient balance"
):
    pass


class InsufficientLiquidity(
    AstraError, code="INSUFFICIENT_LIQUIDITY", status=422,
    message="not enough liquidity inside the order's limits",
):
    """A routed (SMART) order the member books cannot fill as asked: no liquidity inside the
    price or slippage bound, or a FOK order the books do not cover whole. Nothing was sent."""


class InvalidOrder(AstraError, code="INVALID_ORDER", status=422, message="invalid order"):
    """The venue refused the order's parameters (size, price, filters, time in force...)."""


class OrderNotFound(AstraError, code="ORDER_NOT_FOUND", status=404, message="order not found"):
    pass


class DuplicateOrder(
    AstraError, code="DUPLICATE_ORDER", status=409, message="duplicate client order id"
):
    pass


class OrderStatusUnknown(
    AstraError,
    code="ORDER_STATUS_UNKNOWN",
    status=202,
    message="the order was sent but the venue did not confirm it: its status is unknown",
):
    """An order request that may have reached the venue but got no definite answer (a
    timeout or a dropped connection after sending). Not a failure: 202 Accepted, because the
    order may well exist, and a 4xx/5xx would invite a blind retry (a duplicate order). The
    client reconciles by its client order id; the order's status is ``UNKNOWN`` meanwhile."""


class VenueError(
    AstraError, code="VENUE_ERROR", status=502, message="venue {venue} rejected the request"
):
    """The venue answered with an error; ``venue_code`` is its own code when it gave one.

    The default message names the venue (``default_message`` is a template on ``{venue}``).
    """

    def __init__(
        self,
        venue: str,
        message: str | None = None,
        *,
        venue_code: str | int | None = None,
        **extra: Any,
    ) -> None:
        venue = str(venue)
        message = message or self.default_message.format(venue=venue)
        super().__init__(message, venue=venue, venue_code=venue_code, **extra)


# Subclasses of VenueError so `except VenueError` covers every venue-side failure.
class VenueUnavailable(
    VenueError, code="VENUE_UNAVAILABLE", status=503, message="venue {venue} is unavailable"
):
    pass


class FeedUnavailable(VenueUnavailable):
    """``VENUE_UNAVAILABLE`` (503) for one market's live data, carrying its ``feed`` state
    (``FeedState``: disconnected since when, and why) so a client knows what it waits for."""

    def __init__(
        self, venue: str, message: str, *, feed: FeedState, retry_after: float | None = None,
        members: list | None = None,
    ) -> None:
        super().__init__(venue, message, retry_after=retry_after)
        self.feed = feed
        self.members = members


class VenueTimeout(VenueError, code="VENUE_TIMEOUT", status=504, message="venue {venue} timed out"):
    pass


# The OTC desk (``astra.otc``): request-quote and accept-quote refusals, each its own code.
class QuoteExpired(AstraError, code="QUOTE_EXPIRED", status=410, message="the quote has expired"):
    """``expiryTime`` has passed on the server's clock; nothing was booked."""


class InvalidQuoteSignature(
    AstraError, code="INVALID_QUOTE_SIGNATURE", status=400,
    message="the quote's signature does not match its fields",
):
    """A quote field changed after signing, a signature the desk never issued, or one made
    with a signing key the desk no longer holds; nothing was booked."""


class QuoteAlreadyAccepted(
    AstraError, code="QUOTE_ALREADY_ACCEPTED", status=409,
    message="the quote was already accepted",
):
    """The quote was accepted before, for another account; its owner's repeat gets the same
    trade instead."""


class LimitExceeded(AstraError, code="LIMIT_EXCEEDED", status=422, message="limit exceeded"):
    """A size past the account's maximum notional per trade or its daily volume, or past the
    desk's own inventory limit for an asset; nothing was quoted or booked."""


class UnsupportedPair(
    AstraError, code="UNSUPPORTED_PAIR", status=400, message="the desk does not quote this pair"
):
    """No market, direct or through a bridge asset, prices this pair."""


class StaleBook(
    AstraError, code="STALE_BOOK", status=422,
    message="a book the desk prices on is stale",
):
    """A member book the price would come from has not updated within its staleness bound."""


class OtcAccountNotFound(
    AstraError, code="ACCOUNT_NOT_FOUND", status=404, message="OTC account not found"
):
    pass


class DeskHalted(
    AstraError, code="DESK_HALTED", status=503,
    message="the OTC desk is halted (kill switch): no quotes, no accepts",
):
    pass
