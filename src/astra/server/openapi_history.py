"""The OpenAPI description of the history routes (``server/history.py``) and of replay's
``WS /ws`` parameters (``server/replay.py``), merged into ``openapi.openapi_document``.

Imported when the document is first built, not with the server: the history modules load
pyarrow.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["HISTORY_MODELS", "history_paths", "replay_params"]


def _models() -> tuple:
    from astra.core import Candle, HistoricalBook, HistoryMarket, TradesPage

    return (HistoryMarket, TradesPage, Candle, HistoricalBook)


HISTORY_MODELS = _models()
_TIME = {"type": "string", "description": "ISO 8601 (2026-12-06T10:00:00Z) or Unix ms"}
_NO_HISTORY = {"description": "market not recorded, or no record at that time "
                              "(NO_HISTORY: the message gives the recorded range)"}
_UNREADABLE = {"description": "a file of the record is damaged or not the record's "
                              "(RECORD_UNREADABLE: the message names it)"}


def history_paths(market_schema: dict, param: Callable[..., dict],
                  get: Callable[[str, list[dict], dict], dict],
                  ref: Callable[[str], dict]) -> dict:
    from astra.history.query import DEFAULT_LIMIT, INTERVALS, MAX_CANDLES, MAX_LIMIT

    from .params import MAX_DEPTH

    market = param("market", "a recorded market (GET /history/markets)", schema=market_schema)
    start = param("start", "from this time (default: end - 1 h)", False, _TIME)
    end = param("end", "up to this time, inclusive (default: now)", False, _TIME)
    paths = {
        "/history/markets": get(
            "What the recorder holds: each market, its data types, from when to when",
            [], {"type": "array", "items": ref("HistoryMarket")}),
        "/history/trades": get(
            "Recorded trades by the venue's trade time, paginated (nextCursor)",
            [market, start, end,
             param("limit", f"trades per page (default {DEFAULT_LIMIT}, max {MAX_LIMIT})",
                   False, {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                           "default": DEFAULT_LIMIT}),
             param("cursor", "nextCursor of the previous page", False)],
            ref("TradesPage")),
        "/history/orderbook": get(
            "The book as this gateway held it at a moment: the last snapshot before it plus "
            "every update after it (409 BOOK_NOT_IN_SYNC inside a recorded resync gap)",
            [market, param("time", "the moment (receive time)", schema=_TIME),
             param("depth", f"levels per side (at most {MAX_DEPTH}; all when absent)", False,
                   {"type": "integer", "minimum": 1, "maximum": MAX_DEPTH})],
            ref("HistoricalBook")),
        "/history/candles": get(
            f"OHLCV from the recorded trades, aligned to the epoch; at most {MAX_CANDLES} "
            "candles per request; intervals without a trade are left out",
            [market, param("interval", ", ".join(INTERVALS), schema={
                "type": "string", "enum": list(INTERVALS)}), start, end],
            {"type": "array", "items": ref("Candle")}),
    }
    for path in paths.values():
        path["get"]["responses"]["404"] = _NO_HISTORY
        path["get"]["responses"]["500"] = _UNREADABLE
    paths["/history/orderbook"]["get"]["responses"]["409"] = {
        "description": "the book was not in sync at that time (BOOK_NOT_IN_SYNC)"}
    return paths


def replay_params(param: Callable[..., dict]) -> list[dict]:
    from .replay import MAX_REPLAY_MARKETS, MAX_REPLAYS, MAX_SPEED

    return [
        param("from", "replay the record from this time instead of live data (ORDERBOOK, "
              f"TRADE); market then takes up to {MAX_REPLAY_MARKETS} comma-separated recorded "
              "markets, merged in receive order; the socket closes with 1000 'end of replay'. "
              f"At most {MAX_REPLAYS} replays run at once on the gateway (503 OVERLOADED "
              "beyond); from, to, speed and dataType are given once each",
              False, _TIME),
        param("to", "replay up to this time (default: the end of the record)", False, _TIME),
        param("speed", f"1 (real time, default), any number up to {MAX_SPEED:g}, or max",
              False, {"type": "string", "pattern": r"^(max|[0-9]{1,4}(\.[0-9]{1,6})?)$"}),
    ]
