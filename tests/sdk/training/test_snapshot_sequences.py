"""The recurrent autoencoder over the sequence of recent snapshots' features."""
from __future__ import annotations

import numpy as np
import pytest

from factoryedge.errors import DataError
from factoryedge.evaluation.run_to_failure import Commissioning
from factoryedge.features import make_preprocessor
from factoryedge.features.vibration import default_feature_spec
from factoryedge.training.snapshots import burst_features, sequence_scores, snapshot_sequences, train_sequence_autoencoder
from factoryedge.training.trainer import FitConfig
from tests.sdk.data.snapshot_fixtures import degrading_run


def test_each_burst_gets_the_sequence_that_ends_at_it():
    f = np.arange(12, dtype=np.float32).reshape(6, 2)
    seq = snapshot_sequences(f, 3)
    assert seq.shape == (6, 3, 2)
    np.testing.assert_array_equal(seq[5], f[3:6])
    np.testing.assert_array_equal(seq[1], f[[0, 0, 1]])  # missing history repeats the first burst
    np.testing.assert_array_equal(snapshot_sequences(f, 1)[:, 0], f)
    with pytest.raises(DataError, match="at least 1"):
        snapshot_sequences(f, 0)


def test_burst_features_average_the_windows_of_each_burst():
    x = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]], dtype=np.float32)
    np.testing.assert_allclose(burst_features(x, np.array([0, 0, 1]), 2), [[2.0, 20.0], [5.0, 50.0]])


@pytest.fixture(scope="module")
def simulated():
    run = degrading_run(n_bursts=200, fault_from=150)
    spec = default_feature_spec(run.sample_rate, run.channels, window=1280, hop=1280)
    w, burst, _ = run.windows(spec.window, spec.hop)
    return run, burst_features(make_preprocessor(spec)(w), burst, run.n_bursts)


def test_recurrent_autoencoder_learns_commissioning_and_flags_the_fault(simulated, tmp_path):
    run, f = simulated
    comm = Commissioning(skip_s=0.0, duration_s=900.0)  # bursts 0..89 are healthy
    module, calib, fit_result = train_sequence_autoencoder(f, run.t_s, comm, 6, FitConfig(epochs=150, patience=30),
                                                           tmp_path)
    assert (tmp_path / "learning_curve.csv").exists() and fit_result.best_epoch >= 1
    scores = sequence_scores(module, f, 6)
    assert scores.shape == (run.n_bursts,) and np.all(np.isfinite(scores))
    limit = np.quantile(calib, 0.99)
    healthy, late = scores[90:150], scores[185:]  # after commissioning, before the fault; its last stage
    assert np.median(late) > 3 * limit
    assert np.mean(healthy > limit) < 0.2


def test_too_short_a_commissioning_is_refused(simulated, tmp_path):
    run, f = simulated
    with pytest.raises(DataError, match="commission longer"):
        train_sequence_autoencoder(f, run.t_s, Commissioning(0.0, 300.0), 6, FitConfig(epochs=2), tmp_path)
