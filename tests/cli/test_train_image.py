"""``factoryedge train image``: fit, export, and evaluate the exported bundle, from the command line."""
from __future__ import annotations

import json
import shutil

import pytest

from factoryedge.bundle import load_bundle
from factoryedge.manifest import FalseRejectBudget
from tests.cli.test_cli import assert_one_line_error, cli


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from factoryedge.data.synthetic_parts import write_inspection_set

    root = tmp_path_factory.mktemp("parts") / "set"
    write_inspection_set(root, n_train_good=24, n_test_good=6, n_per_defect=2, seed=3, size=(128, 128))
    return root


def test_autoencoder_end_to_end(tmp_path, parts):
    out = tmp_path / "run"
    r = cli("train", "image", "--model", "autoencoder", "--epochs", "1", "--data", parts, "--out", out, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    bundle = load_bundle(out / "bundle")
    m = bundle.manifest
    assert m.kind == "image" and m.preprocessing.tile == 32 and m.parity.decisions_changed == 0
    assert len(m.provenance.data_fingerprint) == 64 and m.provenance.split["train"] == 24
    assert "reports/learning_curve.csv" in m.artefacts and (out / "learning_curve.csv").is_file()
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["image"]["overall"]["n_good"] == 6 and metrics["image"]["overall"]["n_defective"] == 8
    assert set(metrics["image"]["per_type"]) == {"chip", "pit", "scratch", "stain"}
    assert 0.0 <= metrics["pixel"]["overall"] <= 1.0
    for name in ("contact_sheet.png", "scores.png", "scores.csv"):
        assert (out / "evaluation" / name).stat().st_size > 0
    assert "image AUROC" in r.stdout and "pixel AUROC" in r.stdout
    # the default rule is the 1 % false-reject budget on the 20 held-out good images (none may exceed)
    est = m.score.false_reject
    assert m.score.rule == FalseRejectBudget(max_false_reject=0.01) and (est.n, est.n_exceeding) == (20, 0)
    assert m.score.threshold > m.score.calibration.max and "held-out" in est.source
    assert "threshold rule: false-reject budget 1 % on 20 held-out good images: expected 0 %, 95 % bound 14 %" in r.stdout
    op = metrics["operating_point"]
    assert op["expected_false_reject"] == 0.0 and op["n_good"] == 6 and op["n_defective"] == 8
    line = next(ln for ln in r.stdout.splitlines() if "operating point" in ln)
    assert "expected false-reject rate 0.0% (95 % bound 13.9%, 20 held-out good)" in line
    assert f"({op['defective_rejected']} of 8 defective rejected)" in line and "of 6 good)" in line
    # calibrating on the very images it was trained on would set the threshold in-sample
    for folder in (parts, parts / "train" / "good"):
        assert_one_line_error(cli("calibrate", out / "bundle", folder, "--out", tmp_path / "cal"), str(folder),
                              "trained on", "not seen")
    # evaluate the shipped bundle again, as a quality engineer would on new test images
    again = cli("evaluate", out / "bundle", parts, "--out", tmp_path / "eval2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "eval2" / "metrics.json").read_text())["image"] == metrics["image"]
    # a line's new test set has only test/ (and ground_truth/): evaluation never reads train/
    test_only = tmp_path / "new-parts"
    shutil.copytree(parts / "test", test_only / "test")
    shutil.copytree(parts / "ground_truth", test_only / "ground_truth")
    third = cli("evaluate", out / "bundle", test_only, "--out", tmp_path / "eval3")
    assert third.returncode == 0, third.stderr[-3000:]
    assert json.loads((tmp_path / "eval3" / "metrics.json").read_text())["image"] == metrics["image"]
    assert_one_line_error(cli("evaluate", out / "bundle", tmp_path / "empty-folder-missing"), "does not exist",
                          "test/")


def test_vibration_model_for_images_is_refused(tmp_path, parts):
    assert_one_line_error(cli("train", "image", "--model", "dense", "--data", parts, "--out", tmp_path / "x"),
                          "--model dense", "patchcore")


def test_missing_inspection_folder_is_one_line(tmp_path):
    assert_one_line_error(cli("train", "image", "--data", tmp_path / "nope", "--out", tmp_path / "x"),
                          "nope", "does not exist", "train/good")


def test_budget_is_for_image_models_and_must_be_a_share(tmp_path, parts):
    assert_one_line_error(cli("train", "vibration", "--data", "cwru-48k", "--max-false-reject", "0.01",
                              "--out", tmp_path / "v"), "--max-false-reject 0.01", "image models")
    assert_one_line_error(cli("train", "image", "--data", parts, "--max-false-reject", "1.5", "--out", tmp_path / "i"),
                          "'1.5'", "between 0 and 1", "'none'")
