"""Building a TensorRT engine from a bundle's ONNX model, on the device that will run it.

Written against the TensorRT 10.x Python API as JetPack 6 ships it (TensorRT 10.3): explicit
batch networks (``create_network(0)``), ``build_serialized_network``, memory-pool limits,
named-tensor optimisation profiles, a persisted timing cache. Every engine is checked against
the bundle's golden ONNX Runtime outputs before it is recorded; one that fails parity is refused
unless forced.

INT8 here is implicit quantisation with an ``IInt8EntropyCalibrator2`` fed with the bundle's
golden *normal* inputs. TensorRT deprecated calibrators in 10.1 (they still work in 10.3) and
TensorRT 11 removes them together with the builder precision flags (FP16, INT8): there, networks
are strongly typed and INT8/FP8 need explicit quantisation, i.e. Q/DQ nodes put into the ONNX
model before export (NVIDIA TensorRT Model Optimizer, ``modelopt``). Moving to TensorRT 11 means
exporting fp16/Q-DQ ONNX models in ``factoryedge.exporters`` and dropping the flags and the
calibrator below; nothing else in the engine cache changes.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from factoryedge.bundle import Bundle
from factoryedge.errors import BackendUnavailableError, BundleError, ConfigError, ExportError
from factoryedge.manifest import EngineParity, EngineRecord, ScoreInfo
from factoryedge.parity import compare_outputs, golden_reference, tolerance
from factoryedge.runtimes.backends import engine_cache as ec
from factoryedge.runtimes.backends.tensorrt import (
    TensorRTBackend,
    cuda_device,
    fast_fp16,
    import_pycuda,
    import_tensorrt,
    primary_context,
    probe_device,
    trt_logger,
    trt_object,
)
from factoryedge.scoring import ScoreRule

log = logging.getLogger(__name__)

PURPOSE = "building TensorRT engines"
CALIBRATION_BATCH = 32


@dataclass
class BuildResult:
    bundle: Bundle  # with the new engine recorded when the bundle is writable
    record: EngineRecord
    plan_path: Path


def build_engine(bundle: Bundle, precision: str = "fp16", batch: int = 8, max_batch: int = 64,
                 workspace_mb: int = 512, dla_core: int | None = None, force: bool = False,
                 timing_cache: str | Path | None = None, calibration_inputs: np.ndarray | None = None,
                 device: int = 0) -> BuildResult:
    """Build, check against the golden outputs, and record an engine for this device.

    ``batch`` is the batch size TensorRT optimises for, ``max_batch`` the largest it accepts
    (the backend splits larger batches). A DLA engine has a fixed batch of ``batch`` (DLA has
    no dynamic shapes) and runs fp16 or int8 only. The timing cache defaults to one per
    TensorRT version and GPU, shared by all bundles in the engine cache. ``calibration_inputs``
    replace the golden normal inputs for INT8 calibration (a few hundred normal windows
    calibrate better than the golden set's handful). Raises ExportError when parity fails,
    unless ``force``.
    """
    ec.check_precision(precision)
    if not (isinstance(batch, int) and isinstance(max_batch, int) and 1 <= batch <= max_batch):
        raise ConfigError(f"batch {batch!r} and max batch {max_batch!r} must be integers with 1 <= batch <= max batch")
    if workspace_mb < 16:
        raise ConfigError(f"workspace {workspace_mb!r} MB is too small; give at least 16 (e.g. 512)")
    if dla_core is not None and precision == "fp32":
        raise ConfigError(f"DLA core {dla_core} runs fp16 or int8 only, not {precision!r}; use --precision fp16")
    trt = import_tensorrt(PURPOSE)
    cuda = import_pycuda(PURPOSE)
    info = probe_device(device, with_builder=True)
    if dla_core is not None:
        if not info.dla_cores:
            raise BackendUnavailableError(
                f"DLA core {dla_core} was asked for, but {info.device_name} has no DLA (Jetson AGX Orin has two, "
                "Orin NX one or two, Orin Nano none); build for the GPU by leaving out --dla-core")
        if dla_core >= info.dla_cores:
            raise ConfigError(f"DLA core {dla_core} does not exist; {info.device_name} has cores 0..{info.dla_cores - 1}")
        batch = max_batch = batch  # DLA: min = opt = max
    if precision != "fp32" and not fast_fp16(info.compute_capability):
        log.warning("%s (compute capability %s) has no fast fp16; a %s engine may be no faster than fp32",
                    info.device_name, info.compute_capability, precision)

    onnx_sha = ec.onnx_sha256(bundle)
    key = ec.engine_key(onnx_sha, info.tensorrt_version, info.compute_capability, precision, dla_core)
    store = ec.engine_store(bundle)
    timing = Path(timing_cache) if timing_cache else ec.timing_cache_path(info, store)
    calib = None
    if precision == "int8":
        calib = _calibration_batches(bundle, calibration_inputs)
    target = "GPU" if dla_core is None else f"DLA core {dla_core} (GPU fallback on)"
    log.info("building a TensorRT %s %s engine for %s %s on %s, %s, batch %d (max %d); this takes a while",
             info.tensorrt_version, precision, bundle.manifest.name, bundle.manifest.version, info.device_name,
             target, batch, max_batch)
    started = time.monotonic()
    with primary_context(cuda, cuda_device(cuda, device)):
        plan = _build(trt, cuda, bundle, precision, batch, max_batch, workspace_mb, dla_core, timing,
                      calib, ec.calibration_cache_path(store, key))
    seconds = time.monotonic() - started
    log.info("built %s engine in %.1f s (%.1f MB)", precision, seconds, len(plan) / 1e6)

    parity, failures = engine_parity(bundle, plan, precision, dla_core, device)
    if failures:
        detail = f"{'; '.join(failures)} on {parity.n_inputs} golden inputs"
        if not force:
            raise ExportError(f"the {precision} TensorRT engine differs from the golden ONNX Runtime outputs: {detail}; "
                              "engine not recorded (try --precision fp32, or --force to use it anyway)")
        log.error("the %s engine FAILED parity and is recorded only because it was forced: %s", precision, detail)
    fields = dict(onnx_sha256=onnx_sha, tensorrt_version=info.tensorrt_version,
                  compute_capability=info.compute_capability, device_name=info.device_name, precision=precision,
                  dla_core=dla_core, max_batch=max_batch,
                  built_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  build_seconds=round(seconds, 3), parity=parity, forced=bool(failures))
    new_bundle, record = ec.record_engine(bundle, plan, fields)
    return BuildResult(new_bundle, record, ec.plan_path(new_bundle, record))


def _build(trt, cuda, bundle: Bundle, precision: str, batch: int, max_batch: int, workspace_mb: int,
           dla_core: int | None, timing_path: Path, calib_batches: list | None, calib_cache: Path) -> bytes:
    """The TensorRT part. Runs inside the pushed primary context; every TensorRT and pycuda object
    made here is released when this returns, before the context is."""
    logger = trt_logger(trt)
    builder = trt_object(trt, "Builder")
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode, no flag
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(bundle.model_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BundleError(f"TensorRT {trt.__version__} cannot parse {bundle.model_path} "
                          f"({len(errors)} error(s)): {' | '.join(errors) or 'no error reported'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    profile = builder.create_optimization_profile()
    items = {}  # input -> its golden item shape where more than the batch is dynamic; calibration uses it too
    for i in range(network.num_inputs):
        t = network.get_input(i)
        items[t.name] = _golden_item_shape(bundle, t.name, tuple(t.shape))
        # DLA has no dynamic shapes: its profile is fixed at the batch (min = opt = max).
        shapes = _profile_shapes(t.name, tuple(t.shape), batch, max_batch, static=dla_core is not None,
                                 item_shape=items[t.name])
        profile.set_shape(t.name, *shapes)
    config.add_optimization_profile(profile)

    if precision == "fp32":
        # TF32 is on by default on Ampere (Orin) and rounds matmul inputs to 10 mantissa bits:
        # "fp32" here means fp32, comparable with the reference at the fp32 tolerance.
        config.clear_flag(trt.BuilderFlag.TF32)
    else:
        config.set_flag(trt.BuilderFlag.FP16)  # int8 too: layers without INT8 kernels fall to fp16, not fp32
    calibrator = None
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        rows = len(next(iter(calib_batches[0].values())))
        calib_profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            t = network.get_input(i)
            fixed = _profile_shapes(t.name, tuple(t.shape), rows, rows, static=True, item_shape=items[t.name])
            _check_calibration_shape(t.name, calib_batches[0][t.name].shape, fixed[1])
            calib_profile.set_shape(t.name, *fixed)  # calibration runs at the profile's opt shape
        config.set_calibration_profile(calib_profile)
        calibrator = _make_calibrator(trt, cuda, calib_batches, calib_cache)  # after the checks: it holds GPU memory
        config.int8_calibrator = calibrator
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers DLA cannot run go to the GPU

    cache = _load_timing_cache(config, timing_path)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s was made by another TensorRT or GPU; starting a new one", timing_path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if plan is None:
        raise ExportError(f"TensorRT could not build a {precision} engine from {bundle.model_path}; "
                          "the tensorrt log lines above say why (often: workspace too small, or an unsupported layer)")
    try:
        ec.atomic_write(timing_path, bytes(config.get_timing_cache().serialize()))
    except OSError as e:
        log.warning("could not save the timing cache %s (the next build will be slower): %s", timing_path, e)
    return bytes(plan)


def _parser_error(err) -> str:
    """One parser error in full: description, node (index, name, operator) and error code."""
    node = f"node {err.node()}"
    name, op = getattr(err, "node_name", None), getattr(err, "node_operator", None)
    if name is not None and op is not None and (name() or op()):
        node += f" ({name()}: {op()})"
    desc = " ".join(str(err.desc()).split())  # one line: the CLI prints errors as one line
    return f"{desc} [{node}, code {err.code()}]"


def _profile_shapes(name: str, shape: tuple[int, ...], batch: int, max_batch: int,
                    static: bool = False, item_shape: tuple[int, ...] | None = None) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) for one input; dynamic axes other than the batch take ``item_shape``.

    An image model that takes whole frames of any size (height and width dynamic in the ONNX)
    is built for one frame size, that of the bundle's first golden group: a line's camera
    delivers one size, and TensorRT optimises best for it. Frames of another size are refused
    by the engine (the sorter then decides fail-safe); export with golden frames from the
    line's camera.
    """
    dynamic = [axis for axis, d in enumerate(shape) if d < 0]
    if any(axis != 0 for axis in dynamic):
        if item_shape is None or len(item_shape) != len(shape) - 1:
            raise BundleError(f"input {name!r} has shape {list(shape)}: only the batch axis (0) may be dynamic "
                              "for a TensorRT engine; export the model with fixed feature dimensions")
        if any(0 <= d != g for d, g in zip(shape[1:], item_shape)):
            raise BundleError(f"golden input shape {list(item_shape)} does not fit input {name!r} {list(shape)}")
        shape = (shape[0], *item_shape)
    if shape[0] >= 0:
        return shape, shape, shape
    rest = shape[1:]
    lo = batch if static else 1
    return (lo, *rest), (batch, *rest), (max_batch, *rest)


def _check_calibration_shape(name: str, given: tuple[int, ...], profile: tuple[int, ...]) -> None:
    """Calibration data must have the calibration profile's shape, i.e. the golden frame size."""
    if tuple(given) != tuple(profile):
        raise ConfigError(f"INT8 calibration inputs for {name!r} have shape {list(given)}, but the engine is built for "
                          f"{list(profile)} (the golden inputs' size); give calibration inputs of that size")


def _golden_item_shape(bundle: Bundle, name: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape of one golden input (without the batch), where more than the batch is dynamic."""
    if all(d >= 0 for d in shape[1:]):
        return None
    golden = bundle.golden()
    x = golden.get(f"input_{name}", golden.get("input"))
    return None if x is None else tuple(int(d) for d in x.shape[1:])


def _load_timing_cache(config, path: Path):
    """The persisted timing cache if it belongs to this TensorRT and GPU, else a fresh one."""
    if path.is_file():
        data = path.read_bytes()
        try:
            cache = config.create_timing_cache(data)
        except Exception as e:  # TensorRT raises untyped errors for a corrupt cache
            log.warning("timing cache %s is unreadable (%s); starting a new one", path, e)
        else:
            if cache is not None:
                log.info("using timing cache %s (%d kB)", path, len(data) // 1024)
                return cache
    return config.create_timing_cache(b"")


def _calibration_batches(bundle: Bundle, inputs: np.ndarray | None) -> list[dict[str, np.ndarray]]:
    """INT8 calibration data: the golden inputs the reference scores as normal, in equal batches."""
    m = bundle.manifest
    if len(m.model.inputs) != 1:
        raise ConfigError(f"INT8 calibration supports one-input models; {m.name} has {[i.name for i in m.model.inputs]}")
    name = m.model.inputs[0].name
    if inputs is None:
        golden = bundle.golden()
        ref = golden_reference(golden)
        if m.score.output not in ref:
            raise BundleError(f"bundle {bundle.path}: golden data has no reference {m.score.output!r} scores to "
                              "select normal inputs for INT8 calibration")
        normal = ~ScoreRule.from_score_info(m.score).is_anomalous(np.ravel(ref[m.score.output]))
        inputs = golden["input"][normal]
    x = np.ascontiguousarray(inputs, dtype=np.dtype(m.model.inputs[0].dtype))
    if len(x) == 0:
        raise ConfigError(f"INT8 calibration needs normal inputs, and bundle {bundle.path} has none below its threshold; "
                          "use --precision fp16")
    rows = min(len(x), CALIBRATION_BATCH)
    n = len(x) // rows  # TensorRT wants every batch at the calibration profile's shape: drop the remainder
    log.info("INT8 calibration on %d normal inputs (%d batch(es) of %d)", n * rows, n, rows)
    return [{name: x[i * rows:(i + 1) * rows]} for i in range(n)]


def _make_calibrator(trt, cuda, batches: list[dict[str, np.ndarray]], cache_path: Path):
    """An IInt8EntropyCalibrator2 over ``batches``, with its scales cached in ``cache_path``."""

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # the pybind trampoline must be initialised explicitly
            self._batches = iter(batches)
            self._device = {k: cuda.mem_alloc(v.nbytes) for k, v in batches[0].items()}

        def get_batch_size(self):
            return 1  # explicit batch: the batch is part of each tensor's shape

        def get_batch(self, names):
            batch = next(self._batches, None)
            if batch is None:
                return None
            for n in names:
                cuda.memcpy_htod(self._device[n], batch[n])
            return [int(self._device[n]) for n in names]

        def read_calibration_cache(self):
            if cache_path.is_file():
                log.info("INT8 scales from calibration cache %s", cache_path)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            ec.atomic_write(cache_path, bytes(cache))

        def free(self):
            for buf in self._device.values():
                buf.free()
            self._device = {}

    return _Calibrator()


def engine_parity(bundle: Bundle, plan: bytes | Path, precision: str, dla_core: int | None = None, device: int = 0):
    """Run the engine on the bundle's golden inputs; returns (EngineParity, failures)."""
    m = bundle.manifest
    golden = bundle.golden()
    if len(m.model.inputs) != 1:
        feeds = {i.name: golden[f"input_{i.name}"] for i in m.model.inputs}
    else:
        feeds = {m.model.inputs[0].name: golden["input"]}
    with TensorRTBackend(plan, m.model.inputs, m.model.outputs, device=device, dla_core=dla_core) as backend:
        actual = backend.run(feeds)
    reference = golden_reference(golden)
    if not reference:
        raise BundleError(f"bundle {bundle.path}: the golden set has no reference outputs (output_<name> arrays) "
                          "to check the engine against; re-export the bundle")
    parity, failures = compare_engine_outputs(reference, actual, precision, m.score)
    log.info("engine parity (%s): max abs diff %s, %d decision(s) changed on %d golden inputs", precision,
             {k: f"{v:.2e}" for k, v in parity.max_abs_diff.items()}, parity.decisions_changed, parity.n_inputs)
    return parity, failures


def compare_engine_outputs(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], precision: str,
                           score: ScoreInfo) -> tuple[EngineParity, list[str]]:
    """Engine outputs against the golden reference at the precision's tolerance; decisions by the manifest's rule.

    Returns the record stored with the engine and the failures (empty when it passes).
    """
    tol = tolerance(ec.check_precision(precision))
    result = compare_outputs(reference, actual, tol, ScoreRule.from_score_info(score), score.output)
    parity = EngineParity(n_inputs=result.n_inputs, tolerance=tol.rtol, atol=tol.atol,
                          max_abs_diff=result.max_abs_diff, decisions_changed=result.decisions_changed)
    return parity, list(result.failures)
