"""A real trained bundle for runtime tests: simulated SKF 6205 bearing, 12 kHz, one axis."""
from __future__ import annotations

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
