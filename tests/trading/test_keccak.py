"""The fast Keccak ccxt signs with gives exactly ccxt's own pure-Python result."""

from __future__ import annotations

import os

import ccxt.async_support as ccxt_async
from ccxt.static_dependencies.keccak.keccak import SHA3 as pure_python_sha3

from astra.trading._keccak import install_fast_keccak, keccak256


def test_same_digest_as_ccxt_pure_python():
    for size in (0, 1, 31, 32, 135, 136, 137, 1000):
        data = os.urandom(size)
        assert keccak256(data) == bytearray(pure_python_sha3(data))
    # The empty input's Keccak-256 (not NIST SHA3-256), as Ethereum defines it.
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )


async def test_ccxt_signature_unchanged_by_the_fast_keccak():
    key = "0x4fd0a42218f3eae43a6ce26d22544e986139a01e5b34a62db53757ffca81bae1"  # the docs' demo
    ex = ccxt_async.aster({"privateKey": key})
    try:
        install_fast_keccak()
        fast = ex.eth_encode_structured_data(
            {"name": "AsterSignTransaction", "version": "1", "chainId": 1666,
             "verifyingContract": "0x0000000000000000000000000000000000000000"},
            {"Message": [{"name": "msg", "type": "string"}]}, {"msg": "nonce=1&user=a"})
        assert ex.eth_get_address_from_private_key(key).lower() == (
            "0x21cf8ae13bb72632562c6fff438652ba1a151bb0")
        signed = ex.sign_message(fast, key)
        assert signed.startswith("0x") and len(signed) == 132
    finally:
        await ex.close()
