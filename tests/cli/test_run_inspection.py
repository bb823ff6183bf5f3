"""``factoryedge run`` with an inspection profile: the device program as a real process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import pytest
import yaml

from tests.cli.test_cli import assert_one_line_error, cli
from tests.support.image_bundle import make_image_bundle, uniform_part

BASE = "factoryedge/v1/s/l/sorter/"


def write_profile(tmp_path, bundle_path, camera: str, trigger="periodic://?period_ms=100&prefix=p-",
                  mqtt="mqtt://127.0.0.1:1", **inspection):
    p = tmp_path / "station.yaml"
    p.write_text(yaml.safe_dump({
        "kind": "inspection",
        "identity": {"site": "s", "line": "l", "machine": "sorter", "device_id": "d"},
        "inspection": {"camera": camera, "trigger": trigger, "deadline_ms": 300, "frame_max_wait_ms": 200,
                       "archive": {"dir": "rejects", "max_items": 20}, **inspection},
        "model": {"bundle": str(bundle_path), "backend": "onnxruntime"},
        "mqtt": {"uri": mqtt, "outbox": str(tmp_path / "outbox.sqlite"), "health_interval_s": 0.5},
    }))
    return p


def write_video(path, defective=frozenset({1, 4})):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 20.0, (128, 96))
    for part in range(6):
        for _ in range(2):
            writer.write(uniform_part(seed=part, defect=part in defective))
    writer.release()
    return path


def test_check_verifies_profile_and_image_bundle(tmp_path):
    bundle = make_image_bundle(tmp_path / "b")
    r = cli("run", write_profile(tmp_path, bundle.path, "file:///nowhere.avi"), "--check")
    assert r.returncode == 0, r.stderr
    assert "image bundle template" in r.stdout and "verified" in r.stdout


def test_bad_inspection_section_is_one_line(tmp_path):
    bundle = make_image_bundle(tmp_path / "b")
    p = write_profile(tmp_path, bundle.path, "file:///x.avi", deadline_ms=50, frame_max_wait_ms=80)
    assert_one_line_error(cli("run", p), "station.yaml", "frame_max_wait_ms", "deadline_ms")
    p = write_profile(tmp_path, bundle.path, "http://cam/x.mjpg")
    assert_one_line_error(cli("run", p), "inspection.camera", "csi://", "file://")


def test_vibration_bundle_in_an_inspection_profile_is_refused(tmp_path):
    from tests.support.tiny_bundle import tiny_bundle

    b = tiny_bundle(tmp_path / "vib")
    assert_one_line_error(cli("run", write_profile(tmp_path, b.path, "file:///x.avi"), "--check"), "'image' bundle")


def test_station_process_decides_every_part_and_reports_health(tmp_path, broker, subscribe):
    bundle = make_image_bundle(tmp_path / "b")
    video = write_video(tmp_path / "parts.avi")
    profile = write_profile(tmp_path, bundle.path, f"file://{video}?realtime=true&loop=true", mqtt=broker.url)
    sub = subscribe([BASE + "decision", BASE + "health"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "factoryedge", "run", str(profile)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        got = sub.wait_for(lambda m: len(m) >= 12, 60, "12 decisions", topic=BASE + "decision")
        sub.wait_for(lambda m: len(m) >= 1, 10, "a health report", topic=BASE + "health")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        print(err[-3000:])  # shown when the test fails
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    decisions = [json.loads(r.payload) for r in got]
    ids = [d["part_id"] for d in decisions]
    assert len(set(ids)) == len(ids) and all(i.startswith("p-") for i in ids)
    assert all(d["reason"] == "score" for d in decisions), decisions
    assert {d["verdict"] for d in decisions} == {"pass", "reject"}
    rejected = [d for d in decisions if d["verdict"] == "reject"]
    assert len(list((tmp_path / "rejects").glob("*.json"))) == len(rejected)
    health = json.loads(sub.messages(topic=BASE + "health")[0].payload)
    assert health["extra"]["sorter"]["triggers"] >= 1
    # observed rejects / decisions beside the bundle's expected false-reject rate
    rate = json.loads(sub.messages(topic=BASE + "health")[-1].payload)["extra"]["reject_rate"]
    assert rate["expected_false_reject"] == bundle.manifest.score.false_reject.expected
    assert rate["observed"] is None if rate["decisions"] == 0 else 0 <= rate["observed"] <= 1


class CrashingCamera:
    """A camera whose reader fails with an exception after a few frames (a driver bug, not a lost stream)."""

    uri = "v4l2:///dev/video-broken"
    is_open = True
    stats = {}

    def open(self):
        return self

    def frames(self):
        from factoryedge.runtimes.cameras.frames import Frame

        for i in range(3):
            yield Frame(uniform_part(seed=i), time.monotonic(), time.time(), i, self.uri)
            time.sleep(0.05)
        raise RuntimeError("VIDIOC_DQBUF: No such device")

    def close(self):
        pass


def test_station_stops_for_a_restart_when_the_camera_reader_fails(tmp_path, broker):
    from factoryedge.runtimes.inspection.station import InspectionStation
    from factoryedge.runtimes.profile import load_profile

    bundle = make_image_bundle(tmp_path / "b")
    profile = load_profile(write_profile(tmp_path, bundle.path, "v4l2:///dev/video9", mqtt=broker.url))
    station = InspectionStation(profile, camera=CrashingCamera())
    runner = threading.Thread(target=station.run, daemon=True)
    runner.start()
    runner.join(20)
    if runner.is_alive():
        station.stop()  # do not leave a sorting thread behind in the test process
        runner.join(20)
        pytest.fail("the station kept running on a dead camera")
    assert station.failed and "VIDIOC_DQBUF" in station.failed
