"""Exchange credentials: a user's own keys on one venue, validated, never shown.

The model every layer shares: the store encrypts it (``astra.store.credentials``), the trading
layer reads it from request headers (``astra.trading.credentials``) and builds venue clients
from its ``ccxt_config()``.

What each venue needs is ``required_for(exchange)``: BINANCE, COINBASE, KRAKEN, HUOBI key +
secret; OKX, KUCOIN key + secret + passphrase; ASTER and SIM key + secret (v1, HMAC) or a
private key, optionally with the account address (v3, EIP-712). A field the venue never uses
is rejected rather than ignored, so a client's mistake is reported, not carried around.

Invariants:
- No credential value ever appears in a ``repr``/``str``/f-string of ``ExchangeCredentials``
  (they show the exchange and a short hint of the public key or address), nor in the message
  of any error raised here: messages name fields (or the caller's names for them, e.g.
  headers), never values.
- ``ExchangeCredentials`` cannot be pickled (it would write secrets out in plain text: a
  process pool, a cache, a task queue); ``copy``/``deepcopy`` return the same immutable object.

Errors (``astra.core``): ``UnknownExchange`` (400); ``MissingCredentials``
(``EXCHANGE_CREDENTIALS_REQUIRED``, 401) when a required part is missing;
``InvalidCredentials`` (``INVALID_EXCHANGE_CREDENTIALS``, 401) when a value is malformed or
not used by the venue. ``parameter`` names the field (or the caller's name for it); ``venue``
is the exchange.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from ._errors import InvalidCredentials, MissingCredentials, UnknownExchange
from ._models import SIM_CODES, Exchange

__all__ = [
    "FIELDS",
    "PRIVATE_KEY_PATTERN",
    "ExchangeCredentials",
    "allowed_for",
    "describe_required",
    "exchange_of",
    "key_hint",
    "required_for",
]

FIELDS = ("api_key", "secret", "passphrase", "private_key", "account")
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
    **{Exchange(code): (_KEY_SECRET, _WALLET) for code in SIM_CODES},
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
PRIVATE_KEY_PATTERN = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def exchange_of(exchange: Exchange | str) -> Exchange:
    """``exchange`` as an ``Exchange``; ``UnknownExchange`` (400) when it is none."""
    try:
        found = Exchange(exchange)
    except ValueError:
        raise UnknownExchange(str(exchange)[:32]) from None
    if found is Exchange.SMART:  # the router: it trades with each member venue's credentials
        raise UnknownExchange(
            "SMART", "SMART has no credentials of its own: store them for each member venue")
    return found


def required_for(exchange: Exchange | str) -> tuple[frozenset[str], ...]:
    """The alternative field sets that make usable credentials on ``exchange``; any one does.

    ``required_for("OKX") == (frozenset({"api_key", "secret", "passphrase"}),)``;
    ASTER and SIM have two: ``{"api_key", "secret"}`` (v1) and ``{"private_key"}`` (v3).
    """
    return _RULES[exchange_of(exchange)]


def allowed_for(exchange: Exchange | str) -> frozenset[str]:
    """Every field ``exchange`` can use (``account`` only on wallet-signed venues)."""
    return _ALLOWED[exchange_of(exchange)]


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
        m = PRIVATE_KEY_PATTERN.fullmatch(value)
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


def describe_required(exchange: Exchange, names: Mapping[str, str] = _FIELD_NAMES) -> str:
    """What ``exchange`` needs, in words, naming each field by ``names`` (e.g. its header)."""
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
            f" ({exchange} needs {describe_required(exchange, names)})",
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
        object.__setattr__(self, "exchange", exchange_of(self.exchange))
        values = _normalize({f: getattr(self, f) for f in FIELDS})
        _validate(self.exchange, values, _FIELD_NAMES)
        for f, v in values.items():
            object.__setattr__(self, f, v)

    @classmethod
    def from_fields(
        cls, exchange: Exchange | str, values: Mapping[str, object],
        names: Mapping[str, str] = _FIELD_NAMES,
    ) -> ExchangeCredentials | None:
        """Credentials from ``values`` by field, or None when every value is absent or
        empty; errors name each field by ``names`` (e.g. the header it came in)."""
        ex = exchange_of(exchange)
        normalized = _normalize(values)
        if all(v is None for v in normalized.values()):
            return None
        _validate(ex, normalized, names)
        return cls(ex, **normalized)

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
        Tests check this against ccxt's own ``sign``. ccxt's ``aster`` signs only v3 (since
        4.5.52): a key + secret on ASTER/SIM is signed as v1 (HMAC) by the venue's client
        (``astra.venues.aster.trading``).

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
