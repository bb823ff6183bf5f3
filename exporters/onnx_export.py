"""torch to ONNX, with a parity check of ONNX Runtime against the torch module it came from.

The check runs ONNX Runtime directly (a training dependency), not the device's backend:
exporters depend on the core (``factoryedge``), never on ``factoryedge.runtimes``. The
tolerance and the comparison are ``factoryedge.parity``'s, the same the device's TensorRT
engine check uses.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from factoryedge.errors import ConfigError, ExportError, missing_dependency
from factoryedge.manifest import ParityRecord, TensorSpec
from factoryedge.parity import Tolerance, compare_outputs, tolerance
from factoryedge.scoring import ScoreRule

log = logging.getLogger(__name__)

# TensorRT 10.3 (JetPack 6) parses ONNX opsets 9 to 20; 18 is the lowest the maintained
# dynamo-based exporter emits.
OPSET = 18
EXPORT_TOLERANCE = tolerance("export")


def export_onnx(
    module: torch.nn.Module, example: np.ndarray, path: Path, output_names: list[str], size_multiple: int | None = None
) -> None:
    """Export with a dynamic batch axis on the single input ``input`` and every output.

    ``size_multiple`` also makes the last two axes (an image's height and width) dynamic, in
    steps of that many pixels (a CNN's total stride), for models that take whole images of
    varying size.
    """
    module.eval()
    x = torch.as_tensor(example[:2], dtype=torch.float32)
    dims = {0: torch.export.Dim("batch", min=1)}
    if size_multiple:
        dims[x.ndim - 2] = size_multiple * torch.export.Dim("height_blocks", min=1, max=4096 // size_multiple)
        dims[x.ndim - 1] = size_multiple * torch.export.Dim("width_blocks", min=1, max=4096 // size_multiple)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (x,),
                input_names=["input"],
                output_names=output_names,
                dynamic_shapes=(dims,),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
            program.save(str(path))
    except Exception as e:  # the exporter raises many unrelated types
        raise ExportError(f"torch.onnx.export failed for {type(module).__name__}: {e}") from e


def tensor_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs as the exported graph declares them."""
    import onnx

    model = onnx.load(str(path))

    def spec(v) -> TensorSpec:
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        return TensorSpec(name=v.name, shape=[d if isinstance(d, str) else int(d) for d in dims])

    return [spec(v) for v in model.graph.input], [spec(v) for v in model.graph.output]


def check_parity(
    module: torch.nn.Module,
    path: Path,
    golden: np.ndarray,
    threshold: float,
    tolerance: Tolerance = EXPORT_TOLERANCE,
    *,
    higher_is_anomalous: bool = True,
) -> tuple[ParityRecord, dict[str, np.ndarray]]:
    """Run torch and ONNX Runtime on the golden inputs; refuse any output beyond ``tolerance``
    or any golden decision that changes at ``threshold``.

    ``tolerance`` comes from ``factoryedge.parity.TOLERANCES`` (absolute only: the parity
    record keeps one figure). Returns the parity record and ONNX Runtime's outputs, which
    become the bundle's golden reference for later backends (TensorRT) on the device.
    """
    if tolerance.rtol:
        raise ConfigError(f"an export tolerance is absolute (the parity record keeps one figure); got rtol {tolerance.rtol:g}")
    rule = ScoreRule(float(threshold), higher_is_anomalous)
    inputs, outputs = tensor_specs(path)
    x = _golden_input(golden, inputs)
    ort_out = _onnxruntime_outputs(path, inputs[0].name, [o.name for o in outputs], x)
    with torch.no_grad():
        torch_out = module(torch.as_tensor(x))
    if isinstance(torch_out, torch.Tensor):
        torch_out = (torch_out,)
    if len(torch_out) != len(outputs):
        raise ExportError(f"{type(module).__name__} returns {len(torch_out)} outputs but the exported graph has "
                          f"{[o.name for o in outputs]}; export with one output name per output")
    torch_out = {o.name: t.numpy() for o, t in zip(outputs, torch_out)}
    result = compare_outputs(torch_out, ort_out, tolerance, rule, "score")
    record = ParityRecord(
        reference=f"torch {torch.__version__}",
        runtime=f"onnxruntime {_ort().__version__} CPUExecutionProvider",
        n_inputs=int(len(x)),
        tolerance=tolerance.atol,
        max_abs_diff=result.max_abs_diff,
        decisions_changed=result.decisions_changed,
    )
    if not result.ok:
        raise ExportError(
            f"ONNX export of {type(module).__name__} differs from torch: max abs diff {result.worst:.3g} "
            f"(tolerance {tolerance.atol:g}), {result.decisions_changed} of {len(x)} golden decisions changed "
            f"({'; '.join(result.failures)}); bundle not written"
        )
    log.info("parity ok: max abs diff %s on %d golden inputs", {k: f"{v:.2e}" for k, v in result.max_abs_diff.items()},
             len(x))
    return record, ort_out


def _golden_input(golden: np.ndarray, inputs: list[TensorSpec]) -> np.ndarray:
    """The golden batch as contiguous float32, checked against the graph's one input (rank, fixed axes)."""
    if len(inputs) != 1:
        raise ExportError(f"parity checks one-input models; the graph has inputs {[i.name for i in inputs]}")
    spec = inputs[0]
    if not isinstance(golden, np.ndarray) or golden.dtype.kind not in "biuf":
        what = f"an array of dtype {golden.dtype}" if isinstance(golden, np.ndarray) else type(golden).__name__
        raise ExportError(f"golden inputs must be a numeric numpy array, got {what}")
    if golden.ndim != len(spec.shape) or len(golden) == 0:
        raise ExportError(f"golden input {spec.name!r} must have shape {spec.shape} with at least one row, "
                          f"got {list(golden.shape)}")
    for axis, (want, got) in enumerate(zip(spec.shape, golden.shape)):
        if isinstance(want, int) and want != got:
            raise ExportError(f"golden input {spec.name!r} must have shape {spec.shape}, got {list(golden.shape)} (axis {axis})")
    return np.ascontiguousarray(golden, dtype=np.float32)


def _onnxruntime_outputs(path: Path, input_name: str, output_names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    ort = _ort()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        results = session.run(output_names, {input_name: x})
    except Exception as e:  # ONNX Runtime raises its own untyped errors for bad graphs and inputs
        raise ExportError(f"ONNX Runtime cannot run the exported {Path(path).name} on the golden inputs: {e}") from None
    return dict(zip(output_names, results))


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise missing_dependency("onnxruntime", "train", "the export parity check") from None
    return onnxruntime
