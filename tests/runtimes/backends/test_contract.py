"""One contract, every backend: the same bundle, inputs and mistakes give the same results.

The TensorRT cases need TensorRT 10, pycuda and an NVIDIA GPU; where any is missing they skip
and say which. On a GPU machine they build a real fp32 engine from the tiny bundle's ONNX model.
"""
import numpy as np
import pytest

from factoryedge.errors import BackendUnavailableError, ConfigError
from tests.support.tiny_bundle import tiny_bundle

BACKENDS = [
    "onnxruntime",
    pytest.param("tensorrt", marks=[pytest.mark.tensorrt, pytest.mark.gpu]),
]
ENGINE_MAX_BATCH = 32  # below the largest test batch, so splitting is exercised


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("contract") / "tiny")


@pytest.fixture(scope="module")
def engine_plan(bundle, tmp_path_factory):
    """A real fp32 TensorRT engine for the tiny bundle, or a skip that says what is missing."""
    from factoryedge.runtimes.backends.tensorrt import probe_device
    from factoryedge.runtimes.backends.tensorrt_build import build_engine

    try:
        probe_device()
    except BackendUnavailableError as e:
        pytest.skip(f"TensorRT backend not usable here: {e}")
    with pytest.MonkeyPatch.context() as mp:  # the timing cache goes to the engine cache: keep it in tmp
        mp.setenv("FACTORYEDGE_CACHE", str(tmp_path_factory.mktemp("engine-cache")))
        return build_engine(bundle, precision="fp32", batch=8, max_batch=ENGINE_MAX_BATCH).plan_path


def open_kind(kind, bundle, request):
    m = bundle.manifest
    if kind == "onnxruntime":
        from factoryedge.runtimes.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle.model_path, m.model.inputs, m.model.outputs, providers=["CPUExecutionProvider"])
    from factoryedge.runtimes.backends.tensorrt import TensorRTBackend

    return TensorRTBackend(request.getfixturevalue("engine_plan"), m.model.inputs, m.model.outputs)


@pytest.fixture(params=BACKENDS)
def backend(request, bundle):
    b = open_kind(request.param, bundle, request)
    yield b
    b.close()


def n_features(bundle):
    return bundle.manifest.model.inputs[0].shape[1]


def test_outputs_match_the_golden_reference(backend, bundle):
    golden = bundle.golden()
    out = backend.run_single(golden["input"])
    np.testing.assert_allclose(out["score"], golden["output_score"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["detail"], golden["input"] ** 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 7, 64])
def test_dynamic_batch_sizes(backend, bundle, n):
    x = np.random.default_rng(n).normal(size=(n, n_features(bundle))).astype(np.float32)
    out = backend.run_single(x)
    assert out["score"].shape == (n,) and out["detail"].shape == x.shape
    assert out["score"].dtype == np.float32
    np.testing.assert_allclose(out["score"], (x.astype(np.float64) ** 2).mean(axis=1), rtol=1e-5, atol=1e-6)


def test_wrong_input_name_is_refused_naming_the_tensors(backend, bundle):
    x = np.zeros((2, n_features(bundle)), np.float32)
    with pytest.raises(ConfigError, match=r"model inputs are \['input'\], got \['frames'\]"):
        backend.run({"frames": x})


def test_wrong_dtype_is_refused_naming_the_tensor(backend, bundle):
    x = np.zeros((2, n_features(bundle)), np.float64)
    with pytest.raises(ConfigError, match=r"input 'input' must be float32, got float64"):
        backend.run_single(x)


@pytest.mark.parametrize("shape", ["extra_feature", "rank"])
def test_wrong_shape_is_refused_naming_the_tensor(backend, bundle, shape):
    n = n_features(bundle)
    x = np.zeros((2, n + 1) if shape == "extra_feature" else (2, n, 1), np.float32)
    with pytest.raises(ConfigError, match=r"input 'input' must have shape \['batch', \d+\], got"):
        backend.run_single(x)


@pytest.mark.parametrize("kind", BACKENDS)
def test_close_is_idempotent(kind, bundle, request):
    b = open_kind(kind, bundle, request)
    b.run_single(np.ones((3, n_features(bundle)), np.float32))
    b.close()
    b.close()
    with b:  # the context manager closes once more
        pass
