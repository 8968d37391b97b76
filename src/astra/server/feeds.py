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
- A ``SMART`` row is the consolidated book's: ``synced`` while any member book contributes
  (its ``since``: the earliest such member's), else the members' combined state (its
  ``since``: the latest member's change); its counters add up its members' (every member
  resync gives the SMART book's clients a fresh snapshot), its recent resyncs are the
  members', each reason prefixed with the member venue; its latency is the member's that
  updated last. A SMART channel none of whose members is attached has no row (its members'
  rows, if any, are listed on their own).
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from astra.core import (
    MAX_RECENT_RESYNCS,
    SMART,
    FeedStatus,
    InvalidParameter,
    ResyncEvent,
    parse_market,
)
from astra.marketdata.channels import latency_ms
from astra.marketdata.consolidated import SmartChannel
from astra.marketdata.engine import MarketDataEngine

from .auth import API_KEY_QUERY
from .errors import json_response

__all__ = ["FEEDS_PARAMETERS", "feed_statuses", "feeds_routes", "smart_status"]

FEEDS_PARAMETERS = ("venue", "market")


def _query(request: web.Request) -> Mapping[str, str]:
    query = request.query
    for name in query:
        if name == API_KEY_QUERY:
            continue
        if name not in FEEDS_PARAMETERS:
            raise InvalidParameter(name[:40], "unknown parameter: /feeds takes venue, market")
        if len(query.getall(name)) > 1:
            raise InvalidParameter(name, "given more than once")
    return query


def _venue(engine: MarketDataEngine, text: str | None) -> str | None:
    if text is None:
        return None
    if text != SMART and text not in engine.venues:  # exact codes, as the document's enum
        served = ", ".join([*sorted(engine.venues), SMART])
        raise InvalidParameter("venue", f"unknown venue {text[:20]!r}: this gateway serves "
                               f"{served}")
    return text


def smart_status(channel: SmartChannel) -> FeedStatus | None:
    """The SMART book's row (see the module docstring), or None with no member attached."""
    members = [m for m in channel.members.values() if m.channel is not None]
    if not members:
        return None
    books = [m.channel for m in members]
    live = [m for m in members if m.live]
    if live:
        state, reason = "synced", None
        since = min(m.channel.since for m in live)
    else:
        states = [m.state for m in members]
        state = ("connecting" if "connecting" in states else
                 "resyncing" if "resyncing" in states or "stale" in states else "disconnected")
        reason = "no member book in sync: " + ", ".join(
            f"{m.venue_code} {s}" for m, s in zip(members, states, strict=True))
        since = max(m.stale_since if m.state == "stale" else m.channel.since for m in members)
    recent = sorted(((at, f"{m.venue_code}: {why}") for m in members
                     for at, why in m.channel.recent_resyncs), reverse=True)
    last = max(books, key=lambda b: b.received_ns)
    return FeedStatus(
        market=channel.smart.symbol, venue=SMART, data_type="ORDERBOOK",
        state=state, since=since, reason=reason,  # type: ignore[arg-type]
        resyncs=sum(b.resyncs for b in books),
        recent_resyncs=[ResyncEvent(at=at, reason=why)
                        for at, why in recent[:MAX_RECENT_RESYNCS]],
        updates=sum(b.updates for b in books),
        last_update=last.received_ns // 1_000_000 if last.received_ns else None,
        latency_ms=latency_ms(last.received_ns, last.event_ms),
        clients=len(channel.clients) + len(channel.bbo.clients),
    )


def feed_statuses(engine: MarketDataEngine, venue: str | None = None,
                  market: str | None = None) -> list[FeedStatus]:
    """The rows of ``GET /feeds``, sorted by venue, market, data type."""
    rows = []
    for (symbol, _), channel in list(engine.channels.items()):
        if market is not None and symbol != market:
            continue
        row = smart_status(channel) if isinstance(channel, SmartChannel) else channel.status()
        if row is not None and (venue is None or row.venue == venue):
            rows.append(row)
    rows.sort(key=lambda r: (r.venue, r.market, r.data_type))
    return rows


def feeds_routes(engine: MarketDataEngine) -> list[web.RouteDef]:
    async def feeds(request: web.Request) -> web.Response:
        query = _query(request)
        venue = _venue(engine, query.get("venue"))
        market = query.get("market")
        if market is not None:
            parse_market(market)  # InvalidMarket (400) naming the bad part
        return json_response(feed_statuses(engine, venue, market))

    return [web.get("/feeds", feeds, allow_head=False)]
