"""The device program end to end: a simulated sensor on a real pty, the real serial source,
the bundle's ONNX model, the debounced scorer and a real Mosquitto with a subscriber in
another process. Broker outages and SIGKILL of the device process are in tests/faults/test_kills.py."""
from __future__ import annotations

import json
import subprocess
import threading
import time

import yaml

from factoryedge.data.loaders import save_npz
from factoryedge.data.simulator import simulate_bearing
from factoryedge.runtimes.devkit.sensor_node import PtyEndpoint, SensorStreamer
from factoryedge.runtimes.messages import parse_payload
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from tests.support.broker import wait_until
from tests.support.monitoring import ANOMALIES, SCALE, anomaly_events, write_profile
from tests.support.sim_model import RPM, SAMPLE_RATE


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
