"""Trigger-to-decision latency of the on-line sorter over a real local Mosquitto.

Run: ``python benchmarks/inspection_latency.py [--json PATH] [--quick] [--bundle DIR] [--rate 20] [--n 200]``. Without
``--bundle`` it exports the small template image model of the tests first (needs torch).
The device side runs as in the factory: a ``file://`` camera paced at the video's 60 fps,
``ImageModel`` on ONNX Runtime, the MQTT trigger on the sink's client, decisions through the
outbox at QoS 1. The devkit's PLC in a separate process sends paced triggers (plain-text
part ids) and receives the decisions on one client, so the latency is measured outside the
device process: PLC publish -> broker -> sorter (frame, score, outbox) -> broker -> PLC.
It also prints the device's own ``latency_ms`` (trigger receipt -> decision handed to the
sink) from the payloads. The PLC runs twice, side by side: with Nagle's algorithm on its socket (paho's
default) and with TCP_NODELAY (as the device's own MQTT client sets it), since a PLC's MQTT
stack may do either. Prints percentiles and their ratios; asserts nothing.

``--json PATH`` writes ``trigger_to_decision_p99_ms`` in the format of ``report.py``: the p99 of
PLC trigger -> decision received with the TCP_NODELAY PLC, against the deadline (ratio =
p99 / deadline, goal 1.0: every part but the slowest 1 % decided in time); p50 and the Nagle
PLC's figures in its context. ``--quick`` sends 60 triggers per PLC instead of 200.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from report import entry, table, write  # benchmarks/report.py: this folder is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
FPS = 60.0


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
    ap.add_argument("--n", type=int, default=200, help="number of triggers per PLC run (default 200)")
    ap.add_argument("--quick", action="store_true", help="60 triggers per PLC run")
    ap.add_argument("--deadline-ms", type=float, default=100.0)
    ap.add_argument("--json", type=Path, help="write trigger_to_decision_p99_ms here")
    args = ap.parse_args()
    if args.quick:
        args.n = 60
    logging.basicConfig(level=logging.ERROR)
    from factoryedge.runtimes.devkit.local_broker import LocalBroker
    from factoryedge.runtimes.devkit.plc import Plan, Report
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
        for label, nodelay in (("PLC socket with Nagle (paho default)", False), ("PLC socket with TCP_NODELAY", True)):
            plan = Plan(broker.uri, sink.topics.base, parts=args.n, period=1.0 / args.rate, prefix=f"n{nodelay:d}-",
                        digits=6, payload="text", tcp_nodelay=nodelay, wait=30.0, quiet=True,
                        report=tmp / f"plc{nodelay:d}.json")
            subprocess.run(plan.command(), check=True, timeout=args.n / args.rate + 60)
            results[label] = Report.read(plan.report)
        sorter.stop()
        runner.join(15)
        model.close()
        sink.close()
        stats = sorter.stats()
    finally:
        broker.stop()
    print(f"sorter: camera file:// at {FPS:g} fps, deadline {args.deadline_ms:g} ms, triggers at {args.rate:g}/s; "
          f"late results {stats['late']}")
    p50s, reasons_by = {}, {}
    for label, res in results.items():
        rows = res.decisions
        e2e = np.array([d.round_trip_ms for d in rows])
        reasons: dict[str, int] = {}
        for d in rows:
            reasons[d.payload["reason"]] = reasons.get(d.payload["reason"], 0) + 1
        print(f"\n{label}: {res.sent} triggers, {len(rows)} decisions received in {res.wall_s:.1f} s; "
              f"reasons {reasons}")
        inbound = np.array([(d.payload["trigger_epoch"] - d.sent_epoch) * 1000.0 for d in rows])
        outbound = np.array([(d.received_epoch - d.payload["time_epoch"]) * 1000.0 for d in rows])
        device = np.array([d.payload["latency_ms"] for d in rows])
        for name, v in (("PLC trigger -> decision received (separate process)", e2e),
                        ("  inbound: PLC publish -> device receives trigger", inbound),
                        ("  device: trigger receipt -> decision handed to sink", device),
                        ("  outbound: decision made -> PLC receives it", outbound)):
            print(f"{name:<54} p50 {np.percentile(v, 50):7.2f} ms  p99 {np.percentile(v, 99):7.2f} ms  "
                  f"max {v.max():7.2f} ms")
        p50s[label] = (np.percentile(e2e, 50), np.percentile(e2e, 99))
        reasons_by[label] = {"sent": res.sent, "received": len(rows), "reasons": reasons,
                             "device_p99_ms": float(np.percentile(device, 99))}
        print(f"  p99 is {np.percentile(e2e, 99) / args.deadline_ms:.0%} of the deadline")
    (a50, a99), (b50, b99) = p50s.values()
    print(f"\nratio Nagle / TCP_NODELAY on the PLC socket: p50 {a50 / b50:.1f}x, p99 {a99 / b99:.1f}x")
    print("(the frame wait is part of it: the first frame after a trigger comes up to one camera period later)")
    out = {"trigger_to_decision_p99_ms": entry(
        b99, "ms", f"the deadline ({args.deadline_ms:g} ms)", args.deadline_ms, b99 / args.deadline_ms,
        higher_is_better=False, goal=1.0, p50_ms=b50, nagle_plc_p50_ms=a50, nagle_plc_p99_ms=a99,
        nagle_over_nodelay_p99=a99 / b99, triggers_per_s=args.rate, triggers=args.n, camera_fps=FPS,
        late_results=stats["late"], runs=reasons_by,
        measured="PLC (devkit, separate process, TCP_NODELAY) publish -> broker -> sorter -> broker -> PLC")}
    print()
    print(table(out))
    write(args.json, out)


if __name__ == "__main__":
    main()
