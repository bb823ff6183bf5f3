"""End to end: an OpenCV-written video of parts, triggers from a separate process over a real
Mosquitto, a real image bundle through ONNX Runtime, decisions read by a separate subscriber."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from factoryedge.runtimes.devkit.plc import Plan, Report
from factoryedge.runtimes.inspection.config import InspectionConfig
from factoryedge.runtimes.inspection.image_model import ImageModel
from factoryedge.runtimes.inspection.sorter import Sorter
from factoryedge.runtimes.sinks.mqtt import MqttSink
from tests.runtimes.inspection.helpers import parts_video
from tests.support.image_bundle import make_image_bundle

PARTS, FRAMES_PER_PART, FPS = 20, 3, 30.0
DEFECTIVE = {2, 5, 11, 17}
BASE = "factoryedge/v1/s1/l1/sorter1"


def write_parts_video(path: Path) -> Path:
    return parts_video(path, PARTS, DEFECTIVE, FRAMES_PER_PART, FPS)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_image_bundle(tmp_path_factory.mktemp("e2e") / "bundle")


def test_every_trigger_gets_the_right_decision_over_mqtt(tmp_path, broker, subscribe, bundle):
    video = write_parts_video(tmp_path / "parts.avi")
    decisions = subscribe([f"{BASE}/decision", f"{BASE}/trigger/error"])
    config = InspectionConfig.parse({
        "camera": f"file://{video}?realtime=true&loop=true", "trigger": "mqtt", "deadline_ms": 250,
        "frame_max_wait_ms": 150, "archive": {"dir": str(tmp_path / "rejects"), "max_items": 50}})
    sink = MqttSink.from_uri(f"{broker.url}?site=s1&line=l1&machine=sorter1&device_id=d1"
                             f"&outbox={tmp_path / 'outbox.sqlite'}&reconnect_min=0.05&reconnect_max=0.2")
    model = ImageModel.load(bundle.path, backend="onnxruntime")
    sorter = Sorter(config, model, sink)
    runner = threading.Thread(target=sorter.run, daemon=True)
    runner.start()
    try:
        assert sink.wait_connected(5)
        time.sleep(0.3)  # subscriptions in place before the PLC starts
        # one trigger per part as the part passes the camera, after one the device cannot read
        plan = Plan(broker.url, BASE, parts=PARTS, period=FRAMES_PER_PART / FPS, digits=2, malformed_first=True,
                    report=tmp_path / "plc.json")
        plc = subprocess.run(plan.command(), capture_output=True, text=True, timeout=60)
        assert plc.returncode == 0, plc.stderr
        got = decisions.wait_for(lambda m: len(m) >= PARTS, 15, "a decision for every trigger", topic=f"{BASE}/decision")
        errors = decisions.wait_for(lambda m: len(m) >= 1, 5, "the malformed trigger answered",
                                    topic=f"{BASE}/trigger/error")
    finally:
        sorter.stop()
        runner.join(20)
        model.close()
        sink.close()
    assert not runner.is_alive()
    parts = [json.loads(r.payload) for r in got]
    heard = Report.read(plan.report)  # what the PLC itself received matches what the plant saw
    assert heard.missing == [] and {d.part_id: d.payload for d in heard.decisions} == {d["part_id"]: d for d in parts}
    assert sorted(d["part_id"] for d in parts) == [f"part-{i:02d}" for i in range(PARTS)]
    for d in parts:
        assert d["reason"] == "score", d
        shows = d["frame_pos"] // FRAMES_PER_PART
        assert d["verdict"] == ("reject" if shows in DEFECTIVE else "pass"), d
        assert d["model_name"] == "template" and d["threshold"] == pytest.approx(model.threshold)
        assert d["capture_epoch"] >= d["trigger_epoch"] and d["latency_ms"] < d["deadline_ms"]
    verdicts = {d["verdict"] for d in parts}
    assert verdicts == {"pass", "reject"}
    assert "not UTF-8" in json.loads(errors[0].payload)["error"]
    rejects = [d for d in parts if d["verdict"] == "reject"]
    assert len(list((tmp_path / "rejects").glob("*.heat.png"))) == len(rejects)
    stats = sorter.stats()
    assert stats["triggers"] == PARTS and stats["trigger_malformed"] == 1 and stats["late"] == 0
