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
from factoryedge.scoring import ScoreRule

log = logging.getLogger(__name__)

# (score, heatmap on the image's pixel grid or None) for one uint8 image
ScoreFn = Callable[[np.ndarray], tuple[float, "np.ndarray | None"]]


def read_image(sample: ImageSample, colour: str) -> np.ndarray:
    return read_gray(sample.path) if colour == "gray" else read_rgb(sample.path)


def evaluate_inspection(
    score: ScoreFn, samples: Sequence[ImageSample], threshold: float, out: Path, title: str,
    colour: str = "gray", n_worst: int = 8, *, higher_is_anomalous: bool = True,
) -> dict:
    """Score every sample, write ``metrics.json``, ``scores.csv``, ``scores.png`` and ``contact_sheet.png``.

    Needs good and defective samples. A part is rejected by ``ScoreRule(threshold,
    higher_is_anomalous)``, the manifest's ``score`` section (``ImageModel.rule`` on the
    device). Pixel AUROC is reported where the defective samples have masks and the model
    gives heatmaps (higher heat = more anomalous).
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
    report: dict = {"title": title, "n_images": len(samples), "image": image}
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
    pix = report.get("pixel", {})
    for t, v in img["per_type"].items():
        p = pix.get("per_type", {}).get(t)
        lines.append(f"  {t:<12} n={v['n_defective']:<4} AUROC {v['auroc']:.3f}  recall {v['recall']:.3f}"
                     + (f"  pixel AUROC {p:.3f}" if p is not None else ""))
    if pix:
        lines.append(f"  pixel AUROC overall {pix['overall']:.3f}")
    return "\n".join(lines)
