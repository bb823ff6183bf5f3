"""The inspection half of the demo: synthetic parts -> PatchCore bundle -> live sorting over MQTT.

Synthetic washers (good, and with scratches, pits, chips and stains, masks known pixel for
pixel) train the pretrained-feature detector on good parts only; the exported bundle is
evaluated through the device's ONNX Runtime path (AUROC, pixel AUROC, contact sheet). Then
the line runs: a conveyor video plays as a ``file://`` camera at its real frame rate, the
devkit's PLC in another process publishes one trigger per part as it reaches the camera,
the inspection station publishes a pass/reject decision per part, and ``factoryedge watch``
in a third process prints them as the PLC receives them. The verdicts are then checked against
the parts' known defects.
"""
from __future__ import annotations

import logging
import subprocess
import threading
import time
from pathlib import Path

import yaml

SIZE = (192, 192)
FPS, FRAMES_PER_PART = 12.0, 4
LINE = [None, None, "scratch", None, "pit", None, None, "chip", None, None, "stain", None, None, "pit", None, None]


def run_inspection(out: Path, step, retrain: bool, live: bool, broker_kind: str) -> None:
    from factoryedge.bundle import load_bundle
    from factoryedge.errors import BundleError

    data = _parts_data(out / "parts")
    next(step)(f"inspection: synthetic washers at {SIZE[0]}x{SIZE[1]} px: {data.counts()} (masks for every defect)")
    bundle_dir = out / "inspection-bundle"
    bundle = None
    if not retrain and bundle_dir.exists():
        try:
            bundle = load_bundle(bundle_dir)
            next(step)(f"reusing verified image bundle {bundle_dir} (pass --retrain to train again)")
        except BundleError as e:
            logging.getLogger("factoryedge.demo").warning("existing image bundle unusable (%s); training again", e)
    if bundle is None:
        bundle = _train(data, bundle_dir)
        m = bundle.manifest
        next(step)(f"trained PatchCore (EfficientNet-Lite0 features) on {len(data.train)} good parts only; threshold "
                   f"{m.score.threshold:.3g}; ONNX parity {max(m.parity.max_abs_diff.values()):.1e} -> {bundle_dir}")
    _evaluate(bundle, data, out / "inspection-evaluation")
    next(step)(f"contact sheet of the worst cases with heatmaps: {out}/inspection-evaluation/contact_sheet.png")
    if live:
        _run_line(bundle, out, step, broker_kind)


def _parts_data(root: Path):
    from factoryedge.data.images import load_inspection_set
    from factoryedge.data.synthetic_parts import write_inspection_set

    if (root / "train").is_dir():
        return load_inspection_set(root, require_masks=True)
    return write_inspection_set(root, n_train_good=80, n_test_good=12, n_per_defect=4, seed=11, size=SIZE)


def _train(data, bundle_dir: Path):
    from factoryedge.cli.train_image import DEFAULT_BUDGET, parse_budget
    from factoryedge.data.images import read_gray
    from factoryedge.exporters.image_bundle import build_image_bundle, golden_groups
    from factoryedge.training.image_models import architecture

    arch = architecture("patchcore")
    # the threshold a commissioning engineer would set: the default false-reject budget
    trained = arch.fit([read_gray(s.path) for s in data.train], rule=parse_budget(DEFAULT_BUDGET))
    good = [read_gray(s.path) for s in data.test if s.defect_type == "good"][:2]
    bad = [read_gray(s.path) for s in data.test if s.defect_type != "good"][:2]
    return build_image_bundle(trained, bundle_dir, "demo-washers-patchcore", golden_groups(trained.spec, good + bad),
                              description="synthetic washers; PatchCore on EfficientNet-Lite0",
                              tolerance=arch.parity_tolerance)


def _evaluate(bundle, data, out: Path) -> None:
    from factoryedge.evaluation.inspection import evaluate_inspection, format_inspection_report
    from factoryedge.runtimes.inspection.image_model import ImageModel

    with ImageModel.load(bundle.path, backend="onnxruntime") as model:
        def score(img):
            r = model.score(img)
            return r.score, r.heatmap

        report = evaluate_inspection(score, data.test, model.threshold, out, f"{model.name} on held-out synthetic parts",
            higher_is_anomalous=model.rule.higher_is_anomalous)
    print(format_inspection_report(report), flush=True)


def _profile(out: Path, bundle_path: Path, video: Path, broker) -> Path:
    from factoryedge.cli.demo_live import plant_sections

    path = out / "station.yaml"
    path.write_text(yaml.safe_dump({
        "kind": "inspection",
        "identity": {"site": "demo-plant", "line": "line-1", "machine": "sorter-1", "device_id": "edge-demo-cam"},
        "inspection": {"camera": f"file://{video.resolve()}?realtime=true", "trigger": "mqtt",
                       # generous for scoring on a CPU; a Jetson with TensorRT needs a fraction of it
                       "deadline_ms": 1000, "frame_max_wait_ms": 300,
                       "archive": {"dir": str((out / "rejects").resolve()), "max_items": 100}},
        "model": {"bundle": str(bundle_path.resolve()), "backend": "onnxruntime"},
        "mqtt": {"uri": broker.uri, "outbox": str((out / "station-outbox.sqlite").resolve()),
                 # the demo reads its delivered decisions back from the outbox to check the verdicts
                 "options": {"protocol": broker.protocol, "client_id": "edge-demo-cam", "keep_delivered": 1000},
                 "health_interval_s": 30},
        **plant_sections("edge-demo-cam", report_s=0.5),
    }, sort_keys=False))
    return path


def _run_line(bundle, out: Path, step, broker_kind: str) -> None:
    from factoryedge.cli.demo_live import show_plant_outputs, start_watcher
    from factoryedge.data.parts_video import write_parts_video
    from factoryedge.errors import SinkError
    from factoryedge.runtimes.devkit.local_broker import LocalBroker
    from factoryedge.runtimes.devkit.plc import Plan
    from factoryedge.runtimes.inspection.station import InspectionStation
    from factoryedge.runtimes.profile import load_profile

    video = out / "conveyor.avi"
    # lossless, as a CSI or GigE camera hands over raw frames
    truth = write_parts_video(video, LINE, frames_per_part=FRAMES_PER_PART, fps=FPS, seed=99, size=SIZE, travel=0.0,
                              codec="FFV1")
    (out / "station-outbox.sqlite").unlink(missing_ok=True)
    broker = LocalBroker(broker_kind).start()
    watcher, ready, _ = start_watcher(broker.uri, "PLC receives", ["factoryedge/v1/+/+/+/decision"])
    runtime_log = logging.getLogger("factoryedge.runtimes")
    previous = runtime_log.level
    runtime_log.setLevel(logging.WARNING)
    station = runner = listener = None
    try:
        ready.wait(10)
        profile_path = _profile(out, bundle.path, video, broker)
        station = InspectionStation(load_profile(profile_path))
        runner = threading.Thread(target=station.run, name="demo-station")
        runner.start()
        listener = show_plant_outputs(station, step, broker.uri)
        first = _first_frame(station)  # the conveyor is running: when did frame 0 show?
        t0 = first.t_wall - max(first.pos, 0) / FPS
        period = FRAMES_PER_PART / FPS
        next(step)(f"line: {len(LINE)} parts pass the camera ({video.name}, {FPS:g} fps, one part every "
                   f"{period * 1000:.0f} ms); a PLC process triggers each part over MQTT on {broker.uri}")
        # a trigger as each part reaches the middle of the camera's view; the PLC returns once it
        # has every decision (or gave up waiting for it)
        plan = Plan(broker.uri, station.sink.topics.base, parts=len(LINE), period=period, first_at=t0 + 0.5 * period,
                    digits=4, wait=5.0, quiet=True)
        plc = subprocess.run(plan.command(), capture_output=True, text=True, timeout=len(LINE) * period + 60)
        if plc.returncode != 0:
            raise SinkError(f"the demo's PLC failed: {plc.stderr.strip() or plc.returncode}")
    finally:
        if station is not None:
            station.stop()
            runner.join(timeout=30)
        runtime_log.setLevel(previous)
        time.sleep(0.5)
        for process in (watcher, listener):
            if process is not None:
                process.terminate()
                process.wait(timeout=5)
        broker.stop()
    _check_verdicts(out / "station-outbox.sqlite", truth, out, step)


def _first_frame(station):
    deadline = time.monotonic() + 10
    while station.sorter.frames is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return station.sorter.frames.get(timeout=10)


def _check_verdicts(outbox: Path, truth, out: Path, step) -> None:
    from factoryedge.cli.demo_live import outbox_payloads

    decisions = {d["part_id"]: d for d in outbox_payloads(outbox, "/decision")}
    by_frame = {f: p for p in truth for f in p.frames}
    right = wrong = 0
    for d in decisions.values():
        shown = by_frame.get(d.get("frame_pos")) if d.get("frame_pos") is not None else None
        if shown is None:
            continue
        ok = (d["verdict"] == "reject") == (shown.defect is not None)
        right, wrong = right + ok, wrong + (not ok)
    latencies = sorted(d["latency_ms"] for d in decisions.values())
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    rejects = len(list((out / "rejects").glob("*.json")))
    next(step)(f"{len(decisions)} decisions for {len(truth)} triggered parts: {right} verdicts match the parts' known "
               f"defects, {wrong} do not; median trigger-to-decision {p50:.0f} ms on this CPU; {rejects} rejected "
               f"parts archived with heatmaps in {out}/rejects")
