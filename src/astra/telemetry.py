"""One gateway's measurements: the Prometheus metrics every layer observes into.

A ``Telemetry`` owns its own ``prometheus_client.CollectorRegistry`` (not the process-global
one), so several gateways in one process (the tests) never share or clash over a series. It
imports nothing from Astra: every layer may hold one, handed down by the gateway like a
transport (``telemetry=`` constructor arguments, ``None`` meaning "not measured").

Invariants:
- Label values are bounded sets: routes are the app's route templates (never raw paths),
  venues are venue codes, operations and outcomes are fixed words. Markets appear only in
  gauges read at scrape time (``astra.server.metrics``), never in a histogram.
- Observing costs one ``bisect`` into a plain list of bucket counts and one float add
  (``BucketHistogram``): ``observer(...)`` binds a label set once and returns its ``observe``;
  hot paths keep that callable. prometheus_client's own ``Histogram.observe`` takes a lock
  and loops over the buckets (~0.7 µs): too much for a ~20 µs REST answer.
- A histogram observed only on the event loop's thread (REST, fan-out, order round trips)
  takes no lock: one thread increments, so nothing is lost. One observed from worker threads
  (the journal, database reads: ``threaded=True``) increments under a lock: two threads'
  ``+=`` could otherwise lose one. A scrape reads the counts as they are (from the loop thread,
  or any thread for ``get_sample_value`` in tests): at worst one observation is half seen
  (bucket and not yet sum), never lost.
- At scrape time each ``BucketHistogram`` is exposed exactly as a prometheus_client
  ``Histogram`` with the same name, labels and buckets would be: per label set the cumulative
  ``_bucket{le}`` samples ending with ``+Inf``, ``_count``, ``_sum`` and ``_created`` (unless
  prometheus_client's created series are disabled), families declared (HELP/TYPE) before
  anything is observed.
- Durations are seconds (Prometheus convention), measured with ``time.perf_counter`` or
  ``time.perf_counter_ns`` on the observing side.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter
from prometheus_client import metrics as _prometheus_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["FAST_BUCKETS", "SLOW_BUCKETS", "BucketHistogram", "Telemetry", "timed"]

# Sub-millisecond resolution where the product promises it (REST, fan-out, journal) ...
FAST_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5,
)
# ... and up to tens of seconds where a venue answers (order round trips).
SLOW_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


class _Series:
    """One label set's counts: ``counts[i]`` observations in (bounds[i-1], bounds[i]], the
    last one above every bound (+Inf), and their sum."""

    __slots__ = ("counts", "created", "observe", "sum")

    def __init__(self, bounds: tuple[float, ...], lock: threading.Lock | None) -> None:
        self.counts = counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = time.time()
        series = self

        if lock is None:
            def observe(value: float, _bisect=bisect_left) -> None:
                counts[_bisect(bounds, value)] += 1  # the first bound >= value: Prometheus' le
                series.sum += value
        else:
            def observe(value: float, _bisect=bisect_left) -> None:
                i = _bisect(bounds, value)
                with lock:
                    counts[i] += 1
                    series.sum += value

        self.observe = observe


class _Child:
    """``family.labels(...)``: what prometheus_client's labelled child offers, ``observe``."""

    __slots__ = ("observe",)

    def __init__(self, series: _Series) -> None:
        self.observe = series.observe


class BucketHistogram(Collector):
    """A Prometheus histogram family observed into plain lists (see the module's invariants),
    registered on ``registry`` as its own collector."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float], registry: CollectorRegistry | None = None, *,
                 threaded: bool = False) -> None:
        bounds = tuple(float(b) for b in buckets)
        if list(bounds) != sorted(bounds) or not bounds:
            raise ValueError("buckets must be given in increasing order")
        if bounds[-1] == float("inf"):
            bounds = bounds[:-1]  # +Inf is always the last bucket (the counts' last slot)
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self.bounds = bounds
        self._les = [floatToGoString(b) for b in bounds] + ["+Inf"]
        self._lock = threading.Lock() if threaded else None
        self._series: dict[tuple[str, ...], _Series] = {}
        if registry is not None:
            registry.register(self)

    def series(self, *labels: str) -> _Series:
        """The label set's series, made on first use (a race keeps the first one made)."""
        found = self._series.get(labels)
        if found is None:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels}")
            found = self._series.setdefault(labels, _Series(self.bounds, self._lock))
        return found

    def labels(self, *labels: str) -> _Child:
        return _Child(self.series(*labels))

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "histogram")]

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "histogram")
        # prometheus_client's switch (disable_created_metrics(), PROMETHEUS_DISABLE_CREATED_SERIES)
        created = getattr(_prometheus_metrics, "_use_created", True)
        for labels, series in list(self._series.items()):
            named = dict(zip(self.labelnames, labels, strict=True))
            if self._lock is not None:
                with self._lock:
                    counts, total = list(series.counts), series.sum
            else:
                counts, total = list(series.counts), series.sum
            acc = 0.0
            for le, n in zip(self._les, counts, strict=True):
                acc += n
                metric.samples.append(Sample(self.name + "_bucket", {**named, "le": le}, acc))
            metric.samples.append(Sample(self.name + "_count", named, acc))
            metric.samples.append(Sample(self.name + "_sum", named, total))
            if created:
                metric.samples.append(Sample(self.name + "_created", named, series.created))
        yield metric


class Telemetry:
    """The metrics of one gateway process. Attributes are the metric families;
    ``observer`` gives a bound, cached ``observe`` for one label set."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.http_request_seconds = BucketHistogram(
            "astra_http_request_duration_seconds",
            "REST request handling time in the gateway, by route template, method and status.",
            ["route", "method", "status"], FAST_BUCKETS, r)
        self.order_round_trip_seconds = BucketHistogram(
            "astra_order_round_trip_seconds",
            "Venue round trip of an order operation (send to venue answer), by venue.",
            ["venue", "operation", "outcome"], SLOW_BUCKETS, r)
        self.feed_latency_seconds = BucketHistogram(
            "astra_feed_to_client_seconds",
            "From a venue frame's receipt to its update written to every subscriber, by venue.",
            ["venue"], FAST_BUCKETS, r)
        # Observed on worker threads too (journal writes, database round trips): locked.
        self.journal_write_seconds = BucketHistogram(
            "astra_journal_write_seconds",
            "Order journal writes (until committed), by operation.",
            ["operation"], FAST_BUCKETS, r, threaded=True)
        self.db_query_seconds = BucketHistogram(
            "astra_db_query_seconds",
            "Other database round trips (API keys, OTC, routing), by store and operation.",
            ["store", "operation"], FAST_BUCKETS, r, threaded=True)
        self.ws_dropped_clients = Counter(
            "astra_ws_dropped_clients",
            "WebSocket clients closed by the gateway for falling behind, by data type.",
            ["dataType"], registry=r)
        self._observers: dict[tuple, Callable[[float], None]] = {}

    def observer(self, family: BucketHistogram, *labels: str) -> Callable[[float], None]:
        """``family``'s ``observe`` for ``labels``, bound once per label set."""
        key = (family, labels)
        bound = self._observers.get(key)
        if bound is None:
            bound = self._observers[key] = family.series(*labels).observe
        return bound


@contextmanager
def timed(telemetry: Telemetry | None, family: str, *labels: str) -> Iterator[None]:
    """Observe the block's duration (seconds) into ``telemetry.<family>`` for ``labels``;
    nothing when ``telemetry`` is None. For blocking round trips (a database call in a worker
    thread), not for per-message hot paths, which keep an ``observer``."""
    if telemetry is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        telemetry.observer(getattr(telemetry, family), *labels)(time.perf_counter() - started)
