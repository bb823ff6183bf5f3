"""Detection metrics for anomaly scores: normal windows are negatives, every fault class positives."""
from __future__ import annotations

import numpy as np

from factoryedge.errors import DataError

NORMAL = "normal"


def _sklearn_metrics():
    try:
        from sklearn import metrics
    except ImportError:
        from factoryedge.errors import missing_dependency

        raise missing_dependency("sklearn", "train", "evaluation metrics") from None
    return metrics


def detection_report(scores: dict[str, np.ndarray], threshold: float) -> dict:
    """AUROC, AP and precision/recall/F1 at the threshold, overall and per fault class.

    ``scores`` maps a label to the scores of its windows; it must contain "normal" and at
    least one other label. The false-alarm rate is the share of normal windows at or above
    the threshold.
    """
    m = _sklearn_metrics()
    if NORMAL not in scores or len(scores[NORMAL]) == 0:
        raise DataError(f"evaluation needs normal windows (label {NORMAL!r}); got labels {sorted(scores)}")
    faults = {k: np.asarray(v) for k, v in scores.items() if k != NORMAL and len(v)}
    if not faults:
        raise DataError("evaluation needs at least one fault recording besides the normal ones")
    normal = np.asarray(scores[NORMAL])
    report = {
        "threshold": float(threshold),
        "n_normal_windows": int(len(normal)),
        "false_alarm_rate": float(np.mean(normal >= threshold)),
        "per_class": {},
    }

    def block(pos: np.ndarray) -> dict:
        y = np.r_[np.zeros(len(normal)), np.ones(len(pos))]
        s = np.r_[normal, pos]
        pred = s >= threshold
        return {
            "n_windows": int(len(pos)),
            "auroc": float(m.roc_auc_score(y, s)),
            "average_precision": float(m.average_precision_score(y, s)),
            "precision": float(m.precision_score(y, pred, zero_division=0)),
            "recall": float(m.recall_score(y, pred, zero_division=0)),
            "f1": float(m.f1_score(y, pred, zero_division=0)),
            "detection_rate": float(np.mean(pos >= threshold)),
        }

    for label, pos in sorted(faults.items()):
        report["per_class"][label] = block(pos)
    report["overall"] = block(np.concatenate(list(faults.values())))
    return report


def roc_curves(scores: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    m = _sklearn_metrics()
    normal = np.asarray(scores[NORMAL])
    out = {}
    for label, pos in sorted(scores.items()):
        if label == NORMAL or not len(pos):
            continue
        y = np.r_[np.zeros(len(normal)), np.ones(len(pos))]
        s = np.r_[normal, pos]
        fpr, tpr, _ = m.roc_curve(y, s)
        out[label] = (fpr, tpr, float(m.roc_auc_score(y, s)))
    return out
