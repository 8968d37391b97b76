"""Exchange credentials for the private API: where a request's come from, and log redaction.

The model (``ExchangeCredentials``, what each venue needs, validation) is
``astra.core.credentials``. Two sources, per request (``resolve_credentials``), first found
wins:

1. request headers, used for that request only and never stored::

       x-astra-exchange-key          API key            (ccxt ``apiKey``)
       x-astra-exchange-secret       API secret         (ccxt ``secret``)
       x-astra-exchange-passphrase   OKX/KuCoin only    (ccxt ``password``)
       x-astra-exchange-private-key  wallet-signed venues (Aster v3, SIM): the signer's key
       x-astra-exchange-account      with a private key: the account (main wallet) address

2. the server-side ``CredentialStore`` (``astra credentials set``), per Astra API key and
   exchange, encrypted at rest.

Invariants:
- No error raised here holds a credential value: messages name headers, never values.
- While a ``redacting(creds)`` block is active, the ``SecretRedactor`` installed with
  ``install_redactor()`` replaces its values by ``[REDACTED]`` in every log record: message,
  arguments, ``extra`` strings, stack and exception text (so a traceback of a venue error that
  echoes the key is scrubbed too).

Errors (``astra.core``): ``UnknownExchange`` (400); ``MissingCredentials``
(``EXCHANGE_CREDENTIALS_REQUIRED``, 401) when none were given or a required part is missing;
``InvalidCredentials`` (``INVALID_EXCHANGE_CREDENTIALS``, 401) when a value is malformed, a
header is unknown, repeated, or not used by the venue. ``parameter`` names the header;
``venue`` is the exchange.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NoReturn, Protocol
from urllib.parse import quote, quote_plus

from astra.core import Exchange, InvalidCredentials, MissingCredentials
from astra.core.credentials import (
    PRIVATE_KEY_PATTERN,
    ExchangeCredentials,
    describe_required,
    exchange_of,
)

__all__ = [
    "HEADERS",
    "HEADER_PREFIX",
    "REDACTED",
    "REDACTOR",
    "CredentialSource",
    "SecretRedactor",
    "credentials_from_headers",
    "install_redactor",
    "redacting",
    "resolve_credentials",
]

HEADER_PREFIX = "x-astra-exchange-"
HEADERS: Mapping[str, str] = {
    "api_key": "x-astra-exchange-key",
    "secret": "x-astra-exchange-secret",
    "passphrase": "x-astra-exchange-passphrase",
    "private_key": "x-astra-exchange-private-key",
    "account": "x-astra-exchange-account",
}
_FIELD_BY_HEADER = {h: f for f, h in HEADERS.items()}
# Header values -> their checked ExchangeCredentials (immutable): validating a wallet key
# costs more than the rest of a request's header handling. Bounded; the values are in memory
# anyway while the ccxt client built for them is cached (``clients.py``).
_CHECKED: dict[tuple, ExchangeCredentials] = {}
_CHECKED_MAX = 256


def _invalid(exchange: Exchange, name: str, reason: str, *, what: str) -> NoReturn:
    raise InvalidCredentials(
        f"{exchange} credentials: {what} {reason}", parameter=name, venue=exchange
    )


def _header_name(name: str) -> str:
    """A header name safe to quote back (it is the client's text, not a credential)."""
    return (
        name
        if re.fullmatch(r"[a-z0-9-]{1,64}", name)
        else name[:64].encode("unicode_escape").decode()
    )


def credentials_from_headers(
    headers: Mapping[str, str], exchange: Exchange | str
) -> ExchangeCredentials | None:
    """The credentials in ``x-astra-exchange-*`` headers (names case-insensitive), or None
    when there are none (no such header, or all empty).

    Raises ``UnknownExchange`` for an unknown ``exchange``; ``InvalidCredentials`` for an
    unknown ``x-astra-exchange-*`` header, one sent twice, one the venue does not use, or a
    malformed value; ``MissingCredentials`` when a required one is missing.
    """
    ex = exchange_of(exchange)
    found: dict[str, str] = {}
    for raw_name, value in headers.items():
        name = raw_name.lower()
        if not name.startswith(HEADER_PREFIX):
            continue
        field = _FIELD_BY_HEADER.get(name)
        if field is None:
            known = ", ".join(HEADERS.values())
            safe = _header_name(name)
            _invalid(ex, safe, f"is unknown: expected one of {known}", what=f"header '{safe}'")
        if field in found:
            _invalid(ex, name, "was sent more than once", what=name)
        found[field] = value
    if found:
        # Valid (nearly always): checked once, by the constructor, and remembered for the
        # same headers (the same client's next order). Otherwise ``from_fields`` says why,
        # naming the headers (or answers None: every value empty).
        key = (ex, *sorted(found.items()))
        creds = _CHECKED.get(key)
        if creds is not None:
            return creds
        try:
            creds = ExchangeCredentials(ex, **found)
        except (InvalidCredentials, MissingCredentials):
            pass
        else:
            if len(_CHECKED) >= _CHECKED_MAX:
                _CHECKED.clear()
            _CHECKED[key] = creds
            return creds
    return ExchangeCredentials.from_fields(ex, found, HEADERS)


class CredentialSource(Protocol):
    """Where stored credentials come from (``astra.store.CredentialStore``)."""

    def get(self, key_id: str, exchange: Exchange | str) -> ExchangeCredentials | None: ...


def resolve_credentials(
    headers: Mapping[str, str],
    exchange: Exchange | str,
    *,
    key_id: str | None = None,
    store: CredentialSource | None = None,
) -> ExchangeCredentials:
    """The request's credentials for ``exchange``: its headers, else ``store``'s for the
    Astra API key ``key_id``; raises ``MissingCredentials`` when neither has any (plus what
    ``credentials_from_headers`` raises; a store may raise on a wrong master key)."""
    creds = credentials_from_headers(headers, exchange)
    if creds is not None:
        return creds
    ex = exchange_of(exchange)
    if store is not None and key_id is not None:
        creds = store.get(key_id, ex)
        if creds is not None:
            return creds
    stored = "; none are stored on the server for this API key" if store is not None else ""
    needs = describe_required(ex, HEADERS)
    raise MissingCredentials(
        f"{ex} requires exchange credentials: send the headers {needs}{stored}", venue=ex
    )


# --- log redaction ---------------------------------------------------------------------------

REDACTED = "[REDACTED]"
# LogRecord attributes that are not `extra`: everything else that is a string gets scrubbed.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _variants(value: str) -> set[str]:
    """The forms a value takes when echoed: as is, escaped in a repr or JSON, URL-encoded,
    each line of a multi-line (PEM) secret, and a hex key without its 0x / in lower case."""
    out = {
        value,
        repr(value)[1:-1],
        json.dumps(value)[1:-1],
        quote(value, safe=""),
        quote_plus(value),
    }
    out.update(line.strip() for line in value.splitlines())
    m = PRIVATE_KEY_PATTERN.fullmatch(value)
    if m is not None:
        out.update({m[1], m[1].lower(), "0x" + m[1].lower()})
    return out


class SecretRedactor(logging.Filter):
    """A logging filter that replaces registered secret values by ``[REDACTED]``.

    Values are registered for a scope (``with redactor.redacting(creds):``), reference
    counted (two requests with the same key do not unregister each other), and apply to
    records from every thread and task while registered: a secret scrubbed from another
    request's logs is harmless, one missed is not. Values shorter than ``min_length`` are not
    registered: scrubbing a short string everywhere would mangle logs and, by where it
    redacts, reveal the value.

    ``filter`` always returns True (it never drops a record). A record is rewritten only when
    it contains a secret: its message is then formatted (``args`` cleared), and a traceback
    becomes its scrubbed text in ``exc_text`` with ``exc_info`` cleared (so no handler can
    format the original exception again).
    """

    def __init__(self, *, min_length: int = 6, replacement: str = REDACTED) -> None:
        super().__init__()
        self.min_length = min_length
        self.replacement = replacement
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._pattern: re.Pattern[str] | None = None
        self._dirty = False
        self._factory: _RecordFactory | None = None

    def __repr__(self) -> str:
        return f"SecretRedactor({len(self._counts)} values registered)"

    # --- registration ------------------------------------------------------------------

    def _expand(self, items: Iterable[ExchangeCredentials | str | None]) -> list[str]:
        values: set[str] = set()
        for item in items:
            raw = item.secret_values() if isinstance(item, ExchangeCredentials) else (item,)
            for v in raw:
                if isinstance(v, str):
                    values.update(x for x in _variants(v) if len(x) >= self.min_length)
        return sorted(values)

    def register(self, *items: ExchangeCredentials | str | None) -> list[str]:
        """Start redacting these credentials' secrets (or these strings); returns the exact
        values registered, to give back to ``unregister``."""
        values = self._expand(items)
        with self._lock:
            for v in values:
                self._counts[v] = self._counts.get(v, 0) + 1
            self._dirty = self._dirty or bool(values)
        return values

    def unregister(self, values: Iterable[str]) -> None:
        with self._lock:
            for v in values:
                n = self._counts.get(v, 0) - 1
                if n > 0:
                    self._counts[v] = n
                else:
                    self._counts.pop(v, None)
                    self._dirty = True

    @contextmanager
    def redacting(self, *items: ExchangeCredentials | str | None) -> Iterator[None]:
        """Redact these secrets from logs for the duration of the block."""
        values = self.register(*items)
        try:
            yield
        finally:
            self.unregister(values)

    def _current(self) -> re.Pattern[str] | None:
        if self._dirty:  # compiled lazily: requests register far more often than they log
            with self._lock:
                if self._dirty:
                    keys = sorted(self._counts, key=len, reverse=True)  # longest match first
                    self._pattern = re.compile("|".join(map(re.escape, keys))) if keys else None
                    self._dirty = False
        return self._pattern

    def scrub(self, text: str) -> str:
        """``text`` with every registered value replaced."""
        pattern = self._current()
        return text if pattern is None else pattern.sub(self.replacement, text)

    # --- logging.Filter ----------------------------------------------------------------

    def filter(self, record: logging.LogRecord) -> bool:
        pattern = self._current()
        if pattern is None:
            return True
        sub = self.replacement
        try:
            message = record.getMessage()
        except Exception:  # bad format arguments: keep what there is, scrubbed
            message = f"{record.msg!s} {record.args!r}"
            record.msg, record.args = message, ()
        scrubbed = pattern.sub(sub, message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            scrubbed = pattern.sub(sub, text)
            if scrubbed != text:
                record.exc_text, record.exc_info = scrubbed, None
        elif record.exc_text:
            record.exc_text = pattern.sub(sub, record.exc_text)
        if record.stack_info:
            record.stack_info = pattern.sub(sub, record.stack_info)
        for k, v in record.__dict__.items():
            if k not in _RECORD_ATTRS and isinstance(v, str):
                record.__dict__[k] = pattern.sub(sub, v)
        return True

    # --- installation ------------------------------------------------------------------

    def install(self, logger: logging.Logger | None = None) -> None:
        """Scrub every record logged anywhere (idempotent).

        A filter on a logger does not see records propagated from its children, so this adds
        the filter to ``logger`` (default the root) and its current handlers, and wraps the
        log record factory, which every logger calls: handlers added later are covered too.
        The handler filter also catches ``extra`` values, which are set after the factory.
        """
        logger = logger or logging.getLogger()
        for target in (logger, *logger.handlers):
            if self not in target.filters:
                target.addFilter(self)
        if self._factory is None:
            self._factory = _RecordFactory(logging.getLogRecordFactory(), self)
            logging.setLogRecordFactory(self._factory)

    def uninstall(self, logger: logging.Logger | None = None) -> None:
        """Undo ``install`` (the factory is restored, or made a pass-through if another
        factory was installed on top of it since)."""
        logger = logger or logging.getLogger()
        for target in (logger, *logger.handlers):
            target.removeFilter(self)
        factory, self._factory = self._factory, None
        if factory is not None:
            factory.redactor = None
            if logging.getLogRecordFactory() is factory:
                logging.setLogRecordFactory(factory.previous)


class _RecordFactory:
    def __init__(self, previous: Any, redactor: SecretRedactor) -> None:
        self.previous = previous
        self.redactor: SecretRedactor | None = redactor

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        if self.redactor is not None:
            self.redactor.filter(record)
        return record


REDACTOR = SecretRedactor()


def install_redactor(logger: logging.Logger | None = None) -> SecretRedactor:
    """Install the process-wide ``REDACTOR`` (see ``SecretRedactor.install``); returns it."""
    REDACTOR.install(logger)
    return REDACTOR


def redacting(*items: ExchangeCredentials | str | None) -> AbstractContextManager[None]:
    """``with redacting(creds):`` scrubs ``creds``' secrets from logs via ``REDACTOR``."""
    return REDACTOR.redacting(*items)
