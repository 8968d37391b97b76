"""``GET /feeds``: the state of every live market-data feed of this gateway (``read`` scope).

One row (``astra.core.FeedStatus``) per running channel of the engine (``engine.channels``:
the feeds clients and REST reads keep alive), sorted by venue, market, data type; ``venue=``
and ``market=`` narrow the list. An edge node (``--role edge``) answers the same way: its
channels are the same ``BookChannel``/``TradeChannel``, fed off NATS.

Invariants:
- Parameters are checked before anything is read: only ``venue``, ``market`` (and ``apiKey``,
  which auth judges), each at most once; an unknown venue (not served here, and not
  ``SMART``) is a 400 naming ``venue``; a malformed market a 400 naming ``market``. A valid
  market with no live feed is an empty list, not a 404 (this lists what runs).
- Reading is in memory, no await: the rows are one consistent look at the channels.
- Each row is its channel's ``status()``; a ``SMART`` row is the consolidated book's
  (``SmartChannel.status``: its members' figures); a SMART channel none of whose members is
  attached has no row (its members' rows, if any, are listed on their own).
"""

from __future__ import annotations

from aiohttp import web

from astra.core import SMART, FeedStatus, InvalidParameter, parse_market
from astra.marketdata.engine import MarketDataEngine

from .errors import json_response
from .params import only_params

__all__ = ["FEEDS_PARAMETERS", "feed_statuses", "feeds_routes"]

FEEDS_PARAMETERS = ("venue", "market")


def _venue(engine: MarketDataEngine, text: str | None) -> str | None:
    if text is None:
        return None
    if text != SMART and text not in engine.venues:  # exact codes, as the document's enum
        served = ", ".join([*sorted(engine.venues), SMART])
        raise InvalidParameter("venue", f"unknown venue {text[:20]!r}: this gateway serves "
                               f"{served}")
    return text


def feed_statuses(engine: MarketDataEngine, venue: str | None = None,
                  market: str | None = None) -> list[FeedStatus]:
    """The rows of ``GET /feeds``, sorted by venue, market, data type."""
    rows = []
    for (symbol, _), channel in list(engine.channels.items()):
        if market is not None and symbol != market:
            continue
        row = channel.status()
        if row is not None and (venue is None or row.venue == venue):
            rows.append(row)
    rows.sort(key=lambda r: (r.venue, r.market, r.data_type))
    return rows


def feeds_routes(engine: MarketDataEngine) -> list[web.RouteDef]:
    async def feeds(request: web.Request) -> web.Response:
        query = only_params(request.query, FEEDS_PARAMETERS, "/feeds")
        venue = _venue(engine, query.get("venue"))
        market = query.get("market")
        if market is not None:
            parse_market(market)  # InvalidMarket (400) naming the bad part
        return json_response(feed_statuses(engine, venue, market))

    return [web.get("/feeds", feeds, allow_head=False)]
