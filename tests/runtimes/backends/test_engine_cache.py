"""The engine cache: keys, which cached engine may be loaded, atomic manifest records, cache paths.

Pure Python: the "plans" here are opaque bytes, which is all the cache ever looks at.
"""
import json
import logging
import os

import pytest

from factoryedge.bundle import MANIFEST, load_bundle
from factoryedge.errors import BundleError, ConfigError
from factoryedge.manifest import EngineParity
from factoryedge.runtimes.backends import engine_cache as ec
from tests.support.tiny_bundle import tiny_bundle

ORIN = ec.DeviceInfo(tensorrt_version="10.3.0.30", compute_capability="8.7", device_name="Orin", integrated=True)
PLAN = b"not really a TensorRT plan, but bytes are all the cache hashes"


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORYEDGE_CACHE", str(tmp_path / "cache"))
    return tiny_bundle(tmp_path / "tiny")


def fields(bundle, **over):
    f = dict(onnx_sha256=ec.onnx_sha256(bundle), tensorrt_version=ORIN.tensorrt_version,
             compute_capability=ORIN.compute_capability, device_name=ORIN.device_name, precision="fp16",
             dla_core=None, max_batch=64, built_utc="2026-01-01T00:00:00+00:00", build_seconds=42.0,
             parity=EngineParity(n_inputs=4, tolerance=1e-2, atol=1e-3, max_abs_diff={"score": 1e-4}))
    f.update(over)
    return f


# -- keys -----------------------------------------------------------------------------

def test_key_names_every_part_and_differs_when_any_part_does(bundle):
    sha = ec.onnx_sha256(bundle)
    key = ec.engine_key(sha, "10.3.0.30", "8.7", "fp16", None)
    assert key == f"{sha[:16]}_trt10.3.0.30_sm87_fp16_gpu"
    assert ec.engine_file(key) == f"engines/{key}.plan"
    others = {ec.engine_key(sha, "10.4.0", "8.7", "fp16", None), ec.engine_key(sha, "10.3.0.30", "8.6", "fp16", None),
              ec.engine_key(sha, "10.3.0.30", "8.7", "int8", None), ec.engine_key(sha, "10.3.0.30", "8.7", "fp16", 0),
              ec.engine_key("0" * 64, "10.3.0.30", "8.7", "fp16", None)}
    assert key not in others and len(others) == 5
    assert ec.engine_key(sha, "10.3.0.30", "8.7", "fp16", 1).endswith("_dla1")


@pytest.mark.parametrize("args, message", [
    (("10.3", "8.7", "fp64", None), "precision 'fp64' is not one of fp32, fp16, int8"),
    (("10.3", "87", "fp16", None), "compute capability '87' must look like '8.7'"),
    (("ten", "8.7", "fp16", None), "TensorRT version 'ten'"),
    (("10.3", "8.7", "fp16", -1), "DLA core -1"),
])
def test_bad_key_parts_are_refused_quoting_the_value(bundle, args, message):
    with pytest.raises(ConfigError, match=message):
        ec.engine_key(ec.onnx_sha256(bundle), *args)


# -- recording and finding ------------------------------------------------------------

def test_recorded_engine_is_in_the_manifest_verified_and_found(bundle):
    updated, record = ec.record_engine(bundle, PLAN, fields(bundle))
    assert record.file == ec.engine_file(ec.engine_key(ec.onnx_sha256(bundle), "10.3.0.30", "8.7", "fp16", None))
    assert (bundle.path / record.file).read_bytes() == PLAN
    reloaded = load_bundle(bundle.path)  # verifies every artefact, the plan included
    assert reloaded.manifest.engines == [record] and updated.manifest.engines == [record]
    assert reloaded.manifest.artefacts[record.file] == record.sha256
    assert ec.find_engine(reloaded, ORIN, "fp16") == record
    assert ec.plan_path(reloaded, record) == bundle.path / record.file


def test_rebuilding_the_same_key_replaces_the_record(bundle):
    ec.record_engine(bundle, PLAN, fields(bundle))
    _, second = ec.record_engine(load_bundle(bundle.path), PLAN + b"v2", fields(bundle, build_seconds=7.0))
    m = load_bundle(bundle.path).manifest
    assert m.engines == [second] and m.artefacts[second.file] == second.sha256


@pytest.mark.parametrize("device, reason", [
    (ec.DeviceInfo("10.4.0.26", "8.7", "Orin"), "built by TensorRT 10.3.0.30, this device has 10.4.0.26"),
    (ec.DeviceInfo("10.3.0.30", "8.6", "NVIDIA RTX A2000"), "built for compute capability 8.7 (Orin), this GPU is 8.6"),
])
def test_an_engine_for_another_tensorrt_or_gpu_is_rebuilt_not_loaded(bundle, caplog, device, reason):
    ec.record_engine(bundle, PLAN, fields(bundle))
    with caplog.at_level(logging.INFO, logger=ec.log.name):
        assert ec.find_engine(load_bundle(bundle.path), device, "fp16") is None
    assert reason in caplog.text and "a new one must be built" in caplog.text


def test_other_precision_or_dla_core_is_not_a_match(bundle):
    ec.record_engine(bundle, PLAN, fields(bundle))
    b = load_bundle(bundle.path)
    assert ec.find_engine(b, ORIN, "fp32") is None
    assert ec.find_engine(b, ORIN, "fp16", dla_core=0) is None


def test_a_tampered_plan_is_rebuilt(bundle, caplog):
    _, record = ec.record_engine(bundle, PLAN, fields(bundle))
    (bundle.path / record.file).write_bytes(PLAN[:-1] + b"X")
    with caplog.at_level(logging.WARNING):
        loaded = load_bundle(bundle.path)  # the model stays usable: an engine is a rebuildable cache
        assert ec.find_engine(loaded, ORIN, "fp16") is None
    assert "modified or corrupted" in caplog.text


def test_a_missing_plan_is_rebuilt(bundle, caplog):
    _, record = ec.record_engine(bundle, PLAN, fields(bundle))
    (bundle.path / record.file).unlink()
    with caplog.at_level(logging.WARNING, logger=ec.log.name):
        assert ec.find_engine(load_bundle(bundle.path, verify=False), ORIN, "fp16") is None
    assert "recorded but missing" in caplog.text


def test_a_forced_engine_is_used_with_a_warning(bundle, caplog):
    ec.record_engine(bundle, PLAN, fields(bundle, forced=True))
    with caplog.at_level(logging.WARNING, logger=ec.log.name):
        record = ec.find_engine(load_bundle(bundle.path), ORIN, "fp16")
    assert record.forced and "failed parity" in caplog.text


def test_the_manifest_is_replaced_atomically(bundle, monkeypatch):
    before = (bundle.path / MANIFEST).read_bytes()
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith(MANIFEST):
            raise OSError("power lost")
        real_replace(src, dst)

    monkeypatch.setattr(ec.os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="power lost"):
        ec.record_engine(bundle, PLAN, fields(bundle))
    assert (bundle.path / MANIFEST).read_bytes() == before
    assert not [p for p in bundle.path.iterdir() if p.name.startswith(f".{MANIFEST}")]  # no temp file left
    monkeypatch.undo()
    assert load_bundle(bundle.path).manifest.engines == []


def test_a_read_only_bundle_keeps_its_engines_in_the_cache(bundle, tmp_path, monkeypatch):
    before = (bundle.path / MANIFEST).read_bytes()
    os.chmod(bundle.path / "engines", 0o555)
    os.chmod(bundle.path, 0o555)
    try:
        if os.geteuid() == 0:  # root writes through mode bits: make the probe see the read-only mount it stands for
            real = ec._writable
            monkeypatch.setattr(ec, "_writable", lambda d: not str(d).startswith(str(bundle.path)) and real(d))
        same, record = ec.record_engine(bundle, PLAN, fields(bundle))
    finally:
        os.chmod(bundle.path, 0o755)
        os.chmod(bundle.path / "engines", 0o755)
    cache = tmp_path / "cache" / "engines"
    assert same is bundle and (bundle.path / MANIFEST).read_bytes() == before
    assert (cache / f"{record.file.split('/')[1]}").read_bytes() == PLAN
    side = json.loads((cache / record.file.split("/")[1].replace(".plan", ".json")).read_text())
    assert side["sha256"] == record.sha256
    assert ec.find_engine(load_bundle(bundle.path), ORIN, "fp16") == record
    assert ec.plan_path(bundle, record) == tmp_path / "cache" / record.file


def test_a_signed_bundle_keeps_its_engines_in_the_cache_and_its_signature_valid(bundle, tmp_path):
    from factoryedge.bundle import sign_bundle
    from factoryedge.signing import generate_keypair, load_private_key, load_public_key

    private, public, _ = generate_keypair(tmp_path / "keys")
    sign_bundle(bundle.path, load_private_key(private))
    before = (bundle.path / MANIFEST).read_bytes()
    same, record = ec.record_engine(bundle, PLAN, fields(bundle))
    assert same is bundle and (bundle.path / MANIFEST).read_bytes() == before
    assert ec.plan_path(bundle, record) == tmp_path / "cache" / record.file
    trusted = load_bundle(bundle.path, trusted_keys=[load_public_key(public)])  # still as signed
    assert ec.find_engine(trusted, ORIN, "fp16") == record


def test_timing_and_calibration_caches_are_named_for_what_they_are_valid_for(bundle, tmp_path):
    assert ec.timing_cache_path(ORIN, bundle.path) == tmp_path / "cache" / "engines" / "timing_trt10.3.0.30_sm87.cache"
    assert ec.calibration_cache_path(bundle.path, "k") == bundle.path / "engines" / "k.calib"


def test_no_writable_place_for_engines_is_a_clear_error(bundle, monkeypatch):
    monkeypatch.setattr(ec, "_writable", lambda d: False)
    with pytest.raises(BundleError, match="nowhere to store TensorRT engines: .* set FACTORYEDGE_CACHE"):
        ec.record_engine(bundle, PLAN, fields(bundle))
