"""The simulator's trading state on disk (``astra sim --data FILE``).

One JSON document: accounts (with their HMAC secrets, as the venue must keep them), the ledger,
and every user order and trade per venue side. Written atomically (temporary file, fsync,
rename) with mode 0600, so a crash leaves either the old or the new state, never half of one.
Open orders re-enter the freshly seeded books on load, oldest first.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import TYPE_CHECKING

import msgspec

from .accounts import AccountRegistry
from .ledger import Ledger

if TYPE_CHECKING:
    from .app import SimExchange

__all__ = ["FORMAT", "load_state", "snapshot", "write_atomic"]

FORMAT = 1


def snapshot(exchange: SimExchange) -> bytes:
    data = {
        "format": FORMAT,
        "accounts": exchange.registry.to_dict(),
        "ledger": exchange.ledger.to_dict(),
        "sides": {
            kind: side.trading.to_dict()
            for kind, side in exchange.sides.items()
            if side.trading is not None
        },
    }
    return msgspec.json.encode(data)


def write_atomic(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".sim-state-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_state(path: str, exchange: SimExchange) -> bool:
    """Load ``path`` into a freshly built exchange; False when the file does not exist yet."""
    try:
        with open(path, "rb") as f:
            data = msgspec.json.decode(f.read())
    except FileNotFoundError:
        return False
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown simulator state format {data.get('format')!r}")
    registry = AccountRegistry.from_dict(data["accounts"])
    ledger = Ledger.from_dict(data["ledger"])
    # Update in place: the authenticator and the trading sides hold these very objects.
    exchange.registry.__dict__.update(registry.__dict__)
    exchange.ledger.__dict__.update(ledger.__dict__)
    for kind, side in exchange.sides.items():
        if side.trading is not None:
            side.trading.ledger = exchange.ledger
            if kind in data["sides"]:
                side.trading.load(data["sides"][kind])
    return True
