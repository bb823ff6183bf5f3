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


def test_skip_then_learn_over_recording_time_of_snapshots(tmp_path, bundle):
    # Snapshots: 4 windows per burst, a burst every 10 s. A window adds 0.02 s of stream, so
    # counts alone would need 45,000 windows for 900 s; the end times say 900 s after ~90 bursts.
    hop_s, per, period = 0.02, 4, 10.0
    b = Baseliner(tmp_path / "s.json", bundle, "b1", min_windows=int(900 / hop_s), hop_s=hop_s, skip_s=300.0)
    b.start()
    rng = np.random.default_rng(1)
    learned, skipped, state, burst = [], 0, None, 0
    while state is None:
        ends = burst * period + 0.04 + np.arange(per) * hop_s
        scores = rng.gamma(3.0, size=per)
        state = b.add(scores, ends)
        skipped += b.skipped_last
        learned.extend(scores[b.skipped_last:])
        burst += 1
    assert skipped == 30 * per  # bursts starting at 0..290 s fall in the 300 s skip
    assert burst == 30 + 91  # learning ends with the first window 900 s after the first learned one
    assert state.windows == len(learned) == 91 * per
    assert state.threshold == pytest.approx(calibrate_threshold(np.array(learned), bundle.manifest.score.rule)[0])


def test_skip_of_a_continuous_stream_counts_its_windows(tmp_path, bundle):
    # a replay faster than real time: end times span less than the stream, the count says more
    b = Baseliner(tmp_path / "s.json", bundle, "m", min_windows=50, hop_s=0.1, skip_s=2.0)
    b.start()
    ends = np.arange(100) * 0.01  # 10x faster than the stream
    assert b.add(np.ones(15), ends[:15]) is None and b.skipped_last == 15 and b.skipping
    assert b.add(np.ones(10), ends[15:25]) is None and b.skipped_last == 5 and not b.skipping
    state = b.add(np.random.default_rng(2).gamma(3.0, size=45), ends[25:70])
    assert state is not None and state.windows == 50 and b.skipped == 20


def test_negative_skip_is_refused(tmp_path, bundle):
    with pytest.raises(ConfigError, match="skip_s=-1"):
        Baseliner(tmp_path / "s.json", bundle, "m", min_windows=20, skip_s=-1)
