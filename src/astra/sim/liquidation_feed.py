"""The perpetual liquidation order streams: ``<symbol>@forceOrder`` and ``!forceOrder@arr``.

The docs: "For each symbol, only the latest one liquidation order within 1000ms will be
pushed as the snapshot. If no liquidation happens in the interval of 1000ms, no stream will be
pushed." So ``on_liquidation`` (``PerpTrading.on_liquidation``) only keeps the latest event of
each symbol, and ``flush`` (called by the perpetual ``Feeds`` once per simulated second)
publishes each kept event, stamped with the push time, to the symbol's stream and to
``!forceOrder@arr`` (which, as on Binance, carries one event object per frame, not an array),
then forgets them. Events are kept whether or not anyone listens, so a subscriber that joins
within the second still gets that second's snapshot.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from astra.venues.aster import schemas as wire

from .state import now_ms

__all__ = ["ALL_MARKETS", "ForceOrderFeed"]

ALL_MARKETS = "!forceOrder@arr"
_encode = msgspec.json.Encoder().encode


class _Hub(Protocol):
    def publish(self, name: str, payload: bytes) -> None: ...


class ForceOrderFeed:
    def __init__(self, hub: _Hub) -> None:
        self.hub = hub
        self._latest: dict[str, wire.ForceOrderEvent] = {}  # by stream id (lowercase symbol)

    def on_liquidation(self, event: wire.ForceOrderEvent) -> None:
        self._latest[event.o.s.lower()] = event

    def flush(self) -> None:
        if not self._latest:
            return
        now = now_ms()
        for sid, event in self._latest.items():
            event.E = now
            payload = _encode(event)
            self.hub.publish(f"{sid}@forceOrder", payload)
            self.hub.publish(ALL_MARKETS, payload)
        self._latest.clear()
