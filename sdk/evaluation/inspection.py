"""Evaluate an image model on a labelled inspection set: metrics, score plot, contact sheet.

The scoring function is passed in (the device's ``ImageModel.score`` on an exported bundle,
so the figures are those of the model the line will run), which keeps this module free of
the runtime and of torch.
"""
from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from factoryedge.data.images import GOOD, ImageSample, read_gray, read_mask, read_rgb
from factoryedge.errors import DataError
from factoryedge.evaluation.image_metrics import image_report, pixel_auroc
from factoryedge.manifest import ScoreInfo
from factoryedge.scoring import ScoreRule, describe_false_reject

log = logging.getLogger(__name__)

# (score, heatmap on the image's pixel grid or None) for one uint8 image
ScoreFn = Callable[[np.ndarray], tuple[float, "np.ndarray | None"]]


def read_image(sample: ImageSample, colour: str) -> np.ndarray:
    return read_gray(sample.path) if colour == "gray" else read_rgb(sample.path)


def evaluate_inspection(
    score: ScoreFn, samples: Sequence[ImageSample], threshold: float, out: Path, title: str,
    colour: str = "gray", n_worst: int = 8, *, higher_is_anomalous: bool = True, score_info: ScoreInfo | None = None,
) -> dict:
    """Score every sample, write ``metrics.json``, ``scores.csv``, ``scores.png`` and ``contact_sheet.png``.

    Needs good and defective samples. A part is rejected by ``ScoreRule(threshold,
    higher_is_anomalous)``, the manifest's ``score`` section (``ImageModel.rule`` on the
    device). Pixel AUROC is reported where the defective samples have masks and the model
    gives heatmaps (higher heat = more anomalous). ``score_info`` (the manifest's ``score``)
    adds ``operating_point``: the false-reject rate the bundle expects from its held-out good
    parts beside what this labelled set shows at the same threshold.
    """
    rule = ScoreRule(float(threshold), higher_is_anomalous)
    samples = list(samples)
    if not samples:
        raise DataError("no test images to evaluate; expected test/good/ and test/<defect>/ images")
    out.mkdir(parents=True, exist_ok=True)
    images = [read_image(s, colour) for s in samples]
    scored = [score(img) for img in images]
    scores = np.array([s for s, _ in scored], dtype=np.float64)
    heatmaps = [h for _, h in scored]
    types = [s.defect_type for s in samples]
    image = image_report(scores, types, rule.threshold, higher_is_anomalous=rule.higher_is_anomalous)
    report: dict = {"title": title, "n_images": len(samples), "image": image,
                    "operating_point": operating_point(scores, types, rule, score_info)}
    masks = [read_mask(s.mask_path) if s.mask_path else None for s in samples]
    if all(h is not None for h in heatmaps) and any(m is not None for m in masks):
        report["pixel"] = pixel_auroc(heatmaps, masks, types, stride=2)
    files = {
        "metrics": out / "metrics.json",
        "scores_csv": out / "scores.csv",
    }
    with open(files["scores_csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "defect_type", "score", "verdict"])
        for s, v in zip(samples, scores):
            w.writerow([s.path, s.defect_type, f"{v:.6g}", "reject" if rule.exceeds(v) else "pass"])
    plot = _score_plot(scores, types, rule, out / "scores.png", title, report)
    if plot:
        files["scores_png"] = plot
    sheet = _contact_sheet(images, heatmaps, scores, types, rule, samples, out / "contact_sheet.png", n_worst, masks)
    if sheet:
        files["contact_sheet"] = sheet
    report["files"] = {k: str(v) for k, v in files.items()}
    files["metrics"].write_text(json.dumps(report, indent=2))
    return report


def operating_point(scores: np.ndarray, types: Sequence[str], rule: ScoreRule, score_info: ScoreInfo | None) -> dict:
    """What a sorter at ``rule`` does to this set (recall, observed false rejects) beside what the bundle expects.

    The expected figures (``expected_false_reject``, its ``upper_bound``, the held-out ``n``)
    are None for bundles that record no estimate.
    """
    rejected = rule.is_anomalous(np.asarray(scores, dtype=np.float64))
    good = np.asarray(types) == GOOD
    est = score_info.false_reject if score_info is not None else None
    budget = getattr(score_info.rule, "max_false_reject", None) if score_info is not None else None
    n_good, n_bad = int(good.sum()), int((~good).sum())
    return {
        "threshold": rule.threshold,
        "max_false_reject": budget,
        "expected_false_reject": est.expected if est else None,
        "expected_upper_bound": est.upper_bound if est else None,
        "expected_n_good": est.n if est else None,
        "expected_rule": describe_false_reject(score_info) if score_info is not None else None,
        "defective_rejected": int(rejected[~good].sum()), "n_defective": n_bad,
        "recall": float(rejected[~good].mean()) if n_bad else None,
        "good_rejected": int(rejected[good].sum()), "n_good": n_good,
        "observed_false_reject": float(rejected[good].mean()) if n_good else None,
    }


def format_operating_point(op: dict) -> str:
    """One line: the expected false-reject rate, then recall and false rejects on the labelled set."""
    expected = ("no expected false-reject rate recorded (the bundle's threshold rule is not a false-reject budget)"
                if op["expected_false_reject"] is None else
                f"expected false-reject rate {op['expected_false_reject']:.1%} "
                f"(95 % bound {op['expected_upper_bound']:.1%}, {op['expected_n_good']} held-out good)")
    seen = []
    if op["recall"] is not None:
        seen.append(f"recall {op['recall']:.1%} ({op['defective_rejected']} of {op['n_defective']} defective rejected)")
    if op["observed_false_reject"] is not None:
        seen.append(f"false-reject rate {op['observed_false_reject']:.1%} ({op['good_rejected']} of {op['n_good']} good)")
    return f"  operating point at {op['threshold']:.4g}: {expected}; this test set: {', '.join(seen)}"


def _score_plot(scores, types, rule: ScoreRule, path: Path, title: str, report: dict) -> Path | None:
    from factoryedge.evaluation.metrics import _sklearn_metrics, ranking_scores
    from factoryedge.evaluation.plots import plot_scores

    m = _sklearn_metrics()
    t = np.asarray(types)
    by_type = {k: scores[t == k] for k in sorted(set(types))}
    roc = {}
    for k in sorted(set(types) - {GOOD}):
        keep = (t == GOOD) | (t == k)
        fpr, tpr, _ = m.roc_curve((t[keep] == k).astype(int), ranking_scores(scores[keep], rule.higher_is_anomalous))
        roc[k] = (fpr, tpr, report["image"]["per_type"][k]["auroc"])
    return plot_scores(by_type, rule.threshold, roc, path, title)


def _contact_sheet(images, heatmaps, scores, types, rule: ScoreRule, samples, path: Path, n_worst: int,
                   masks) -> Path | None:
    try:
        from factoryedge.evaluation.contact_sheet import contact_sheet
    except ImportError as e:  # matplotlib missing: the train extra
        log.warning("no contact sheet: %s", e)
        return None
    labels = [t != GOOD for t in types]
    names = [f"{s.defect_type}/{Path(s.path).name}" for s in samples]
    return contact_sheet(images, heatmaps, scores, labels, rule.threshold, names, path, n_worst=n_worst,
                         higher_is_anomalous=rule.higher_is_anomalous, masks=masks)


def format_inspection_report(report: dict) -> str:
    img = report["image"]
    o = img["overall"]
    lines = [
        report["title"],
        f"  image AUROC {o['auroc']:.3f}  AP {o['average_precision']:.3f}  at threshold {img['threshold']:.4g}: "
        f"precision {o['precision']:.3f} recall {o['recall']:.3f} F1 {o['f1']:.3f}; "
        f"good parts rejected {img['false_reject_rate']:.1%} ({o['n_good']} good, {o['n_defective']} defective)",
    ]
    if "operating_point" in report:
        lines.append(format_operating_point(report["operating_point"]))
    pix = report.get("pixel", {})
    for t, v in img["per_type"].items():
        p = pix.get("per_type", {}).get(t)
        lines.append(f"  {t:<12} n={v['n_defective']:<4} AUROC {v['auroc']:.3f}  recall {v['recall']:.3f}"
                     + (f"  pixel AUROC {p:.3f}" if p is not None else ""))
    if pix:
        lines.append(f"  pixel AUROC overall {pix['overall']:.3f}")
    return "\n".join(lines)
