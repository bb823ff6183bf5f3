"""LiveState: what the plant outputs read. Bins, counters and histograms from scored batches,
events and decisions; and a real device program feeding it (threshold, card, state) and
taking commands from a plant output through the same path as MQTT."""
from __future__ import annotations

import numpy as np
import pytest

from factoryedge.runtimes import messages as msg
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.plant.live import NO_LIVE_STATE, Histogram, LiveState
from factoryedge.runtimes.profile import load_profile
from factoryedge.scoring import ScoreRule
from tests.support.monitoring import write_profile
from tests.support.tiny_bundle import tiny_bundle

ID = msg.Identity(site="s", line="l", machine="m", device_id="d")
RULE = ScoreRule(threshold=1.0)


def test_scores_fall_into_time_bins_with_max_mean_and_crossings():
    live = LiveState(ID, "condition_monitoring", bin_s=1.0, horizon_s=3.0)
    live.add_scores(100.2, np.array([0.5, 1.5]), RULE, 0.002)
    live.add_scores(100.9, np.array([0.7]), RULE, 0.001)
    live.add_scores(101.1, np.array([0.1, 0.2, 0.3]), RULE, 0.003)
    bins = live.timeline()
    assert [b["t"] for b in bins] == [100.0, 101.0]
    assert bins[0] == {"t": 100.0, "max": 1.5, "mean": pytest.approx(0.9), "n": 3, "over": 1}
    assert bins[1]["over"] == 0 and bins[1]["n"] == 3
    assert live.windows_scored == 6 and live.last_score == 0.3
    assert live.timeline(since=100.0) == bins[1:]
    # older times (a replay, a clock step back) are counted but leave the timeline alone
    live.add_scores(50.0, np.array([9.0]), RULE, 0.001)
    assert live.windows_scored == 7 and len(live.timeline()) == 2
    for t in (102.5, 103.5, 104.5):  # the horizon keeps the newest three bins
        live.add_scores(t, np.array([0.1]), RULE, 0.001)
    assert [b["t"] for b in live.timeline()] == [102.0, 103.0, 104.0]


def test_latency_is_per_window_and_cumulative_as_prometheus_reads_it():
    h = Histogram(bounds=(0.001, 0.01))
    h.observe(0.0005, 4)
    h.observe(0.005)
    h.observe(5.0)
    assert h.cumulative() == [("0.001", 4), ("0.01", 5), ("+Inf", 6)]
    assert h.n == 6 and h.total == pytest.approx(0.002 + 0.005 + 5.0)
    live = LiveState(ID, "condition_monitoring")
    live.add_scores(1.0, np.zeros(8), RULE, 0.008)  # a batch of 8 in 8 ms: 1 ms per window, 8 times
    assert live.scoring_latency.n == 8 and live.scoring_latency.total == pytest.approx(0.008)


def test_decisions_events_and_reject_rate_reach_the_snapshot():
    live = LiveState(ID, "inspection")
    assert live.snapshot()["reject_rate"] is None
    common = dict(trigger_source="mqtt", trigger_epoch=10.0, capture_epoch=10.01, deadline_ms=100.0,
                  model_name="tiles", model_version="1")
    for i, (verdict, reason, score) in enumerate([("pass", "score", 0.2), ("reject", "score", 3.0),
                                                  ("reject", "deadline", None), ("pass", "score", 0.3)]):
        live.add_decision(msg.decision_payload(ID, part_id=f"P{i}", verdict=verdict, reason=reason, score=score,
                                               threshold=1.0, latency_ms=20.0 + i, now=11.0 + i, **common),
                          0.015 if score is not None else None)
    snap = live.snapshot()
    assert snap["verdicts"] == {"pass": 2, "reject": 2} and snap["reject_rate"] == 0.5
    assert [d["part_id"] for d in snap["recent_decisions"]] == ["P3", "P2", "P1", "P0"]  # newest first
    assert live.decisions[("reject", "deadline")] == 1 and live.decision_latency.n == 4
    assert live.scoring_latency.n == 3 and live.windows_scored == 3  # the deadline part was never scored
    assert [b["over"] for b in snap["timeline"]] == [0, 1, 0]
    live.add_event(msg.anomaly_payload(ID, severity="alarm", score=4.0, threshold=1.0, window_start=1.0,
                                       window_end=2.0, model_name="m", model_version="1", event_id="e1" * 16))
    snap = live.snapshot()
    assert snap["events_by_severity"] == {"alarm": 1} and snap["recent_events"][0]["event_id"] == "e1" * 16
    before = live.version
    live.set_state("alarm")
    live.set_state("alarm")  # no change, no new version
    assert live.version == before + 1 and live.anomaly_active and live.severity == "alarm"


def test_a_program_without_plant_outputs_pays_for_nothing(tmp_path, broker):
    monitor = ConditionMonitor(load_profile(write_profile(tmp_path, tiny_bundle(tmp_path / "b", threshold=2.0),
                                                          "replay://x.npz", broker)))
    try:
        assert monitor.live is NO_LIVE_STATE and monitor.plant_outputs == []
        assert monitor.live.add_scores(1.0, np.zeros(3), RULE, 0.1) is None
    finally:
        monitor.close()


def test_plant_commands_take_the_mqtt_command_path_and_show_on_the_live_state(tmp_path, broker):
    import yaml

    path = write_profile(tmp_path, tiny_bundle(tmp_path / "b", threshold=2.0), "replay://x.npz", broker)
    raw = yaml.safe_load(path.read_text())
    raw["web"] = {"port": 0, "page": False, "metrics": False}  # plant outputs on, nothing started here
    path.write_text(yaml.safe_dump(raw))
    monitor = ConditionMonitor(load_profile(path))
    try:
        live = monitor.live
        assert live.card.name == "tiny" and live.threshold == 2.0 and live.card.signer == "unsigned"
        reply = monitor.execute("set_threshold", {"threshold": 3.5}, "test")
        assert reply.status == "ok" and monitor.debounce.threshold == 3.5 and live.threshold == 3.5
        bad = monitor.execute("set_threshold", {"threshold": "high"}, "test")
        assert bad.status == "rejected" and "threshold" in bad.message and live.threshold == 3.5
        unknown = monitor.execute("explode", {}, "test")
        assert unknown.status == "rejected" and "set_threshold" in unknown.message  # names the valid ones
        odd = monitor.execute("set_threshold", {"threshold": object()}, "test")  # not even JSON
        assert odd.status == "rejected"
    finally:
        monitor.close()
