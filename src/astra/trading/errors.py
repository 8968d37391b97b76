"""Venue failures on the private (trading) API, mapped to Astra's error set.

``map_venue_error(exc, venue, sent=...)`` turns what ccxt (or aiohttp/asyncio underneath it)
raised into one ``AstraError`` that carries ``venue`` and, when the venue gave one,
``venue_code`` (its own code, parsed from the JSON body that ccxt puts in its messages,
e.g. ``aster {"code":-2018,"msg":"Balance is insufficient."}``):

==================================  ======  ==================================================
code                                status  from
==================================  ======  ==================================================
``INSUFFICIENT_BALANCE``            422     InsufficientFunds
``INVALID_ORDER``                   422     InvalidOrder (OrderNotFillable,
                                            OrderImmediatelyFillable, ...), BadRequest,
                                            ArgumentsRequired, OperationRejected,
                                            NotSupported; Kraken ``EOrder:*`` that ccxt
                                            leaves generic; Binance-style -2025/-4045 (max
                                            open orders: a count, not a rate)
``ORDER_NOT_FOUND``                 404     OrderNotFound, OrderNotCached; Kraken
                                            ``EOrder:Unknown order``; Coinbase ``NOT_FOUND``
                                            (``order=True``)
``DUPLICATE_ORDER``                 409     DuplicateOrderId; Binance-style "Duplicate order
                                            sent.", OKX 51016 (ccxt: InvalidOrder)
``RATE_LIMITED``                    429     RateLimitExceeded, DDoSProtection
                                            (``retry_after`` always set)
``INVALID_EXCHANGE_CREDENTIALS``    401     AuthenticationError
``EXCHANGE_CREDENTIALS_FORBIDDEN``  403     PermissionDenied, AccountSuspended,
                                            RestrictedLocation
``VENUE_UNAVAILABLE``               503     ExchangeNotAvailable, OnMaintenance,
                                            NetworkError, aiohttp.ClientError, OSError
``VENUE_TIMEOUT``                   504     RequestTimeout, asyncio/builtin TimeoutError
``ORDER_STATUS_UNKNOWN``            202     with ``sent=True``: anything that is not a
                                            definite answer from the venue (see below)
``VENUE_ERROR``                     502     anything else (ExchangeError, InvalidNonce,
                                            an HTTP 4xx ccxt did not classify, ...)
==================================  ======  ==================================================

Invariants:
- ``sent=True`` means "an order request that may have left": then a timeout, a dropped
  connection, an HTTP 5xx, a venue's own "internal error / busy / timed out" code (what ccxt
  classes as RequestTimeout or ExchangeNotAvailable, e.g. OKX 50004, Binance -1007, Kraken
  ``EService:Unavailable``), an unparsable answer or any unexpected exception is
  ``ORDER_STATUS_UNKNOWN``, never a failure, because the order may exist. Only a definite
  refusal (the venue's error code for a refused request, an HTTP 4xx, a rate limit,
  maintenance) or a failure known to precede sending (DNS, connection refused, connect
  timeout) is reported as a failure.
- A message names the venue and quotes at most ``MAX_MESSAGE`` characters of the venue's own
  error text (else it is a fixed sentence); it never quotes a credential or a signature: the
  text goes through ``REDACTOR.scrub``, loses every URL query string and every
  ``signature=``/``apiKey=``/``X-MBX-APIKEY:``-like pair, and a ccxt message that carries a
  URL (ccxt's network and HTTP-status errors quote the full signed URL) is never quoted.
- Callers raise the result ``from None`` (or log the original at DEBUG only): the original
  exception's text may hold a signed URL.
"""

from __future__ import annotations

import re
import socket
from typing import Any

import aiohttp
from ccxt.base import errors as ccxt_errors

from astra.core import (
    AstraError,
    CredentialsForbidden,
    DuplicateOrder,
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
from astra.core._redact import URL, squeeze, without_url_queries
from astra.venues.venue_answers import (
    BINANCE_LIKE,
    COUNT_LIMITS,
    banned_until,
    http_status_of,
    json_in,
    venue_details,
)

from .credentials import REDACTED, REDACTOR

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "MAX_MESSAGE",
    "map_venue_error",
    "sanitize",
]

MAX_MESSAGE = 200
DEFAULT_RETRY_AFTER = 1.0  # seconds, for a rate limit that said nothing about how long

# --- sanitizing -------------------------------------------------------------------------------

_SENSITIVE = (
    r"signature|sign|sig|api[-_]?key|apikey|x-mbx-apikey|secret|passphrase|password|token"
    r"|private[-_]?key|access[-_]?key|(?:ok|cb|kc)-access-(?:key|sign|passphrase)"
    r"|kc-api-(?:key|sign|passphrase)|api-sign|authorization"
)
_PAIR = re.compile(rf"\b({_SENSITIVE})(\s*[=:]\s*|\"\s*:\s*\"?)[^\s&,;\"'}}]+", re.IGNORECASE)


def sanitize(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` made safe to show: registered secrets scrubbed, URL query strings dropped,
    sensitive ``name=value``/``Name: value`` pairs redacted, whitespace collapsed, cut to
    ``limit`` characters."""
    text = without_url_queries(REDACTOR.scrub(str(text)))
    text = _PAIR.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    return squeeze(text, limit)


# ccxt prefixes its messages with the exchange id ("aster {...}").
_CCXT_ID = re.compile(r"^[a-z][a-z0-9]* ")


# --- mapping ----------------------------------------------------------------------------------

# Venue answers ccxt leaves generic (or maps elsewhere) that have a precise meaning here:
# (venue, venue_code or venue message) -> class.
_REFINE: dict[tuple[str, str], type[AstraError]] = {
    **{(v, "Duplicate order sent."): DuplicateOrder for v in BINANCE_LIKE},
    # -2025 / -4045 "max open (stop) orders": ccxt says RateLimitExceeded, but waiting
    # does not help; the order is refused until others are closed.
    **dict.fromkeys(COUNT_LIMITS, InvalidOrder),
    ("OKX", "51016"): DuplicateOrder,  # "Duplicated clOrdId"
    ("KRAKEN", "EOrder:Unknown order"): OrderNotFound,
}
_ORDER_ONLY_REFINE: dict[tuple[str, str], type[AstraError]] = {
    ("COINBASE", "NOT_FOUND"): OrderNotFound,  # on an order's endpoint, the order
}

# Failures known to happen before any byte of the request left.
_NOT_SENT: tuple[type[BaseException], ...] = (
    socket.gaierror,
    aiohttp.ClientConnectorError,
    *((aiohttp.ConnectionTimeoutError,) if hasattr(aiohttp, "ConnectionTimeoutError") else ()),
)


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(seen) < 8 and all(e is not s for s in seen):
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def _venue_text(exc: BaseException, venue_message: str | None) -> str | None:
    """What the venue said, safe to show; or None."""
    if venue_message:
        return sanitize(venue_message)
    if not isinstance(exc, ccxt_errors.BaseError):
        return None
    text = str(exc)
    # ccxt's network and HTTP-status messages quote the signed URL: never quoted at all.
    if URL.search(text) or http_status_of(exc) is not None or json_in(text) is not None:
        return None
    text = _CCXT_ID.sub("", text, count=1)
    return sanitize(text) or None


def map_venue_error(
    exc: BaseException,
    venue: str,
    *,
    sent: bool,
    order: bool = True,
    retry_after: float | None = None,
) -> AstraError:
    """The ``AstraError`` to report for ``exc``, raised by a call to ``venue``.

    ``sent``: the call was an order request (place/cancel/amend) that may have reached the
    venue; an indefinite failure is then ``OrderStatusUnknown`` (202), never a failure.
    ``order``: the call concerned an order (default), so a bad request is ``INVALID_ORDER``;
    with ``order=False`` it is a ``VENUE_ERROR`` (the gateway sent something the venue did not
    accept). ``retry_after``: the rate limiter's wait for a rate limit (``VenueLimiter.
    retry_after()``); without one, a Binance-style ban's end or ``DEFAULT_RETRY_AFTER``.
    An ``AstraError`` is returned as it is (with ``venue`` filled in when missing).
    """
    venue = str(venue)
    vkey = venue.upper()
    if isinstance(exc, AstraError):
        if exc.venue is None:
            exc.venue = venue
        return exc

    code, venue_message = venue_details(exc, venue)
    text = _venue_text(exc, venue_message)

    def make(cls: type[AstraError], default: str, **extra: Any) -> AstraError:
        message = f"{venue}: {text}" if text and cls is not OrderStatusUnknown else default
        if issubclass(cls, VenueError):
            return cls(venue, message, venue_code=code, **extra)
        return cls(message, venue=venue, venue_code=code, **extra)

    def unknown(why: str) -> AstraError:
        return make(
            OrderStatusUnknown,
            f"venue {venue} did not confirm the order ({why}): its status is unknown until "
            "reconciled",
        )

    refined = None
    for key in (code, venue_message):
        if key is not None:
            refined = _REFINE.get((vkey, key)) or (
                _ORDER_ONLY_REFINE.get((vkey, key)) if order else None
            )
            if refined is not None:
                break
    if refined is not None and isinstance(exc, ccxt_errors.BaseError):
        return make(refined, f"venue {venue}: {refined.default_message}")

    E = ccxt_errors
    if isinstance(exc, E.OrderNotFound | E.OrderNotCached):
        return make(OrderNotFound, f"venue {venue}: order not found")
    if isinstance(exc, E.DuplicateOrderId):
        return make(DuplicateOrder, f"venue {venue}: duplicate client order id")
    if isinstance(exc, E.InsufficientFunds):
        return make(InsufficientBalance, f"venue {venue}: insufficient balance")
    if isinstance(exc, E.InvalidOrder):
        return make(InvalidOrder, f"venue {venue} refused the order")
    if isinstance(exc, E.RestrictedLocation | E.PermissionDenied | E.AccountSuspended):
        return make(
            CredentialsForbidden,
            f"venue {venue}: the exchange credentials are not permitted to do this",
        )
    if isinstance(exc, E.AuthenticationError):
        return make(InvalidCredentials, f"venue {venue} rejected the exchange credentials")
    if isinstance(exc, E.BadRequest | E.ArgumentsRequired | E.OperationRejected | E.NotSupported):
        if order:
            return make(InvalidOrder, f"venue {venue} refused the order")
        return make(VenueError, f"venue {venue} rejected the request")
    if isinstance(exc, E.RateLimitExceeded | E.DDoSProtection):
        wait = retry_after
        if wait is None:
            wait = banned_until(str(exc)) or None  # one already over says nothing
        return make(
            RateLimited,
            f"venue {venue}: rate limit exceeded",
            retry_after=DEFAULT_RETRY_AFTER if wait is None else wait,
        )
    if isinstance(exc, E.OnMaintenance):  # a definite answer: nothing was done
        return make(VenueUnavailable, f"venue {venue} is under maintenance")
    if isinstance(exc, E.InvalidNonce):  # a definite refusal (timestamp/nonce out of window)
        return make(VenueError, f"venue {venue} rejected the request's timestamp or nonce")

    causes = _causes(exc)
    status = http_status_of(exc) if isinstance(exc, E.BaseError) else None
    definite = (status is not None and status < 500) or any(
        isinstance(e, _NOT_SENT) for e in causes
    )
    maybe_sent = sent and not definite
    # ccxt wraps an aiohttp.ClientError it does not know (e.g. a payload error mid-answer)
    # in a bare ExchangeError: a network failure all the same.
    network = isinstance(exc, E.NetworkError | aiohttp.ClientError | OSError) or any(
        isinstance(e, aiohttp.ClientError | OSError) for e in causes[1:]
    )

    if isinstance(exc, E.RequestTimeout | TimeoutError) or (
        network and any(isinstance(e, TimeoutError) for e in causes)
    ):
        if maybe_sent:
            return unknown("timed out")
        return make(VenueTimeout, f"venue {venue} timed out")
    if network:
        if maybe_sent:
            return unknown("no definite answer")
        if status is not None and status < 500:
            return make(VenueError, f"venue {venue} answered HTTP {status}")
        suffix = f" (HTTP {status})" if status is not None else ""
        return make(VenueUnavailable, f"venue {venue} is unavailable{suffix}")
    if isinstance(exc, E.ExchangeError):
        # The venue answered with an error ccxt could not classify: definite.
        if order and vkey == "KRAKEN" and code is not None and code.startswith("EOrder:"):
            return make(InvalidOrder, f"venue {venue} refused the order")
        return make(VenueError, f"venue {venue} rejected the request")
    if maybe_sent:
        # No usable answer (unparsable response, cancelled send, a crash parsing a
        # response): the order may exist.
        return unknown("no usable answer")
    return make(VenueError, f"venue {venue} failed the request")
