"""Helpers for tests that run the condition monitor against a real broker: a device profile,
the anomaly events a subscriber or the outbox holds, and a recording that raises and clears."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import yaml

from factoryedge.data.loaders import save_npz
from factoryedge.data.recording import Recording
from factoryedge.data.simulator import simulate_bearing
from tests.support.sim_model import RPM, SAMPLE_RATE

ANOMALIES = "factoryedge/v1/+/+/+/event/anomaly"
SCALE = 1 / 2048


def write_profile(tmp_path, bundle, sensor_uri, broker, **scoring):
    profile = {
        "identity": {"site": "plant1", "line": "l2", "machine": "pump-7", "device_id": "edge-7"},
        "sensor": {"uri": sensor_uri},
        "model": {"bundle": str(bundle.path)},
        "scoring": {"baseline": {"mode": "off"}, **scoring},
        "mqtt": {"uri": broker.url, "outbox": str(tmp_path / "outbox.sqlite"),
                 # keep_delivered: outbox_event_ids reads every stored event, delivered or not
                 "options": {"reconnect_min": 0.05, "reconnect_max": 0.5, "keep_delivered": 1000},
                 "telemetry_interval_s": 1, "health_interval_s": 1},
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def anomaly_events(sub) -> list[dict]:
    return [m.json() for m in sub.messages() if m.topic.endswith("/event/anomaly")]


def outbox_event_ids(path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT payload FROM outbox WHERE topic LIKE '%/event/anomaly'").fetchall()
    finally:
        con.close()
    return [json.loads(r[0])["event_id"] for r in rows]


def alternating_recording(tmp_path, cycles: int = 6, seg_s: float = 2.0):
    """Healthy and faulty stretches in turn: each fault stretch raises and clears an anomaly."""
    parts = []
    for i in range(cycles):
        parts.append(simulate_bearing(seg_s, sample_rate=SAMPLE_RATE, rpm=RPM, seed=300 + i).signal)
        parts.append(simulate_bearing(seg_s, sample_rate=SAMPLE_RATE, rpm=RPM, fault="inner_race",
                                      severity=1.0, seed=400 + i).signal)
    rec = Recording(np.concatenate(parts), SAMPLE_RATE, ("x",), "alternating", "unknown")
    return save_npz(rec, tmp_path / "alternating.npz")
