import numpy as np
import pytest

from factoryedge.errors import DataError
from factoryedge.manifest import ThresholdRule
from factoryedge.scoring import calibrate_threshold


def test_threshold_rule_matches_its_documentation():
    scores = np.linspace(1.0, 2.0, 101)
    thr, stats = calibrate_threshold(scores, ThresholdRule(quantile=0.99, margin=3.0))
    assert stats.median == pytest.approx(1.5)
    assert thr == pytest.approx(1.5 + 3.0 * (np.quantile(scores, 0.99) - 1.5))
    assert stats.n == 101 and stats.max == 2.0


def test_threshold_scales_with_units():
    rng = np.random.default_rng(1)
    s = rng.gamma(4.0, size=500)
    t1, _ = calibrate_threshold(s)
    t2, _ = calibrate_threshold(s * 1000)
    assert t2 == pytest.approx(t1 * 1000)


def test_too_few_or_bad_windows():
    with pytest.raises(DataError, match="at least 20 normal windows, got 5"):
        calibrate_threshold(np.ones(5))
    with pytest.raises(DataError, match="NaN or infinite"):
        calibrate_threshold(np.r_[np.ones(30), np.nan])
