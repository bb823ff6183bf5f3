"""Prometheus /metrics of a real condition monitor (replayed bearing, real ONNX model, real
Mosquitto), scraped over HTTP while it scores; and the shipped Grafana dashboard against it."""
from __future__ import annotations

import json
import re
import threading
from importlib import resources

import pytest

from factoryedge.runtimes.inspection.station import InspectionStation
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from tests.runtimes.plant.helpers import (
    alternating_replay,
    drive_parts_until,
    monitor_profile,
    parts_video,
    program_web,
    request,
    station_profile,
)
from tests.support.broker import wait_until
from tests.support.image_bundle import make_image_bundle

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

METRIC_NAME = re.compile(r"\b(factoryedge_[a-z0-9_]+)\b")


def scrape(url: str) -> dict[str, float]:
    """Sample name with labels -> value, from one scrape."""
    r = request(url, "GET", "/metrics")
    assert r.status == 200, r.body
    out = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def value(samples: dict[str, float], name: str) -> float:
    return samples[name + "{}"]


def running(program):
    """Run ``program`` on a thread; yields it with its web server's URL, stops it afterwards."""
    runner = threading.Thread(target=program.run, daemon=True)
    runner.start()
    try:
        yield program, program_web(program).url
    finally:
        program.stop()
        runner.join(30)
    assert not runner.is_alive()


@pytest.fixture
def running_monitor(tmp_path, broker, sim_bundle):
    yield from running(ConditionMonitor(load_profile(
        monitor_profile(tmp_path, sim_bundle, broker, alternating_replay(tmp_path)))))


@pytest.fixture
def running_station(tmp_path, broker):
    bundle = make_image_bundle(tmp_path / "bundle")
    yield from running(InspectionStation(load_profile(
        station_profile(tmp_path, bundle, broker, parts_video(tmp_path / "parts.avi")))))


def test_metrics_move_while_the_monitor_scores(running_monitor):
    monitor, url = running_monitor
    wait_until(lambda: monitor.live.windows_scored > 0 and monitor.live.health, 60, "scores and a health report")
    first = scrape(url)
    wait_until(lambda: monitor.live.windows_scored > value(first, "factoryedge_windows_scored_total") + 20, 60,
               "more windows scored")
    second = scrape(url)

    assert value(second, "factoryedge_windows_scored_total") > value(first, "factoryedge_windows_scored_total")
    count = "factoryedge_scoring_latency_seconds_count"
    assert value(second, count) > value(first, count) > 0
    assert second['factoryedge_scoring_latency_seconds_bucket{le=+Inf}'] == value(second, count)
    assert value(second, "factoryedge_scoring_latency_seconds_sum") > 0
    assert value(second, "factoryedge_threshold") == pytest.approx(monitor.debounce.threshold)
    assert "factoryedge_anomaly_score{}" in second and value(second, "factoryedge_anomaly_active") in (0.0, 1.0)
    for name in ("outbox_depth", "mqtt_reconnects_total", "dropped_frames_total", "commands_refused_total"):
        assert f"factoryedge_{name}{{}}" in second, name
    info = [k for k in second if k.startswith("factoryedge_device_info{")]
    assert len(info) == 1 and "machine=pump-7" in info[0] and "model_name=sim-bearing" in info[0]

    # the replay's faulty stretches raise anomaly events: counted by severity
    wait_until(lambda: monitor.counters.events > 0, 60, "an anomaly event")
    third = scrape(url)
    events = {k: v for k, v in third.items() if k.startswith("factoryedge_events_total{")}
    assert events and all("severity=" in k for k in events) and sum(events.values()) >= 1


def test_station_metrics_count_decisions_by_verdict(running_station, broker, tmp_path):
    station, url = running_station
    assert station.sink.wait_connected(10)
    before = scrape(url)
    assert not any(k.startswith("factoryedge_decisions_total{") for k in before)
    drive_parts_until(broker, tmp_path, lambda: station.live.verdicts()["reject"] >= 1
                      and station.live.verdicts()["pass"] >= 1, 60, "a passed and a rejected part")
    after = scrape(url)
    decided = {k: v for k, v in after.items() if k.startswith("factoryedge_decisions_total{")}
    assert decided["factoryedge_decisions_total{reason=score,verdict=reject}"] >= 1
    assert decided["factoryedge_decisions_total{reason=score,verdict=pass}"] >= 1
    n = sum(decided.values())
    assert value(after, "factoryedge_decision_latency_seconds_count") == n
    assert 0 < value(after, "factoryedge_reject_rate") < 1
    assert value(after, "factoryedge_windows_scored_total") >= 2


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(resources.files("factoryedge.firmware_config").joinpath(
        "grafana/factoryedge-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    return {m for e in exprs for m in METRIC_NAME.findall(e)}


def test_every_metric_the_grafana_dashboard_uses_is_exported(running_monitor, running_station, broker, tmp_path):
    used = dashboard_metrics()
    assert len(used) >= 12, used
    monitor, monitor_url = running_monitor
    station, station_url = running_station
    # the health counters appear with the first health report; events and decisions once counted
    wait_until(lambda: monitor.live.health and monitor.counters.events > 0, 60, "a health report and an event")
    drive_parts_until(broker, tmp_path, lambda: station.live.verdicts()["reject"] >= 1, 60, "a rejected part")
    wait_until(lambda: station.live.health, 30, "the station's health report")
    from_monitor = {k.split("{")[0] for k in scrape(monitor_url)}
    from_station = {k.split("{")[0] for k in scrape(station_url)}
    missing = used - from_monitor - from_station
    assert not missing, f"the dashboard queries metrics that /metrics does not export: {sorted(missing)}"
    # only the sorting metrics are the station's alone
    assert used - from_monitor <= {"factoryedge_decisions_total", "factoryedge_reject_rate"}
