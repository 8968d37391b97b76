"""The quote's signature: HMAC-SHA256 under a desk secret with a key id, so it can be rotated.

``canonical`` is the signed message: ``b"astra-otc-quote/1\\n"`` then, one per line, the key id,
the account id, fromAsset, toAsset, fromAssetQuantity, toAssetQuantity and expiryTime. Numbers
go by VALUE (``plain``: 1.25 and 1.250 sign alike; no exponent notation); strings go
byte-exact (case matters: ``btc`` is not ``BTC``); ``expiryTime`` is an int. A string field
holding a newline is refused, so no two field lists share a message; so is an amount no quote
can have (past ``MAX_AMOUNT``, or more than ``MAX_PLACES`` decimal places), before it is
printed (``1E-999999999`` would be a billion digits).

``QuoteSigner`` holds one or more keys (id -> secret of at least 32 bytes) and signs with the
current one; ``verify`` accepts a quote signed with any key it still holds (rotation: add the
new key and make it current, keep the old one for the quotes' lifetime, then remove it) and
compares in constant time.

Integrity rule: no secret ever leaves this module: not in ``repr``/``str``, not in an error
message (a bad configured secret is named by its setting, never echoed).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from decimal import Decimal

from astra.core._otc import Quote

from .assets import MAX_AMOUNT, MAX_PLACES, normal, plain

__all__ = ["ENV_KEY", "MIN_SECRET_BYTES", "QuoteSigner", "canonical"]

ENV_KEY = "ASTRA_OTC_SIGNING_KEY"
MIN_SECRET_BYTES = 32
_PREFIX = b"astra-otc-quote/1\n"
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


def canonical(
    key_id: str,
    account_id: str,
    from_asset: str,
    to_asset: str,
    from_quantity: Decimal,
    to_quantity: Decimal,
    expiry_us: int,
) -> bytes:
    """The bytes a quote's signature covers (see the module docstring); ``ValueError`` on a
    field that cannot be encoded unambiguously."""
    strings = (key_id, account_id, from_asset, to_asset)
    if not all(isinstance(s, str) and "\n" not in s for s in strings):
        raise ValueError("the quote's text fields must be strings without a newline")
    if type(from_quantity) is not Decimal or type(to_quantity) is not Decimal:
        raise ValueError("the quote's quantities must be Decimals")
    if type(expiry_us) is not int:  # not a bool, not a float
        raise ValueError("the quote's expiry must be an int (Unix microseconds)")
    fields = (*strings, _amount(from_quantity), _amount(to_quantity), str(expiry_us))
    return _PREFIX + "\n".join(fields).encode("utf-8")


def _amount(x: Decimal) -> str:
    """``plain(x)``, for an amount a quote can have: finite, |x| <= ``MAX_AMOUNT``, at most
    ``MAX_PLACES`` decimal places by value; else ``ValueError`` (checked BEFORE printing:
    ``1E+999999999`` and ``1E-999999999`` would each print a billion digits)."""
    if not x.is_finite() or x.copy_abs() > MAX_AMOUNT:
        raise ValueError("the quote's quantities must be finite, at most 1e12")
    x = normal(x)
    if -x.as_tuple().exponent > MAX_PLACES:
        raise ValueError(f"the quote's quantities have at most {MAX_PLACES} decimal places")
    return plain(x)


class QuoteSigner:
    """Signs and verifies quotes; ``current_key_id`` signs, every held key verifies."""

    __slots__ = ("_keys", "current_key_id", "ephemeral")

    def __init__(self, keys: Mapping[str, bytes], current: str, *, ephemeral: bool = False):
        held: dict[str, bytes] = {}
        for key_id, secret in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                raise ValueError(
                    "a signing key id is 1 to 64 characters A-Z a-z 0-9 . _ - (letter or digit "
                    "first)"
                )
            if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"signing key {key_id}: the secret must be at least {MIN_SECRET_BYTES} bytes"
                )
            held[key_id] = secret
        if current not in held:
            raise ValueError(f"the current signing key {current!r} is not among the keys")
        self._keys = held
        self.current_key_id = current
        self.ephemeral = ephemeral  # a random key of this process: quotes die with it

    @classmethod
    def from_config(
        cls, section: Mapping | None, environ: Mapping[str, str] = os.environ
    ) -> QuoteSigner:
        """From ``[otc] signing_key_id`` and ``signing_keys = {id = "<hex>", ...}``; else the
        environment's ``ASTRA_OTC_SIGNING_KEY="<key id>:<hex>"``; else an ephemeral random key
        (id ``ephemeral-<8 hex>``): enough for one process, while several gateways on one
        database need a configured key. ``ValueError`` names the setting, never the secret."""
        section = section or {}
        keys = section.get("signing_keys")
        current = section.get("signing_key_id")
        if keys is not None or current is not None:
            if not isinstance(keys, Mapping) or not keys:
                raise ValueError(
                    "config setting otc.signing_keys must be a table of key id = hex secret "
                    "(with otc.signing_key_id naming the current one)"
                )
            if not isinstance(current, str) or current not in keys:
                raise ValueError(
                    "config setting otc.signing_key_id must name one of otc.signing_keys"
                )
            secrets_ = {}
            for key_id, text in keys.items():
                if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                    raise ValueError(
                        "config setting otc.signing_keys: a key id is 1 to 64 characters "
                        "A-Z a-z 0-9 . _ - (letter or digit first)"
                    )
                secrets_[key_id] = _secret(text, f"config setting otc.signing_keys.{key_id}")
            return cls(secrets_, current)
        value = environ.get(ENV_KEY, "").strip()
        if value:
            key_id, sep, text = value.partition(":")
            if not sep or not _KEY_ID.fullmatch(key_id):
                raise ValueError(
                    f"environment variable {ENV_KEY} must be <key id>:<hex secret>, the key id "
                    "1 to 64 characters A-Z a-z 0-9 . _ -"
                )
            return cls({key_id: _secret(text, f"environment variable {ENV_KEY}")}, key_id)
        key_id = f"ephemeral-{secrets.token_hex(4)}"
        return cls({key_id: secrets.token_bytes(MIN_SECRET_BYTES)}, key_id, ephemeral=True)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def sign(
        self,
        account_id: str,
        from_asset: str,
        to_asset: str,
        from_quantity: Decimal,
        to_quantity: Decimal,
        expiry_us: int,
    ) -> tuple[str, str]:
        """(key id, signature: 64 lowercase hex) under the current key."""
        key_id = self.current_key_id
        message = canonical(
            key_id, account_id, from_asset, to_asset, from_quantity, to_quantity, expiry_us
        )
        return key_id, hmac.new(self._keys[key_id], message, hashlib.sha256).hexdigest()

    def verify(self, quote: Quote, key_id: str) -> bool:
        """Whether ``quote.signature`` is this signer's for its fields under ``key_id`` (a key
        it still holds); any malformed field is simply False."""
        secret = self._keys.get(key_id) if isinstance(key_id, str) else None
        signature = quote.signature
        if secret is None or not isinstance(signature, str) or not _SIGNATURE.fullmatch(
            signature
        ):
            return False
        for amount in (quote.from_asset_quantity, quote.to_asset_quantity):
            # The bound first: the canonical text of 1E+999999999 would be a billion digits.
            if not isinstance(amount, Decimal) or not amount.is_finite() or (
                    amount.copy_abs() > MAX_AMOUNT):
                return False
        try:
            message = canonical(
                key_id,
                quote.account_id,
                quote.from_asset,
                quote.to_asset,
                quote.from_asset_quantity,
                quote.to_asset_quantity,
                quote.expiry_time,
            )
        except ValueError:
            return False
        expected = hmac.new(secret, message, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii"))

    def __repr__(self) -> str:
        return f"QuoteSigner(current={self.current_key_id!r}, keys={list(self._keys)!r})"

    __str__ = __repr__


def _secret(text: object, setting: str) -> bytes:
    """The bytes of a hex secret; the error names ``setting`` and never shows ``text``."""
    need = 2 * MIN_SECRET_BYTES
    if not isinstance(text, str):
        raise ValueError(f"{setting} must be a string of hex digits")
    text = text.strip()
    if not _HEX.fullmatch(text) or len(text) % 2:
        raise ValueError(f"{setting} must be an even number of hex digits (0-9 a-f)")
    if len(text) < need:
        raise ValueError(f"{setting} must be at least {need} hex digits ({MIN_SECRET_BYTES} "
                         f"bytes), got {len(text)}")
    return bytes.fromhex(text)
