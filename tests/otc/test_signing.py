"""Quote signatures: every field is covered, numbers by value, keys rotate, secrets stay hidden."""

from __future__ import annotations

import hashlib
import hmac
import re
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from astra.core._otc import Quote
from astra.otc.signing import ENV_KEY, QuoteSigner, canonical

D = Decimal
K0 = bytes(range(32))
K1 = bytes(range(100, 148))
K0_HEX = K0.hex()
K1_HEX = K1.hex()
ACCOUNT = "8d5e4c8e-0f3a-4b7e-9a55-3f1d7c2b9e10"


def signed(signer: QuoteSigner, **over) -> tuple[Quote, str]:
    fields = {"account_id": ACCOUNT, "from_asset": "BTC", "to_asset": "USDT",
              "from_asset_quantity": D("0.5"), "to_asset_quantity": D("25012.345678"),
              "expiry_time": 1_765_000_000_123_456}
    fields.update(over)
    key_id, signature = signer.sign(
        fields["account_id"], fields["from_asset"], fields["to_asset"],
        fields["from_asset_quantity"], fields["to_asset_quantity"], fields["expiry_time"])
    return Quote(signature=signature, **fields), key_id


def test_sign_verify_round_trip():
    signer = QuoteSigner({"k1": K1}, "k1")
    quote, key_id = signed(signer)
    assert key_id == "k1" == signer.current_key_id
    assert re.fullmatch(r"[0-9a-f]{64}", quote.signature)
    assert signer.verify(quote, "k1")
    # The signature is HMAC-SHA256 of the documented canonical bytes.
    message = (b"astra-otc-quote/1\nk1\n" + ACCOUNT.encode()
               + b"\nBTC\nUSDT\n0.5\n25012.345678\n1765000000123456")
    assert canonical("k1", ACCOUNT, "BTC", "USDT", D("0.5"), D("25012.345678"),
                     1_765_000_000_123_456) == message
    assert quote.signature == hmac.new(K1, message, hashlib.sha256).hexdigest()


def test_a_quote_survives_the_wire():
    signer = QuoteSigner({"k1": K1}, "k1")
    quote, _ = signed(signer, to_asset_quantity=D("25012.3"))
    wire = msgspec.json.Encoder(decimal_format="number").encode(quote)
    back = msgspec.json.decode(wire, type=Quote)
    assert signer.verify(back, "k1")


UNIT = {"from_asset_quantity": D("0.00000001"), "to_asset_quantity": D("0.000001")}


def _tampered():
    base = {"from_asset_quantity": D("0.5"), "to_asset_quantity": D("25012.345678")}
    out = [
        ("account_id", "8D5E4C8E-0F3A-4B7E-9A55-3F1D7C2B9E10"),  # case only
        ("account_id", "8d5e4c8e-0f3a-4b7e-9a55-3f1d7c2b9e11"),
        ("account_id", ACCOUNT + " "),
        ("account_id", ""),
        ("from_asset", "ETH"),
        ("from_asset", "btc"),
        ("to_asset", "USDC"),
        ("to_asset", "BTC"),
        ("expiry_time", 1_765_000_000_123_457),
        ("expiry_time", 1_765_000_000_123_455),
    ]
    for name, unit in UNIT.items():
        out += [(name, base[name] + unit), (name, base[name] - unit)]
    return out


@pytest.mark.parametrize(("field", "value"), _tampered())
def test_every_field_changed_in_turn_is_refused(field, value):
    signer = QuoteSigner({"k1": K1}, "k1")
    quote, key_id = signed(signer)
    assert signer.verify(quote, key_id)
    assert not signer.verify(msgspec.structs.replace(quote, **{field: value}), key_id)


def test_the_same_fields_swapped_are_refused():
    signer = QuoteSigner({"k1": K1}, "k1")
    quote, _ = signed(signer, to_asset="ETH", from_asset_quantity=D(2), to_asset_quantity=D(3))
    swapped = msgspec.structs.replace(quote, from_asset="ETH", to_asset="BTC")
    assert not signer.verify(swapped, "k1")
    swapped = msgspec.structs.replace(quote, from_asset_quantity=D(3), to_asset_quantity=D(2))
    assert not signer.verify(swapped, "k1")


@pytest.mark.parametrize("position", [0, 1, 31, 62, 63])
def test_one_hex_character_changed_is_refused(position):
    signer = QuoteSigner({"k1": K1}, "k1")
    quote, _ = signed(signer)
    sig = quote.signature
    flipped = "0" if sig[position] != "0" else "1"
    bad = sig[:position] + flipped + sig[position + 1:]
    assert not signer.verify(msgspec.structs.replace(quote, signature=bad), "k1")


@pytest.mark.parametrize("bad", ["", "x" * 64, "0" * 63, "0" * 65, "é" * 64])
def test_malformed_signature_is_false_not_an_error(bad):
    signer = QuoteSigner({"k1": K1}, "k1")
    quote, _ = signed(signer)
    assert not signer.verify(msgspec.structs.replace(quote, signature=bad), "k1")


def test_upper_case_signature_is_refused():
    signer = QuoteSigner({"k1": K1}, "k1")
    quote, _ = signed(signer)
    assert not signer.verify(
        msgspec.structs.replace(quote, signature=quote.signature.upper()), "k1")


def test_another_key_id_is_refused():
    signer = QuoteSigner({"k0": K0, "k1": K1}, "k1")
    quote, _ = signed(signer)
    assert signer.verify(quote, "k1")
    assert not signer.verify(quote, "k0")  # held, but not the one that signed
    assert not signer.verify(quote, "k9")  # not held
    # Another desk with the same key id and another secret does not verify it either.
    assert not QuoteSigner({"k1": K0}, "k1").verify(quote, "k1")


def test_numbers_by_value_strings_byte_exact():
    a = canonical("k", "acc", "BTC", "USDT", D("1.25"), D("100"), 5)
    assert canonical("k", "acc", "BTC", "USDT", D("1.250"), D("1E+2"), 5) == a
    assert canonical("k", "acc", "BTC", "USDT", D("1.2500000000"), D("100.000"), 5) == a
    assert canonical("k", "acc", "btc", "USDT", D("1.25"), D("100"), 5) != a
    assert canonical("k", "ACC", "BTC", "USDT", D("1.25"), D("100"), 5) != a
    assert b"0.00000001" in canonical("k", "a", "B", "C", D("1E-8"), D(1), 5)
    signer = QuoteSigner({"k1": K1}, "k1")
    quote, _ = signed(signer, from_asset_quantity=D("1.25"))
    assert signer.verify(msgspec.structs.replace(quote, from_asset_quantity=D("1.250")), "k1")


@pytest.mark.parametrize(
    "args",
    [
        ("k", "a\nBTC", "USDT", "X", D(1), D(1), 5),  # a newline would shift the fields
        ("k", "a", "BTC", "USDT", 1.25, D(1), 5),
        ("k", "a", "BTC", "USDT", D(1), D(1), 5.0),
        ("k", "a", "BTC", "USDT", D(1), D(1), True),
        ("k", "a", "BTC", "USDT", D("NaN"), D(1), 5),
        ("k", None, "BTC", "USDT", D(1), D(1), 5),
    ],
)
def test_canonical_refuses_ambiguous_fields(args):
    with pytest.raises(ValueError):
        canonical(*args)


@given(st.decimals(D("0.00000001"), D("1e12"), places=8))
def test_canonical_by_value_for_any_amount(x):
    padded = x.quantize(D("1E-12"))
    assert canonical("k", "a", "B", "C", x, x, 1) == canonical("k", "a", "B", "C", padded,
                                                                padded, 1)


@pytest.mark.parametrize("x", [D("1E-19"), D("0.0000000000000000001"), D("1E-999999999"),
                               D("1E+13"), D("1E+999999999"), D("-1E+999999999")])
def test_canonical_refuses_an_amount_no_quote_has_before_printing_it(x):
    """More than MAX_PLACES decimal places, or past MAX_AMOUNT: no quote's amount, and never
    printed (1E-999999999 would be a billion digits)."""
    with pytest.raises(ValueError):
        canonical("k", "a", "B", "C", x, D(1), 1)
    with pytest.raises(ValueError):
        canonical("k", "a", "B", "C", D(1), x, 1)


def test_canonical_takes_max_places_by_value():
    assert canonical("k", "a", "B", "C", D("1E-18"), D("1.5" + "0" * 40), 1) == (
        canonical("k", "a", "B", "C", D("0.000000000000000001"), D("1.5"), 1))


@pytest.mark.parametrize("x", [D("1E-999999999"), D("1E-19"), D("1E+999999999")])
def test_verify_is_false_for_an_amount_no_quote_has(x):
    signer = QuoteSigner({"k1": K1}, "k1")
    quote, _ = signed(signer)
    for field in ("from_asset_quantity", "to_asset_quantity"):
        assert not signer.verify(msgspec.structs.replace(quote, **{field: x}), "k1")


def test_rotation():
    old = QuoteSigner({"k0": K0}, "k0")
    quote, key_id = signed(old)
    assert key_id == "k0"
    # k1 becomes current while k0 is kept: the old quote still verifies, new ones use k1.
    both = QuoteSigner({"k0": K0, "k1": K1}, "k1")
    assert both.verify(quote, "k0")
    new, new_key = signed(both)
    assert new_key == "k1" and both.verify(new, "k1")
    # k0 removed: the old quote no longer verifies; the new one still does.
    only = QuoteSigner({"k1": K1}, "k1")
    assert not only.verify(quote, "k0")
    assert only.verify(new, "k1")


def test_from_config_keys():
    section = {"signing_key_id": "k1", "signing_keys": {"k1": K1_HEX, "k0": K0_HEX.upper()},
               "quote_ttl": 5}
    signer = QuoteSigner.from_config(section, environ={ENV_KEY: "env:" + "ab" * 32})
    assert signer.current_key_id == "k1" and not signer.ephemeral
    assert set(signer.key_ids) == {"k0", "k1"}
    quote, _ = signed(QuoteSigner({"k0": K0}, "k0"))
    assert signer.verify(quote, "k0")  # the configured hex is the secret
    quote, _ = signed(signer)
    assert QuoteSigner({"k1": K1}, "k1").verify(quote, "k1")


def test_from_config_environment():
    signer = QuoteSigner.from_config(None, environ={ENV_KEY: f"prod-2:{K1_HEX}"})
    assert signer.current_key_id == "prod-2"
    quote, _ = signed(signer)
    assert QuoteSigner({"prod-2": K1}, "prod-2").verify(quote, "prod-2")
    assert QuoteSigner.from_config({}, environ={ENV_KEY: ""}).ephemeral


def test_ephemeral_when_nothing_is_configured():
    a = QuoteSigner.from_config(None, environ={})
    b = QuoteSigner.from_config({"quote_ttl": 5}, environ={})
    assert a.ephemeral and b.ephemeral
    assert re.fullmatch(r"ephemeral-[0-9a-f]{8}", a.current_key_id)
    assert a.current_key_id != b.current_key_id
    quote, key_id = signed(a)
    assert a.verify(quote, key_id)
    assert not b.verify(quote, key_id)  # another process, another secret


SECRET = "c0ffee" * 10 + "ab"  # 62 hex digits: too short


@pytest.mark.parametrize(
    ("section", "environ", "setting"),
    [
        ({"signing_key_id": "k1"}, {}, "otc.signing_keys"),
        ({"signing_keys": {"k1": K1_HEX}}, {}, "otc.signing_key_id"),
        ({"signing_key_id": "k2", "signing_keys": {"k1": K1_HEX}}, {}, "otc.signing_key_id"),
        ({"signing_key_id": "k1", "signing_keys": {"k1": SECRET}}, {}, "otc.signing_keys.k1"),
        ({"signing_key_id": "k1", "signing_keys": {"k1": SECRET + "zz"}}, {},
         "otc.signing_keys.k1"),
        ({"signing_key_id": "k1", "signing_keys": {"k1": SECRET + "a"}}, {},
         "otc.signing_keys.k1"),  # odd length
        ({"signing_key_id": "k1", "signing_keys": {"k1": 12345}}, {}, "otc.signing_keys.k1"),
        ({"signing_key_id": "k 1", "signing_keys": {"k 1": K1_HEX}}, {}, "otc.signing_keys"),
        ({"signing_key_id": "k1", "signing_keys": "k1=" + SECRET}, {}, "otc.signing_keys"),
        (None, {ENV_KEY: SECRET}, ENV_KEY),  # no key id
        (None, {ENV_KEY: "k1:" + SECRET}, ENV_KEY),
        (None, {ENV_KEY: "k1:" + SECRET + "xy"}, ENV_KEY),
        (None, {ENV_KEY: ":" + K1_HEX}, ENV_KEY),
    ],
)
def test_from_config_errors_name_the_setting_and_hide_the_secret(section, environ, setting):
    with pytest.raises(ValueError) as e:
        QuoteSigner.from_config(section, environ=environ)
    text = str(e.value)
    assert setting in text
    assert SECRET not in text and SECRET[:16] not in text
    assert K1_HEX[:16] not in text


@pytest.mark.parametrize(
    ("keys", "current"),
    [({"k1": b"short"}, "k1"), ({"k1": K1}, "k0"), ({}, "k1"), ({"": K1}, ""),
     ({"k1": K1.hex()}, "k1")],
)
def test_constructor_refuses_weak_or_missing_keys(keys, current):
    with pytest.raises(ValueError) as e:
        QuoteSigner(keys, current)
    assert K1.hex() not in str(e.value)


def test_repr_hides_secrets():
    signer = QuoteSigner({"k0": K0, "k1": K1}, "k1")
    for text in (repr(signer), str(signer), f"{signer}"):
        assert "k1" in text and "k0" in text
        for secret in (K0, K1):
            assert secret.hex() not in text and repr(secret) not in text
            assert secret.hex()[:16] not in text
    assert not hasattr(signer, "__dict__")  # nothing else to dump


def test_signature_is_64_lowercase_hex_for_many_quotes():
    signer = QuoteSigner.from_config(None, environ={})
    seen = set()
    for i in range(200):
        _, sig = signer.sign(ACCOUNT, "BTC", "USDT", D(i + 1), D("0.1") * (i + 1), i)
        assert re.fullmatch(r"[0-9a-f]{64}", sig)
        seen.add(sig)
    assert len(seen) == 200
