"""The command line as a user meets it: real subprocesses, real files, one-line errors."""
import json
import subprocess
import sys

import pytest

from factoryedge.data.loaders import save_npz
from factoryedge.data.simulator import simulate_bearing
from tests.support.tiny_bundle import tiny_bundle


def cli(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "factoryedge", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_help_lists_the_commands():
    r = cli("--help")
    assert r.returncode == 0
    for cmd in ("train", "export", "evaluate", "show"):
        assert cmd in r.stdout
    r = cli("train", "--help")
    assert r.returncode == 0 and "--data" in r.stdout and "cwru-48k" in r.stdout


def test_show_reports_missing_and_tampered_bundles(tmp_path):
    assert_one_line_error(cli("show", tmp_path / "nope"), "does not exist")
    b = tiny_bundle(tmp_path / "b")
    ok = cli("show", b.path)
    assert ok.returncode == 0 and "tiny 0.0.1" in ok.stdout and "verified (sha256)" in ok.stdout
    (b.path / "model.onnx").write_bytes(b"\x00" * 10)
    assert_one_line_error(cli("show", b.path), "model.onnx has been modified or corrupted")


def test_inspect_still_works_as_a_hidden_deprecated_name_of_show(tmp_path):
    """A factory's scripts may call the old name: same output, one line on stderr saying it is now show."""
    b = tiny_bundle(tmp_path / "b")
    new, old = cli("show", b.path, "--json"), cli("inspect", b.path, "--json")
    assert old.returncode == 0 and old.stdout == new.stdout and json.loads(old.stdout)["name"] == "tiny"
    (line,) = [ln for ln in old.stderr.splitlines() if ln.strip()]
    assert line == "factoryedge inspect: deprecated, it is now 'factoryedge show' (same arguments)"
    assert "deprecated" not in new.stderr
    helped = cli("--help")
    assert helped.returncode == 0 and not [ln for ln in helped.stdout.splitlines() if ln.split()[:1] == ["inspect"]]


def test_bad_data_arguments_get_one_line_errors(tmp_path):
    b = tiny_bundle(tmp_path / "b")
    assert_one_line_error(cli("evaluate", b.path, "cwru-99k"), "'cwru-99k' is neither a known data set")
    assert_one_line_error(cli("evaluate", b.path, f"normal={tmp_path / 'missing.wav'}"), "missing.wav")
    assert_one_line_error(cli("train", "vibration", "--data", f"normal={tmp_path / 'x.csv'}", "--out", tmp_path / "r"),
                          "x.csv")
    rec = simulate_bearing(2.0, sample_rate=12000, seed=1)
    save_npz(rec, tmp_path / "n.npz")
    assert_one_line_error(cli("train", "vibration", "--data", f"normal={tmp_path / 'n.npz'}", "--out", tmp_path / "r",
                              "--window", "8"), "window")
    # a bundle at 12 kHz refuses a 48 kHz recording instead of scoring it
    fast = simulate_bearing(1.0, sample_rate=48000, seed=2)
    save_npz(fast, tmp_path / "fast.npz")
    assert_one_line_error(cli("evaluate", b.path, f"normal={tmp_path / 'fast.npz'}", f"outer_race={tmp_path / 'fast.npz'}"),
                          "48000 Hz", "expects 12000 Hz")


def test_train_show_evaluate_on_simulated_bearing(tmp_path):
    """The whole spine through the CLI on generated data: normal machine, then faults."""
    fs = 12000
    save_npz(simulate_bearing(20.0, sample_rate=fs, seed=10), tmp_path / "normal.npz")
    save_npz(simulate_bearing(5.0, sample_rate=fs, seed=11), tmp_path / "normal_later.npz")
    save_npz(simulate_bearing(5.0, sample_rate=fs, fault="outer_race", fault_onset_s=0.0, seed=12), tmp_path / "or.npz")
    save_npz(simulate_bearing(5.0, sample_rate=fs, fault="inner_race", fault_onset_s=0.0, seed=13), tmp_path / "ir.npz")
    run = tmp_path / "run"
    r = cli("train", "vibration", "--data", f"normal={tmp_path / 'normal.npz'}", "--out", run, "--epochs", "60",
            "--rpm", "1797", "--bearing", "skf6205", "--name", "sim-bearing")
    assert r.returncode == 0, r.stderr
    assert (run / "learning_curve.csv").read_text().startswith("epoch,train_loss,val_loss")
    assert (run / "learning_curve.png").stat().st_size > 1000
    assert "ONNX parity max abs diff" in r.stdout

    r = cli("show", run / "bundle", "--json")
    manifest = json.loads(r.stdout)
    assert manifest["schema_version"] == 1 and manifest["kind"] == "vibration"
    assert max(manifest["parity"]["max_abs_diff"].values()) <= 1e-4
    assert manifest["preprocessing"]["defect_orders"]["BPFO"] == pytest.approx(3.5848)
    assert {d["split"] for d in manifest["provenance"]["data"]} == {"train", "calibration", "held_out"}

    out = tmp_path / "eval"
    r = cli("evaluate", run / "bundle", f"normal={tmp_path / 'normal.npz'}", f"normal={tmp_path / 'normal_later.npz'}",
            f"outer_race={tmp_path / 'or.npz'}", f"inner_race={tmp_path / 'ir.npz'}", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "evaluating only its held-out part" in r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["per_class"]["outer_race"]["auroc"] > 0.95
    assert report["model"]["per_class"]["inner_race"]["auroc"] > 0.95
    assert "baseline" in report and report["baseline"]["overall"]["auroc"] > 0.5
    assert report["model"]["false_alarm_rate"] <= 0.1
    alarms = report["model"]["false_alarms"]  # the device's debounce replayed on the normal recordings
    held_out_s = 20.0 * (1 - manifest["provenance"]["split"]["train_fraction"]
                         - manifest["provenance"]["split"]["calibration_fraction"]) + 5.0
    assert alarms["debounce"]["k"] == 3 and abs(alarms["normal_hours"] * 3600 - held_out_s) < 0.5
    assert alarms["raised"] == 0 and alarms["per_hour"] == 0 and "of normal running" in r.stdout
    for png in ("model_scores.png", "baseline_scores.png", "score_timeline.png"):
        assert (out / png).stat().st_size > 1000

    r = cli("export", run, "--out", tmp_path / "again", "--version", "1.0.1", "--pack")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "again.febundle").is_file()
