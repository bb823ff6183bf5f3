"""The score rule and threshold calibration: one definition of "anomalous" for training,
export parity, evaluation, the debounce and the device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factoryedge.errors import ConfigError, DataError
from factoryedge.manifest import ScoreInfo, ScoreStats, ThresholdRule

MIN_CALIBRATION_WINDOWS = 20


@dataclass(frozen=True)
class ScoreRule:
    """When a score is anomalous: at or beyond ``threshold`` in the direction the manifest says.

    ``higher_is_anomalous`` (the manifest's ``score.higher_is_anomalous``) is True for every
    reconstruction error and distance; a model whose score is a likelihood or a similarity
    sets it False, and then a score at or *below* the threshold is anomalous. Everything that
    turns a score into a verdict goes through this class, so the two directions cannot drift.
    """

    threshold: float
    higher_is_anomalous: bool = True

    def __post_init__(self) -> None:
        if not np.isfinite(self.threshold):
            raise ConfigError(f"threshold must be a finite number, got {self.threshold!r}")

    @classmethod
    def from_score_info(cls, score: ScoreInfo, threshold: float | None = None) -> ScoreRule:
        """The rule of a manifest's ``score`` section, optionally at another threshold."""
        return cls(float(score.threshold if threshold is None else threshold), bool(score.higher_is_anomalous))

    def with_threshold(self, threshold: float) -> ScoreRule:
        return ScoreRule(float(threshold), self.higher_is_anomalous)

    def is_anomalous(self, scores: np.ndarray | float) -> np.ndarray:
        """Boolean array (or numpy bool for a scalar): which scores are anomalous."""
        s = np.asarray(scores)
        return s >= self.threshold if self.higher_is_anomalous else s <= self.threshold

    def exceeds(self, score: float) -> bool:
        """One score as a Python bool."""
        return bool(self.is_anomalous(float(score)))

    def ratio(self, score: float) -> float:
        """How far into anomalous territory a score is: 1 at the threshold, larger is worse."""
        if self.higher_is_anomalous:
            return float(score) / self.threshold if self.threshold else float("inf")
        return self.threshold / float(score) if score else float("inf")

    def clears(self, score: float, hysteresis: float) -> bool:
        """Back to normal with a hysteresis factor < 1 (below ``hysteresis * threshold`` for higher-is-worse)."""
        return self.ratio(score) < hysteresis


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
