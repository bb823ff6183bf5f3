"""The one tolerance table and output comparison behind every parity check (export and engines)."""
import math

import numpy as np
import pytest

from factoryedge.errors import ConfigError, DataError
from factoryedge.parity import (
    ENGINE_PRECISIONS,
    TOLERANCES,
    Tolerance,
    compare_outputs,
    golden_reference,
    tolerance,
)
from factoryedge.scoring import ScoreRule

RULE = ScoreRule(3.0)


def reference(n=8):
    rng = np.random.default_rng(3)
    score = np.concatenate([rng.uniform(0.5, 1.5, n // 2), rng.uniform(5, 9, n - n // 2)]).astype(np.float32)
    return {"score": score, "detail": rng.normal(size=(n, 5)).astype(np.float32) ** 2}


@pytest.mark.parametrize("name", sorted(TOLERANCES))
def test_comparison_passes_inside_each_tolerance(name):
    tol = TOLERANCES[name]
    ref = reference()
    got = {k: v * (1 + 0.5 * tol.rtol) + 0.5 * tol.atol for k, v in ref.items()}
    result = compare_outputs(ref, got, tol, RULE)
    assert result.ok and result.failures == () and result.decisions_changed == 0 and result.n_inputs == 8
    assert set(result.max_abs_diff) == {"score", "detail"} and 0 < result.worst


@pytest.mark.parametrize("name", sorted(TOLERANCES))
def test_comparison_fails_outside_each_tolerance(name):
    tol = TOLERANCES[name]
    ref = reference()
    got = dict(ref, detail=ref["detail"] * (1 + 3 * tol.rtol) + 3 * tol.atol)
    result = compare_outputs(ref, got, tol, RULE)
    assert not result.ok and len(result.failures) == 1 and "output 'detail'" in result.failures[0]


def test_every_engine_precision_has_a_tolerance_and_looser_precisions_looser_ones():
    t = {p: tolerance(p) for p in ENGINE_PRECISIONS}
    assert t["fp32"].rtol < t["fp16"].rtol < t["int8"].rtol and t["fp32"].atol < t["fp16"].atol < t["int8"].atol


def test_export_tolerances_are_absolute_and_the_memory_bank_one_is_looser():
    # the manifest's export parity record keeps one absolute figure
    assert tolerance("export") == Tolerance(atol=1e-4) and tolerance("export_memory_bank") == Tolerance(atol=1e-3)
    assert all(TOLERANCES[k].rtol == 0 for k in TOLERANCES if k.startswith("export"))


def test_unknown_or_invalid_tolerances_are_named():
    with pytest.raises(ConfigError, match=r"no parity tolerance 'fp8'; known: export, export_memory_bank, fp32"):
        tolerance("fp8")
    with pytest.raises(ConfigError, match="atol must be a finite number >= 0, got -1"):
        Tolerance(atol=-1)
    with pytest.raises(ConfigError, match="rtol .* got nan"):
        Tolerance(atol=0.1, rtol=float("nan"))


def test_a_changed_decision_fails_even_within_tolerance():
    ref = {"score": np.array([2.995, 1.0, 8.0], np.float32)}
    got = {"score": np.array([3.001, 1.0, 8.0], np.float32)}  # 0.2% off: inside int8's tolerance
    result = compare_outputs(ref, got, tolerance("int8"), RULE)
    assert result.decisions_changed == 1 and any("1 golden decision(s) changed" in f for f in result.failures)
    assert compare_outputs(ref, got, tolerance("int8")).ok  # without a rule only values are compared


def test_decisions_follow_the_rule_when_lower_is_anomalous():
    # A likelihood-like score: at or below the threshold is anomalous. 3.0 -> 3.0005 leaves the
    # anomalous side only for the lower-is-anomalous rule; 1.0 -> 5.0 would cross either way.
    ref = {"score": np.array([3.0, 2.0, 8.0], np.float32)}
    got = {"score": np.array([3.0005, 2.0, 8.0], np.float32)}
    lower = ScoreRule(3.0, higher_is_anomalous=False)
    result = compare_outputs(ref, got, tolerance("int8"), lower)
    assert result.decisions_changed == 1 and "at or below the threshold 3" in result.failures[0]
    higher = compare_outputs(ref, got, tolerance("int8"), RULE)
    assert higher.decisions_changed == 0 and higher.ok  # 3.0 and 3.0005 are both anomalous when higher is worse
    scores = {"score": np.array([2.0, 8.0], np.float32)}
    assert compare_outputs(scores, {"score": np.array([2.0, 3.0], np.float32)}, Tolerance(atol=10), lower).decisions_changed == 1


def test_nan_missing_and_misshapen_outputs_fail():
    ref = reference()
    tol = tolerance("fp32")
    result = compare_outputs(ref, dict(ref, score=np.full(8, np.nan, np.float32)), tol, RULE)
    assert any("output 'score'" in f for f in result.failures) and math.isinf(result.max_abs_diff["score"])
    result = compare_outputs(ref, {"score": ref["score"]}, tol, RULE)
    assert result.failures == ("output 'detail' is missing from the outputs compared ['score']",)
    result = compare_outputs(ref, dict(ref, detail=ref["detail"][:, :4]), tol, RULE)
    assert result.failures == ("output 'detail' has shape [8, 4], reference [8, 5]",)
    with pytest.raises(DataError, match="nothing to compare"):
        compare_outputs({}, ref, tol)


def test_golden_reference_reads_the_output_arrays_by_name():
    golden = {"input": np.zeros((2, 3)), "output_score": np.ones(2), "output_heatmap": np.ones((2, 4)),
              "group1_output_score": np.ones(3)}
    assert sorted(golden_reference(golden)) == ["heatmap", "score"]
