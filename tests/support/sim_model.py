"""A real trained bundle for runtime tests: simulated SKF 6205 bearing, 12 kHz, one axis."""
from __future__ import annotations

import hashlib
import os
import shutil
from importlib import metadata
from pathlib import Path

SAMPLE_RATE = 12000.0
RPM = 1797.0


def train_sim_bundle(out: Path):
    from factoryedge.data.simulator import simulate_bearing
    from factoryedge.exporters.vibration_bundle import build_vibration_bundle
    from factoryedge.features.vibration import SKF6205_ORDERS, default_feature_spec
    from factoryedge.training.trainer import FitConfig
    from factoryedge.training.vibration import VibrationTrainConfig, train_vibration

    normal = simulate_bearing(30.0, sample_rate=SAMPLE_RATE, rpm=RPM, seed=101)
    spec = default_feature_spec(SAMPLE_RATE, normal.channels, shaft_hz=RPM / 60, defect_orders=SKF6205_ORDERS)
    trained = train_vibration([normal], spec, VibrationTrainConfig(fit=FitConfig(epochs=60, patience=20)), out)
    return build_vibration_bundle(trained, out / "bundle", name="sim-bearing")


_ROOT = Path(__file__).resolve().parents[2]
_VERSIONED = ("torch", "onnx", "onnxruntime", "numpy", "scipy")


def _training_key() -> str:
    """A hash of everything the trained bundle depends on: the sdk and exporter sources, this file, library versions."""
    h = hashlib.sha256()
    for folder in ("sdk", "exporters"):
        for path in sorted((_ROOT / folder).rglob("*.py")):
            h.update(str(path.relative_to(_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(Path(__file__).read_bytes())
    for name in _VERSIONED:
        try:
            h.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{name}=-".encode())
    return h.hexdigest()[:24]


def cached_sim_bundle(cache: Path, out: Path):
    """``train_sim_bundle``'s bundle, trained once per state of the code and kept in ``cache``.

    Training takes a minute or more on a busy 2-core machine, in every test session that
    needs the bundle. The cached copy is keyed by the sources and library versions it was
    made with; each session gets its own copy in ``out`` (a test may edit its bundle).
    """
    from factoryedge.bundle import load_bundle

    kept = cache / f"sim-bundle-{_training_key()}"
    if not (kept / "manifest.json").is_file():
        building = cache / f"building-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        bundle = train_sim_bundle(building)
        staged = cache / f"staged-{os.getpid()}"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(bundle.path, staged)
        shutil.rmtree(building, ignore_errors=True)
        try:
            os.rename(staged, kept)  # atomic; another session may have got there first
        except OSError:
            shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(kept, out / "bundle")
    return load_bundle(out / "bundle")
