"""TensorRT backend (TensorRT 10.x, as JetPack 6 ships it) through pycuda.

One retained CUDA primary context (the one TensorRT's CUDA runtime uses too), pushed only
around each call so the backend works from any thread; one stream; buffers sized for the
engine's largest batch and allocated once. On an integrated GPU (Jetson) host and device share
DRAM, so inputs and outputs live in mapped page-locked memory that the GPU reads and writes in
place (zero-copy); on a discrete GPU they are copied asynchronously on the stream. Batches larger
than the engine's maximum are split; smaller than its minimum (a fixed-shape DLA engine) padded.

tensorrt and pycuda are imported only when a backend is opened: a device without them still
imports this module, and a missing one raises an error that says where it comes from.
"""
from __future__ import annotations

import contextlib
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from factoryedge.errors import BackendUnavailableError, BundleError, ConfigError, missing_dependency
from factoryedge.manifest import TensorSpec
from factoryedge.runtimes.backends.base import Backend
from factoryedge.runtimes.backends.engine_cache import DeviceInfo

log = logging.getLogger(__name__)

JETPACK_HINT = (
    "TensorRT itself is not on PyPI for Jetson: it comes from JetPack (sudo apt install python3-libnvinfer), "
    "seen by a venv created with --system-site-packages; never pip install tensorrt over it"
)


def import_tensorrt(purpose: str = "the TensorRT backend"):
    try:
        import tensorrt
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "tensorrt":
            raise BackendUnavailableError(f"TensorRT is installed but cannot be imported: {e}; {JETPACK_HINT}") from None
        err = missing_dependency("tensorrt", "jetson", purpose)
        raise BackendUnavailableError(f"{err} (that extra brings pycuda; {JETPACK_HINT})") from None
    except ImportError as e:  # the module is there but libnvinfer is not loadable
        raise BackendUnavailableError(f"TensorRT is installed but cannot be imported: {e}; {JETPACK_HINT}") from None
    version = str(getattr(tensorrt, "__version__", "0"))
    major = re.match(r"\d+", version)
    if major is None or int(major.group()) < 10:
        # The named-tensor API this backend uses is TensorRT 10's; JetPack 6.0 shipped 8.6.
        raise BackendUnavailableError(f"TensorRT {version} is too old: {purpose} needs TensorRT 10 "
                                      "(JetPack 6.1 or newer ships 10.3)")
    return tensorrt


def import_pycuda(purpose: str = "the TensorRT backend"):
    """``pycuda.driver`` without ``pycuda.autoinit``: a library must not grab a context at import."""
    try:
        import pycuda.driver as cuda
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "pycuda":
            raise BackendUnavailableError(f"pycuda is installed but cannot be imported: {e}") from None
        err = missing_dependency("pycuda", "jetson", purpose)
        raise BackendUnavailableError(
            f"{err} (on a Jetson pip builds it against JetPack's CUDA: put /usr/local/cuda/bin on PATH first)") from None
    except ImportError as e:  # e.g. libcuda.so.1 missing: no NVIDIA driver on this machine
        raise BackendUnavailableError(f"pycuda is installed but cannot load the CUDA driver: {e}") from None
    return cuda


CUDA_INIT_HINT = (
    "check that the NVIDIA driver works (nvidia-smi lists the GPU; the tensorrt log lines above give CUDA's error, "
    "35 meaning a driver older than the CUDA TensorRT was built for) and, in a container, that it runs with the "
    "NVIDIA container runtime (--runtime nvidia or --gpus all)"
)

_TRT_LOGGER = None


def trt_logger(trt):
    """One TensorRT logger for the process, forwarding TensorRT's messages to ``logging``."""
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        sev = trt.ILogger.Severity
        levels = {sev.INTERNAL_ERROR: logging.CRITICAL, sev.ERROR: logging.ERROR, sev.WARNING: logging.WARNING,
                  sev.INFO: logging.DEBUG, sev.VERBOSE: 5}
        trt_log = logging.getLogger("factoryedge.tensorrt")

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)  # the pybind trampoline must be initialised explicitly

            def log(self, severity, msg):
                trt_log.log(levels.get(severity, logging.INFO), "%s", msg)

        _TRT_LOGGER = _Logger()
    return _TRT_LOGGER


def trt_object(trt, kind: str):
    """``trt.Builder`` or ``trt.Runtime`` (``kind``) on the process logger.

    When CUDA cannot initialise, TensorRT's constructors return a null object, which pybind11
    raises as ``TypeError: pybind11::init(): factory function returned nullptr``; that becomes
    BackendUnavailableError, so ``backend: auto`` falls back to ONNX Runtime. Any other TypeError
    is a bug and is raised unchanged.
    """
    try:
        return getattr(trt, kind)(trt_logger(trt))
    except TypeError as e:
        if "nullptr" not in str(e):
            raise
        raise BackendUnavailableError(f"TensorRT could not create its {kind}: CUDA could not initialise ({e}); "
                                      f"{CUDA_INIT_HINT}") from None


def cuda_device(cuda, ordinal: int = 0):
    """``cuda.Device(ordinal)`` after ``cuda.init()``; CUDA failures become BackendUnavailableError."""
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as e:
        raise BackendUnavailableError(f"CUDA is not usable here: {e}") from None
    if count == 0:
        raise BackendUnavailableError("no CUDA GPU is visible (cuda.Device.count() is 0)")
    if not 0 <= ordinal < count:
        raise ConfigError(f"GPU {ordinal} does not exist; this machine has GPU 0..{count - 1}")
    return cuda.Device(ordinal)


@contextlib.contextmanager
def primary_context(cuda, device):
    """Retain and push the device's primary context; pop and release it on exit.

    The primary context is the one TensorRT's CUDA runtime calls use, so pycuda allocations and
    TensorRT objects made inside share it. Everything created inside must be released before exit.
    """
    ctx = device.retain_primary_context()
    ctx.push()
    try:
        yield ctx
    finally:
        cuda.Context.pop()
        ctx.detach()


def fast_fp16(compute_capability: str) -> bool:
    """Whether the GPU has fast native fp16, from its compute capability.

    What ``builder.platform_has_fast_fp16`` answers (deprecated from TensorRT 10.5, which says to
    ask CUDA), without creating a builder: sm 5.3, 6.0, 6.2 and 7.0 onwards (all Jetsons from TX1).
    """
    major, minor = (int(x) for x in compute_capability.split("."))
    return major >= 7 or (major, minor) in ((5, 3), (6, 0), (6, 2))


def probe_device(ordinal: int = 0, with_builder: bool = False) -> DeviceInfo:
    """TensorRT version and GPU identity, without opening anything; DLA cores if ``with_builder``."""
    trt = import_tensorrt()
    cuda = import_pycuda()
    dev = cuda_device(cuda, ordinal)
    major, minor = dev.compute_capability()
    integrated = bool(dev.get_attribute(cuda.device_attribute.INTEGRATED))
    dla = None
    if with_builder:
        with primary_context(cuda, dev):
            dla = _count_dla(trt)
    return DeviceInfo(tensorrt_version=trt.__version__, compute_capability=f"{major}.{minor}",
                      device_name=dev.name(), integrated=integrated, dla_cores=dla)


def _count_dla(trt) -> int:
    return int(trt_object(trt, "Builder").num_DLA_cores)


@dataclass
class _Tensor:
    name: str
    is_input: bool
    dtype: np.dtype
    host: np.ndarray  # flat, page-locked (mapped on Jetson), sized for the largest batch
    device: object  # pycuda DeviceAllocation, or None when zero-copy
    address: int


class TensorRTBackend(Backend):
    """Runs a serialized TensorRT plan (bytes or a ``.plan`` file) for the manifest's tensors.

    ``dla_core`` must be the core the engine was built for, None for a GPU engine. ``zero_copy``
    defaults to True on integrated GPUs that can map host memory. ``run`` is thread-safe;
    ``close`` is idempotent and must be called to release the GPU memory and the context.
    """

    name = "tensorrt"

    def __init__(self, plan: bytes | str | Path, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 device: int = 0, dla_core: int | None = None, zero_copy: bool | None = None):
        super().__init__(inputs, outputs)
        self._trt = import_tensorrt()
        self._cuda = cuda = import_pycuda()
        self._lock = threading.Lock()
        self._closed = True
        self._tensors: dict[str, _Tensor] = {}
        self._items: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}  # input -> smallest, largest item shape
        self._engine = self._context = self._runtime = self._stream = None
        data = Path(plan).read_bytes() if isinstance(plan, (str, Path)) else bytes(plan)
        dev = cuda_device(cuda, device)
        mappable = bool(dev.get_attribute(cuda.device_attribute.INTEGRATED)) and \
            bool(dev.get_attribute(cuda.device_attribute.CAN_MAP_HOST_MEMORY))
        self.zero_copy = mappable if zero_copy is None else bool(zero_copy and mappable)
        self._ctx = dev.retain_primary_context()
        self._closed = False
        try:
            with self._pushed():
                self._load(data, dla_core)
        except cuda.Error as e:
            self.close()
            raise BackendUnavailableError(f"CUDA failed while loading the TensorRT engine: {e}") from None
        except BaseException:
            self.close()
            raise
        log.info("tensorrt engine on %s: batch %d..%d, %s", dev.name(), self.min_batch, self.max_batch,
                 "zero-copy mapped host memory" if self.zero_copy else "async copies")

    @contextlib.contextmanager
    def _pushed(self):
        self._ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _load(self, data: bytes, dla_core: int | None) -> None:
        trt, cuda = self._trt, self._cuda
        self._runtime = trt_object(trt, "Runtime")
        if dla_core is not None:
            self._runtime.DLA_core = dla_core
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise BundleError(f"TensorRT {trt.__version__} cannot deserialize this engine (built by another TensorRT "
                              "version or for another GPU?); rebuild it with: factoryedge build-engine BUNDLE")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailableError("TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = cuda.Stream()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._check_io(names, is_input)
        first = self.inputs[0].name
        lo, _, hi = self._engine.get_tensor_profile_shape(first, 0)
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        # Output sizes follow from input shapes: set the largest, then ask the context.
        for spec in self.inputs:
            lo, _, hi = (tuple(int(d) for d in shape) for shape in self._engine.get_tensor_profile_shape(spec.name, 0))
            self._items[spec.name] = lo[1:], hi[1:]
            self._set_shape(spec.name, hi)
        for n in names:
            shape = tuple(self._engine.get_tensor_profile_shape(n, 0)[2]) if is_input[n] \
                else tuple(self._context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise BundleError(f"engine output {n!r} has a data-dependent shape {list(shape)}; not supported")
            self._tensors[n] = self._allocate(n, is_input[n], shape)
            # Addresses never change, so they are bound once rather than per call.
            if not self._context.set_tensor_address(n, self._tensors[n].address):
                raise BackendUnavailableError(f"TensorRT refused the buffer address for tensor {n!r}")

    def _check_io(self, names: list[str], is_input: dict[str, bool]) -> None:
        trt = self._trt
        engine_inputs = {n for n in names if is_input[n]}
        declared = {i.name for i in self.inputs}
        if engine_inputs != declared:
            raise BundleError(f"the engine's inputs {sorted(engine_inputs)} differ from the manifest's {sorted(declared)}")
        missing = [o for o in self.output_names if o not in names or is_input[o]]
        if missing:
            raise BundleError(f"the engine has no outputs {missing}; it has {sorted(set(names) - engine_inputs)}")
        for spec in self.inputs:
            got = np.dtype(trt.nptype(self._engine.get_tensor_dtype(spec.name)))
            if got != np.dtype(spec.dtype):
                raise BundleError(f"engine input {spec.name!r} is {got}, the manifest says {spec.dtype}")

    def _allocate(self, name: str, is_input: bool, shape: tuple[int, ...]) -> _Tensor:
        cuda = self._cuda
        dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
        size = max(1, int(np.prod(shape)))
        if self.zero_copy:
            host = cuda.pagelocked_empty(size, dtype, mem_flags=cuda.host_alloc_flags.DEVICEMAP)
            return _Tensor(name, is_input, dtype, host, None, int(host.base.get_device_pointer()))
        host = cuda.pagelocked_empty(size, dtype)
        dev = cuda.mem_alloc(host.nbytes)
        return _Tensor(name, is_input, dtype, host, dev, int(dev))

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self._context.set_input_shape(name, shape):
            raise ConfigError(f"input {name!r} of shape {list(shape)} is outside the engine's profile "
                              f"(batch {self.min_batch}..{self.max_batch})")

    def _check_item_shapes(self, feeds: dict[str, np.ndarray]) -> None:
        """Refuse an input the engine was not built for, e.g. a frame of another size.

        The manifest may leave height and width dynamic (the ONNX model takes any frame), but
        the engine is built for the golden frame size; its buffers hold no more than that.
        """
        for name, arr in feeds.items():
            lo, hi = self._items[name]
            item = arr.shape[1:]
            if len(item) == len(lo) and all(a <= d <= b for d, a, b in zip(item, lo, hi)):
                continue
            built = ", ".join(["batch", *(str(a) if a == b else f"{a}..{b}" for a, b in zip(lo, hi))])
            raise ConfigError(
                f"input {name!r} has shape {list(arr.shape)}, but this TensorRT engine was built for [{built}] "
                f"(batch {self.min_batch}..{self.max_batch}); "
                "rebuild the engine for that size (export the bundle with golden inputs of that size, e.g. frames "
                "from this line's camera, then run factoryedge build-engine on it), or use backend onnxruntime")

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(feeds.values())))
        if any(len(v) != n for v in feeds.values()):
            raise ConfigError(f"inputs differ in batch size: { {k: len(v) for k, v in feeds.items()} }")
        self._check_item_shapes(feeds)
        with self._lock:
            if self._closed:
                raise BackendUnavailableError("this TensorRT backend has been closed")
            try:
                with self._pushed():
                    parts = [self._run_chunk({k: v[s:s + self.max_batch] for k, v in feeds.items()})
                             for s in range(0, max(n, 1), self.max_batch)]
            except self._cuda.Error as e:
                raise BackendUnavailableError(f"CUDA failed during TensorRT inference: {e}") from None
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in self.output_names}

    def _run_chunk(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self._cuda
        n = len(next(iter(feeds.values())))
        rows = max(n, self.min_batch)
        for name, arr in feeds.items():
            t = self._tensors[name]
            shape = (rows,) + arr.shape[1:]
            view = t.host[:int(np.prod(shape))].reshape(shape)
            view[:n] = arr
            view[n:] = 0  # padding rows for a fixed-batch engine; their outputs are dropped
            self._set_shape(name, shape)
            if not self.zero_copy:
                cuda.memcpy_htod_async(t.device, view, self._stream)
        if not self._context.execute_async_v3(self._stream.handle):
            raise BackendUnavailableError("TensorRT execute_async_v3 failed (see the tensorrt log lines above)")
        views = {}
        for name in self.output_names:
            t = self._tensors[name]
            shape = tuple(self._context.get_tensor_shape(name))
            views[name] = t.host[:int(np.prod(shape))].reshape(shape)
            if not self.zero_copy:
                cuda.memcpy_dtoh_async(views[name], t.device, self._stream)
        self._stream.synchronize()
        # The buffers are reused by the next call: hand out copies.
        return {k: v[:n].copy() for k, v in views.items()}

    def close(self) -> None:
        """Free GPU buffers and TensorRT objects inside the context, then release the context."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            if self._closed:
                return
            self._closed = True
            try:
                with self._pushed():
                    for t in self._tensors.values():
                        if t.device is not None:
                            t.device.free()
                        t.host.base.free()
                    self._tensors = {}
                    # Order matters: context, then engine, then runtime, all while the context is current.
                    self._context = None
                    self._engine = None
                    self._runtime = None
                    self._stream = None
            except self._cuda.Error as e:  # a GPU in a bad state must not stop the caller's shutdown
                log.warning("releasing TensorRT resources failed: %s", e)
            finally:
                # Releases this backend's reference to the primary context. pycuda only releases from
                # the thread that opened the backend; from another thread the reference is kept until
                # the process exits, which costs nothing as TensorRT's runtime holds the context anyway.
                self._ctx.detach()
