"""A stand-in for ``tensorrt`` (10.x) and ``pycuda.driver`` that runs on a machine without a GPU.

It implements only the calls factoryedge makes, with their real names and signatures, and
behaves as TensorRT does where a test depends on it: a builder records the optimisation and
calibration profiles it is given (and refuses a profile with a dynamic axis left in it, as
``IOptimizationProfile.set_shape`` does), feeds the INT8 calibrator like a real build, and
returns a plan; the runtime deserializes that plan into an engine with those profiles, whose
context refuses input shapes outside them and "runs" ``model`` on the bytes in the bound
device buffers. ``fail_init`` makes ``Builder`` and ``Runtime`` fail as they do when CUDA
cannot initialise. ``install`` puts both modules in ``sys.modules``, where the backend's
import helpers find them.
"""
from __future__ import annotations

import itertools
import sys
import types

import numpy as np

NULLPTR = "pybind11::init(): factory function returned nullptr"


def mean_square(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the tiny bundles' ONNX models compute: score = mean(x^2) per item, detail = x^2."""
    x = feeds["input"]
    return {"score": (x.astype(np.float64) ** 2).reshape(len(x), -1).mean(axis=1).astype(np.float32),
            "detail": x**2}


class FakeGPU:
    """One fake GPU: the ``trt`` and ``cuda`` modules share its memory and its plans."""

    def __init__(self, network_inputs: dict[str, tuple[int, ...]] | None = None, model=mean_square,
                 fail_init: bool = False, version: str = "10.3.0.30", compute_capability=(8, 7)):
        self.network_inputs = network_inputs or {}
        self.model = model
        self.fail_init = fail_init
        self.memory: dict[int, np.ndarray] = {}  # device address -> its bytes
        self.plans: dict[bytes, dict[str, tuple]] = {}  # plan -> input profiles (min, opt, max)
        self.builds: list[dict] = []  # per build: profiles, calibration profile, calibration batches seen
        self._addresses = itertools.count(0x1000, 0x1000)
        self.trt = self._make_trt(version)
        self.cuda = self._make_cuda(compute_capability)

    def install(self, monkeypatch) -> FakeGPU:
        """Make ``import tensorrt`` and ``import pycuda.driver`` find this fake, for one test."""
        from factoryedge.runtimes.backends import tensorrt as trt_backend

        pycuda = types.ModuleType("pycuda")
        pycuda.driver = self.cuda
        monkeypatch.setitem(sys.modules, "tensorrt", self.trt)
        monkeypatch.setitem(sys.modules, "pycuda", pycuda)
        monkeypatch.setitem(sys.modules, "pycuda.driver", self.cuda)
        monkeypatch.setattr(trt_backend, "_TRT_LOGGER", None)  # the process logger subclasses this trt's ILogger
        return self

    def plan(self, profiles: dict[str, tuple]) -> bytes:
        """A plan for an engine with these input profiles, as if a builder had made it."""
        data = f"fake plan {len(self.plans)}".encode()
        self.plans[data] = {k: tuple(tuple(s) for s in v) for k, v in profiles.items()}
        return data

    def _alloc(self, nbytes: int) -> int:
        address = next(self._addresses)
        self.memory[address] = np.zeros(max(nbytes, 1), np.uint8)
        return address

    # -- tensorrt ---------------------------------------------------------------------

    def _make_trt(self, version: str):
        gpu = self
        trt = types.ModuleType("tensorrt")
        trt.__version__ = version
        trt.ILogger = type("ILogger", (), {"Severity": types.SimpleNamespace(
            INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4), "__init__": lambda self: None})
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})
        trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        trt.BuilderFlag = types.SimpleNamespace(TF32="tf32", FP16="fp16", INT8="int8", GPU_FALLBACK="gpu_fallback")
        trt.DeviceType = types.SimpleNamespace(GPU="gpu", DLA="dla")
        trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
        trt.DataType = types.SimpleNamespace(FLOAT="float")
        trt.nptype = lambda dt: {"float": np.float32}[dt]

        class _Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's own keyword names
                shapes = tuple(tuple(int(d) for d in s) for s in (min, opt, max))
                if any(d < 0 for s in shapes for d in s):
                    raise ValueError(f"a profile shape cannot be dynamic: {shapes}")  # TensorRT refuses it too
                self.shapes[name] = shapes

        class _Config:
            def __init__(self):
                self.flags, self.profiles, self.calibration_profile, self.int8_calibrator = set(), [], None, None

            def set_memory_pool_limit(self, pool, size):
                pass

            def set_flag(self, flag):
                self.flags.add(flag)

            def clear_flag(self, flag):
                self.flags.discard(flag)

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)
                return len(self.profiles) - 1

            def set_calibration_profile(self, profile):
                self.calibration_profile = profile
                return True

            def create_timing_cache(self, data):
                return types.SimpleNamespace(serialize=lambda: b"")

            def set_timing_cache(self, cache, ignore_mismatch):
                self._cache = cache
                return True

            def get_timing_cache(self):
                return self._cache

        class _Builder:
            num_DLA_cores = 0

            def __init__(self, logger):
                if gpu.fail_init:
                    raise TypeError(NULLPTR)

            def create_network(self, flags):
                inputs = [types.SimpleNamespace(name=k, shape=v) for k, v in gpu.network_inputs.items()]
                return types.SimpleNamespace(num_inputs=len(inputs), get_input=inputs.__getitem__)

            def create_builder_config(self):
                return _Config()

            def create_optimization_profile(self):
                return _Profile()

            def build_serialized_network(self, network, config):
                build = {"profiles": config.profiles[0].shapes, "calibration_profile": None, "calibration_batches": 0}
                gpu.builds.append(build)
                if config.int8_calibrator is not None:
                    build["calibration_profile"] = config.calibration_profile.shapes
                    names = list(gpu.network_inputs)
                    while config.int8_calibrator.get_batch(names) is not None:
                        build["calibration_batches"] += 1
                return gpu.plan(config.profiles[0].shapes)

        class _Runtime:
            def __init__(self, logger):
                if gpu.fail_init:
                    raise TypeError(NULLPTR)

            def deserialize_cuda_engine(self, data):
                profiles = gpu.plans.get(bytes(data))
                return None if profiles is None else _Engine(profiles)

        class _Engine:
            def __init__(self, profiles):
                self.profiles = profiles
                opt = {k: np.zeros(v[1], np.float32) for k, v in profiles.items()}
                self.names = [*profiles, *gpu.model(opt)]
                self.num_io_tensors = len(self.names)

            def get_tensor_name(self, i):
                return self.names[i]

            def get_tensor_mode(self, name):
                return trt.TensorIOMode.INPUT if name in self.profiles else trt.TensorIOMode.OUTPUT

            def get_tensor_profile_shape(self, name, profile_index):
                return self.profiles[name]

            def get_tensor_dtype(self, name):
                return trt.DataType.FLOAT

            def create_execution_context(self):
                return _Context(self)

        class _Context:
            def __init__(self, engine):
                self.engine, self.shapes, self.addresses = engine, {}, {}

            def set_input_shape(self, name, shape):
                lo, _, hi = self.engine.profiles[name]
                if len(shape) != len(lo) or not all(a <= d <= b for d, a, b in zip(shape, lo, hi)):
                    return False  # TensorRT logs an error and returns false
                self.shapes[name] = tuple(shape)
                return True

            def _outputs(self, feeds):
                return gpu.model(feeds)

            def get_tensor_shape(self, name):
                if name in self.engine.profiles:
                    return self.shapes[name]
                return self._outputs({k: np.zeros(s, np.float32) for k, s in self.shapes.items()})[name].shape

            def set_tensor_address(self, name, address):
                self.addresses[name] = address
                return True

            def _array(self, name, shape):
                raw = gpu.memory[self.addresses[name]]
                return raw[:int(np.prod(shape)) * 4].view(np.float32).reshape(shape)

            def execute_async_v3(self, stream_handle):
                feeds = {k: self._array(k, s).copy() for k, s in self.shapes.items()}
                for name, value in self._outputs(feeds).items():
                    self._array(name, value.shape)[...] = value
                return True

        trt.Builder, trt.Runtime, trt.OnnxParser = _Builder, _Runtime, _Parser
        return trt

    # -- pycuda.driver ----------------------------------------------------------------

    def _make_cuda(self, compute_capability):
        gpu = self
        cuda = types.ModuleType("pycuda.driver")
        cuda.Error = type("Error", (Exception,), {})
        cuda.device_attribute = types.SimpleNamespace(INTEGRATED="integrated", CAN_MAP_HOST_MEMORY="can_map")
        cuda.host_alloc_flags = types.SimpleNamespace(DEVICEMAP="devicemap")
        cuda.init = lambda: None

        class _Ctx:
            def push(self):
                pass

            def detach(self):
                pass

        class _Device:
            def __init__(self, ordinal):
                self.ordinal = ordinal

            count = staticmethod(lambda: 1)

            def compute_capability(self):
                return compute_capability

            def name(self):
                return "Fake GPU"

            def get_attribute(self, attribute):
                return 0  # a discrete GPU: no zero-copy

            def retain_primary_context(self):
                return _Ctx()

        class _DeviceAllocation:
            def __init__(self, nbytes):
                self.address = gpu._alloc(nbytes)

            def __int__(self):
                return self.address

            def free(self):
                gpu.memory.pop(self.address, None)

        class _HostAllocation:
            def __init__(self, size, dtype):
                self._array = np.zeros(size, dtype)
                self.__array_interface__ = self._array.__array_interface__

            def free(self):
                pass

        def copy_in(dest, src, stream=None):
            flat = np.ascontiguousarray(src).reshape(-1).view(np.uint8)
            gpu.memory[int(dest)][:flat.size] = flat

        def copy_out(dest, src, stream=None):
            flat = dest.reshape(-1).view(np.uint8)
            flat[...] = gpu.memory[int(src)][:flat.size]

        cuda.Device = _Device
        cuda.Context = types.SimpleNamespace(pop=lambda: None)
        cuda.Stream = lambda: types.SimpleNamespace(handle=0, synchronize=lambda: None)
        cuda.mem_alloc = _DeviceAllocation
        cuda.pagelocked_empty = lambda size, dtype, mem_flags=None: np.asarray(_HostAllocation(size, dtype))
        cuda.memcpy_htod = copy_in
        cuda.memcpy_htod_async = copy_in
        cuda.memcpy_dtoh_async = copy_out
        return cuda


class _Parser:
    """``trt.OnnxParser``: every model parses (the graph itself is never looked at)."""

    num_errors = 0

    def __init__(self, network, logger):
        pass

    def parse_from_file(self, path):
        return True
