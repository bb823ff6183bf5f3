"""``factoryedge calibrate``: set an image bundle's threshold again on a line's own good parts.

A bundle trained on one line's parts (or on a public set) meets another line's lighting,
fixtures and material. Its good parts score a little differently, and the false-reject rate
drifts from what the manifest promised. This command scores good images of the new line
through the device path (``ImageModel`` on ONNX Runtime, exactly what the station runs),
sets the threshold by the false-reject budget (``factoryedge.scoring.budget_threshold``),
and writes a copy of the bundle with the new threshold, rule, estimate and a provenance
note. The input bundle is never touched; the model itself is unchanged.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path

from factoryedge.errors import BundleError, ConfigError, DataError

log = logging.getLogger("factoryedge.calibrate")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="an image bundle directory or .febundle file (read only)")
    p.add_argument("folder", type=Path, metavar="FOLDER",
                   help="good parts of this line, not trained on: a folder of images (.png, .jpg, .bmp, .tif), or an "
                        "inspection set folder, of which only train/good/ is read (test/ stays unseen for "
                        "'factoryedge evaluate'); at least 20 images")
    p.add_argument("--max-false-reject", default="0.01", metavar="SHARE|none",
                   help="the threshold rejects at most this share of the good images (default 0.01 = 1 %%); 'none' "
                        "uses the q99 rule (median + 1 x (q99 - median))")
    p.add_argument("--out", type=Path, required=True, help="the new bundle directory (must not exist)")


def run(args: argparse.Namespace) -> int:
    from factoryedge.bundle import load_bundle, write_bundle
    from factoryedge.cli.train_image import parse_budget
    from factoryedge.data.fingerprint import files_sha256
    from factoryedge.scoring import describe_false_reject
    from factoryedge.signing import SIGNATURE_FILE

    rule = parse_budget(args.max_false_reject)
    if args.out.exists():
        raise ConfigError(f"--out {args.out} already exists; give a new directory (calibrate never overwrites a bundle)")
    bundle = load_bundle(args.bundle)
    m = bundle.manifest
    if m.kind != "image":
        raise BundleError(f"bundle {args.bundle} holds a {m.kind!r} model ({m.name} {m.version}); calibrate sets the "
                          "threshold of image bundles only (a vibration bundle learns its machine's threshold on the "
                          "device while baselining)")
    root, paths, what = good_images(args.folder)
    fingerprint = files_sha256(paths, root)
    # training fingerprints name paths from the inspection set's root: a train/good/ folder given
    # directly matches one or two levels up
    seen = {fingerprint, *(files_sha256(paths, up) for up in (root.parent, root.parent.parent))}
    if m.provenance.data_fingerprint in seen:
        raise DataError(f"{args.folder}: {what} are the very images bundle {args.bundle} was trained on; their scores "
                        "are in-sample and would set the threshold too low; give good parts it has not seen")
    images = read_images(paths, "gray" if m.preprocessing.colour == "gray" else "rgb")
    scores = score_images(bundle.path, images)
    threshold, estimate, stats = calibrate_scores(scores, rule, m.score.higher_is_anomalous,
                                                  source=f"{len(images)} {what} ({args.folder})")
    note = recalibration(m, args.folder, fingerprint, len(images), threshold, rule)
    manifest = m.model_copy(update={
        "score": m.score.model_copy(update={"threshold": threshold, "rule": rule, "false_reject": estimate,
                                            "calibration": stats}),
        "provenance": m.provenance.model_copy(update={"recalibrations": [*m.provenance.recalibrations, note]}),
    })
    write_bundle(args.out, manifest, {rel: bundle.path / rel for rel in m.artefacts})
    copy = load_bundle(args.out)  # hashes verified, as the device will
    print(f"calibrated {m.name} {m.version} on {len(images)} {what}: threshold {m.score.threshold:.4g} -> "
          f"{threshold:.4g}; {describe_false_reject(copy.manifest.score)}")
    print(f"bundle: {copy.path} (copy of {args.bundle}, which is unchanged)")
    if (bundle.path / SIGNATURE_FILE).is_file():
        print(f"{args.bundle} was signed; the copy's manifest changed, so it carries no signature: re-sign it with "
              f"'factoryedge sign {args.out} --key KEY'")
    return 0


def good_images(folder: Path) -> tuple[Path, list[Path], str]:
    """(root for the fingerprint, image paths, what they are): a plain folder, or an inspection set's train/good/."""
    from factoryedge.data.images import IMAGE_SUFFIXES, _images
    from factoryedge.scoring import MIN_CALIBRATION_WINDOWS

    if not folder.is_dir():
        raise DataError(f"good-image folder {folder} does not exist; give a folder of good images or an inspection "
                        "set (train/good/)")
    if (folder / "train" / "good").is_dir():
        paths, what = _images(folder / "train" / "good"), "good images from train/good/"
    else:
        paths, what = _images(folder), "good images"
    if len(paths) < MIN_CALIBRATION_WINDOWS:
        raise DataError(f"{folder} holds {len(paths)} {what} (suffixes {', '.join(IMAGE_SUFFIXES)}); calibration needs "
                        f"at least {MIN_CALIBRATION_WINDOWS}, and hundreds to show a 1 % rate")
    return folder, paths, what


def read_images(paths: list[Path], colour: str):
    """Every image decoded before the model opens, so an unreadable file fails first and alone."""
    from factoryedge.data.images import read_gray, read_rgb

    read = read_gray if colour == "gray" else read_rgb
    return [read(p) for p in paths]


def score_images(bundle_path: Path, images) -> list[float]:
    """Image scores through the device's own model (ONNX Runtime), as the station computes them."""
    from factoryedge.runtimes.inspection.image_model import ImageModel

    with ImageModel.load(bundle_path, backend="onnxruntime") as model:
        return [model.score(img).score for img in images]


def calibrate_scores(scores, rule, higher_is_anomalous: bool, source: str):
    """(threshold, FalseRejectEstimate, ScoreStats) for a budget or the quantile rule, in the bundle's direction."""
    import numpy as np

    from factoryedge.manifest import FalseRejectBudget
    from factoryedge.scoring import ScoreRule, budget_threshold, calibrate_threshold, false_reject_estimate, score_stats

    s = np.asarray(scores, dtype=np.float64)
    if isinstance(rule, FalseRejectBudget):
        threshold, estimate = budget_threshold(s, rule.max_false_reject, higher_is_anomalous, source=source)
    else:
        sign = 1.0 if higher_is_anomalous else -1.0  # the quantile rule reads higher as anomalous
        threshold = sign * calibrate_threshold(sign * s, rule)[0]
        estimate = false_reject_estimate(s, ScoreRule(threshold, higher_is_anomalous), source=source)
    return float(threshold), estimate, score_stats(s)


def recalibration(m, folder: Path, fingerprint: str, n: int, threshold: float, rule):
    from factoryedge.manifest import Recalibration

    return Recalibration(created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                         source=str(folder), data_fingerprint=fingerprint, n_images=n,
                         previous_threshold=m.score.threshold, previous_rule=m.score.rule,
                         threshold=threshold, rule=rule)
