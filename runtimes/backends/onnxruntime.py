"""ONNX Runtime backend: CPU everywhere, CUDA where onnxruntime-gpu and a GPU are present."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from factoryedge.errors import BackendUnavailableError, BundleError, missing_dependency
from factoryedge.manifest import TensorSpec
from factoryedge.runtimes.backends.base import Backend

log = logging.getLogger(__name__)


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise missing_dependency("onnxruntime", "device", "the ONNX Runtime backend") from None
    return onnxruntime


def available_providers() -> list[str]:
    return list(_ort().get_available_providers())


class OnnxRuntimeBackend(Backend):
    """One ``InferenceSession`` over a model file.

    ``providers`` defaults to CUDA then CPU where CUDA is available. ``threads`` caps intra-op
    threads (default: ``FACTORYEDGE_ORT_THREADS`` or ONNX Runtime's choice): on a Jetson the
    serial reader and MQTT client need a core too.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        providers: list[str] | None = None,
        threads: int | None = None,
    ):
        super().__init__(inputs, outputs)
        ort = _ort()
        have = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]
        unknown = [p for p in providers if p not in have]
        if unknown:
            raise BackendUnavailableError(f"ONNX Runtime providers {unknown} are not available here; available: {have}")
        opts = ort.SessionOptions()
        threads = threads or int(os.environ.get("FACTORYEDGE_ORT_THREADS", "0") or 0)
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises its own untyped errors for bad model files
            raise BundleError(f"ONNX Runtime cannot load {model_path}: {e}") from None
        self.providers = self.session.get_providers()
        graph_inputs = {i.name for i in self.session.get_inputs()}
        declared = {i.name for i in inputs}
        if graph_inputs != declared:
            raise BundleError(
                f"{model_path}: the model's inputs {sorted(graph_inputs)} differ from the manifest's {sorted(declared)}"
            )
        log.info("onnxruntime session for %s on %s", Path(model_path).name, self.providers)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, results))
