"""Prometheus metrics of a running device program, read from its ``LiveState`` at scrape time.

    Prometheus --GET /metrics--> WebServer --> MetricsExporter.render() --> LiveCollector.collect()
                                                                                |
                                                                            LiveState (read only)

Nothing is counted twice: the collector turns what the program already keeps for the page
and Sparkplug into metric families when a scrape asks, in a registry of its own (the
process-wide default registry would also carry whatever else the process registered, and
two programs in one test process would collide there). Names start ``factoryedge_``;
counters end ``_total``. The health counters (outbox depth, reconnects, dropped frames,
refused commands) come from the last health report, so they appear once the first report
is out (at start) and move on its clock (``mqtt.health_interval_s``).

``prometheus_client`` is the ``ui`` extra; it is imported when an exporter is made, and a
missing one raises ``BackendUnavailableError`` naming the extra.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from factoryedge.errors import missing_dependency

PREFIX = "factoryedge_"
# health-report field -> (metric name, help, counter?)
_HEALTH = {
    "outbox_depth": ("outbox_depth", "Events stored on disk waiting for the broker", False),
    "mqtt_reconnects": ("mqtt_reconnects", "Reconnections to the MQTT broker since start", True),
    "dropped_frames": ("dropped_frames", "Sensor frames lost or unreadable since start", True),
    "commands_refused": ("commands_refused", "Commands refused (malformed, unknown, rate-limited) since start", True),
}


def _prometheus() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError:
        raise missing_dependency("prometheus_client", "ui", "Prometheus /metrics") from None
    return prometheus_client


class LiveCollector:
    """A Prometheus custom collector over one ``LiveState``; see the module doc."""

    def __init__(self, live: Any) -> None:
        self.live = live
        self._core = _prometheus().core

    def describe(self) -> list:
        # no up-front description: registering must not run a collection before the program feeds live
        return []

    def collect(self) -> Iterator[Any]:
        core, live = self._core, self.live
        ident = live.identity.fields()
        card = live.card
        info = {**ident, "kind": str(live.kind), "model_name": card.name if card else "",
                "model_version": card.version if card else "", "backend": card.backend if card else ""}
        m = core.InfoMetricFamily(PREFIX + "device", "Device identity and the model it runs")
        m.add_metric([], info)
        yield m

        counts = live.counters()  # one consistent copy against the scoring thread
        windows = core.CounterMetricFamily(PREFIX + "windows_scored", "Windows (or parts) scored since start")
        windows.add_metric([], counts["windows_scored"])
        yield windows
        events = core.CounterMetricFamily(PREFIX + "events", "Anomaly events published, by severity",
                                          labels=["severity"])
        for severity, n in sorted(counts["events"].items()):
            events.add_metric([severity], n)
        yield events
        decisions = core.CounterMetricFamily(PREFIX + "decisions", "Pass/reject decisions published",
                                             labels=["verdict", "reason"])
        for (verdict, reason), n in sorted(counts["decisions"].items()):
            decisions.add_metric([verdict, reason], n)
        yield decisions

        yield self._histogram("scoring_latency_seconds", "Model time per scored window or part",
                              counts["scoring_latency"])
        yield self._histogram("decision_latency_seconds", "Trigger to published decision",
                              counts["decision_latency"])

        for name, value, doc in (
                ("anomaly_score", live.last_score, "The last anomaly score"),
                ("threshold", live.threshold, "The anomaly threshold in force"),
                ("anomaly_active", float(bool(live.anomaly_active)), "1 while a debounced anomaly is active"),
                ("reject_rate", self._reject_rate(), "Observed rejects / decisions since start")):
            if value is not None:
                yield core.GaugeMetricFamily(PREFIX + name, doc, value=float(value))

        health = dict(live.health)
        for key, (name, doc, counter) in _HEALTH.items():
            value = health.get(key)
            if value is None:
                continue
            family = core.CounterMetricFamily if counter else core.GaugeMetricFamily
            yield family(PREFIX + name, doc, value=float(value))

    def _histogram(self, name: str, doc: str, hist: Any) -> Any:
        buckets = hist.cumulative()
        return self._core.HistogramMetricFamily(PREFIX + name, doc, buckets=buckets, sum_value=hist.total)

    def _reject_rate(self) -> float | None:
        verdicts = self.live.verdicts()
        decided = sum(verdicts.values())
        return verdicts.get("reject", 0) / decided if decided else None


class MetricsExporter:
    """``render()`` -> (body bytes, content type) of one scrape, from a registry of its own."""

    def __init__(self, live: Any) -> None:
        prometheus = _prometheus()
        self._generate = prometheus.generate_latest
        self.content_type = prometheus.CONTENT_TYPE_LATEST
        self.registry = prometheus.CollectorRegistry(auto_describe=False)
        self.registry.register(LiveCollector(live))

    def render(self) -> tuple[bytes, str]:
        return self._generate(self.registry), self.content_type
