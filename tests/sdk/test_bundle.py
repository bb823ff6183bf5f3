import json
import shutil

import numpy as np
import pytest

from factoryedge.bundle import MANIFEST, load_bundle, pack_bundle
from factoryedge.errors import BundleError
from tests.support.tiny_bundle import tiny_bundle


@pytest.fixture
def bundle_dir(tmp_path):
    return tiny_bundle(tmp_path / "b").path


def test_round_trip_verifies_hashes(bundle_dir):
    b = load_bundle(bundle_dir)
    assert b.manifest.name == "tiny"
    assert set(b.manifest.artefacts) == {"model.onnx", "golden.npz"}
    assert all(len(h) == 64 for h in b.manifest.artefacts.values())
    assert b.golden()["input"].shape[0] == 4


def test_tampered_model_is_refused_naming_the_file(bundle_dir):
    model = bundle_dir / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx has been modified or corrupted"):
        load_bundle(bundle_dir)


def test_missing_artefact_is_named(bundle_dir):
    (bundle_dir / "golden.npz").unlink()
    with pytest.raises(BundleError, match=r"incomplete: golden\.npz is missing"):
        load_bundle(bundle_dir)


def test_missing_bundle_and_missing_manifest(tmp_path, bundle_dir):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    (bundle_dir / MANIFEST).unlink()
    with pytest.raises(BundleError, match="has no manifest.json"):
        load_bundle(bundle_dir)


def test_manifest_not_json(bundle_dir):
    (bundle_dir / MANIFEST).write_text("{ not json")
    with pytest.raises(BundleError, match="is not valid JSON"):
        load_bundle(bundle_dir)


def test_unknown_schema_version_is_refused(bundle_dir):
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    raw["schema_version"] = 7
    (bundle_dir / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="schema_version 7; this factoryedge reads schema_version 1"):
        load_bundle(bundle_dir)


def test_malformed_manifest_names_the_key_path(bundle_dir):
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    raw["score"]["threshold"] = "high"
    del raw["preprocessing"]["window"]
    (bundle_dir / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_dir)
    msg = str(err.value)
    assert "score.threshold" in msg and "window" in msg and "\n" not in msg


def test_manifest_edit_without_rehash_still_loads_but_artefact_swap_fails(bundle_dir, tmp_path):
    # Swapping in another bundle's model is caught even if the file is a valid ONNX model.
    other = tiny_bundle(tmp_path / "other", threshold=5.0).path
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    raw["artefacts"]["model.onnx"] = "0" * 64
    (bundle_dir / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="model.onnx"):
        load_bundle(bundle_dir)
    assert load_bundle(other).manifest.score.threshold == 5.0


def test_wrong_kind_is_refused(bundle_dir):
    b = load_bundle(bundle_dir)
    with pytest.raises(BundleError, match="holds a 'vibration' model.*needs a 'image' bundle"):
        b.require_kind("image")


def test_packed_bundle_round_trip_and_corruption(bundle_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORYEDGE_CACHE", str(tmp_path / "cache"))
    packed = pack_bundle(bundle_dir, tmp_path / "tiny.febundle")
    b = load_bundle(packed)
    assert b.manifest.name == "tiny"
    np.testing.assert_array_equal(b.golden()["input"], load_bundle(bundle_dir).golden()["input"])
    junk = tmp_path / "junk.febundle"
    junk.write_bytes(b"definitely not a tar file" * 10)
    with pytest.raises(BundleError, match="neither a bundle directory nor a packed"):
        load_bundle(junk)


def test_write_is_atomic_and_replaces(tmp_path):
    first = tiny_bundle(tmp_path / "b", threshold=1.0)
    second = tiny_bundle(tmp_path / "b", threshold=3.0)
    assert load_bundle(second.path).manifest.score.threshold == 3.0
    assert first.path == second.path
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]
    assert leftovers == []
    shutil.rmtree(second.path)


def test_damaged_engine_plan_does_not_block_the_model(bundle_dir, caplog):
    """An engine is a device-side cache: a bad plan is skipped (and rebuilt), the model loads."""
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    (bundle_dir / "engines").mkdir(exist_ok=True)
    (bundle_dir / "engines" / "x.plan").write_bytes(b"half a plan")
    raw["artefacts"]["engines/x.plan"] = "0" * 64
    (bundle_dir / MANIFEST).write_text(json.dumps(raw))
    b = load_bundle(bundle_dir)
    assert b.manifest.name == "tiny"
    assert "engines/x.plan has been modified or corrupted" in caplog.text and "rebuilt" in caplog.text
