"""``factoryedge train image``: fit an image model on good parts, export the bundle, evaluate it.

The evaluation scores the exported bundle through the device's own ``ImageModel`` (ONNX
Runtime), so the figures printed are those of the model the line will run.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from factoryedge.errors import ConfigError

log = logging.getLogger("factoryedge.train")

IMAGE_MODELS = ("patchcore", "fanogan", "autoencoder", "classifier")
# A sorter is judged at one operating point: reject at most 1 % of good parts.
DEFAULT_BUDGET = "0.01"


def resolve_inspection_data(data: list[str], require_train: bool = True):
    """The inspection set named on the command line; evaluation (``require_train`` False) needs only test/."""
    from factoryedge.data.images import load_inspection_set, magnetic_tile_root

    if len(data) != 1:
        what = "image training" if require_train else "image evaluation"
        raise ConfigError(f"{what} takes one inspection set folder (or 'magnetic-tile'), got {data}")
    root = magnetic_tile_root() if data[0] in ("magnetic-tile", "magnetic-tile-defect") else Path(data[0])
    return load_inspection_set(root, require_train=require_train)


def parse_budget(value: str | None, flag: str = "--max-false-reject"):
    """``FalseRejectBudget`` from "0.01" (or "1%"), or the quantile rule for "none"; one-line ConfigError otherwise."""
    from factoryedge.manifest import FalseRejectBudget, ThresholdRule

    text = str(value).strip().lower()
    if text in ("none", "q99"):
        return ThresholdRule(quantile=0.99, margin=1.0)
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        share = float("nan")
    if not 0.0 < share < 1.0:
        raise ConfigError(f"{flag} {value!r} must be a share between 0 and 1 (e.g. 0.01 or 1%), or 'none' for "
                          "the q99 rule")
    return FalseRejectBudget(max_false_reject=share)


def run_image(args: argparse.Namespace) -> int:
    from factoryedge.data.fingerprint import files_sha256
    from factoryedge.data.images import read_mask
    from factoryedge.evaluation.inspection import evaluate_inspection, format_inspection_report, read_image
    from factoryedge.exporters.image_bundle import build_image_bundle, golden_groups
    from factoryedge.scoring import describe_false_reject
    from factoryedge.training.image_models import architecture, supervised_split

    name = args.model or "patchcore"
    if name not in IMAGE_MODELS:
        raise ConfigError(f"--model {name} is a vibration model; image models are {', '.join(IMAGE_MODELS)}")
    arch = architecture(name)
    rule = parse_budget(getattr(args, "max_false_reject", None) or DEFAULT_BUDGET)
    data = resolve_inspection_data(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    colour = "gray"
    fit_kwargs = {"seed": args.seed, "rule": rule}
    if args.epochs:
        fit_kwargs["epochs"] = args.epochs
    train_samples, test = data.train, data.test
    if arch.supervised and getattr(args, "max_false_reject", None):
        log.info("--max-false-reject does not apply to the classifier: its operating point is chosen on labelled data")
    if arch.supervised:
        train_samples, test = supervised_split(data, args.seed)
        fit_kwargs.update(labels=[int(s.defect_type != "good") for s in train_samples],
                          masks=[read_mask(s.mask_path) if s.mask_path else None for s in train_samples])
    train = [read_image(s, colour) for s in train_samples]
    log.info("training %s on %d images from %s", name, len(train), data.root)
    fingerprint = files_sha256([s.path for s in train_samples], data.root)
    split = {"source": str(data.root), "train": len(train_samples), "evaluation": len(test),
             "train_defective": sum(s.defect_type != "good" for s in train_samples)}
    trained = arch.fit(train, **fit_kwargs)
    for fname, content in trained.curves.items():
        (args.out / Path(fname).name).write_bytes(content)
    golden_src = [read_image(s, colour) for s in _golden_samples(test)] or train[:4]
    bundle_name = args.name or f"{Path(data.root).name}-{name}"
    golden = golden_groups(trained.spec, golden_src, n_groups=3)
    bundle = build_image_bundle(trained, args.out / "bundle", bundle_name, golden,
                                version=args.version, tolerance=arch.parity_tolerance,
                                data_fingerprint=fingerprint, split=split)
    parity = bundle.manifest.parity
    print(f"trained {name}: threshold {trained.threshold:.4g} ({trained.calibration.n} held-out good scores, "
          f"max {trained.calibration.max:.4g})")
    expected = describe_false_reject(bundle.manifest.score)
    if expected:
        print(f"threshold rule: {expected}")
    print(f"bundle: {bundle.path} ({bundle_name} {args.version}); ONNX parity max abs diff "
          f"{max(parity.max_abs_diff.values()):.2e} on {parity.n_inputs} golden inputs (tolerance {parity.tolerance:g})")
    if not test:
        print("no test images: skipped evaluation")
        return 0
    from factoryedge.runtimes.inspection.image_model import ImageModel

    with ImageModel.load(bundle.path, backend="onnxruntime") as model:
        def score(img):
            r = model.score(img)
            return r.score, r.heatmap

        report = evaluate_inspection(score, test, model.threshold, args.out / "evaluation",
                                     title=f"{bundle_name} {args.version} ({trained.architecture})", colour=colour,
            higher_is_anomalous=model.rule.higher_is_anomalous, score_info=bundle.manifest.score)
    (args.out / "training.json").write_text(json.dumps(trained.info, indent=2, default=str))
    print(format_inspection_report(report))
    print("written: " + ", ".join(report["files"].values()))
    return 0


def _golden_samples(samples, per_kind: int = 8):
    """A few good and a few defective test samples, so parity covers both sides of the threshold."""
    good = [s for s in samples if s.defect_type == "good"][:per_kind]
    bad = [s for s in samples if s.defect_type != "good"][:per_kind]
    return good + bad
