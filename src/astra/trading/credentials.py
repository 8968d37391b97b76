"""Exchange credentials: the user's own keys on a venue, for the private API.

Two sources, per request (``resolve_credentials``), first found wins:

1. request headers, used for that request only and never stored::

       x-astra-exchange-key          API key            (ccxt ``apiKey``)
       x-astra-exchange-secret       API secret         (ccxt ``secret``)
       x-astra-exchange-passphrase   OKX/KuCoin only    (ccxt ``password``)
       x-astra-exchange-private-key  wallet-signed venues (Aster v3, SIM): the signer's key
       x-astra-exchange-account      with a private key: the account (main wallet) address

2. the server-side ``CredentialStore`` (``astra credentials set``), per Astra API key and
   exchange, encrypted at rest.

What each venue needs is ``required_for(exchange)``: BINANCE, COINBASE, KRAKEN, HUOBI key +
secret; OKX, KUCOIN key + secret + passphrase; ASTER and SIM key + secret (v1, HMAC) or a
private key, optionally with the account address (v3, EIP-712). A header the venue never uses
is rejected rather than ignored, so a client's mistake is reported, not carried around.

Invariants:
- No credential value ever appears in a ``repr``/``str``/f-string of ``ExchangeCredentials``
  (they show the exchange and a short hint of the public key or address), nor in the message
  of any error raised here: messages name headers or fields, never values.
- ``ExchangeCredentials`` cannot be pickled (it would write secrets out in plain text: a
  process pool, a cache, a task queue); ``copy``/``deepcopy`` return the same immutable object.
- While a ``redacting(creds)`` block is active, the ``SecretRedactor`` installed with
  ``install_redactor()`` replaces its values by ``[REDACTED]`` in every log record: message,
  arguments, ``extra`` strings, stack and exception text (so a traceback of a venue error that
  echoes the key is scrubbed too).

Errors (``astra.core``): ``UnknownExchange`` (400); ``MissingCredentials``
(``EXCHANGE_CREDENTIALS_REQUIRED``, 401) when none were given or a required part is missing;
``InvalidCredentials`` (``INVALID_EXCHANGE_CREDENTIALS``, 401) when a value is malformed, a
header is unknown, repeated, or not used by the venue. ``parameter`` names the header (or the
field, for objects built in code); ``venue`` is the exchange.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol
from urllib.parse import quote, quote_plus

from astra.core import Exchange, InvalidCredentials, MissingCredentials, UnknownExchange

__all__ = [
    "FIELDS",
    "HEADERS",
    "HEADER_PREFIX",
    "REDACTED",
    "REDACTOR",
    "CredentialSource",
    "ExchangeCredentials",
    "SecretRedactor",
    "allowed_for",
    "credentials_from_headers",
    "install_redactor",
    "key_hint",
    "redacting",
    "required_for",
    "resolve_credentials",
]

FIELDS = ("api_key", "secret", "passphrase", "private_key", "account")
HEADER_PREFIX = "x-astra-exchange-"
HEADERS: Mapping[str, str] = {
    "api_key": "x-astra-exchange-key",
    "secret": "x-astra-exchange-secret",
    "passphrase": "x-astra-exchange-passphrase",
    "private_key": "x-astra-exchange-private-key",
    "account": "x-astra-exchange-account",
}
_FIELD_BY_HEADER = {h: f for f, h in HEADERS.items()}
_FIELD_NAMES: Mapping[str, str] = {f: f for f in FIELDS}

_KEY_SECRET = frozenset({"api_key", "secret"})
_KEY_SECRET_PASSPHRASE = _KEY_SECRET | {"passphrase"}
_WALLET = frozenset({"private_key"})
_RULES: Mapping[Exchange, tuple[frozenset[str], ...]] = {
    Exchange.BINANCE: (_KEY_SECRET,),
    Exchange.COINBASE: (_KEY_SECRET,),
    Exchange.OKX: (_KEY_SECRET_PASSPHRASE,),
    Exchange.HUOBI: (_KEY_SECRET,),
    Exchange.KUCOIN: (_KEY_SECRET_PASSPHRASE,),
    Exchange.KRAKEN: (_KEY_SECRET,),
    Exchange.ASTER: (_KEY_SECRET, _WALLET),
    Exchange.SIM: (_KEY_SECRET, _WALLET),
}
_ALLOWED: Mapping[Exchange, frozenset[str]] = {
    ex: frozenset().union(*alts) | ({"account"} if _WALLET in alts else frozenset())
    for ex, alts in _RULES.items()
}

# Formats. Bounds are generous (a Coinbase CDP secret is a ~230-char PEM) but finite.
_MAX_LEN = {"api_key": 512, "secret": 4096, "passphrase": 256}
_VISIBLE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space
_PRINTABLE = re.compile(r"[\x20-\x7e]+")  # printable ASCII and space
_PEM = re.compile(r"[\x20-\x7e\n]+")  # a PEM secret keeps its line breaks
_PRIVATE_KEY = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _exchange(exchange: Exchange | str) -> Exchange:
    try:
        return Exchange(exchange)
    except ValueError:
        raise UnknownExchange(str(exchange)[:32]) from None


def required_for(exchange: Exchange | str) -> tuple[frozenset[str], ...]:
    """The alternative field sets that make usable credentials on ``exchange``; any one does.

    ``required_for("OKX") == (frozenset({"api_key", "secret", "passphrase"}),)``;
    ASTER and SIM have two: ``{"api_key", "secret"}`` (v1) and ``{"private_key"}`` (v3).
    """
    return _RULES[_exchange(exchange)]


def allowed_for(exchange: Exchange | str) -> frozenset[str]:
    """Every field ``exchange`` can use (``account`` only on wallet-signed venues)."""
    return _ALLOWED[_exchange(exchange)]


def key_hint(value: str | None) -> str:
    """A short, non-secret reminder of a public key or address: ``abcd…wxyz``.

    At most a quarter of the value is shown on each side (up to 4 characters, after ``0x``).
    """
    if not value:
        return ""
    prefix = "0x" if value.startswith("0x") else ""
    body = value[len(prefix) :]
    n = min(4, len(body) // 4)
    return f"{prefix}{body[:n]}…{body[-n:]}" if n else "…"


def _normalize(values: Mapping[str, object]) -> dict[str, Any]:
    """Strip surrounding whitespace; an empty value counts as absent. Non-strings are kept for
    ``_validate`` to reject."""
    out: dict[str, Any] = {}
    for f in FIELDS:
        v = values.get(f)
        if isinstance(v, str):
            v = v.strip() or None
            # A PEM secret cannot travel in a header with its line breaks; accept them escaped.
            if (
                f == "secret"
                and v is not None
                and v.startswith("-----BEGIN")
                and "\\n" in v
                and "\n" not in v
            ):
                v = v.replace("\\n", "\n")
        out[f] = v
    return out


def _invalid(exchange: Exchange, name: str, reason: str, *, what: str | None = None) -> NoReturn:
    raise InvalidCredentials(
        f"{exchange} credentials: {what or name} {reason}", parameter=name, venue=exchange
    )


def _check_format(exchange: Exchange, field: str, value: object, name: str) -> None:
    if not isinstance(value, str):
        _invalid(exchange, name, "must be a string")
    if field == "private_key":
        m = _PRIVATE_KEY.fullmatch(value)
        if m is None:
            _invalid(
                exchange, name, "must be 32 bytes in hex (64 hex digits, optionally 0x-prefixed)"
            )
        if not 0 < int(m[1], 16) < _SECP256K1_N:
            _invalid(exchange, name, "is not a valid secp256k1 private key")
        return
    if field == "account":
        if _ADDRESS.fullmatch(value) is None:
            _invalid(exchange, name, "must be an address: 0x and 40 hex digits")
        return
    if len(value) > _MAX_LEN[field]:
        _invalid(exchange, name, f"is longer than {_MAX_LEN[field]} characters")
    charset = {"api_key": _VISIBLE, "passphrase": _PRINTABLE}.get(field, _PEM)
    if charset.fullmatch(value) is None:
        what = "without spaces" if field == "api_key" else "(no control characters)"
        _invalid(exchange, name, f"must be printable ASCII {what}")


def _describe(alt: frozenset[str], names: Mapping[str, str]) -> str:
    parts = [names[f] for f in FIELDS if f in alt]
    text = " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
    return text + (f" (optionally with {names['account']})" if alt == _WALLET else "")


def _needs(exchange: Exchange, names: Mapping[str, str]) -> str:
    alts = _RULES[exchange]
    if len(alts) == 1:
        return _describe(alts[0], names)
    return "either " + ", or ".join(_describe(alt, names) for alt in alts)


def _validate(exchange: Exchange, values: Mapping[str, Any], names: Mapping[str, str]) -> None:
    present = {f for f in FIELDS if values.get(f) is not None}
    allowed = _ALLOWED[exchange]
    for f in FIELDS:
        if f in present and f not in allowed:
            _invalid(exchange, names[f], "is not used by this exchange")
    for f in FIELDS:
        if f in present:
            _check_format(exchange, f, values[f], names[f])
    alts = _RULES[exchange]
    if not any(alt <= present for alt in alts):
        # The alternative the client was closest to (an account hints at the wallet one).
        hinted = present | (_WALLET if "account" in present else frozenset())
        best = max(alts, key=lambda alt: len(alt & hinted))
        missing = [f for f in FIELDS if f in best - present]
        raise MissingCredentials(
            f"incomplete {exchange} credentials: missing {', '.join(names[f] for f in missing)}"
            f" ({exchange} needs {_needs(exchange, names)})",
            parameter=names[missing[0]],
            venue=exchange,
        )
    if "account" in present and "private_key" not in present:
        _invalid(exchange, names["account"], f"is only used with {names['private_key']}")


@dataclass(frozen=True, slots=True, repr=False)
class ExchangeCredentials:
    """One user's credentials on one exchange; validated and normalized on construction.

    Raises ``UnknownExchange``, ``MissingCredentials`` or ``InvalidCredentials`` (messages
    name fields, never values). Values are stripped; empty strings count as absent.
    """

    exchange: Exchange
    api_key: str | None = None
    secret: str | None = None
    passphrase: str | None = None
    private_key: str | None = None
    account: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "exchange", _exchange(self.exchange))
        values = _normalize({f: getattr(self, f) for f in FIELDS})
        _validate(self.exchange, values, _FIELD_NAMES)
        for f, v in values.items():
            object.__setattr__(self, f, v)

    # --- never shown, never serialized ---------------------------------------------------

    @property
    def hint(self) -> str:
        """A public reminder of which credentials these are: the API key's or account's
        hint, or ``"private key"`` for a bare wallet key (deriving its address costs ~1 ms)."""
        if self.api_key:
            return key_hint(self.api_key)
        if self.account:
            return key_hint(self.account)
        return "private key"

    def __repr__(self) -> str:
        return f"ExchangeCredentials(exchange={self.exchange.value!r}, key={self.hint!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # Pickling would write every secret in plain text to wherever the bytes go (a process
        # pool, a cache, a queue). Credentials are per process by design: refuse loudly.
        raise TypeError("ExchangeCredentials cannot be pickled: secrets must not leave memory")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        self.__reduce__()

    def __copy__(self) -> ExchangeCredentials:
        return self  # immutable: sharing is a copy

    def __deepcopy__(self, memo: dict) -> ExchangeCredentials:
        return self

    # --- use ---------------------------------------------------------------------------

    @property
    def signer_address(self) -> str | None:
        """The lowercase address of ``private_key`` (the v3 signer), or None without one."""
        if self.private_key is None:
            return None
        from eth_account import Account  # ~1 ms per call; only wallet venues pay it

        return Account.from_key(self.private_key).address.lower()

    def secret_values(self) -> tuple[str, ...]:
        """Every value that must never be shown: for ``SecretRedactor`` (the account address
        is public and not included)."""
        return tuple(v for f in FIELDS[:4] if (v := getattr(self, f)) is not None)

    def ccxt_config(self) -> dict[str, Any]:
        """The credential part of a ccxt exchange config (merge it into the venue's config).

        ``apiKey``/``secret``/``password`` (the passphrase) as ccxt names them. With a private
        key (Aster v3 EIP-712, which ccxt's ``aster`` signs): ``privateKey``, ``walletAddress``
        and ``options``. ccxt's ``aster.sign`` sends ``user`` = the address of the key it holds
        and ``signer`` = ``options.signerAddress``; when an ``account`` (main wallet) is given
        and differs from the signer (an API wallet), ccxt's cached wallet address is seeded
        with it (``options.cachedWalletAddress`` plus the keccak of the private key that ccxt
        checks the cache against), so requests carry ``user=account, signer=<key's address>``.
        Tests check this against ccxt's own ``sign``. Note that ccxt's ``aster`` signs only v3
        (since 4.5.52): key + secret on ASTER/SIM need a v1 (HMAC, Binance-style) client.

        The returned dict's ``repr`` hides the values; do not log its items.
        """
        config = _HiddenDict()
        if self.api_key is not None:
            config["apiKey"] = self.api_key
        if self.secret is not None:
            config["secret"] = self.secret
        if self.passphrase is not None:
            config["password"] = self.passphrase
        if self.private_key is not None:
            from eth_utils import keccak

            signer = self.signer_address
            assert signer is not None
            user = (self.account or signer).lower()
            options: dict[str, Any] = {"signerAddress": signer}
            if user != signer:
                options["cachedWalletAddress"] = user
                options["privateKeyHashForCachedWalletAddress"] = keccak(
                    text=self.private_key
                ).hex()
            config["privateKey"] = self.private_key
            config["walletAddress"] = user
            config["options"] = options
        return config


class _HiddenDict(dict):
    """A plain dict (ccxt copies it) whose repr shows keys only."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: <hidden>" for k in self) + "}"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("credential configs cannot be pickled")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        self.__reduce__()


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
    ex = _exchange(exchange)
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
            _invalid(ex, name, "was sent more than once")
        found[field] = value
    values = _normalize(found)
    if all(v is None for v in values.values()):
        return None
    _validate(ex, values, HEADERS)
    return ExchangeCredentials(ex, **values)


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
    ex = _exchange(exchange)
    if store is not None and key_id is not None:
        creds = store.get(key_id, ex)
        if creds is not None:
            return creds
    stored = "; none are stored on the server for this API key" if store is not None else ""
    raise MissingCredentials(
        f"{ex} requires exchange credentials: send the headers {_needs(ex, HEADERS)}{stored}",
        venue=ex,
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
    m = _PRIVATE_KEY.fullmatch(value)
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
