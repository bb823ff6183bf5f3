"""Choosing the inference backend for a bundle, always logging the choice and the reason."""
from __future__ import annotations

import importlib.util
import logging

from factoryedge.bundle import Bundle
from factoryedge.errors import BackendUnavailableError, ConfigError
from factoryedge.runtimes.backends.base import Backend

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt")


def open_backend(bundle: Bundle, choice: str = "auto") -> Backend:
    """``auto``: TensorRT when importable with a usable engine, else ONNX Runtime (CUDA, else CPU)."""
    if choice not in BACKENDS:
        raise ConfigError(f"backend {choice!r} is not one of {', '.join(BACKENDS)}")
    m = bundle.manifest
    if choice == "tensorrt" or (choice == "auto" and importlib.util.find_spec("tensorrt") is not None):
        reason = "TensorRT is importable, but this version of factoryedge has no TensorRT backend yet"
        if choice == "tensorrt":
            raise BackendUnavailableError(f"backend 'tensorrt' was asked for: {reason}")
        log.info("backend: not TensorRT: %s", reason)
    elif choice == "auto":
        log.info("backend: not TensorRT: the tensorrt module is not installed")
    from factoryedge.runtimes.backends.onnxruntime import OnnxRuntimeBackend, available_providers

    providers = available_providers()
    backend = OnnxRuntimeBackend(bundle.model_path, m.model.inputs, m.model.outputs)
    reason = ("CUDAExecutionProvider is available" if "CUDAExecutionProvider" in backend.providers
              else f"no CUDA provider in onnxruntime (available: {providers})")
    log.info("backend: onnxruntime on %s (%s)", backend.providers[0], reason)
    return backend
