"""Trigger-to-decision latency of the on-line sorter over a real local Mosquitto.

Run: ``python benchmarks/inspection_latency.py [--bundle DIR] [--rate 20] [--n 300]``. Without
``--bundle`` it exports the small template image model of the tests first (needs torch).
The device side runs as in the factory: a ``file://`` camera paced at the video's 60 fps,
``ImageModel`` on ONNX Runtime, the MQTT trigger on the sink's client, decisions through the
outbox at QoS 1. A "PLC" in a separate process sends paced triggers and receives the
decisions on one client, so the latency is measured outside the device process: PLC
publish -> broker -> sorter (frame, score, outbox) -> broker -> PLC. It also prints the
device's own ``latency_ms`` (trigger receipt -> decision handed to the sink) from the
payloads. The PLC runs twice, side by side: with Nagle's algorithm on its socket (paho's
default) and with TCP_NODELAY (as the device's own MQTT client sets it), since a PLC's MQTT
stack may do either. Prints percentiles and their ratios; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FPS = 60.0

_PLC = r"""
import json, sys, threading, time
import paho.mqtt.client as mqtt
import socket
host, port, base, n, rate, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
nodelay, prefix = sys.argv[7] == "1", sys.argv[8]
sent, sent_wall, got, ready, done = {}, {}, {}, threading.Event(), threading.Event()
def on_connect(c, u, f, rc, p):
    if nodelay:
        c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.subscribe(base + "/decision", qos=1)
def on_subscribe(c, u, mid, rcs, p):
    ready.set()
def on_message(c, u, m):
    d = json.loads(m.payload)
    if d["part_id"] not in sent_wall:
        return
    got[d["part_id"]] = (time.monotonic(), d["verdict"], d["reason"], d["latency_ms"],
                         d["trigger_epoch"] - sent_wall[d["part_id"]], time.time() - d["time_epoch"])
    if len(got) >= n:
        done.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect(host, port, 30)
c.loop_start()
ready.wait(10)
t0 = time.monotonic()
for i in range(n):
    time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
    pid = prefix + "-%06d" % i
    sent[pid], sent_wall[pid] = time.monotonic(), time.time()
    c.publish(base + "/trigger", pid, qos=1)
done.wait(30)
wall = time.monotonic() - t0
c.loop_stop()
json.dump({"wall": wall, "rows": [[pid, sent[pid], *got[pid]] for pid in sent if pid in got], "sent": len(sent)},
          open(out_path, "w"))
"""


def make_video(path: Path) -> Path:
    import cv2

    sys.path.insert(0, str(ROOT))
    from tests.support.image_bundle import uniform_part

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), FPS, (128, 96))
    for p in range(60):
        writer.write(uniform_part(seed=p, defect=p % 7 == 3))
    writer.release()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--rate", type=float, default=20.0, help="triggers per second (default 20)")
    ap.add_argument("--n", type=int, default=300, help="number of triggers (default 300)")
    ap.add_argument("--deadline-ms", type=float, default=100.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from factoryedge.runtimes.devkit.local_broker import LocalBroker
    from factoryedge.runtimes.inspection.config import InspectionConfig
    from factoryedge.runtimes.inspection.image_model import ImageModel
    from factoryedge.runtimes.inspection.sorter import Sorter
    from factoryedge.runtimes.sinks.mqtt import MqttSink

    tmp = Path(tempfile.mkdtemp(prefix="fe-bench-insp-"))
    if args.bundle is None:
        sys.path.insert(0, str(ROOT))
        from tests.support.image_bundle import make_image_bundle

        args.bundle = make_image_bundle(tmp / "bundle").path
    video = make_video(tmp / "parts.avi")
    broker = LocalBroker().start()  # mosquitto with set_tcp_nodelay where installed
    try:
        host, port = broker.uri.split("//")[1].split(":")
        sink = MqttSink.from_uri(f"{broker.uri}?site=b&line=b&machine=sorter&device_id=bench&protocol={broker.protocol}"
                                 f"&outbox={tmp / 'outbox.sqlite'}")
        config = InspectionConfig.parse({"camera": f"file://{video}?realtime=true&loop=true", "trigger": "mqtt",
                                         "deadline_ms": args.deadline_ms,
                                         "frame_max_wait_ms": min(50.0, args.deadline_ms / 2)})
        model = ImageModel.load(args.bundle, backend="onnxruntime")
        sorter = Sorter(config, model, sink)
        runner = threading.Thread(target=sorter.run, daemon=True)
        runner.start()
        sink.wait_connected(5)
        time.sleep(0.5)  # camera open, trigger subscription in place
        results = {}
        for label, nodelay in (("PLC socket with Nagle (paho default)", "0"), ("PLC socket with TCP_NODELAY", "1")):
            out = tmp / f"plc{nodelay}.json"
            subprocess.run([sys.executable, "-c", _PLC, host, port, sink.topics.base, str(args.n), str(args.rate),
                            str(out), nodelay, f"n{nodelay}"], check=True, timeout=args.n / args.rate + 60)
            results[label] = json.loads(out.read_text())
        sorter.stop()
        runner.join(15)
        model.close()
        stats = sorter.stats()
    finally:
        broker.stop()
    print(f"sorter: camera file:// at {FPS:g} fps, deadline {args.deadline_ms:g} ms, triggers at {args.rate:g}/s; "
          f"late results {stats['late']}")
    p50s = {}
    for label, res in results.items():
        rows = res["rows"]
        e2e = np.array([(r[2] - r[1]) * 1000.0 for r in rows])
        reasons: dict[str, int] = {}
        for r in rows:
            reasons[r[4]] = reasons.get(r[4], 0) + 1
        print(f"\n{label}: {res['sent']} triggers, {len(rows)} decisions received in {res['wall']:.1f} s; "
              f"reasons {reasons}")
        for name, v in (("PLC trigger -> decision received (separate process)", e2e),
                        ("  inbound: PLC publish -> device receives trigger", np.array([r[6] * 1000.0 for r in rows])),
                        ("  device: trigger receipt -> decision handed to sink", np.array([r[5] for r in rows])),
                        ("  outbound: decision made -> PLC receives it", np.array([r[7] * 1000.0 for r in rows]))):
            print(f"{name:<54} p50 {np.percentile(v, 50):7.2f} ms  p99 {np.percentile(v, 99):7.2f} ms  "
                  f"max {v.max():7.2f} ms")
        p50s[label] = (np.percentile(e2e, 50), np.percentile(e2e, 99))
        print(f"  p99 is {np.percentile(e2e, 99) / args.deadline_ms:.0%} of the deadline")
    (a50, a99), (b50, b99) = p50s.values()
    print(f"\nratio Nagle / TCP_NODELAY on the PLC socket: p50 {a50 / b50:.1f}x, p99 {a99 / b99:.1f}x")
    print("(the frame wait is part of it: the first frame after a trigger comes up to one camera period later)")


if __name__ == "__main__":
    main()
