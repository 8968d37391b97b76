"""``/metrics``: the gateway's Prometheus exposition, through ``prometheus_client``.

One ``Telemetry`` (``astra.telemetry``) per gateway holds the histograms and counters the hot
paths observe into; ``Metrics`` registers on that same registry a collector that reads the
rest of the gateway's state when scraped, so a scrape is one ``generate_latest`` of the
gateway's own registry (never the process-global one: two gateways in one process never mix).

Families the components observe into (``astra.telemetry``; histograms in seconds):
``astra_http_request_duration_seconds{route,method,status}`` (the error middleware),
``astra_order_round_trip_seconds{venue,operation,outcome}`` (trading),
``astra_feed_to_client_seconds{venue}`` (fan-out), ``astra_journal_write_seconds{operation}``,
``astra_db_query_seconds{store,operation}`` (``api_keys``: read, touch, insert, revoke;
``otc``: balances, save_quote, read_quote, accept) and the counter
``astra_ws_dropped_clients_total{dataType}``.

Families read at scrape time (``_StateCollector``):

- ``astra_http_requests_total{route,status}``: answers by route template (``unmatched`` for a
  path no route takes: never the raw path) and status.
- ``astra_ws_clients{dataType}``: market-data WebSocket subscriptions; ``astra_ws_connections``:
  open WebSockets of every kind (market data, private, replay).
- ``astra_<stat>_total``: the market-data engine's counters (``snapshots``, ``book_updates``,
  ``resyncs``, ``trades``); ``astra_feeds``: running channels.
- Per book (one series per venue and market the gateway keeps a book of, SMART included):
  ``astra_book_state{venue,market,state}`` (1 for the current state, 0 for the others),
  ``astra_book_market_updates_total{venue,market}``, ``astra_book_latency_seconds{venue,market}``
  (last venue event to local receipt, where the venue stamps its events) and
  ``astra_book_resyncs_total{venue,market,reason}``. (``astra_book_updates_total`` is the
  engine-wide counter above: a family has one label set, hence the per-market name.)
- The OTC desk, the history recorder and a cluster node's counters, when present, and
  ``astra_uptime_seconds``.

Invariants:
- Nothing here runs on a hot path: the collector reads counters the components keep anyway,
  in memory, with no await (one consistent look, as ``GET /feeds``).
- Per-book series use the rows ``GET /feeds`` shows (``Channel.status()``), so the two never
  disagree; markets are labels only here, in gauges and counters read at scrape time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from astra.core import DataType
from astra.marketdata.engine import MarketDataEngine
from astra.telemetry import Telemetry

__all__ = ["BOOK_STATES", "CONTENT_TYPE_LATEST", "Metrics"]

BOOK_STATES = ("connecting", "synced", "resyncing", "disconnected")
_OTC_EVENTS = ("quotes", "quotes_refused", "trades", "accepts_refused", "accepts_repeated")


class Metrics:
    """What ``/metrics`` and ``/health`` read: the request counter the error middleware
    keeps, WebSocket subscription counts, and the components set once they exist."""

    def __init__(self, engine: MarketDataEngine, telemetry: Telemetry | None = None) -> None:
        self.engine = engine
        self.telemetry = telemetry if telemetry is not None else Telemetry()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.ws_clients: Counter[str] = Counter()
        self.started = time.time()
        self.desk: Any = None  # the OTC desk (astra.otc.Desk), when the gateway has one
        self.recorder: Any = None  # the history recorder (astra.history.Recorder), when on
        self.role = "all"  # astra serve --role: all, feed or edge
        # A cluster node's counters: part ("feed", "edge", "limits") -> name -> count.
        self.cluster: Callable[[], Mapping[str, Mapping[str, int]]] | None = None
        # Open WebSockets of every kind (the gateway's sessions), when the node serves any.
        self.ws_connections: Callable[[], int] | None = None
        self.telemetry.registry.register(_StateCollector(self))

    def exposition(self) -> bytes:
        """The Prometheus text of this gateway's registry (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.telemetry.registry)

    def render(self) -> str:
        return self.exposition().decode()


class _StateCollector(Collector):
    """The families read from the gateway's state at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # names vary with the engine's counters and the node's parts: no check

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily("astra_http_requests_total",
                                       "REST answers by route template and status.",
                                       labels=["route", "status"])
        for (route, status), n in sorted(m.requests.items()):
            requests.add_metric([route, str(status)], n)
        yield requests
        clients = GaugeMetricFamily("astra_ws_clients",
                                    "Market-data WebSocket subscriptions by data type.",
                                    labels=["dataType"])
        for data_type in DataType:
            clients.add_metric([data_type.value], m.ws_clients[data_type])
        yield clients
        if m.ws_connections is not None:
            yield GaugeMetricFamily("astra_ws_connections", "Open WebSocket connections.",
                                    value=m.ws_connections())
        for name, value in m.engine.stats.items():
            yield CounterMetricFamily(f"astra_{name}_total", f"Market-data engine: {name}.",
                                      value=value)
        yield GaugeMetricFamily("astra_feeds", "Running market-data channels.",
                                value=len(m.engine.channels))
        yield from _books(m.engine)
        if m.desk is not None:
            yield from _otc(m.desk)
        if m.recorder is not None:
            yield from _history(m.recorder)
        if m.cluster is not None:
            for part, stats in sorted(m.cluster().items()):
                for name, value in sorted(stats.items()):
                    yield CounterMetricFamily(f"astra_cluster_{part}_{name}_total",
                                              f"Cluster {part}: {name}.", value=value)
        yield GaugeMetricFamily("astra_uptime_seconds", "Seconds since the gateway started.",
                                value=round(time.time() - m.started))


def _books(engine: MarketDataEngine) -> Iterator[Metric]:
    state = GaugeMetricFamily("astra_book_state",
                              "Each book's state: 1 for the current one (as GET /feeds).",
                              labels=["venue", "market", "state"])
    updates = CounterMetricFamily("astra_book_market_updates_total",
                                  "Updates applied to each book since its feed started.",
                                  labels=["venue", "market"])
    latency = GaugeMetricFamily("astra_book_latency_seconds",
                                "Each book's last update: venue event time to local receipt.",
                                labels=["venue", "market"])
    resyncs = CounterMetricFamily("astra_book_resyncs_total",
                                  "Each book's resyncs since its feed started, by reason.",
                                  labels=["venue", "market", "reason"])
    books = [(key[0], ch) for key, ch in list(engine.channels.items())
             if key[1] is DataType.ORDERBOOK]
    for symbol, channel in sorted(books, key=lambda pair: pair[0]):
        row = channel.status()
        if row is None:  # a SMART book none of whose members is attached
            continue
        for name in BOOK_STATES:
            state.add_metric([row.venue, symbol, name], 1 if row.state == name else 0)
        updates.add_metric([row.venue, symbol], row.updates)
        if row.latency_ms is not None:
            latency.add_metric([row.venue, symbol], row.latency_ms / 1000)
        for reason, n in sorted(getattr(channel, "resync_reasons", {}).items()):
            resyncs.add_metric([row.venue, symbol, reason], n)
    yield from (state, updates, latency, resyncs)


def _otc(desk: Any) -> Iterator[Metric]:
    events = CounterMetricFamily("astra_otc_events_total", "OTC desk events.",
                                 labels=["event"])
    for name in _OTC_EVENTS:
        events.add_metric([name], desk.stats[name])
    yield events
    hedger = desk.hedger
    yield CounterMetricFamily("astra_otc_hedge_legs_failed_total",
                              "OTC hedge legs that failed after their attempts.",
                              value=hedger.failed if hedger else 0)


def _history(recorder: Any) -> Iterator[Metric]:
    stats = recorder.stats
    rows = CounterMetricFamily("astra_history_rows_total", "History rows by outcome.",
                               labels=["outcome"])
    for name in ("rows_recorded", "rows_dropped"):
        rows.add_metric([name[5:]], stats[name])
    yield rows
    for name in ("files_written", "flushes", "write_errors"):
        yield CounterMetricFamily(f"astra_history_{name}_total", f"History recorder: {name}.",
                                  value=stats[name])
    yield GaugeMetricFamily("astra_history_pending_rows", "History rows not yet written.",
                            value=recorder.pending)
