"""Choosing the inference backend for a bundle, always logging the choice and the reason.

``auto`` picks TensorRT when tensorrt and pycuda import, a CUDA GPU is present, and an engine
for this device exists in the bundle or cache or can be built (it is built on first use, which
takes a while and is logged); otherwise ONNX Runtime on CUDA where onnxruntime has the CUDA
provider, else on the CPU. The choice is logged as one INFO line ``backend: <name> (<reason>)``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from factoryedge.bundle import Bundle
from factoryedge.errors import BackendUnavailableError, ConfigError, ExportError, FactoryEdgeError
from factoryedge.manifest import EngineRecord
from factoryedge.runtimes.backends.base import Backend
from factoryedge.runtimes.backends.engine_cache import PRECISIONS, DeviceInfo, describe_engine, find_engine, plan_path
from factoryedge.runtimes.backends.onnxruntime import OnnxRuntimeBackend, available_providers

# The TensorRT modules are imported only where TensorRT is chosen or probed: an ONNX Runtime
# device never loads the TensorRT code paths (import time and memory on a small Jetson).

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt")


@dataclass
class _TensorRTStatus:
    usable: bool
    reason: str
    device: DeviceInfo | None = None
    record: EngineRecord | None = None
    build: list[str] = field(default_factory=list)  # precisions to try building, in order


def _check(choice: str, precision: str | None, dla_core: int | None) -> None:
    if choice not in BACKENDS:
        raise ConfigError(f"backend {choice!r} is not one of {', '.join(BACKENDS)}")
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if dla_core is not None and (not isinstance(dla_core, int) or dla_core < 0):
        raise ConfigError(f"DLA core {dla_core!r} must be a core number (0, 1, ...)")


def _tensorrt_status(bundle: Bundle, precision: str | None, dla_core: int | None) -> _TensorRTStatus:
    """Whether TensorRT can serve this bundle here, and with which engine; opens nothing."""
    from factoryedge.runtimes.backends.tensorrt import fast_fp16, probe_device

    try:
        device = probe_device()
    except BackendUnavailableError as e:
        return _TensorRTStatus(False, str(e))
    if precision:
        search = build = [precision]
    elif dla_core is not None:
        search, build = ["fp16", "int8"], ["fp16"]  # DLA runs fp16 and int8 only
    else:
        # An engine the user built (any precision) is preferred; else fp16 where the GPU has fast
        # fp16 (every Jetson), with fp32 as the fallback when fp16 fails parity.
        search = ["fp16", "fp32", "int8"]
        build = ["fp16", "fp32"] if fast_fp16(device.compute_capability) else ["fp32"]
    for p in search:
        record = find_engine(bundle, device, p, dla_core)
        if record is not None:
            return _TensorRTStatus(True, f"engine {describe_engine(record)} matches this {device.device_name}",
                                   device, record)
    return _TensorRTStatus(True, f"no engine for this {device.device_name} (TensorRT {device.tensorrt_version}) yet; "
                                 f"an {build[0]} engine will be built on first use", device, None, build)


def _ort_reason() -> str:

    providers = available_providers()
    if "CUDAExecutionProvider" in providers:
        return "CUDAExecutionProvider"
    return f"CPUExecutionProvider; no CUDA provider in onnxruntime (available: {providers})"


def describe_choice(bundle: Bundle, choice: str = "auto", *, precision: str | None = None,
                    dla_core: int | None = None) -> tuple[str, str]:
    """The backend ``open_backend`` would choose, and why, without opening or building anything.

    Raises BackendUnavailableError when ``tensorrt`` is asked for explicitly and cannot be used.
    """
    _check(choice, precision, dla_core)
    if choice == "onnxruntime":
        return "onnxruntime", f"{_ort_reason()}; asked for explicitly"
    status = _tensorrt_status(bundle, precision, dla_core)
    if status.usable:
        return "tensorrt", status.reason
    if choice == "tensorrt":
        raise BackendUnavailableError(f"backend 'tensorrt' was asked for, but {status.reason}")
    return "onnxruntime", f"{_ort_reason()}; TensorRT not used: {status.reason}"


def open_backend(bundle: Bundle, choice: str = "auto", *, precision: str | None = None,
                 dla_core: int | None = None) -> Backend:
    """Open the backend for ``choice`` (see the module docstring); logs the choice and the reason.

    Under ``auto`` a TensorRT failure (build, parity, CUDA) is logged as a warning and ONNX
    Runtime is used; under ``tensorrt`` it is raised. ``precision`` and ``dla_core`` select
    which TensorRT engine to use or build (default: any existing, else fp16 on the GPU).
    """
    _check(choice, precision, dla_core)
    trt_reason = None
    if choice != "onnxruntime":
        status = _tensorrt_status(bundle, precision, dla_core)
        if status.usable:
            try:
                backend, reason = _open_tensorrt(bundle, status, dla_core)
            except (FactoryEdgeError, OSError) as e:  # OSError: e.g. a full disk while storing the engine
                if choice == "tensorrt":
                    raise
                log.warning("TensorRT could not be used, falling back to ONNX Runtime: %s", e)
                trt_reason = f"TensorRT failed: {e}"
            else:
                log.info("backend: tensorrt (%s)", reason)
                return backend
        elif choice == "tensorrt":
            raise BackendUnavailableError(f"backend 'tensorrt' was asked for, but {status.reason}")
        else:
            trt_reason = status.reason

    m = bundle.manifest
    backend = OnnxRuntimeBackend(bundle.model_path, m.model.inputs, m.model.outputs)
    reason = backend.providers[0]
    if "CUDAExecutionProvider" not in backend.providers:
        reason += f"; no CUDA provider in onnxruntime (available: {available_providers()})"
    if choice == "onnxruntime":
        reason += "; asked for explicitly"
    if trt_reason:
        reason += f"; TensorRT not used: {trt_reason}"
    log.info("backend: onnxruntime (%s)", reason)
    return backend


def _open_tensorrt(bundle: Bundle, status: _TensorRTStatus, dla_core: int | None) -> tuple[Backend, str]:
    from factoryedge.runtimes.backends.tensorrt import TensorRTBackend

    m = bundle.manifest
    if status.record is not None:
        r = status.record
        return TensorRTBackend(plan_path(bundle, r), m.model.inputs, m.model.outputs, dla_core=r.dla_core), status.reason
    from factoryedge.runtimes.backends.tensorrt_build import build_engine

    failure: ExportError | None = None
    for p in status.build:
        try:
            result = build_engine(bundle, precision=p, dla_core=dla_core)
        except ExportError as e:  # build or parity failed at this precision: try the next one
            log.warning("%s engine not usable: %s", p, e)
            failure = e
            continue
        r = result.record
        backend = TensorRTBackend(result.plan_path, m.model.inputs, m.model.outputs, dla_core=r.dla_core)
        return backend, f"built {describe_engine(r)} on first use in {r.build_seconds:.0f} s"
    raise failure or BackendUnavailableError("no TensorRT precision left to try")
