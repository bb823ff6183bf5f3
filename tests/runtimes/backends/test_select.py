"""Backend choice: always logged with its reason; TensorRT only where it can really run.

TensorRT is made unimportable where a test needs this machine's answer to be the same on every
machine; the decision logic for a TensorRT machine runs with the device probe replaced by a
description of a Jetson Orin (the probe itself needs the hardware).
"""
import logging
import sys

import pytest

from factoryedge.errors import BackendUnavailableError, ConfigError, ExportError
from factoryedge.manifest import EngineParity
from factoryedge.runtimes.backends import engine_cache as ec
from factoryedge.runtimes.backends import select, tensorrt_build
from factoryedge.runtimes.backends import tensorrt as trt_backend
from tests.support.tiny_bundle import tiny_bundle

ORIN = ec.DeviceInfo(tensorrt_version="10.3.0.30", compute_capability="8.7", device_name="Orin", integrated=True)


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORYEDGE_CACHE", str(tmp_path / "cache"))
    return tiny_bundle(tmp_path / "tiny")


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def orin(monkeypatch):
    """This machine described as a Jetson Orin with TensorRT 10.3 (decision logic only)."""
    monkeypatch.setattr(trt_backend, "probe_device", lambda *a, **k: ORIN)


def choice_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == select.log.name and r.getMessage().startswith("backend: ")]


def test_auto_uses_onnxruntime_here_and_logs_one_line_with_the_reason(bundle, no_tensorrt, caplog):
    with caplog.at_level(logging.INFO):
        backend = select.open_backend(bundle, "auto")
    assert backend.name == "onnxruntime"
    (line,) = choice_lines(caplog)
    assert line.startswith(f"backend: onnxruntime ({backend.providers[0]}")
    assert "TensorRT not used" in line and "'tensorrt'" in line and "JetPack" in line
    if "CUDAExecutionProvider" not in backend.providers:
        assert "no CUDA provider in onnxruntime" in line
    backend.close()


def test_explicit_onnxruntime_says_it_was_asked_for(bundle, caplog):
    with caplog.at_level(logging.INFO):
        select.open_backend(bundle, "onnxruntime").close()
    (line,) = choice_lines(caplog)
    assert line.startswith("backend: onnxruntime (") and "asked for explicitly" in line


def test_explicit_tensorrt_that_cannot_run_is_an_error_naming_what_is_missing(bundle, no_tensorrt):
    with pytest.raises(BackendUnavailableError, match=r"backend 'tensorrt' was asked for, but .*'tensorrt'.*JetPack"):
        select.open_backend(bundle, "tensorrt")
    with pytest.raises(BackendUnavailableError, match="backend 'tensorrt' was asked for"):
        select.describe_choice(bundle, "tensorrt")


def test_unknown_choices_are_refused(bundle):
    with pytest.raises(ConfigError, match="backend 'cuda' is not one of auto, onnxruntime, tensorrt"):
        select.open_backend(bundle, "cuda")
    with pytest.raises(ConfigError, match="precision 'fp8' is not one of fp32, fp16, int8"):
        select.describe_choice(bundle, "auto", precision="fp8")


def test_describe_choice_opens_nothing(bundle, no_tensorrt, monkeypatch):
    from factoryedge.runtimes.backends import onnxruntime as ort_backend

    def refuse(*a, **k):
        raise AssertionError("describe_choice must not open a session")

    monkeypatch.setattr(ort_backend, "OnnxRuntimeBackend", refuse)
    name, reason = select.describe_choice(bundle, "auto")
    assert name == "onnxruntime" and "TensorRT not used" in reason
    assert select.describe_choice(bundle, "onnxruntime")[0] == "onnxruntime"


def record(bundle, **over):
    f = dict(onnx_sha256=ec.onnx_sha256(bundle), tensorrt_version="10.3.0.30", compute_capability="8.7",
             device_name="Orin", precision="fp16", dla_core=None, max_batch=64, built_utc="2026-01-01T00:00:00+00:00",
             build_seconds=30.0, parity=EngineParity(n_inputs=4, tolerance=1e-2, atol=1e-3, max_abs_diff={"score": 0.0}))
    f.update(over)
    return ec.record_engine(bundle, b"plan", f)


def test_on_a_tensorrt_device_a_matching_engine_is_chosen(bundle, orin):
    updated, rec = record(bundle, precision="fp32")
    name, reason = select.describe_choice(updated, "auto")
    assert name == "tensorrt" and rec.file in reason and "matches this Orin" in reason


def test_on_a_tensorrt_device_without_a_matching_engine_one_will_be_built(bundle, orin):
    updated, _ = record(bundle, tensorrt_version="10.2.0.19")  # left over from an older JetPack
    name, reason = select.describe_choice(updated, "auto")
    assert name == "tensorrt" and "an fp16 engine will be built on first use" in reason
    name, reason = select.describe_choice(updated, "auto", precision="int8")
    assert "an int8 engine will be built" in reason


def test_auto_falls_back_to_onnxruntime_when_the_build_fails(bundle, orin, monkeypatch, caplog):
    tried = []

    def failing_build(bundle, precision, dla_core=None, **kw):
        tried.append(precision)
        raise ExportError(f"the {precision} TensorRT engine differs from the golden ONNX Runtime outputs")

    monkeypatch.setattr(tensorrt_build, "build_engine", failing_build)
    with caplog.at_level(logging.INFO):
        backend = select.open_backend(bundle, "auto")
    assert backend.name == "onnxruntime" and tried == ["fp16", "fp32"]  # fp16 first, fp32 as the fallback
    (line,) = choice_lines(caplog)
    assert "TensorRT not used: TensorRT failed:" in line and "fp32" in line
    with pytest.raises(ExportError):
        select.open_backend(bundle, "tensorrt")
