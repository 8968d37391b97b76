"""Multiplexed WebSocket connections shared by the venues that carry many subscriptions on
one connection (Binance, KuCoin, Kraken, OKX): the connection lifecycle and pool
(``MuxConnection``, ``MuxPool``) and the two request disciplines, paced and acknowledged
(``PacedConnection``) or batched per event-loop turn (``BatchedConnection``). Each module
states its invariants."""

from ._batched import BatchedConnection, OutboxItem
from ._connection import RECONNECT_ERRORS, WS_TIMEOUT, MuxConnection, MuxPool, Resettable
from ._paced import DataConsumer, PacedConnection, Pacer

__all__ = [
    "RECONNECT_ERRORS",
    "WS_TIMEOUT",
    "BatchedConnection",
    "DataConsumer",
    "MuxConnection",
    "MuxPool",
    "OutboxItem",
    "PacedConnection",
    "Pacer",
    "Resettable",
]
