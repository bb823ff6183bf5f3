"""The false-reject budget: threshold from held-out good scores, its estimate and Clopper-Pearson bound."""
import json

import numpy as np
import pytest

from factoryedge.errors import ConfigError, DataError
from factoryedge.manifest import FalseRejectBudget, Manifest, ScoreInfo, ScoreStats, ThresholdRule
from factoryedge.scoring import (
    ScoreRule,
    budget_threshold,
    calibrate_threshold,
    describe_false_reject,
    false_reject_estimate,
)


@pytest.mark.parametrize("budget, allowed", [(0.01, 1), (0.05, 5), (0.009, 0), (0.29, 29), (0.5, 50)])
def test_exactly_floor_of_budget_times_n_exceed(budget, allowed):
    scores = np.random.default_rng(0).permutation(np.arange(100.0))
    threshold, est = budget_threshold(scores, budget)
    rejected = ScoreRule(threshold).is_anomalous(scores)
    assert rejected.sum() == allowed == est.n_exceeding  # 0.29 * 100 = 28.999... must still allow 29
    assert est.n == 100 and est.expected == allowed / 100
    assert not np.any(scores == threshold)  # between neighbouring scores, never on one


def test_threshold_lies_midway_between_the_neighbouring_scores():
    scores = np.r_[np.linspace(0.0, 1.0, 98), 3.0, 5.0]
    assert budget_threshold(scores, 0.01)[0] == pytest.approx(4.0)  # 1 may exceed: between 3 and 5
    # none may exceed: above the maximum by half its gap to the next score
    assert budget_threshold(scores, 0.005)[0] == pytest.approx(6.0)


def test_ties_pass_or_fail_together_and_never_over_budget():
    scores = np.r_[np.linspace(0.0, 1.0, 95), np.full(5, 2.0)]
    threshold, est = budget_threshold(scores, 0.03)  # 3 allowed, but 5 are tied at the top
    assert threshold > 2.0 and est.n_exceeding == 0
    threshold, est = budget_threshold(scores, 0.05)  # exactly the 5 tied may go
    assert 1.0 < threshold < 2.0 and est.n_exceeding == 5
    assert not ScoreRule(threshold).exceeds(1.0) and ScoreRule(threshold).exceeds(2.0)


def test_lower_is_anomalous_mirrors_the_threshold():
    scores = np.arange(100.0)
    threshold, est = budget_threshold(scores, 0.02, higher_is_anomalous=False)
    assert threshold == pytest.approx(1.5)  # 0 and 1 are the two allowed to be rejected
    assert ScoreRule(threshold, False).is_anomalous(scores).sum() == 2 == est.n_exceeding


def test_clopper_pearson_bound_against_known_values():
    # 0 of 100: the one-sided 95 % bound is 1 - 0.05 ** (1 / 100) = 2.95 %; 1 of 100 gives 4.66 %
    zero = false_reject_estimate(np.zeros(100), ScoreRule(1.0))
    assert zero.expected == 0.0 and zero.upper_bound == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-9)
    one = false_reject_estimate(np.r_[np.zeros(99), 2.0], ScoreRule(1.0))
    assert one.expected == 0.01 and one.upper_bound == pytest.approx(0.046559811, abs=1e-8)
    assert false_reject_estimate(np.full(20, 2.0), ScoreRule(1.0)).upper_bound == 1.0


def test_too_few_scores_or_a_bad_budget_are_refused():
    with pytest.raises(DataError, match="at least 20 good scores, got 19"):
        budget_threshold(np.arange(19.0), 0.01)
    with pytest.raises(DataError, match="NaN or infinite"):
        budget_threshold(np.r_[np.arange(30.0), np.inf], 0.01)
    for bad in (0.0, 1.0, -0.1, True):
        with pytest.raises(ConfigError, match="between 0 and 1"):
            budget_threshold(np.arange(30.0), bad)


def test_calibrate_threshold_takes_either_rule():
    scores = np.arange(100.0)
    assert calibrate_threshold(scores, FalseRejectBudget(max_false_reject=0.01))[0] == 98.5
    assert calibrate_threshold(scores, ThresholdRule(quantile=0.99, margin=1.0))[0] == pytest.approx(98.01)


def _score(rule, false_reject=None):
    stats = ScoreStats(n=120, mean=1, std=1, median=1, q90=1, q99=1, max=1)
    return ScoreInfo(definition="d", threshold=1.0, rule=rule, calibration=stats, false_reject=false_reject)


def test_the_operator_line_names_budget_estimate_and_bound():
    est = false_reject_estimate(np.r_[np.zeros(119), 2.0], ScoreRule(1.0))
    line = describe_false_reject(_score(FalseRejectBudget(max_false_reject=0.01), est))
    assert line == "false-reject budget 1 % on 120 held-out good images: expected 0.83 %, 95 % bound 3.9 %"
    assert describe_false_reject(_score(ThresholdRule())) is None  # older bundles record no estimate


def test_manifests_written_before_the_budget_still_load(tmp_path):
    from tests.support.tiny_bundle import tiny_bundle

    raw = json.loads(tiny_bundle(tmp_path / "b").manifest.model_dump_json())
    for key in ("false_reject",):
        raw["score"].pop(key)
    raw["provenance"].pop("recalibrations")
    m = Manifest.model_validate(raw)
    assert m.schema_version == 1 and isinstance(m.score.rule, ThresholdRule) and m.score.false_reject is None
    budget = json.loads(m.model_dump_json())
    budget["score"]["rule"] = {"max_false_reject": 0.02}
    assert Manifest.model_validate(budget).score.rule == FalseRejectBudget(max_false_reject=0.02)
