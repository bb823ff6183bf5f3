"""When CUDA cannot initialise, TensorRT is unavailable: ``auto`` falls back, ``tensorrt`` says why.

TensorRT's ``Builder`` and ``Runtime`` then raise ``TypeError: pybind11::init(): factory function
returned nullptr`` (while pycuda may still see the GPU, e.g. with a driver older than TensorRT's
CUDA). The fake tensorrt in fake_tensorrt raises exactly that.
"""
import logging

import pytest

from factoryedge.errors import BackendUnavailableError
from factoryedge.manifest import EngineParity
from factoryedge.runtimes.backends import engine_cache as ec
from factoryedge.runtimes.backends import select
from factoryedge.runtimes.backends import tensorrt as trt_backend
from factoryedge.runtimes.backends.tensorrt_build import build_engine
from tests.runtimes.backends.fake_tensorrt import FakeGPU
from tests.support.tiny_bundle import tiny_bundle

CUDA_FAILED = r"TensorRT could not create its (Builder|Runtime): CUDA could not initialise \(.*nullptr\)"


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORYEDGE_CACHE", str(tmp_path / "cache"))
    return tiny_bundle(tmp_path / "tiny")


@pytest.fixture
def broken_cuda(monkeypatch):
    return FakeGPU(fail_init=True).install(monkeypatch)


def with_engine(bundle):
    """The bundle with an engine recorded for the fake GPU, so opening it needs a Runtime."""
    fields = dict(onnx_sha256=ec.onnx_sha256(bundle), tensorrt_version="10.3.0.30", compute_capability="8.7",
                  device_name="Fake GPU", precision="fp16", dla_core=None, max_batch=64,
                  built_utc="2026-01-01T00:00:00+00:00", build_seconds=1.0,
                  parity=EngineParity(n_inputs=4, tolerance=1e-2, atol=1e-3, max_abs_diff={"score": 0.0}))
    return ec.record_engine(bundle, b"a plan never deserialized", fields)[0]


@pytest.mark.parametrize("engine", [False, True], ids=["builds-an-engine", "loads-an-engine"])
def test_auto_falls_back_to_onnxruntime_and_says_cuda_could_not_initialise(bundle, broken_cuda, engine, caplog):
    bundle = with_engine(bundle) if engine else bundle
    with caplog.at_level(logging.INFO):
        backend = select.open_backend(bundle, "auto")
    try:
        assert backend.name == "onnxruntime"
    finally:
        backend.close()
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend: ")]
    kind = "Runtime" if engine else "Builder"
    assert f"TensorRT not used: TensorRT failed: TensorRT could not create its {kind}: CUDA could not" in line


@pytest.mark.parametrize("engine", [False, True], ids=["builds-an-engine", "loads-an-engine"])
def test_explicit_tensorrt_fails_with_one_clear_error(bundle, broken_cuda, engine):
    bundle = with_engine(bundle) if engine else bundle
    with pytest.raises(BackendUnavailableError, match=CUDA_FAILED) as e:
        select.open_backend(bundle, "tensorrt")
    msg = str(e.value)
    assert "nvidia-smi" in msg and "NVIDIA container runtime" in msg and "driver" in msg
    assert "\n" not in msg and e.value.__cause__ is None  # the CLI prints it as one line, no traceback


def test_build_engine_fails_with_the_same_error(bundle, broken_cuda):
    with pytest.raises(BackendUnavailableError, match=CUDA_FAILED):
        build_engine(bundle, precision="fp16")


def test_another_type_error_is_a_bug_and_stays_one(monkeypatch):
    gpu = FakeGPU().install(monkeypatch)

    def wrong(logger):
        raise TypeError("__init__(): incompatible constructor arguments")

    monkeypatch.setattr(gpu.trt, "Runtime", wrong)
    with pytest.raises(TypeError, match="incompatible constructor arguments"):
        trt_backend.trt_object(gpu.trt, "Runtime")
