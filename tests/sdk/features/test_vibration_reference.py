"""The float32 scipy.fft extractor gives the values every bundle so far was trained on.

Checked against the float64 numpy extractor it replaced (kept verbatim in
``reference_vibration``), on simulated multi-axis windows and on real CWRU windows.
Tolerance: features are log10 band energies, time statistics (kurtosis ~3-50) and log
ratios; float32 arithmetic over 1-4 k samples moves them by at most ~1e-4 relative,
measured 8e-5 absolute at worst on the CWRU 48 kHz windows.
"""
from __future__ import annotations

import numpy as np
import pytest

from factoryedge.data import cwru
from factoryedge.data.simulator import simulate_bearing
from factoryedge.errors import DataError
from factoryedge.features.vibration import CHUNK, SKF6205_ORDERS, FeatureExtractor, default_feature_spec
from factoryedge.features.windowing import sliding_windows
from tests.sdk.features.reference_vibration import ReferenceFeatureExtractor

RTOL, ATOL = 1e-4, 2e-4


def _assert_equal_to_reference(spec, windows):
    got = FeatureExtractor(spec)(windows)
    want = ReferenceFeatureExtractor(spec)(windows)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("fs, channels", [(12000.0, ("x",)), (25600.0, ("x", "y", "z"))])
def test_simulated_windows_match_the_reference(fs, channels):
    spec = default_feature_spec(fs, channels, shaft_hz=1797 / 60, defect_orders=SKF6205_ORDERS)
    rec = simulate_bearing(3.0, sample_rate=fs, rpm=1797.0, fault="inner_race", fault_onset_s=1.5, seed=4)
    signal = np.repeat(rec.signal, len(channels), axis=1) * np.linspace(1.0, 0.5, len(channels), dtype=np.float32)
    windows = sliding_windows(signal, spec.window, spec.hop)
    assert len(windows) > CHUNK  # crosses the internal chunking
    _assert_equal_to_reference(spec, windows)


def test_real_cwru_windows_match_the_reference():
    try:
        recordings = cwru.cwru_48k(cwru.shared_data_dir())
    except DataError as e:
        pytest.skip(f"CWRU data not available: {e}")
    for rec in recordings:
        spec = default_feature_spec(rec.sample_rate, rec.channels, shaft_hz=rec.meta["rpm"] / 60,
                                    defect_orders=SKF6205_ORDERS)
        windows = sliding_windows(rec.signal, spec.window, spec.hop)[:200]
        _assert_equal_to_reference(spec, windows)


def test_scipy_workers_do_not_change_values():
    spec = default_feature_spec(25600.0, ("x", "y"), shaft_hz=30.0, defect_orders=SKF6205_ORDERS)
    windows = np.random.default_rng(1).normal(size=(40, spec.window, 2)).astype(np.float32)
    np.testing.assert_array_equal(FeatureExtractor(spec, workers=2)(windows), FeatureExtractor(spec)(windows))


def test_public_scipy_fallback_gives_the_same_bits(monkeypatch):
    """The extractor's FFTs write into its buffers through scipy's pocketfft binding; without it, scipy.fft."""
    from factoryedge.features import fft

    spec = default_feature_spec(25600.0, ("x", "y", "z"), shaft_hz=30.0, defect_orders=SKF6205_ORDERS)
    windows = np.random.default_rng(2).normal(size=(CHUNK + 5, spec.window, 3)).astype(np.float32)
    fast = FeatureExtractor(spec)(windows)
    monkeypatch.setattr(fft, "_binding", lambda: None)
    np.testing.assert_array_equal(FeatureExtractor(spec)(windows), fast)


def test_reused_buffers_do_not_leak_between_calls_of_other_sizes():
    spec = default_feature_spec(25600.0, ("x", "y"), shaft_hz=30.0, defect_orders=SKF6205_ORDERS)
    rng = np.random.default_rng(3)
    big, small = (rng.normal(size=(n, spec.window, 2)).astype(np.float32) for n in (CHUNK + 7, 3))
    extractor = FeatureExtractor(spec)
    want_small = FeatureExtractor(spec)(small)
    extractor(big)
    np.testing.assert_array_equal(extractor(small), want_small)
    np.testing.assert_array_equal(extractor(big), FeatureExtractor(spec)(big))


def test_one_extractor_serves_several_threads():
    from concurrent.futures import ThreadPoolExecutor

    spec = default_feature_spec(25600.0, ("x", "y"), shaft_hz=30.0, defect_orders=SKF6205_ORDERS)
    rng = np.random.default_rng(4)
    batches = [rng.normal(size=(9, spec.window, 2)).astype(np.float32) for _ in range(8)]
    want = [FeatureExtractor(spec)(b) for b in batches]
    shared = FeatureExtractor(spec)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda b: [shared(b) for _ in range(5)][-1], batches))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
