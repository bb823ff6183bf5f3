"""End to end: an OpenCV-written video of parts, triggers from a separate process over a real
Mosquitto, a real image bundle through ONNX Runtime, decisions read by a separate subscriber."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

from factoryedge.runtimes.inspection.config import InspectionConfig
from factoryedge.runtimes.inspection.image_model import ImageModel
from factoryedge.runtimes.inspection.sorter import Sorter
from factoryedge.runtimes.sinks.mqtt import MqttSink
from tests.support.image_bundle import make_image_bundle, uniform_part

PARTS, FRAMES_PER_PART, FPS = 20, 3, 30.0
DEFECTIVE = {2, 5, 11, 17}
BASE = "factoryedge/v1/s1/l1/sorter1"

# the PLC: one paho client in its own process, one trigger per part as the part passes the camera
_PLC = r"""
import sys, time
import paho.mqtt.client as mqtt
host, port, topic, n, period = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
c.connect(host, port, 30)
c.loop_start()
c.publish(topic, b"\xff\xfe not a part id", qos=1).wait_for_publish(5)
t0 = time.monotonic()
for i in range(n):
    time.sleep(max(0.0, t0 + i * period - time.monotonic()))
    c.publish(topic, '{"part_id": "part-%02d", "t": %f}' % (i, time.time()), qos=1).wait_for_publish(5)
c.loop_stop()
c.disconnect()
"""


def write_parts_video(path: Path) -> Path:
    # lossless FFV1: the test model's threshold is calibrated on sensor noise, which MJPG's artefacts exceed
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), FPS, (128, 96))
    assert writer.isOpened()
    for p in range(PARTS):
        image = uniform_part(seed=p, defect=p in DEFECTIVE)
        for _ in range(FRAMES_PER_PART):
            writer.write(image)
    writer.release()
    return path


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
        plc = subprocess.run([sys.executable, "-c", _PLC, broker.host, str(broker.port), f"{BASE}/trigger",
                              str(PARTS), str(FRAMES_PER_PART / FPS)], capture_output=True, timeout=30)
        assert plc.returncode == 0, plc.stderr.decode()
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
