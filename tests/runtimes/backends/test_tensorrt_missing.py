"""Without TensorRT or pycuda, the TensorRT parts fail with an error that says where they come from."""
import sys
import types

import pytest

from factoryedge.errors import BackendUnavailableError
from factoryedge.runtimes.backends import tensorrt as trt_backend
from factoryedge.runtimes.backends.tensorrt_build import build_engine
from tests.support.tiny_bundle import tiny_bundle


@pytest.fixture
def bundle(tmp_path):
    return tiny_bundle(tmp_path / "tiny")


@pytest.fixture
def bare(monkeypatch):
    for name in ("tensorrt", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)


def test_builder_names_the_extra_and_jetpack(bundle, bare):
    with pytest.raises(BackendUnavailableError) as e:
        build_engine(bundle, precision="fp16")
    msg = str(e.value)
    assert "building TensorRT engines needs the Python module 'tensorrt'" in msg
    assert "pip install 'factoryedge[jetson]'" in msg and "JetPack" in msg and "python3-libnvinfer" in msg
    assert "\n" not in msg  # the CLI prints it as one line


def test_backend_names_the_extra_and_jetpack(bundle, bare):
    m = bundle.manifest
    with pytest.raises(BackendUnavailableError, match=r"'tensorrt'.*factoryedge\[jetson\].*JetPack"):
        trt_backend.TensorRTBackend(b"plan", m.model.inputs, m.model.outputs)


def test_missing_pycuda_names_the_extra_and_jetpacks_cuda(bare):
    with pytest.raises(BackendUnavailableError, match=r"'pycuda'.*factoryedge\[jetson\].*JetPack's CUDA"):
        trt_backend.import_pycuda()


def test_tensorrt_8_is_refused_as_too_old(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.2.3"))
    with pytest.raises(BackendUnavailableError, match=r"TensorRT 8\.6\.2\.3 is too old: .*TensorRT 10"):
        trt_backend.import_tensorrt()


def test_bad_build_options_are_refused_before_looking_for_tensorrt(bundle, bare):
    from factoryedge.errors import ConfigError

    with pytest.raises(ConfigError, match="batch 9 and max batch 4"):
        build_engine(bundle, batch=9, max_batch=4)
    with pytest.raises(ConfigError, match="DLA core 0 runs fp16 or int8 only, not 'fp32'"):
        build_engine(bundle, precision="fp32", dla_core=0)
    with pytest.raises(ConfigError, match="precision 'bf16'"):
        build_engine(bundle, precision="bf16")
