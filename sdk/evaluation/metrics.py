"""Detection metrics for anomaly scores: normal windows are negatives, every fault class positives.

Verdicts go through ``factoryedge.scoring.ScoreRule``, and ranking metrics (AUROC, AP, ROC
curves) see the scores turned round where lower is anomalous, so both directions of a
manifest's ``score.higher_is_anomalous`` give the same figures.
"""
from __future__ import annotations

import numpy as np

from factoryedge.errors import DataError
from factoryedge.scoring import ScoreRule

NORMAL = "normal"


def _sklearn_metrics():
    try:
        from sklearn import metrics
    except ImportError:
        from factoryedge.errors import missing_dependency

        raise missing_dependency("sklearn", "train", "evaluation metrics") from None
    return metrics


def ranking_scores(scores, higher_is_anomalous: bool = True) -> np.ndarray:
    """float64 scores oriented so that higher means anomalous, as sklearn's AUROC, AP and ROC assume."""
    s = np.asarray(scores, dtype=np.float64)
    return s if higher_is_anomalous else -s


def detection_report(scores: dict[str, np.ndarray], threshold: float, *, higher_is_anomalous: bool = True) -> dict:
    """AUROC, AP and precision/recall/F1 at the threshold, overall and per fault class.

    ``scores`` maps a label to the scores of its windows; it must contain "normal" and at
    least one other label. A window is anomalous by ``ScoreRule(threshold,
    higher_is_anomalous)``: at or above the threshold, or at or below it where lower is
    anomalous. The false-alarm rate is the share of normal windows found anomalous.
    """
    m = _sklearn_metrics()
    rule = ScoreRule(float(threshold), higher_is_anomalous)
    if NORMAL not in scores or len(scores[NORMAL]) == 0:
        raise DataError(f"evaluation needs normal windows (label {NORMAL!r}); got labels {sorted(scores)}")
    faults = {k: np.asarray(v) for k, v in scores.items() if k != NORMAL and len(v)}
    if not faults:
        raise DataError("evaluation needs at least one fault recording besides the normal ones")
    normal = np.asarray(scores[NORMAL])
    report = {
        "threshold": rule.threshold,
        "higher_is_anomalous": rule.higher_is_anomalous,
        "n_normal_windows": int(len(normal)),
        "false_alarm_rate": float(np.mean(rule.is_anomalous(normal))),
        "per_class": {},
    }

    def block(pos: np.ndarray) -> dict:
        y = np.r_[np.zeros(len(normal)), np.ones(len(pos))]
        s = np.r_[normal, pos]
        pred = rule.is_anomalous(s)
        ranked = ranking_scores(s, rule.higher_is_anomalous)
        return {
            "n_windows": int(len(pos)),
            "auroc": float(m.roc_auc_score(y, ranked)),
            "average_precision": float(m.average_precision_score(y, ranked)),
            "precision": float(m.precision_score(y, pred, zero_division=0)),
            "recall": float(m.recall_score(y, pred, zero_division=0)),
            "f1": float(m.f1_score(y, pred, zero_division=0)),
            "detection_rate": float(np.mean(rule.is_anomalous(pos))),
        }

    for label, pos in sorted(faults.items()):
        report["per_class"][label] = block(pos)
    report["overall"] = block(np.concatenate(list(faults.values())))
    return report


def roc_curves(scores: dict[str, np.ndarray], *, higher_is_anomalous: bool = True
               ) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """(false-positive rates, true-positive rates, AUROC) per fault class against the normal windows."""
    m = _sklearn_metrics()
    normal = np.asarray(scores[NORMAL])
    out = {}
    for label, pos in sorted(scores.items()):
        if label == NORMAL or not len(pos):
            continue
        y = np.r_[np.zeros(len(normal)), np.ones(len(pos))]
        s = ranking_scores(np.r_[normal, pos], higher_is_anomalous)
        fpr, tpr, _ = m.roc_curve(y, s)
        out[label] = (fpr, tpr, float(m.roc_auc_score(y, s)))
    return out
