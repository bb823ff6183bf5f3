"""Where TensorRT engines live and which one fits this device.

A TensorRT plan only runs on the TensorRT version and GPU (compute capability) that built it,
so an engine is cached per (ONNX sha256, TensorRT version, compute capability, precision,
DLA core), and that key is its file name: ``engines/<key>.plan``. A cached engine that does
not match the device is rebuilt, never loaded. Engines are stored in the bundle (and recorded
in its manifest) when the bundle directory is writable and unsigned, else under
``$FACTORYEDGE_CACHE/engines/`` (default ``~/.cache/factoryedge/engines``) with the record
beside the plan as ``<key>.json``. Pure Python: nothing here imports TensorRT or CUDA. How
close an engine must stay to the golden outputs is ``factoryedge.parity``'s business.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from factoryedge.bundle import MANIFEST, Bundle, format_validation_error, sha256_file
from factoryedge.errors import BundleError, ConfigError
from factoryedge.manifest import EngineRecord, Manifest
from factoryedge.parity import ENGINE_PRECISIONS
from factoryedge.signing import SIGNATURE_FILE

log = logging.getLogger(__name__)

PRECISIONS = ENGINE_PRECISIONS  # each has its tolerance in factoryedge.parity.TOLERANCES
ENGINES = "engines"


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine must match: the TensorRT build and the GPU it runs on."""

    tensorrt_version: str
    compute_capability: str
    device_name: str
    integrated: bool = False
    dla_cores: int | None = None  # None: not probed (needs a TensorRT builder)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def engine_key(onnx_sha256: str, tensorrt_version: str, compute_capability: str, precision: str,
               dla_core: int | None) -> str:
    """The cache key, readable in a directory listing: ``<onnx sha[:16]>_trt<v>_sm<cc>_<precision>_<gpu|dlaN>``."""
    if not re.fullmatch(r"[0-9a-f]{64}", onnx_sha256):
        raise BundleError(f"ONNX sha256 {onnx_sha256!r} is not 64 lowercase hex digits")
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", tensorrt_version):
        raise ConfigError(f"TensorRT version {tensorrt_version!r} must look like '10.3.0.30'")
    if not re.fullmatch(r"[0-9]+\.[0-9]+", compute_capability):
        raise ConfigError(f"compute capability {compute_capability!r} must look like '8.7'")
    check_precision(precision)
    if dla_core is not None and (not isinstance(dla_core, int) or dla_core < 0):
        raise ConfigError(f"DLA core {dla_core!r} must be a core number (0, 1, ...) or None for the GPU")
    target = "gpu" if dla_core is None else f"dla{dla_core}"
    return f"{onnx_sha256[:16]}_trt{tensorrt_version}_sm{compute_capability.replace('.', '')}_{precision}_{target}"


def engine_file(key: str) -> str:
    return f"{ENGINES}/{key}.plan"


def onnx_sha256(bundle: Bundle) -> str:
    """The sha256 of the bundle's ONNX model, as its manifest records it."""
    try:
        return bundle.manifest.artefacts[bundle.manifest.model.file]
    except KeyError:
        raise BundleError(f"bundle {bundle.path} has no sha256 for {bundle.manifest.model.file}") from None


def cache_root() -> Path:
    return Path(os.environ.get("FACTORYEDGE_CACHE", Path.home() / ".cache" / "factoryedge"))


def _writable(directory: Path) -> bool:
    """True when files can be created in ``directory`` (tried, not guessed from mode bits)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".fe-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def engine_store(bundle: Bundle) -> Path:
    """The root that new engines go under: the bundle when writable, else the user's cache.

    A signed bundle counts as read-only: recording an engine rewrites ``manifest.json``, which
    would break its signature and make the next start refuse the bundle.
    """
    signed = (bundle.path / SIGNATURE_FILE).exists()
    if not signed and _writable(bundle.path):
        engines = bundle.path / ENGINES
        engines.mkdir(exist_ok=True)
        if _writable(engines):
            return bundle.path
    root = cache_root()
    try:
        (root / ENGINES).mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if not _writable(root / ENGINES):
        raise BundleError(f"nowhere to store TensorRT engines: bundle {bundle.path} is read-only and the cache "
                          f"{root / ENGINES} is not writable; set FACTORYEDGE_CACHE to a writable directory "
                          "(e.g. /var/lib/factoryedge/cache under the systemd unit)")
    log.info("bundle %s is %s; engines are cached under %s", bundle.path,
             "signed (its manifest stays as signed)" if signed else "read-only", root / ENGINES)
    return root


def plan_path(bundle: Bundle, record: EngineRecord) -> Path:
    """Where the record's plan file is: in the bundle if present there, else in the cache."""
    in_bundle = bundle.path / record.file
    return in_bundle if in_bundle.is_file() else cache_root() / record.file


def _cached_records(onnx_sha: str) -> list[EngineRecord]:
    records = []
    for side in sorted((cache_root() / ENGINES).glob(f"{onnx_sha[:16]}_*.json")):
        try:
            records.append(EngineRecord.model_validate_json(side.read_text(encoding="utf-8")))
        except (OSError, ValidationError, ValueError) as e:
            log.warning("ignoring unreadable engine record %s: %s", side, e)
    return records


def describe_engine(r: EngineRecord) -> str:
    target = "GPU" if r.dla_core is None else f"DLA core {r.dla_core}"
    return f"{r.file} ({r.precision} on {target}, TensorRT {r.tensorrt_version}, compute capability {r.compute_capability})"


def find_engine(bundle: Bundle, device: DeviceInfo, precision: str, dla_core: int | None = None) -> EngineRecord | None:
    """The verified engine for this bundle, device, precision and DLA core, or None.

    None means "build one", and the reason is logged: no engine yet, one built by another
    TensorRT version or GPU, a missing plan file, or a plan whose sha256 no longer matches
    its record (tampered or half-copied). A forced engine (parity failed) is returned with a
    warning.
    """
    check_precision(precision)
    sha = onnx_sha256(bundle)
    same_model = [r for r in list(bundle.manifest.engines) + _cached_records(sha)
                  if r.onnx_sha256 == sha and r.precision == precision and r.dla_core == dla_core]
    if not same_model:
        log.debug("no %s TensorRT engine for %s %s yet", precision, bundle.manifest.name, bundle.manifest.version)
        return None
    reasons, damaged = [], False
    for r in same_model:
        if r.tensorrt_version != device.tensorrt_version:
            reasons.append(f"{r.file} was built by TensorRT {r.tensorrt_version}, this device has {device.tensorrt_version}")
        elif r.compute_capability != device.compute_capability:
            reasons.append(f"{r.file} was built for compute capability {r.compute_capability} ({r.device_name}), "
                           f"this GPU is {device.compute_capability} ({device.device_name})")
        else:
            path = plan_path(bundle, r)
            if not path.is_file():
                reasons.append(f"{r.file} is recorded but missing")
                damaged = True
            elif sha256_file(path) != r.sha256:
                reasons.append(f"{path} has been modified or corrupted (sha256 differs from its record)")
                damaged = True
            else:
                if r.forced:
                    log.warning("using engine %s although it failed parity (built with --force)", describe_engine(r))
                return r
    log.log(logging.WARNING if damaged else logging.INFO,
            "not using cached %s engine(s), a new one must be built: %s", precision, "; ".join(reasons))
    return None


def timing_cache_path(device: DeviceInfo, store: Path | None = None) -> Path:
    """The builder's timing cache for this TensorRT version and GPU, shared by every model.

    In the engine cache when writable (so all bundles share it), else beside ``store``'s engines.
    """
    name = f"timing_trt{device.tensorrt_version}_sm{device.compute_capability.replace('.', '')}.cache"
    shared = cache_root() / ENGINES
    try:
        shared.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if _writable(shared) or store is None:
        return shared / name
    return store / ENGINES / name


def calibration_cache_path(store: Path, key: str) -> Path:
    return store / ENGINES / f"{key}.calib"


@contextlib.contextmanager
def _locked(directory: Path):
    """Serialise engine writers (a service and a CLI) so a plan and its record stay in step."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over ``path``.

    A device can lose power at any moment; readers see the old file or the new one, never half.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def record_engine(bundle: Bundle, plan: bytes, fields: dict) -> tuple[Bundle, EngineRecord]:
    """Store a plan and its record; returns the (possibly updated) bundle and the record.

    ``fields`` are the EngineRecord fields other than ``file`` and ``sha256``. In a writable
    bundle the manifest is rewritten atomically with the record and the plan's sha256 in
    ``artefacts`` (so ``load_bundle`` verifies it); a record for the same file is replaced.
    Otherwise plan and record go to the engine cache.
    """
    key = engine_key(fields["onnx_sha256"], fields["tensorrt_version"], fields["compute_capability"],
                     fields["precision"], fields.get("dla_core"))
    rel = engine_file(key)
    store = engine_store(bundle)
    with _locked(store / ENGINES):
        atomic_write(store / rel, plan)
        try:
            record = EngineRecord(file=rel, sha256=sha256_file(store / rel), **fields)
        except ValidationError as e:
            raise BundleError(f"engine record for {rel} is invalid: {format_validation_error(e)}") from None
        if store != bundle.path:
            atomic_write(store / ENGINES / f"{key}.json", (record.model_dump_json(indent=2) + "\n").encode())
            log.info("recorded engine %s in the cache %s", describe_engine(record), store / ENGINES)
            return bundle, record
        manifest = _reread_manifest(bundle)
        engines = [r for r in manifest.engines if r.file != rel] + [record]
        artefacts = dict(sorted({**manifest.artefacts, rel: record.sha256}.items()))
        updated = manifest.model_copy(update={"engines": engines, "artefacts": artefacts})
        atomic_write(bundle.path / MANIFEST, (updated.model_dump_json(indent=2) + "\n").encode())
    log.info("recorded engine %s in %s", describe_engine(record), bundle.path / MANIFEST)
    return Bundle(bundle.path, updated), record


def _reread_manifest(bundle: Bundle) -> Manifest:
    """The manifest as it is on disk now, so a concurrent writer's record is not lost."""
    path = bundle.path / MANIFEST
    try:
        return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as e:
        raise BundleError(f"cannot re-read {path} to record an engine: {e}") from None
