"""``factoryedge evaluate``: score labelled recordings with a bundle and its baseline."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from factoryedge.errors import DataError

log = logging.getLogger("factoryedge.evaluate")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory or .febundle file")
    p.add_argument("data", nargs="+", metavar="DATA",
                   help="vibration bundles: a data set (cwru-48k, cwru-12k) or recordings LABEL=PATH[#START:STOP], "
                        "normal ones labelled 'normal', faults by their class; image bundles: an inspection set folder "
                        "(only its test/ images, and ground_truth/ masks where present, are read) or 'magnetic-tile'")
    p.add_argument("--out", type=Path, help="report directory (default: evaluation/<bundle name>)")
    p.add_argument("--sample-rate", type=float, help="sample rate in Hz for CSV/NPY files")
    p.add_argument("--channels", help="comma-separated channel names to use")
    p.add_argument("--hop", type=int, help="samples between evaluated windows (default: the bundle's hop); "
                                           "a smaller hop scores more, overlapping, windows")
    from factoryedge.cli import evaluate_runs

    evaluate_runs.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    from factoryedge.bundle import load_bundle
    from factoryedge.data.datasets import resolve
    from factoryedge.data.fingerprint import recording_sha256
    from factoryedge.evaluation.vibration import ScoredRecording, evaluate_vibration, format_report
    from factoryedge.runtimes.monitoring.recordings import RecordingScorer, match_recording

    bundle = load_bundle(args.bundle)
    if bundle.kind == "image":
        return _evaluate_image(bundle, args)
    bundle.require_kind("vibration")
    from factoryedge.data.snapshots import resolve_snapshots

    runs = resolve_snapshots(args.data)
    if runs is not None:
        from factoryedge.cli import evaluate_runs

        return evaluate_runs.run(bundle, runs, args)
    m = bundle.manifest
    spec = m.preprocessing
    channels = tuple(c.strip() for c in args.channels.split(",")) if args.channels else None
    selection = resolve(args.data, sample_rate=args.sample_rate, channels=channels)
    trained_on = {d.sha256 for d in m.provenance.data}
    split = m.provenance.split
    start = split.get("train_fraction", 0.0) + split.get("calibration_fraction", 0.0)
    normal = []
    for rec in selection.normal:
        rec = match_recording(bundle, rec)
        if recording_sha256(rec) in trained_on:
            log.info("%s was used for training and calibration; evaluating only its held-out part [%.2f:1]", rec.source, start)
            rec = rec.slice_fraction(start, 1.0)
        normal.append(rec)
    if not normal:
        raise DataError("evaluation needs normal recordings to measure false alarms; add normal=PATH")
    if not selection.faults:
        raise DataError("evaluation needs fault recordings; add LABEL=PATH with the fault class as LABEL")
    scorer = RecordingScorer(bundle, hop=args.hop)
    items = []
    for rec in normal + selection.faults:
        s = scorer.score(rec)
        if not len(s.model):
            raise DataError(f"{rec.source} is shorter than one window ({spec.window} samples)")
        items.append(ScoredRecording(rec.source, rec.label, s.start_s, s.model, s.baseline))
    out = args.out or Path("evaluation") / m.name
    at_device_hop = scorer.hop == spec.hop  # the debounce counts windows: replay it only as the device cuts them
    report = evaluate_vibration(
        items, m.score.threshold, m.baseline.threshold if m.baseline else None, out,
        title=f"{m.name} {m.version} ({m.model.architecture})",
        rule=scorer.model.rule, window_s=scorer.model.window_s if at_device_hop else None,
    )
    print(format_report(report))
    print("written: " + ", ".join(report["files"].values()))
    return 0


def _evaluate_image(bundle, args: argparse.Namespace) -> int:
    from factoryedge.cli.train_image import resolve_inspection_data
    from factoryedge.evaluation.inspection import evaluate_inspection, format_inspection_report
    from factoryedge.runtimes.inspection.image_model import ImageModel

    data = resolve_inspection_data(args.data, require_train=False)  # a line's new test set needs no train/
    m = bundle.manifest
    colour = "gray" if m.preprocessing.colour == "gray" else "rgb"
    with ImageModel.load(bundle.path, backend="onnxruntime") as model:
        def score(img):
            r = model.score(img)
            return r.score, r.heatmap

        report = evaluate_inspection(score, data.test, model.threshold, args.out or Path("evaluation") / m.name,
                                     title=f"{m.name} {m.version} ({m.model.architecture}) on {data.root}", colour=colour,
            higher_is_anomalous=model.rule.higher_is_anomalous, score_info=m.score)
    print(format_inspection_report(report))
    print("written: " + ", ".join(report["files"].values()))
    return 0
