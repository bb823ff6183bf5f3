"""``factoryedge demo``: the end-to-end paths on embedded defaults, no hardware, no data needed.

Condition monitoring: a simulated machine (SKF 6205 bearing at 1797 rpm, 12 kHz) runs normally; a vibration model
learns that normal state, is exported to a verified ONNX bundle, and is evaluated on a later
normal run and on runs with outer-race and inner-race faults, beside the Isolation Forest
baseline, then streamed live through the device runtime to MQTT. Visual inspection (see
``demo_inspection``): synthetic parts train a PatchCore bundle, and a conveyor video with a
PLC triggering each part is sorted live, pass/reject decisions arriving over MQTT.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("factoryedge.demo")

SAMPLE_RATE = 12000.0
RPM = 1797.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo-run"), help="where the demo writes (default ./demo-run)")
    p.add_argument("--model", choices=["dense", "lstm"], default="dense")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--retrain", action="store_true", help="train again even if the demo bundle exists")
    p.add_argument("--live-seconds", type=float, default=60.0,
                   help="machine seconds streamed through the live device (default 60; 0 skips the live part)")
    p.add_argument("--speed", type=float, default=3.0, help="live stream speed, x real time (default 3)")
    p.add_argument("--broker", choices=["auto", "mosquitto", "amqtt"], default="auto",
                   help="local broker for the live part (default: mosquitto if installed, else embedded amqtt)")
    p.add_argument("--part", choices=["all", "vibration", "inspection"], default="all",
                   help="condition monitoring (vibration), visual inspection and sorting, or both (default)")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    step = _steps()
    if args.part in ("all", "vibration"):
        _run_vibration(args, out, step)
    if args.part in ("all", "inspection"):
        from factoryedge.cli.demo_inspection import run_inspection

        run_inspection(out, step, args.retrain, args.live_seconds > 0, args.broker)
    return 0


def _run_vibration(args: argparse.Namespace, out: Path, step) -> None:
    from factoryedge.bundle import load_bundle
    from factoryedge.errors import BundleError

    bundle_dir = out / "bundle"
    recordings = _simulate()
    next(step)("simulated a normal 60 s run, a later normal run and two faulty runs")

    bundle = None
    if not args.retrain and bundle_dir.exists():
        try:
            bundle = load_bundle(bundle_dir)
            next(step)(f"reusing verified bundle {bundle_dir} (pass --retrain to train again)")
        except BundleError as e:
            log.warning("existing demo bundle unusable (%s); training again", e)
    if bundle is None:
        bundle = _train(recordings["normal"], args, out)
        next(step)(f"trained a {args.model} autoencoder on normal data only, exported and verified {bundle.path}")

    bundle = load_bundle(bundle_dir)  # what a device does: verify every hash before use
    m = bundle.manifest
    next(step)(f"bundle verified: {m.name} {m.version}, threshold {m.score.threshold:.4g}, "
               f"ONNX parity {max(m.parity.max_abs_diff.values()):.1e}")
    _evaluate(bundle, recordings, out / "evaluation")
    next(step)(f"learning curves and plots: {out}/learning_curve.png, {out}/evaluation/*.png")
    if args.live_seconds > 0:
        from factoryedge.cli.demo_live import run_live

        run_live(bundle, out, args.live_seconds, args.speed, step, broker_kind=args.broker)


def _steps():
    n = 0
    while True:
        n += 1
        yield lambda text, n=n: print(f"[{n}] {text}", flush=True)


def _simulate() -> dict:
    from factoryedge.data.simulator import simulate_bearing

    return {
        "normal": simulate_bearing(60.0, sample_rate=SAMPLE_RATE, rpm=RPM, seed=1),
        "normal_later": simulate_bearing(10.0, sample_rate=SAMPLE_RATE, rpm=RPM, seed=2),
        "outer_race": simulate_bearing(10.0, sample_rate=SAMPLE_RATE, rpm=RPM, fault="outer_race",
                                       fault_onset_s=0.0, severity=0.5, seed=3),
        "inner_race": simulate_bearing(10.0, sample_rate=SAMPLE_RATE, rpm=RPM, fault="inner_race",
                                       fault_onset_s=0.0, severity=0.5, seed=4),
    }


def _train(normal, args, out: Path):
    from factoryedge.exporters.vibration_bundle import build_vibration_bundle
    from factoryedge.features.vibration import SKF6205_ORDERS, default_feature_spec
    from factoryedge.training.trainer import FitConfig
    from factoryedge.training.vibration import VibrationTrainConfig, train_vibration

    spec = default_feature_spec(SAMPLE_RATE, normal.channels, shaft_hz=RPM / 60, defect_orders=SKF6205_ORDERS)
    cfg = VibrationTrainConfig(model=args.model, fit=FitConfig(epochs=args.epochs, patience=30))
    trained = train_vibration([normal], spec, cfg, out)
    return build_vibration_bundle(trained, out / "bundle", name=f"demo-bearing-{args.model}",
                                  description="simulated SKF 6205 bearing at 1797 rpm")


def _evaluate(bundle, recordings: dict, out: Path) -> None:
    from dataclasses import replace

    from factoryedge.evaluation.vibration import ScoredRecording, evaluate_vibration, format_report
    from factoryedge.runtimes.monitoring.recordings import RecordingScorer

    split = bundle.manifest.provenance.split
    held_from = split["train_fraction"] + split["calibration_fraction"]
    scorer = RecordingScorer(bundle)
    items = []
    for name, rec in recordings.items():
        if name == "normal":
            rec = rec.slice_fraction(held_from, 1.0)
        rec = replace(rec, label="normal" if name.startswith("normal") else name)
        s = scorer.score(rec)
        items.append(ScoredRecording(f"simulated {name}", rec.label, s.start_s, s.model, s.baseline))
    report = evaluate_vibration(items, bundle.manifest.score.threshold, bundle.manifest.baseline.threshold, out,
                                f"{bundle.manifest.name} on simulated runs")
    print(format_report(report))
