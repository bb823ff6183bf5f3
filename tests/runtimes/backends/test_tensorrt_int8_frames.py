"""INT8 engines for whole-frame image models (PatchCore): calibrated at the golden frame size.

Height and width are dynamic in such a model's ONNX; the engine is built for the golden frames'
size, and its calibration profile must be too. TensorRT and pycuda are the fakes in
fake_tensorrt, so the whole ``build_engine`` path runs here: profiles, calibration, the parity
run on the built engine, the record in the bundle.
"""
import io

import numpy as np
import pytest

from factoryedge.bundle import Bundle, write_bundle
from factoryedge.errors import ConfigError
from factoryedge.features.image import ImagePreprocessingSpec
from factoryedge.manifest import Manifest, ModelInfo, Provenance, ScoreInfo, ScoreStats, TensorSpec, ThresholdRule
from factoryedge.runtimes.backends.tensorrt_build import build_engine
from tests.runtimes.backends.fake_tensorrt import FakeGPU

FRAME = (3, 32, 48)  # the golden frames' size: channels, height, width


def frame_onnx() -> bytes:
    """score = mean(x^2) over each whole frame of any height and width."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    nodes = [helper.make_node("Mul", ["input", "input"], ["sq"]),
             helper.make_node("ReduceMean", ["sq", "axes"], ["score"], keepdims=0)]
    model = helper.make_model(helper.make_graph(nodes, "frames", [x], [score], initializer=[axes]),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


def frame_bundle(directory) -> Bundle:
    """A whole-frame image bundle with 6 normal golden frames of size FRAME."""
    golden = np.random.default_rng(0).normal(size=(6, *FRAME)).astype(np.float32)
    manifest = Manifest(
        name="frames", version="0.0.1", kind="image",
        model=ModelInfo(architecture="mean_square", opset=18,
                        inputs=[TensorSpec(name="input", shape=["batch", 3, "height", "width"])],
                        outputs=[TensorSpec(name="score", shape=["batch"])]),
        preprocessing=ImagePreprocessingSpec(),
        score=ScoreInfo(definition="mean square of the frame", threshold=2.0, rule=ThresholdRule(),
                        calibration=ScoreStats(n=50, mean=1, std=0.1, median=1, q90=1.1, q99=1.2, max=1.3)),
        provenance=Provenance(created_utc="2026-01-01T00:00:00+00:00", factoryedge_version="test",
                              framework="onnx.helper"),
    )
    buf = io.BytesIO()
    np.savez(buf, input=golden, output_score=(golden.astype(np.float64) ** 2).mean(axis=(1, 2, 3)))
    return write_bundle(directory, manifest, {"model.onnx": frame_onnx(), "golden.npz": buf.getvalue()})


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORYEDGE_CACHE", str(tmp_path / "cache"))
    return frame_bundle(tmp_path / "frames")


@pytest.fixture
def gpu(monkeypatch):
    return FakeGPU(network_inputs={"input": (-1, 3, -1, -1)}).install(monkeypatch)


def test_int8_engine_for_dynamic_frames_is_calibrated_at_the_golden_frame_size(bundle, gpu):
    result = build_engine(bundle, precision="int8", batch=2, max_batch=4)
    (build,) = gpu.builds
    assert build["profiles"]["input"] == ((1, *FRAME), (2, *FRAME), (4, *FRAME))
    # all 6 golden frames are normal: one calibration batch of 6, at the build profile's frame size
    assert build["calibration_profile"]["input"] == ((6, *FRAME),) * 3
    assert build["calibration_batches"] == 1
    assert result.record.precision == "int8" and not result.record.forced
    assert result.plan_path.read_bytes() in gpu.plans


def test_calibration_inputs_of_another_frame_size_are_refused_naming_both_shapes(bundle, gpu):
    other = np.ones((4, 3, 64, 64), np.float32)
    with pytest.raises(ConfigError, match=r"have shape \[4, 3, 64, 64\], but the engine is built for \[4, 3, 32, 48\]"):
        build_engine(bundle, precision="int8", calibration_inputs=other)
    assert gpu.builds == [] and gpu.memory == {}  # refused before any calibration buffer was allocated
