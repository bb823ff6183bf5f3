"""A real 3-axis vibration bundle in seconds, without torch: a z-score model as an ONNX graph.

score = mean(((features - mean) / std)^2) over features learned from simulated normal
running; the threshold sits at 1.5x the largest normal score. The device runs it like any
bundle (the shared feature code, ONNX Runtime, the manifest's rule); inference is a few
microseconds per window, as for the small dense models the trainer makes, so latency
measured with it is the device's, not the model's.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from factoryedge.bundle import Bundle, write_bundle
from factoryedge.features import make_preprocessor
from factoryedge.features.vibration import default_feature_spec
from factoryedge.features.windowing import sliding_windows
from factoryedge.manifest import Manifest, ModelInfo, Provenance, ScoreInfo, ScoreStats, TensorSpec, ThresholdRule


def _onnx(mean: np.ndarray, std: np.ndarray) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = len(mean)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    detail = helper.make_tensor_value_info("detail", TensorProto.FLOAT, ["batch", n])
    inits = [numpy_helper.from_array(mean.astype(np.float32), "mu"),
             numpy_helper.from_array(std.astype(np.float32), "sigma"),
             helper.make_tensor("axes", TensorProto.INT64, [1], [1])]
    nodes = [helper.make_node("Sub", ["input", "mu"], ["centred"]),
             helper.make_node("Div", ["centred", "sigma"], ["detail"]),
             helper.make_node("Mul", ["detail", "detail"], ["sq"]),
             helper.make_node("ReduceMean", ["sq", "axes"], ["score"], keepdims=0)]
    model = helper.make_model(helper.make_graph(nodes, "zscore", [x], [score, detail], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def zscore_bundle(directory: Path, normal: np.ndarray, sample_rate: float, channels: tuple[str, ...]) -> Bundle:
    """Fit the z-score model on ``normal`` (samples, channels) and write a bundle to ``directory``."""
    spec = default_feature_spec(sample_rate, channels)
    pre = make_preprocessor(spec)
    feats = pre(np.ascontiguousarray(sliding_windows(normal.astype(np.float32), spec.window, spec.hop)))
    mean, std = feats.mean(axis=0), feats.std(axis=0) + 1e-6
    scores = (((feats - mean) / std) ** 2).mean(axis=1)
    threshold = 1.5 * float(scores.max())
    q = np.quantile(scores, [0.5, 0.9, 0.99])
    manifest = Manifest(
        name="bench-zscore-3axis", version="0.0.1", kind="vibration",
        model=ModelInfo(architecture="zscore", opset=18,
                        inputs=[TensorSpec(name="input", shape=["batch", pre.n_features])],
                        outputs=[TensorSpec(name="score", shape=["batch"]),
                                 TensorSpec(name="detail", shape=["batch", pre.n_features])]),
        preprocessing=spec,
        score=ScoreInfo(definition="mean squared z-score of the features", threshold=threshold, rule=ThresholdRule(),
                        calibration=ScoreStats(n=len(scores), mean=float(scores.mean()), std=float(scores.std()),
                                               median=float(q[0]), q90=float(q[1]), q99=float(q[2]),
                                               max=float(scores.max()))),
        provenance=Provenance(created_utc="2026-01-01T00:00:00+00:00", factoryedge_version="bench",
                              framework="onnx.helper"),
    )
    golden = feats[:4].astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, input=golden, output_score=(((golden - mean) / std) ** 2).mean(axis=1).astype(np.float32))
    return write_bundle(directory, manifest, {"model.onnx": _onnx(mean, std), "golden.npz": buf.getvalue()})
