"""torch to ONNX, with a parity check through the same ONNX Runtime backend the device uses."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from factoryedge.errors import ExportError
from factoryedge.manifest import ParityRecord, TensorSpec
from factoryedge.runtimes.backends.onnxruntime import OnnxRuntimeBackend

log = logging.getLogger(__name__)

# TensorRT 10.3 (JetPack 6) parses ONNX opsets 9 to 20; 18 is the lowest the maintained
# dynamo-based exporter emits.
OPSET = 18
PARITY_TOLERANCE = 1e-4


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
    tolerance: float = PARITY_TOLERANCE,
) -> tuple[ParityRecord, dict[str, np.ndarray]]:
    """Run torch and ONNX Runtime on the golden inputs; refuse a difference beyond ``tolerance``.

    Returns the parity record and ONNX Runtime's outputs, which become the bundle's golden
    reference for later backends (TensorRT) on the device.
    """
    inputs, outputs = tensor_specs(path)
    backend = OnnxRuntimeBackend(path, inputs, outputs, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(golden, dtype=np.float32)
    ort_out = backend.run_single(x)
    with torch.no_grad():
        torch_out = module(torch.as_tensor(x))
    torch_out = dict(zip(backend.output_names, (t.numpy() for t in torch_out)))
    diffs = {k: float(np.max(np.abs(ort_out[k] - torch_out[k]))) for k in backend.output_names}
    changed = int(np.sum((ort_out["score"] >= threshold) != (torch_out["score"] >= threshold)))
    record = ParityRecord(
        reference=f"torch {torch.__version__}",
        runtime=f"onnxruntime {_ort_version()} CPUExecutionProvider",
        n_inputs=int(len(x)),
        tolerance=tolerance,
        max_abs_diff=diffs,
        decisions_changed=changed,
    )
    worst = max(diffs.values())
    if worst > tolerance or changed:
        raise ExportError(
            f"ONNX export of {type(module).__name__} differs from torch: max abs diff {worst:.3g} "
            f"(tolerance {tolerance:g}), {changed} of {len(x)} golden decisions changed; bundle not written"
        )
    log.info("parity ok: max abs diff %s on %d golden inputs", {k: f"{v:.2e}" for k, v in diffs.items()}, len(x))
    return record, ort_out


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
