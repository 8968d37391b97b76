"""The ``GET /feeds`` part of ``/openapi.json`` (``server/feeds.py``; the ``read`` scope).

The row's schema is generated from ``astra.core.FeedStatus`` with the other models; this
adds the path, its parameters (the served venues and ``SMART``), and its answer.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["feeds_paths"]


def feeds_paths(venues: list[str], market_schema: dict, param: Callable[..., dict],
                get: Callable[[str, list[dict], dict], dict],
                ref: Callable[[str], dict]) -> dict:
    return {
        "/feeds": get(
            "Each live market-data feed of this gateway (the markets clients and reads keep "
            "running): its state, since when and why, resyncs (the last ten, newest first, "
            "with reasons), updates applied, the last update's local time and venue-to-gateway "
            "latency, WebSocket clients. Sorted by venue, market, dataType; a SMART row is "
            "the consolidated book's, its figures its members'.",
            [param("venue", "only this venue's feeds (a served venue, or SMART)", False,
                   {"type": "string", "enum": venues}),
             param("market", "only this market's feeds (none running: an empty list)", False,
                   market_schema)],
            {"type": "array", "items": ref("FeedStatus")},
        ),
    }
