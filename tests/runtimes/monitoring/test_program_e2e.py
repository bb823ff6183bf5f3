"""The device program end to end: a simulated sensor on a real pty, the real serial source,
the bundle's ONNX model, the debounced scorer and a real Mosquitto with a subscriber in
another process. Also: broker outage and SIGKILL of the device process lose no event."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import yaml

from factoryedge.data.loaders import save_npz
from factoryedge.data.recording import Recording
from factoryedge.data.simulator import simulate_bearing
from factoryedge.runtimes.devkit.sensor_node import PtyEndpoint, SensorStreamer
from factoryedge.runtimes.messages import parse_payload
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from tests.support.broker import wait_until
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


def test_fault_onset_through_pty_and_mosquitto(tmp_path, broker, subscribe, sim_bundle):
    sub = subscribe([ANOMALIES])
    speed, onset = 4.0, 8.0
    rec = simulate_bearing(16.0, sample_rate=SAMPLE_RATE, rpm=RPM, fault="outer_race", fault_onset_s=onset,
                           growth_s=1.0, seed=202)
    pty = PtyEndpoint(link=tmp_path / "vib0")
    uri = f"serial://{tmp_path / 'vib0'}?rate={SAMPLE_RATE:g}&format=fe1&channels=1&scale={SCALE!r}"
    monitor = ConditionMonitor(load_profile(write_profile(tmp_path, sim_bundle, uri, broker)))
    runner = threading.Thread(target=monitor.run)
    runner.start()
    try:
        wait_until(lambda: monitor.source.is_open, 10, "the serial source to open the pty")
        streamer = SensorStreamer(rec, pty, speed=speed)
        t0 = time.time()
        streamer.run()
        onset_wall = t0 + onset / speed
        wait_until(lambda: anomaly_events(sub), 10, "an anomaly event at the subscriber")
    finally:
        monitor.stop()
        runner.join(timeout=20)
        pty.close()
    assert not runner.is_alive()
    events = anomaly_events(sub)
    window_s = sim_bundle.manifest.preprocessing.window / SAMPLE_RATE
    for e in events:
        parse_payload(json.dumps(e).encode())  # the documented schema, validated
        assert e["schema"] == "factoryedge.anomaly/1" and e["machine"] == "pump-7"
        assert e["model_name"] == "sim-bearing" and len(e["event_id"]) == 32
        # nothing before the onset: every event's window ends after the fault began
        # (arrival jitter on the pty is well under one window)
        assert e["window_end_epoch"] >= onset_wall - window_s, (e, onset_wall)
    raised = [e for e in events if e["state"] == "raised"]
    assert len(raised) == 1
    assert raised[0]["window_end_epoch"] < onset_wall + 1.5  # detected within 6 s of machine time
    assert "top_contributors" in raised[0]["details"]
    # no data was lost on the way: the pty carried every frame intact
    assert monitor.counters.dropped_frames == 0 and monitor.counters.windows > 100


def alternating_recording(tmp_path, cycles: int = 6, seg_s: float = 2.0):
    """Healthy and faulty stretches in turn: each fault stretch raises and clears an anomaly."""
    parts = []
    for i in range(cycles):
        parts.append(simulate_bearing(seg_s, sample_rate=SAMPLE_RATE, rpm=RPM, seed=300 + i).signal)
        parts.append(simulate_bearing(seg_s, sample_rate=SAMPLE_RATE, rpm=RPM, fault="inner_race",
                                      severity=1.0, seed=400 + i).signal)
    rec = Recording(np.concatenate(parts), SAMPLE_RATE, ("x",), "alternating", "unknown")
    return save_npz(rec, tmp_path / "alternating.npz")


def test_broker_outage_mid_run_loses_no_event(tmp_path, broker, subscribe, sim_bundle):
    sub = subscribe([ANOMALIES])
    replay = alternating_recording(tmp_path)
    profile = load_profile(write_profile(tmp_path, sim_bundle, f"replay://{replay}?speed=4&block=512", broker,
                                         clear_windows=5))
    monitor = ConditionMonitor(profile)
    runner = threading.Thread(target=monitor.run)
    runner.start()
    wait_until(lambda: anomaly_events(sub), 15, "a first anomaly event")
    broker.stop()
    produced_before = monitor.counters.events
    wait_until(lambda: monitor.counters.events >= produced_before + 2, 15, "events while the broker is down")
    during_outage = monitor.counters.events - produced_before
    broker.restart()
    runner.join(timeout=60)  # the replay ends; run() closes the sink and flushes the outbox
    assert not runner.is_alive()
    stored = outbox_event_ids(tmp_path / "outbox.sqlite")
    wait_until(lambda: {e["event_id"] for e in anomaly_events(sub)} >= set(stored), 15, "every stored event")
    received = anomaly_events(sub)
    assert during_outage >= 2
    assert len(stored) == len(set(stored)) == monitor.counters.events
    assert {e["event_id"] for e in received} == set(stored)


def test_device_killed_and_restarted_delivers_every_event(tmp_path, broker, subscribe, sim_bundle):
    sub = subscribe([ANOMALIES])
    replay = alternating_recording(tmp_path, cycles=10)
    path = write_profile(tmp_path, sim_bundle, f"replay://{replay}?speed=4&block=512", broker, clear_windows=5)
    outbox = tmp_path / "outbox.sqlite"
    cmd = [sys.executable, "-m", "factoryedge", "run", str(path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        wait_until(lambda: anomaly_events(sub), 30, "a first anomaly from the device process")
        # With the broker gone, new events can only wait in the outbox when the process dies.
        broker.stop()
        wait_until(lambda: len(outbox_event_ids(outbox)) > len(anomaly_events(sub)) + 1, 20,
                   "undelivered events in the outbox")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    left_behind = set(outbox_event_ids(outbox)) - {e["event_id"] for e in anomaly_events(sub)}
    assert left_behind, "the test must kill the device with events still undelivered"
    broker.restart()
    second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        wait_until(lambda: {e["event_id"] for e in anomaly_events(sub)} >= left_behind, 30,
                   "the restarted device to deliver what the killed one left behind")
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err.decode(errors="replace")[-2000:]
    stored = outbox_event_ids(outbox)
    wait_until(lambda: {e["event_id"] for e in anomaly_events(sub)} >= set(stored), 15, "every stored event")
    received = [e["event_id"] for e in anomaly_events(sub)]
    # at-least-once on the wire; exactly once after de-duplication by event_id
    assert set(received) == set(stored) and len(set(stored)) == len(stored)
    assert len(received) >= len(stored)


def test_commands_and_per_machine_baselining(tmp_path, broker, subscribe, sim_bundle):
    base = "factoryedge/v1/plant1/l2/pump-7"
    sub = subscribe([f"{base}/command/response"])
    normal = simulate_bearing(40.0, sample_rate=SAMPLE_RATE, rpm=RPM, seed=505)
    replay = save_npz(normal, tmp_path / "normal.npz")
    path = write_profile(tmp_path, sim_bundle, f"replay://{replay}?speed=4&block=512", broker)
    raw = yaml.safe_load(path.read_text())
    raw["scoring"]["baseline"] = {"mode": "calibrate", "duration_s": 3, "state": str(tmp_path / "baseline.json")}
    path.write_text(yaml.safe_dump(raw))
    monitor = ConditionMonitor(load_profile(path))
    runner = threading.Thread(target=monitor.run)
    runner.start()

    def command(body: dict) -> dict:
        rid = body["request_id"]
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
                        "-t", f"{base}/command", "-m", json.dumps(body)], check=True, timeout=10)
        return wait_until(lambda: next((m.json() for m in sub.messages() if m.json().get("request_id") == rid), None),
                          10, f"the response to {rid}")

    try:
        state_file = tmp_path / "baseline.json"
        wait_until(state_file.exists, 20, "this machine's baseline to be learned")
        learned = json.loads(state_file.read_text())
        assert learned["machine"] == "pump-7" and learned["windows"] >= 3 * SAMPLE_RATE / 256 - 1
        assert monitor.debounce.threshold == learned["threshold"] != sim_bundle.manifest.score.threshold

        r = command({"command": "set_threshold", "args": {"threshold": 123.0}, "request_id": "r1"})
        assert r["status"] == "ok" and monitor.debounce.threshold == 123.0

        state_file.unlink()
        r = command({"command": "recalibrate", "args": {"duration_s": 3}, "request_id": "r2"})
        assert r["status"] == "accepted"
        wait_until(state_file.exists, 20, "the re-learned baseline")
        assert monitor.debounce.threshold == json.loads(state_file.read_text())["threshold"]

        r = command({"command": "reload", "args": {"bundle": str(tmp_path / "nope")}, "request_id": "r3"})
        assert r["status"] == "error" and "does not exist" in r["message"] and "still running sim-bearing" in r["message"]
        r = command({"command": "self_destruct", "request_id": "r4"})
        assert r["status"] in ("rejected", "error") and "set_threshold" in r["message"]
    finally:
        monitor.stop()
        runner.join(timeout=30)
    assert not runner.is_alive()
