"""Threshold calibration from normal scores: one rule for training and for on-device baselining."""
from __future__ import annotations

import numpy as np

from factoryedge.errors import DataError
from factoryedge.manifest import ScoreStats, ThresholdRule

MIN_CALIBRATION_WINDOWS = 20


def score_stats(scores: np.ndarray) -> ScoreStats:
    s = np.asarray(scores, dtype=np.float64).ravel()
    return ScoreStats(
        n=int(s.size),
        mean=float(s.mean()),
        std=float(s.std()),
        median=float(np.median(s)),
        q90=float(np.quantile(s, 0.90)),
        q99=float(np.quantile(s, 0.99)),
        max=float(s.max()),
    )


def calibrate_threshold(scores: np.ndarray, rule: ThresholdRule | None = None) -> tuple[float, ScoreStats]:
    """Threshold from anomaly scores of held-out normal windows.

    threshold = median + margin * (quantile_q - median). Stretching the upper quantile's
    distance from the median (rather than adding a constant) scales the margin with the
    spread of this machine's normal scores, whatever the model's score units are. With the
    few dozen to few hundred calibration windows a commissioning run yields, q = 0.99 is
    close to the sample maximum, and later normal running drifts a little (temperature,
    load); the default margin of 3 absorbs that. On CWRU data faults score about 100 times
    the normal median, so the margin costs no detection there.
    """
    rule = rule or ThresholdRule()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size < MIN_CALIBRATION_WINDOWS:
        raise DataError(
            f"calibration needs at least {MIN_CALIBRATION_WINDOWS} normal windows, got {s.size}; "
            "record longer or use a smaller hop"
        )
    if not np.all(np.isfinite(s)):
        raise DataError(f"{int(np.count_nonzero(~np.isfinite(s)))} calibration scores are NaN or infinite")
    median = float(np.median(s))
    threshold = median + rule.margin * (float(np.quantile(s, rule.quantile)) - median)
    return threshold, score_stats(s)
