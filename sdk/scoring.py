"""The score rule and threshold calibration: one definition of "anomalous" for training,
export parity, evaluation, the debounce and the device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factoryedge.errors import ConfigError, DataError
from factoryedge.manifest import FalseRejectBudget, FalseRejectEstimate, ScoreInfo, ScoreStats, ThresholdRule

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


def calibrate_threshold(
    scores: np.ndarray, rule: ThresholdRule | FalseRejectBudget | None = None
) -> tuple[float, ScoreStats]:
    """Threshold from anomaly scores of held-out normal windows (higher is anomalous).

    A ``FalseRejectBudget`` goes to ``budget_threshold``; otherwise (the quantile rule):

    threshold = median + margin * (quantile_q - median). Stretching the upper quantile's
    distance from the median (rather than adding a constant) scales the margin with the
    spread of this machine's normal scores, whatever the model's score units are. With the
    few dozen to few hundred calibration windows a commissioning run yields, q = 0.99 is
    close to the sample maximum, and later normal running drifts a little (temperature,
    load); the default margin of 3 absorbs that. On CWRU data faults score about 100 times
    the normal median, so the margin costs no detection there.
    """
    if isinstance(rule, FalseRejectBudget):
        threshold, _ = budget_threshold(scores, rule.max_false_reject)
        return threshold, score_stats(np.asarray(scores, dtype=np.float64).ravel())
    rule = rule or ThresholdRule()
    s = _checked(scores, "normal windows", "record longer or use a smaller hop")
    median = float(np.median(s))
    threshold = median + rule.margin * (float(np.quantile(s, rule.quantile)) - median)
    return threshold, score_stats(s)


def _checked(scores: np.ndarray, what: str, remedy: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size < MIN_CALIBRATION_WINDOWS:
        raise DataError(f"calibration needs at least {MIN_CALIBRATION_WINDOWS} {what}, got {s.size}; {remedy}")
    if not np.all(np.isfinite(s)):
        raise DataError(f"{int(np.count_nonzero(~np.isfinite(s)))} calibration scores are NaN or infinite")
    return s


def budget_threshold(
    scores: np.ndarray, max_false_reject: float, higher_is_anomalous: bool = True, source: str = ""
) -> tuple[float, FalseRejectEstimate]:
    """The threshold that rejects at most ``floor(max_false_reject * n)`` of ``n`` held-out good scores.

    The scores must be of good parts the model did not learn from (PatchCore's fold-held-out
    scores, the other models' held-out split, or a line's new good parts): that is how the
    threshold is chosen without ever looking at the test set or at a defect. The threshold
    lies midway between the highest good score that must pass and the next higher distinct
    score (for ``higher_is_anomalous`` False, mirrored), so it is never equal to a score and
    ties cannot flip a verdict under ``ScoreRule.exceeds``; tied scores pass or fail together,
    so fewer than the budget may exceed. When the budget allows none (``b * n < 1``), the
    threshold sits above the largest good score by half its gap to the next one. Returns the
    threshold and the estimate counted at it (``false_reject_estimate``).
    """
    if isinstance(max_false_reject, bool) or not 0.0 < float(max_false_reject) < 1.0:
        raise ConfigError(f"max_false_reject {max_false_reject!r} must lie between 0 and 1 (e.g. 0.01 for 1 %)")
    s = _checked(scores, "good scores", "score more good parts")
    sign = 1.0 if higher_is_anomalous else -1.0
    desc = np.sort(sign * s)[::-1]  # most anomalous first, in "higher is anomalous" units
    allowed = int(np.floor(max_false_reject * s.size + 1e-9))  # 0.29 * 100 is 28.999...
    must_pass = desc[allowed] if allowed < s.size else desc[-1]
    above = desc[desc > must_pass]
    if above.size:
        upper = float(above.min())
        t = must_pass + (upper - must_pass) / 2.0
        if not must_pass < t <= upper:  # adjacent floats: no number lies strictly between
            t = upper
    else:
        below = desc[desc < must_pass]
        gap = float(must_pass - below.max()) if below.size else max(abs(float(must_pass)), 1.0) * 1e-6
        t = must_pass + gap / 2.0
        if not t > must_pass:
            t = float(np.nextafter(must_pass, np.inf))
    threshold = float(sign * t)
    return threshold, false_reject_estimate(s, ScoreRule(threshold, higher_is_anomalous), source=source)


def false_reject_estimate(good_scores: np.ndarray, rule: ScoreRule, confidence: float = 0.95,
                          source: str = "") -> FalseRejectEstimate:
    """How many held-out good scores ``rule`` rejects: k / n, with a one-sided Clopper-Pearson upper bound.

    The bound is the largest false-reject rate still consistent (at ``confidence``) with
    seeing only k of n good parts rejected. It is exact, not a normal approximation, and it
    says how little a small good set proves: 0 of 20 bounds the rate only below 14 %, 0 of
    100 below 3 %, 1 of 100 below 4.7 %; hundreds of good images are needed to show 1 %.
    """
    from scipy.stats import beta

    s = np.asarray(good_scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise DataError("a false-reject estimate needs at least one good score")
    n, k = int(s.size), int(np.count_nonzero(rule.is_anomalous(s)))
    upper = 1.0 if k == n else float(beta.ppf(confidence, k + 1, n - k))
    return FalseRejectEstimate(n=n, n_exceeding=k, expected=k / n, upper_bound=upper, confidence=confidence,
                               source=source)


def describe_false_reject(score: ScoreInfo) -> str | None:
    """'false-reject budget 1 % on 120 held-out good images: expected 0.8 %, 95 % bound 3.9 %', or None.

    For a quantile rule the budget part names the rule instead; None where the manifest
    records no estimate (bundles written before it existed, vibration bundles).
    """
    est, rule = score.false_reject, score.rule
    if est is None:
        return None
    if isinstance(rule, FalseRejectBudget):
        head = f"false-reject budget {_pct(rule.max_false_reject)}"
    elif isinstance(rule, ThresholdRule):
        head = f"median + {rule.margin:g} x (q{rule.quantile * 100:g} - median)"
    else:
        head = "threshold chosen on labelled data"
    return (f"{head} on {est.n} held-out good images: expected {_pct(est.expected)}, "
            f"{est.confidence * 100:g} % bound {_pct(est.upper_bound)}")


def _pct(x: float) -> str:
    return f"{x * 100:.2g} %" if x * 100 < 10 else f"{x * 100:.0f} %"
