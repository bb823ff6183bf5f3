import json

import numpy as np
import pytest

from factoryedge.bundle import load_bundle
from factoryedge.errors import ConfigError
from factoryedge.runtimes.monitoring.baselining import Baseliner
from factoryedge.scoring import calibrate_threshold
from tests.support.tiny_bundle import tiny_bundle


@pytest.fixture
def bundle(tmp_path):
    return load_bundle(tiny_bundle(tmp_path / "b").path)


def test_collects_then_persists_and_reloads(tmp_path, bundle):
    state_file = tmp_path / "state" / "baseline.json"
    b = Baseliner(state_file, bundle, "pump-7", min_windows=50)
    assert b.load() is None
    b.start()
    scores = np.random.default_rng(0).gamma(3.0, size=60)
    assert b.add(scores[:30]) is None and b.collecting
    state = b.add(scores[30:])
    assert state is not None and not b.collecting
    expected, _ = calibrate_threshold(scores, bundle.manifest.score.rule)
    assert state.threshold == pytest.approx(expected)
    assert state.bundle_threshold == bundle.manifest.score.threshold
    again = Baseliner(state_file, bundle, "pump-7", min_windows=50).load()
    assert again == state


def test_state_for_another_model_or_machine_is_ignored(tmp_path, bundle):
    state_file = tmp_path / "baseline.json"
    b = Baseliner(state_file, bundle, "pump-7", min_windows=20)
    b.start()
    b.add(np.ones(25) + np.arange(25) * 0.01)
    assert Baseliner(state_file, bundle, "pump-8", min_windows=20).load() is None
    other = load_bundle(tiny_bundle(tmp_path / "other", threshold=9.0).path)
    raw = json.loads(state_file.read_text())
    raw["model_sha256"] = "f" * 64
    state_file.write_text(json.dumps(raw))
    assert Baseliner(state_file, other, "pump-7", min_windows=20).load() is None


def test_corrupt_state_falls_back_and_too_short_is_refused(tmp_path, bundle):
    state_file = tmp_path / "baseline.json"
    state_file.write_text("{garbage")
    assert Baseliner(state_file, bundle, "m", min_windows=20).load() is None
    with pytest.raises(ConfigError, match="at least 20 windows, got 5"):
        Baseliner(state_file, bundle, "m", min_windows=5)
