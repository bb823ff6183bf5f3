import numpy as np
import pytest
from pydantic import ValidationError

from factoryedge.errors import ConfigError
from factoryedge.features import make_preprocessor
from factoryedge.features.vibration import (
    SKF6205_ORDERS,
    FeatureExtractor,
    VibrationFeatureSpec,
    VibrationFrameSpec,
    default_feature_spec,
)
from factoryedge.features.windowing import sliding_windows, window_starts

FS = 12000.0


def _feature(fe: FeatureExtractor, feats: np.ndarray, name: str) -> np.ndarray:
    return feats[:, fe.names.index(name)]


def test_windowing_is_a_view_with_hop():
    x = np.arange(100, dtype=float).reshape(50, 2)
    w = sliding_windows(x, 16, 8)
    assert w.shape == (5, 16, 2)
    np.testing.assert_array_equal(w[1, :, 0], x[8:24, 0])
    np.testing.assert_array_equal(window_starts(50, 16, 8), [0, 8, 16, 24, 32])
    assert sliding_windows(x[:10], 16, 8).shape == (0, 16, 2)
    with pytest.raises(ConfigError, match="hop must be an integer between 1 and the window"):
        sliding_windows(x, 16, 17)


def test_time_features_of_known_signals():
    spec = default_feature_spec(FS, ("a",), window=4096)
    fe = FeatureExtractor(spec)
    t = np.arange(4096) / FS
    sine = 2.0 * np.sin(2 * np.pi * 1000 * t) + 5.0  # DC is removed before features
    noise = np.random.default_rng(0).normal(size=4096)
    f = fe(np.stack([sine, noise])[:, :, None])
    assert _feature(fe, f, "a.rms")[0] == pytest.approx(np.sqrt(2), rel=1e-3)
    assert _feature(fe, f, "a.crest_factor")[0] == pytest.approx(np.sqrt(2), rel=1e-3)
    assert _feature(fe, f, "a.kurtosis")[0] == pytest.approx(1.5, rel=1e-2)  # sine: 3/2
    assert _feature(fe, f, "a.kurtosis")[1] == pytest.approx(3.0, abs=0.3)  # Gaussian
    assert abs(_feature(fe, f, "a.skewness")[1]) < 0.2
    # the 1 kHz tone's energy lands in the spectral band that contains 1 kHz
    bands = [i for i, n in enumerate(fe.names) if ".band" in n]
    loudest = fe.names[bands[int(np.argmax(f[0, bands]))]]
    lo, hi = (float(v) for v in loudest.split("_")[1].rstrip("Hz").split("-"))
    assert lo <= 1000 <= hi


def test_envelope_exposes_bearing_defect_rate():
    shaft_hz = 1797 / 60
    spec = default_feature_spec(FS, ("a",), window=8192, shaft_hz=shaft_hz, defect_orders=SKF6205_ORDERS)
    fe = FeatureExtractor(spec)
    t = np.arange(8192) / FS
    bpfo = SKF6205_ORDERS["BPFO"] * shaft_hz
    impacts = np.zeros_like(t)
    impacts[(np.arange(0, t[-1], 1 / bpfo) * FS).astype(int)] = 1.0
    ring = np.exp(-np.arange(120) / FS * 900) * np.sin(2 * np.pi * 3500 * np.arange(120) / FS)
    faulty = np.convolve(impacts, ring)[: len(t)] + 0.05 * np.random.default_rng(1).normal(size=len(t))
    healthy = 0.05 * np.random.default_rng(2).normal(size=len(t))
    f = fe(np.stack([faulty, healthy])[:, :, None])
    bpfo_line = _feature(fe, f, "a.env_BPFO")
    assert bpfo_line[0] > 1.0  # >10x the envelope spectrum's median
    assert bpfo_line[0] > bpfo_line[1] + 0.7
    assert bpfo_line[0] > _feature(fe, f, "a.env_BPFI")[0] + 0.5


def test_features_do_not_depend_on_batching():
    """The device scores windows in whatever batches arrive; training used other batches."""
    spec = default_feature_spec(FS, ("x", "y", "z"), window=1024)
    fe = make_preprocessor(spec)
    x = np.random.default_rng(3).normal(size=(9, 1024, 3))
    together = fe(x)
    one_by_one = np.concatenate([fe(x[i : i + 1]) for i in range(9)])
    np.testing.assert_array_equal(together, one_by_one)
    assert together.dtype == np.float32 and together.shape == (9, fe.n_features)
    assert len(fe.names) == fe.n_features == 3 * (len(fe.names) // 3)
    assert fe.names[0] == "x.rms" and fe.names[fe.n_features // 3] == "y.rms"


def test_spec_round_trips_through_json_and_rejects_bad_values():
    spec = default_feature_spec(48000, ("DE",), shaft_hz=30.0, defect_orders=SKF6205_ORDERS)
    again = VibrationFeatureSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    with pytest.raises(ValidationError, match="Nyquist"):
        VibrationFeatureSpec(sample_rate=1000, channels=("a",), window=256, hop=64, spectral_fmax=900, envelope_band=None)
    with pytest.raises(ValidationError, match="hop"):
        VibrationFeatureSpec(sample_rate=1000, channels=("a",), window=256, hop=512, spectral_fmax=400, envelope_band=None)
    with pytest.raises(ValidationError, match="frequency resolution"):
        VibrationFeatureSpec(sample_rate=48000, channels=("a",), window=64, hop=64, spectral_fmax=20000,
                             envelope_band=None, spectral_bands=64)
    with pytest.raises(ValidationError, match="shaft_hz"):
        VibrationFeatureSpec(sample_rate=12000, channels=("a",), window=1024, hop=256, spectral_fmax=5000,
                             envelope_band=(2000, 5000), defect_orders={"BPFO": 3.58})


def test_windows_of_the_wrong_shape_are_refused():
    fe = make_preprocessor(default_feature_spec(FS, ("a", "b"), window=1024))
    with pytest.raises(ConfigError, match=r"expected \(batch, 1024, 2\)"):
        fe(np.zeros((3, 1024, 1)))


@pytest.mark.parametrize("representation", ["samples", "log_spectrum"])
def test_frame_extractor_shapes(representation):
    spec = VibrationFrameSpec(sample_rate=FS, channels=("a", "b"), window=1024, hop=256, frame=128,
                              representation=representation, bands=16)
    fx = make_preprocessor(spec)
    out = fx(np.random.default_rng(0).normal(size=(5, 1024, 2)))
    assert out.shape == (5, 8, fx.n_features) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    with pytest.raises(ValidationError, match="divide the window"):
        VibrationFrameSpec(sample_rate=FS, channels=("a",), window=1000, hop=100, frame=128)
