"""The columns of a recorded book and trade tape (Arrow schemas).

Book rows, one per event a live WebSocket client of that market got, in receive order:

- ``local_ts``: when this gateway received it, µs since the epoch (the recorder's clock:
  wall time at its start plus a monotonic clock, so it never goes back);
- ``type``: ``snapshot`` | ``update`` | ``resync``;
- ``reason``: for a snapshot, why it was taken: ``start`` (the first of the record, or of a
  recorder restart), ``resync`` (the book was rebuilt: a gap, a checksum failure, a reconnect,
  a SMART member's change of state) or ``periodic`` (a checkpoint the recorder asked for; a
  live client never saw it); for a resync row, the reason the live client was given;
- ``update_id``, ``timestamp``: the message's ``updateId`` and the venue's event time (ms);
- ``frame``: the message exactly as the live WebSocket sent it (JSON bytes), so replay sends
  what live clients got.

Trade rows: ``local_ts``, ``type`` (``trade`` | ``resync``: the trade feed dropped and trades
may be missing; ``reason`` says why), ``time`` (the venue's trade time, ms), ``price``,
``quantity`` (base units), ``side`` (the taker's, ``BUY``/``SELL``), ``trade_id``.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["BOOK_SCHEMA", "TRADE_SCHEMA", "schema_of"]

BOOK_SCHEMA = pa.schema([
    pa.field("local_ts", pa.int64(), nullable=False),
    pa.field("type", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("update_id", pa.int64()),
    pa.field("timestamp", pa.int64()),
    pa.field("frame", pa.binary(), nullable=False),
])

TRADE_SCHEMA = pa.schema([
    pa.field("local_ts", pa.int64(), nullable=False),
    pa.field("type", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("time", pa.int64()),
    pa.field("price", pa.float64()),
    pa.field("quantity", pa.float64()),
    pa.field("side", pa.string()),
    pa.field("trade_id", pa.string()),
])


def schema_of(kind: str) -> pa.Schema:
    return BOOK_SCHEMA if kind == "book" else TRADE_SCHEMA
