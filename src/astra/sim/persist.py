"""The simulator's trading state on disk (``astra sim --data FILE``).

One JSON document: accounts (with their HMAC secrets, as the venue must keep them), the ledger,
and every user order and trade per venue side. Written atomically (temporary file, fsync,
rename) with mode 0600, so a crash leaves either the old or the new state, never half of one.
Open orders re-enter the freshly seeded books on load, oldest first.

It reads and fills the exchange's parts (registry, ledger, one ``OrderManager`` per venue
side), not the exchange itself, so that ``app`` (which owns them) imports this module and not
the other way round.
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
    from .orders import OrderManager

__all__ = ["FORMAT", "load_state", "snapshot", "write_atomic"]

FORMAT = 1


def snapshot(
    registry: AccountRegistry, ledger: Ledger, trading: dict[str, OrderManager]
) -> bytes:
    """The state document; ``trading`` is each venue side's orders by kind."""
    data = {
        "format": FORMAT,
        "accounts": registry.to_dict(),
        "ledger": ledger.to_dict(),
        "sides": {kind: side.to_dict() for kind, side in trading.items()},
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


def load_state(
    path: str, registry: AccountRegistry, ledger: Ledger, trading: dict[str, OrderManager]
) -> bool:
    """Load ``path`` into a freshly built exchange's parts; False when the file does not
    exist yet."""
    try:
        with open(path, "rb") as f:
            data = msgspec.json.decode(f.read())
    except FileNotFoundError:
        return False
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown simulator state format {data.get('format')!r}")
    # Update in place: the authenticator and the trading sides hold these very objects.
    registry.__dict__.update(AccountRegistry.from_dict(data["accounts"]).__dict__)
    ledger.__dict__.update(Ledger.from_dict(data["ledger"]).__dict__)
    for kind, side in trading.items():
        side.ledger = ledger
        if kind in data["sides"]:
            side.load(data["sides"][kind])
    return True
