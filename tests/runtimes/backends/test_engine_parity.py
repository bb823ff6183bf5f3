"""The engine's parity record, decided without TensorRT: the precision's tolerance and the manifest's score rule."""
import numpy as np
import pytest

from factoryedge.errors import ConfigError
from factoryedge.manifest import ScoreInfo, ScoreStats
from factoryedge.parity import ENGINE_PRECISIONS, tolerance
from factoryedge.runtimes.backends import engine_cache as ec
from factoryedge.runtimes.backends.tensorrt_build import compare_engine_outputs

STATS = ScoreStats(n=20, mean=1.0, std=0.1, median=1.0, q90=1.1, q99=1.2, max=1.3)


def score_info(threshold=3.0, higher_is_anomalous=True):
    return ScoreInfo(definition="test", threshold=threshold, higher_is_anomalous=higher_is_anomalous, rule=None,
                     calibration=STATS)


def reference(n=8):
    rng = np.random.default_rng(3)
    score = np.concatenate([rng.uniform(0.5, 1.5, n // 2), rng.uniform(5, 9, n - n // 2)]).astype(np.float32)
    return {"score": score, "detail": rng.normal(size=(n, 5)).astype(np.float32) ** 2}


def test_every_cached_precision_has_a_tolerance():
    assert ec.PRECISIONS == ENGINE_PRECISIONS and all(tolerance(p) for p in ec.PRECISIONS)


@pytest.mark.parametrize("precision", ec.PRECISIONS)
def test_record_carries_the_precisions_tolerance(precision):
    tol = tolerance(precision)
    ref = reference()
    got = {k: v * (1 + 0.5 * tol.rtol) + 0.5 * tol.atol for k, v in ref.items()}
    parity, failures = compare_engine_outputs(ref, got, precision, score_info())
    assert failures == [] and parity.decisions_changed == 0 and parity.n_inputs == 8
    assert parity.tolerance == tol.rtol and parity.atol == tol.atol and set(parity.max_abs_diff) == {"score", "detail"}
    got = dict(ref, detail=ref["detail"] * (1 + 3 * tol.rtol) + 3 * tol.atol)
    _, failures = compare_engine_outputs(ref, got, precision, score_info())
    assert len(failures) == 1 and "output 'detail'" in failures[0]


def test_decisions_use_the_manifests_direction():
    ref = {"score": np.array([3.0, 1.0, 8.0], np.float32)}
    got = {"score": np.array([3.002, 1.0, 8.0], np.float32)}  # inside int8's tolerance
    parity, failures = compare_engine_outputs(ref, got, "int8", score_info(higher_is_anomalous=False))
    assert parity.decisions_changed == 1 and any("1 golden decision(s) changed" in f for f in failures)
    parity, failures = compare_engine_outputs(ref, got, "int8", score_info(higher_is_anomalous=True))
    assert parity.decisions_changed == 0 and failures == []


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="precision 'fp8' is not one of fp32, fp16, int8"):
        compare_engine_outputs(reference(), reference(), "fp8", score_info())


def test_golden_reference_of_a_real_bundle(tmp_path):
    from factoryedge.parity import golden_reference
    from tests.support.tiny_bundle import tiny_bundle

    ref = golden_reference(tiny_bundle(tmp_path / "tiny").golden())
    assert set(ref) == {"score"} and ref["score"].shape == (4,)
