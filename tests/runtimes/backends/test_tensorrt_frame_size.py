"""A TensorRT engine built for one frame size refuses another one with a clear error.

The manifest of a whole-frame image model leaves height and width dynamic, so the base class
lets any frame size through; the engine (and its buffers) hold only the size it was built for.
TensorRT and pycuda are the fakes in fake_tensorrt: the real backend loads a fake engine.
"""
import numpy as np
import pytest

from factoryedge.errors import ConfigError
from factoryedge.manifest import TensorSpec
from factoryedge.runtimes.backends.tensorrt import TensorRTBackend
from tests.runtimes.backends.fake_tensorrt import FakeGPU, mean_square

FRAME = (3, 32, 48)
INPUTS = [TensorSpec(name="input", shape=["batch", 3, "height", "width"])]
OUTPUTS = [TensorSpec(name="score", shape=["batch"])]


@pytest.fixture
def backend(monkeypatch):
    gpu = FakeGPU().install(monkeypatch)
    plan = gpu.plan({"input": ((1, *FRAME), (2, *FRAME), (4, *FRAME))})
    with TensorRTBackend(plan, INPUTS, OUTPUTS) as b:
        yield b


def frames(n, shape=FRAME, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def test_frames_of_the_engines_size_run_and_larger_batches_are_split(backend):
    x = frames(6)  # max batch 4: run as 4 + 2
    np.testing.assert_allclose(backend.run({"input": x})["score"], mean_square({"input": x})["score"], rtol=1e-6)
    np.testing.assert_allclose(backend.run_single(x[:1])["score"], mean_square({"input": x[:1]})["score"], rtol=1e-6)


# "larger than the buffers": more values than the engine's largest batch holds (once a bare ValueError)
@pytest.mark.parametrize("shape", [(3, 128, 128), (3, 64, 64), (3, 32, 96), (3, 16, 48)],
                         ids=["larger-than-the-buffers", "larger", "wider", "smaller"])
def test_a_frame_of_another_size_names_the_tensor_both_shapes_and_the_fix(backend, shape):
    message = (rf"input 'input' has shape \[1, {shape[0]}, {shape[1]}, {shape[2]}\], but this TensorRT engine was "
               r"built for \[batch, 3, 32, 48\] \(batch 1\.\.4\); rebuild the engine for that size .*build-engine")
    with pytest.raises(ConfigError, match=message):
        backend.run_single(frames(1, shape))
    with pytest.raises(ConfigError, match=message.replace("[1, ", "[2, ")):
        backend.run({"input": frames(2, shape)})
    # the refusal left the engine usable
    x = frames(1)
    np.testing.assert_allclose(backend.run_single(x)["score"], mean_square({"input": x})["score"], rtol=1e-6)
