"""Binance market data: each market's streams as consumers of shared combined-stream
connections (``streams.py``), and REST rate-limit back-off. Sequencing is Aster's
(``astra.venues.aster.feed.DiffBook``), because Binance's streams are the family Aster copied.

Integrity rule (Binance's documented "manage a local order book" procedure), per market:
- Subscribe ``<symbol>@depth@100ms`` and buffer it; fetch ``GET depth?limit=1000``
  (``lastUpdateId``). Spot bridges at ``lastUpdateId + 1``, USD-M, COIN-M and options at
  ``lastUpdateId``: drop events with ``u`` below the bridge, the first kept event must have
  ``U <= bridge <= u``, else the snapshot is too old and another one is fetched.
- Then spot events chain by ``U == previous u + 1``; USD-M, COIN-M and options by
  ``pu == previous u``. A break is a gap: that market alone resyncs (``on_resync``, its
  events buffered again, a fresh snapshot for it) while the connection and every other
  market on it go on. Nothing is applied out of sequence.
- Multiplexing: one ``/stream`` connection per product endpoint carries every market's
  streams (up to 1024 per connection on spot, USD-M and COIN-M, 200 on options; another
  connection opens when one is full), added and removed with live SUBSCRIBE/UNSUBSCRIBE
  requests paced under Binance's 5 (spot) or 10 (futures, options) messages per second and
  checked against their answers. A market whose feed is cancelled is unsubscribed.
- Connections: pings from Binance are answered (aiohttp autoping), ours go out after
  ``heartbeat`` seconds of quiet, so a half-open link fails within ~1.5 heartbeats; no frame
  for ``silence`` seconds, or an unanswered request, also counts as dead. Binance closes
  every connection at 24 h: each is replaced on its own schedule first (``max_age``). Any
  reconnect subscribes every stream again and every book on that connection resyncs
  (``on_resync``, then a fresh snapshot per the rule above).
- REST: a 429 or 418 (IP ban) pauses every REST call of the product for ``Retry-After``
  seconds (Binance's limits are per IP, so one refusal speaks for all its markets): the
  product's ``VenueLimiter`` (``BinanceVenue.limiters``) holds that pause.
"""

from __future__ import annotations

import logging

import msgspec

from astra.venues.aster.feed import DiffBook
from astra.venues.base import TradeSink

from .schemas import AggTrade, DepthUpdate, OptionTrade

__all__ = ["BookConsumer", "TradeConsumer"]

log = logging.getLogger(__name__)
_decode_depth = msgspec.json.Decoder(DepthUpdate).decode
_decode_agg_trade = msgspec.json.Decoder(AggTrade).decode
_decode_option_trade = msgspec.json.Decoder(OptionTrade).decode


class BookConsumer:
    """One market's ``<symbol>@depth@100ms`` on a shared connection, into its ``DiffBook``.
    A reset (reconnect, refused subscription, undecodable event) restarts that book only."""

    __slots__ = ("book",)

    def __init__(self, book: DiffBook) -> None:
        self.book = book

    def on_data(self, data: msgspec.Raw) -> None:
        self.book.on_event(_decode_depth(data))

    def on_reset(self, reason: str) -> None:
        self.book.restart(reason)

    def on_live(self) -> None:
        self.book.stream_live()  # a quiet market syncs on a snapshot alone (DiffBook)

    def close(self) -> None:
        self.book.snapshot.cancel()


class TradeConsumer:
    """One market's ``<symbol>@aggTrade`` (options: ``<symbol>@optionTrade``) into ``sink``.
    Trades carry no state to resync: the sink hears that its stream is live once Binance
    acknowledges the SUBSCRIBE, and that it was interrupted on a reset (trades may be lost)."""

    __slots__ = ("_decode", "name", "sink")

    def __init__(self, sink: TradeSink, name: str, option: bool = False) -> None:
        self.sink, self.name = sink, name
        self._decode = _decode_option_trade if option else _decode_agg_trade

    def on_data(self, data: msgspec.Raw) -> None:
        self.sink.on_trades([self._decode(data).to_trade()])

    def on_reset(self, reason: str) -> None:
        log.info("%s trades interrupted (%s)", self.name, reason)
        self.sink.on_connection(False, reason)

    def on_live(self) -> None:
        self.sink.on_connection(True)

    def close(self) -> None:
        pass
