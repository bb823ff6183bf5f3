"""``factoryedge train`` / ``evaluate`` on snapshot runs to failure: real subprocesses, a simulated degradation."""
import json

import numpy as np
import pytest

from tests.cli.test_cli import assert_one_line_error, cli
from tests.sdk.data.snapshot_fixtures import degrading_run
from tests.support.tiny_bundle import tiny_bundle


def _save(run, path):
    np.savez(path, signal=run.bursts.astype(np.float16), t_s=run.t_s, sample_rate=run.sample_rate,
             channels=np.array(run.channels))
    return path


@pytest.mark.slow  # trains and exports a bundle (ONNX export and parity) in a subprocess: about a minute
def test_train_and_evaluate_a_run_to_failure(tmp_path):
    train = _save(degrading_run(n_bursts=70, fault_from=70, seed=1), tmp_path / "healthy.npz")
    test = _save(degrading_run(seed=2), tmp_path / "failing.npz")
    r = cli("train", "vibration", "--data", f"h={train}", "--out", tmp_path / "run", "--epochs", "3",
            "--skip-s", "0", "--duration-s", "600")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "eval"
    r = cli("evaluate", tmp_path / "run" / "bundle", f"sim={test}", "--out", out, "--skip-s", "0",
            "--duration-s", "600", "--protocol", "both")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    (run,) = report["runs"]
    assert run["source"].endswith("failing.npz") and run["life_s"] == 1990.1
    assert run["bundle_trained_on_this_run"] is False
    for method in ("model", "baseline", "rms_rule"):
        assert {"early_episodes", "alarmed", "lead_s"} <= set(run[method])
    assert run["rms_rule"]["alarmed"] and run["rms_rule"]["early_episodes"] == 0
    own = report["protocols"]["own"]["runs"][0]
    assert own["rms_rule"] == run["rms_rule"]  # the RMS rule does not depend on the protocol
    assert {"early_episodes", "alarmed", "lead_s", "threshold"} <= set(own["recurrent"])
    assert set(report["protocols"]["own"]["tradeoff"]) == {"model", "baseline", "recurrent", "rms_rule"}
    assert (out / "run_failing_transfer.png").is_file() and (out / "tradeoff_own.png").is_file()
    assert set(report["tradeoff"]) == {"model", "baseline", "rms_rule"}


def test_commissioning_longer_than_half_of_life_is_a_one_line_error(tmp_path):
    test = _save(degrading_run(n_bursts=80, fault_from=60), tmp_path / "short.npz")
    bundle = tiny_bundle(tmp_path / "b")
    assert_one_line_error(cli("evaluate", bundle.path, f"s={test}", "--skip-s", "0",
                              "--duration-s", "600", "--out", tmp_path / "e"), "after half of its life")
