"""Visual-inspection metrics: image AUROC/AP/F1 overall and per defect type, pixel AUROC.

Good images are the negatives, defective ones the positives. Per defect type, the good
images are compared with that type alone, so a type's AUROC does not depend on how many
images the other types have. Report the good/defective counts with every figure: test sets
usually over-represent defects compared with a production line.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from factoryedge.errors import DataError
from factoryedge.evaluation.metrics import _sklearn_metrics, ranking_scores
from factoryedge.scoring import ScoreRule

GOOD = "good"


def image_report(scores: Sequence[float], defect_types: Sequence[str], threshold: float | None = None, *,
                 higher_is_anomalous: bool = True) -> dict:
    """AUROC and average precision (and, with a threshold, precision/recall/F1) per defect type.

    ``defect_types`` holds "good" or the defect type of each image. A part is rejected when
    ``ScoreRule(threshold, higher_is_anomalous)`` finds its score anomalous (at or above the
    threshold, or at or below it where lower is anomalous); ``false_reject_rate`` is the
    share of good parts rejected. AUROC and AP rank the scores in the same direction.
    """
    m = _sklearn_metrics()
    rule = None if threshold is None else ScoreRule(float(threshold), higher_is_anomalous)
    s = np.asarray(scores, dtype=np.float64)
    types = np.asarray(defect_types)
    if s.shape != types.shape or s.ndim != 1:
        raise DataError(f"{s.shape[0] if s.ndim else 0} scores for {types.shape[0]} labels; give one score per image")
    if not np.all(np.isfinite(s)):
        raise DataError(f"{int(np.sum(~np.isfinite(s)))} image scores are NaN or infinite")
    good = types == GOOD
    if not good.any() or good.all():
        raise DataError(f"need both good and defective images; got labels {sorted(set(types.tolist()))}")

    def block(pos: np.ndarray) -> dict:
        keep = good | pos
        y, x = pos[keep].astype(int), s[keep]
        ranked = ranking_scores(x, higher_is_anomalous)
        out = {
            "n_defective": int(pos.sum()),
            "n_good": int(good.sum()),
            "auroc": float(m.roc_auc_score(y, ranked)),
            "average_precision": float(m.average_precision_score(y, ranked)),
        }
        if rule is not None:
            pred = rule.is_anomalous(x)
            out.update(
                precision=float(m.precision_score(y, pred, zero_division=0)),
                recall=float(m.recall_score(y, pred, zero_division=0)),
                f1=float(m.f1_score(y, pred, zero_division=0)),
            )
        return out

    report = {"overall": block(~good), "per_type": {}}
    for t in sorted(set(types.tolist()) - {GOOD}):
        report["per_type"][t] = block(types == t)
    if rule is not None:
        report["threshold"] = rule.threshold
        report["higher_is_anomalous"] = rule.higher_is_anomalous
        report["false_reject_rate"] = float(np.mean(rule.is_anomalous(s[good])))
    return report


def pixel_auroc(
    heatmaps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    defect_types: Sequence[str],
    stride: int = 1,
) -> dict:
    """Pixel AUROC over all images, overall and per defect type (that type's and all good pixels).

    Each heatmap must already have its image's size (see ``factoryedge.features.image.stitch``).
    Good images count as all-negative; defective images without a mask are skipped (and
    counted). ``stride`` > 1 uses every stride-th pixel in each direction, for speed.
    """
    m = _sklearn_metrics()
    if not (len(heatmaps) == len(masks) == len(defect_types)):
        raise DataError(f"{len(heatmaps)} heatmaps, {len(masks)} masks and {len(defect_types)} labels must match")
    per: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    skipped = 0
    for heat, mask, t in zip(heatmaps, masks, defect_types):
        heat = np.asarray(heat)
        if t == GOOD:
            mask = np.zeros(heat.shape, dtype=bool)
        elif mask is None:
            skipped += 1
            continue
        if heat.shape != mask.shape:
            raise DataError(f"heatmap {heat.shape} and mask {mask.shape} differ; resize heatmaps to the image size first")
        per.setdefault(t, []).append((heat[::stride, ::stride].ravel(), mask[::stride, ::stride].ravel()))
    if GOOD not in per or len(per) < 2:
        raise DataError("pixel AUROC needs good images and at least one defective image with a mask")
    good_s = np.concatenate([h for h, _ in per[GOOD]])

    def auc(items) -> float:
        x = np.concatenate([good_s] + [h for h, _ in items])
        y = np.concatenate([np.zeros(good_s.size, bool)] + [k for _, k in items])
        return float(m.roc_auc_score(y, x))

    defects = [item for t, items in per.items() if t != GOOD for item in items]
    return {
        "overall": auc(defects),
        "per_type": {t: auc(items) for t, items in sorted(per.items()) if t != GOOD},
        "n_images": sum(len(v) for v in per.values()),
        "skipped_without_mask": skipped,
        "stride": stride,
    }
