"""Fast Keccak-256 for ccxt's wallet signing (Aster v3 EIP-712, DEX venues).

ccxt hashes with OpenSSL's ``KECCAK-256`` when OpenSSL >= 3.2 provides it, and otherwise with a
pure-Python sponge that costs ~2 ms per hash: a dozen hashes per signed Aster request made
signing, not the network, the bulk of an order's latency. Where OpenSSL lacks it, this points
ccxt's Keccak at pycryptodome's C implementation (already installed with eth-account), which
returns the same bytes (checked by tests against ccxt's own pure-Python code).
"""

from __future__ import annotations

import hashlib

__all__ = ["install_fast_keccak", "keccak256"]

_installed = False


def keccak256(data: bytes | bytearray | list[int]) -> bytearray:
    from Crypto.Hash import keccak

    return bytearray(keccak.new(digest_bits=256, data=bytes(data)).digest())


def install_fast_keccak() -> bool:
    """Use ``keccak256`` inside ccxt when ccxt would fall back to pure Python; True if done."""
    global _installed
    if _installed:
        return True
    try:
        hashlib.new("KECCAK-256")
        return False  # ccxt already uses OpenSSL's
    except ValueError:
        pass
    try:
        import Crypto.Hash.keccak  # noqa: F401 - pycryptodome, an eth-account dependency
    except ImportError:
        return False
    import ccxt.static_dependencies.keccak as package
    from ccxt.static_dependencies.ethabi import abi, typed_data

    package.SHA3 = keccak256
    abi.keccak = keccak256
    typed_data.keccak = keccak256
    _installed = True
    return True
