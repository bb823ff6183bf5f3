"""A small real bundle built without torch: an ONNX graph from onnx.helper, for bundle and runtime tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from factoryedge.bundle import Bundle, write_bundle
from factoryedge.features.vibration import default_feature_spec
from factoryedge.manifest import Manifest, ModelInfo, Provenance, ScoreInfo, ScoreStats, TensorSpec, ThresholdRule


def tiny_onnx(n_features: int) -> bytes:
    """score = mean(x^2) per row, detail = x^2: a stand-in model with a real ONNX graph."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_features])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    detail = helper.make_tensor_value_info("detail", TensorProto.FLOAT, ["batch", n_features])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Mul", ["input", "input"], ["detail"]),
        helper.make_node("ReduceMean", ["detail", "axes"], ["score"], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [score, detail], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tiny_bundle(directory: Path, sample_rate: float = 12000.0, threshold: float = 2.0, kind: str = "vibration",
                channels: tuple[str, ...] = ("ch0",), version: str = "0.0.1") -> Bundle:
    spec = default_feature_spec(sample_rate, channels)
    from factoryedge.features import make_preprocessor

    n = make_preprocessor(spec).n_features
    golden = np.random.default_rng(0).normal(size=(4, n)).astype(np.float32)
    manifest = Manifest(
        name="tiny",
        version=version,
        kind=kind,
        model=ModelInfo(
            architecture="mean_square",
            opset=18,
            inputs=[TensorSpec(name="input", shape=["batch", n])],
            outputs=[TensorSpec(name="score", shape=["batch"]), TensorSpec(name="detail", shape=["batch", n])],
        ),
        preprocessing=spec,
        score=ScoreInfo(
            definition="mean square of the features",
            threshold=threshold,
            rule=ThresholdRule(),
            calibration=ScoreStats(n=50, mean=1, std=0.1, median=1, q90=1.1, q99=1.2, max=1.3),
        ),
        provenance=Provenance(created_utc="2026-01-01T00:00:00+00:00", factoryedge_version="test", framework="onnx.helper"),
    )
    buf = __import__("io").BytesIO()
    np.savez(buf, input=golden, output_score=(golden**2).mean(axis=1))
    return write_bundle(directory, manifest, {"model.onnx": tiny_onnx(n), "golden.npz": buf.getvalue()})
