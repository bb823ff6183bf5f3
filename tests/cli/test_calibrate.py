"""``factoryedge calibrate``: a bundle's threshold set again on a line's own good parts, in a verified copy."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from factoryedge.bundle import load_bundle, sign_bundle
from factoryedge.data.fingerprint import files_sha256
from factoryedge.manifest import FalseRejectBudget, ThresholdRule
from factoryedge.signing import SIGNATURE_FILE, generate_keypair, load_private_key
from tests.cli.test_cli import assert_one_line_error, cli
from tests.support.image_bundle import make_image_bundle, uniform_part

LINE_LEVEL = 186  # the line's parts are a little brighter than the bundle's (grey 180): good parts score higher


def _write(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"part{i:03d}.png")


def _good(n, seed0):
    return [uniform_part(LINE_LEVEL, seed=seed0 + i)[..., 0] for i in range(n)]


@pytest.fixture(scope="module")
def signed_bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    bundle = make_image_bundle(d / "in")
    key, _, _ = generate_keypair(d, "line")
    sign_bundle(bundle.path, load_private_key(key))
    return bundle.path


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """good/: 40 good parts of the line; set/: an inspection set (train/good, test/good, test/pit)."""
    root = tmp_path_factory.mktemp("line")
    _write(root / "good", _good(40, 1000))
    _write(root / "set" / "train" / "good", _good(25, 2000))
    _write(root / "set" / "test" / "good", _good(10, 3000))
    _write(root / "set" / "test" / "pit", [uniform_part(LINE_LEVEL, seed=4000 + i, defect=True)[..., 0] for i in range(6)])
    return root


def _snapshot(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_calibrate_writes_a_verified_unsigned_copy_that_evaluates(tmp_path, signed_bundle, line):
    from factoryedge.runtimes.inspection.image_model import ImageModel

    before = _snapshot(signed_bundle)
    out = tmp_path / "calibrated"
    r = cli("calibrate", signed_bundle, line / "good", "--max-false-reject", "0.05", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _snapshot(signed_bundle) == before and (signed_bundle / SIGNATURE_FILE).is_file()  # input untouched
    old, new = load_bundle(signed_bundle).manifest, load_bundle(out).manifest  # the copy verifies its hashes
    assert not (out / SIGNATURE_FILE).exists()
    assert [ln for ln in r.stdout.splitlines() if "re-sign" in ln and f"factoryedge sign {out}" in ln]
    assert new.artefacts["model.onnx"] == old.artefacts["model.onnx"]  # same model, new threshold
    assert new.score.rule == FalseRejectBudget(max_false_reject=0.05)
    from factoryedge.data.images import read_gray

    paths = sorted((line / "good").glob("*.png"))
    with ImageModel.load(signed_bundle, backend="onnxruntime") as model:
        scores = np.array([model.score(read_gray(p)).score for p in paths])
    # floor(0.05 * 40) = 2 may exceed; the third largest must pass, and so must any score tied with it
    allowed = int(np.sum(scores > np.sort(scores)[::-1][2]))
    est = new.score.false_reject
    assert (est.n, est.n_exceeding, est.expected) == (40, allowed, allowed / 40) and 1 <= allowed <= 2
    assert est.expected < est.upper_bound < 0.2
    with ImageModel.load(out, backend="onnxruntime") as model:  # the device agrees with the estimate
        assert sum(model.score(read_gray(p)).is_anomalous for p in paths) == allowed
    assert new.score.threshold > old.score.threshold  # the brighter line's good parts score higher
    note = new.provenance.recalibrations[-1]
    assert note.n_images == 40 and note.source == str(line / "good") and note.previous_threshold == old.score.threshold
    assert note.data_fingerprint == files_sha256(paths, line / "good")
    show = cli("show", out)
    assert show.returncode == 0, show.stderr[-3000:]
    assert "false-reject budget 5 % on 40" in show.stdout and f"on 40 good images in {line / 'good'}" in show.stdout
    ev = cli("evaluate", out, line / "set", "--out", tmp_path / "ev")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "operating point" in ev.stdout and f"expected false-reject rate {allowed / 40:.1%}" in ev.stdout
    op = json.loads((tmp_path / "ev" / "metrics.json").read_text())["operating_point"]
    assert op["expected_false_reject"] == allowed / 40 and op["max_false_reject"] == 0.05
    assert op["n_good"] == 10 and op["n_defective"] == 6
    assert op["recall"] == op["defective_rejected"] / 6


def test_an_inspection_set_gives_its_train_good_images(tmp_path, signed_bundle, line):
    out = tmp_path / "q99"
    r = cli("calibrate", signed_bundle, line / "set", "--max-false-reject", "none", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    m = load_bundle(out).manifest
    assert m.score.rule == ThresholdRule(quantile=0.99, margin=1.0) and m.score.false_reject.n == 25
    assert "train/good" in r.stdout


def test_errors_are_one_line_naming_the_input(tmp_path, signed_bundle, line):
    from tests.support.tiny_bundle import tiny_bundle

    few = tmp_path / "few"
    _write(few, _good(5, 0))
    assert_one_line_error(cli("calibrate", signed_bundle, few, "--out", tmp_path / "o1"), str(few), "holds 5",
                          "at least 20")
    broken = tmp_path / "broken"
    _write(broken, _good(21, 0))
    (broken / "zz-broken.png").write_bytes(b"not a png")
    assert_one_line_error(cli("calibrate", signed_bundle, broken, "--out", tmp_path / "o2"), "zz-broken.png",
                          "cannot read")
    vib = tiny_bundle(tmp_path / "vib").path
    assert_one_line_error(cli("calibrate", vib, line / "good", "--out", tmp_path / "o3"), str(vib), "'vibration'",
                          "image bundles")
    exists = tmp_path / "exists"
    exists.mkdir()
    assert_one_line_error(cli("calibrate", signed_bundle, line / "good", "--out", exists), str(exists),
                          "already exists")
    assert_one_line_error(cli("calibrate", signed_bundle, line / "good", "--max-false-reject", "2", "--out",
                              tmp_path / "o4"), "'2'", "between 0 and 1", "none")
    assert_one_line_error(cli("calibrate", signed_bundle, tmp_path / "nowhere", "--out", tmp_path / "o5"),
                          "nowhere", "does not exist")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def test_default_budget_clears_every_good_part_of_a_small_set(tmp_path, signed_bundle, line):
    """With the default budget (1 %) and 40 good parts, none may be rejected: the threshold clears the largest."""
    from factoryedge.data.images import read_gray
    from factoryedge.runtimes.inspection.image_model import ImageModel

    out = tmp_path / "b"
    assert cli("calibrate", signed_bundle, line / "good", "--out", out).returncode == 0
    with ImageModel.load(signed_bundle, backend="onnxruntime") as model:
        scores = np.sort([model.score(read_gray(p)).score for p in sorted((line / "good").glob("*.png"))])
    t = load_bundle(out).manifest.score.threshold
    top, below = scores[-1], scores[scores < scores[-1]].max()
    assert t == pytest.approx(top + (top - below) / 2)  # 1 % of 40 allows none: half a gap above the largest
