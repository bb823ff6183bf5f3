"""The device path's scoring rate against a bare ONNX Runtime loop on the same windows.

Run: ``python benchmarks/runtime_throughput.py [--bundle DIR]``. Without ``--bundle`` it
trains a small dense model on a simulated 3-axis 25.6 kHz sensor first (about a minute).
Measured side by side in one run, on the same windows:
  - bare ONNX Runtime: precomputed features, ``session.run`` in batches of the profile's size;
  - features only: the shared numpy feature extraction;
  - the runtime: ``ConditionMonitor.process`` on raw sample blocks (windowing, features,
    backend, scorer), publishing to a local broker.
Prints rates and ratios; asserts nothing.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import best_of  # benchmarks/timing.py: this folder is on sys.path when run as a script

from factoryedge.bundle import load_bundle
from factoryedge.features import make_preprocessor
from factoryedge.features.windowing import sliding_windows

RATE, AXES, SECONDS, BLOCK = 25_600.0, 3, 20.0, 512


def train_bundle(out: Path):
    from factoryedge.data.simulator import simulate_bearing
    from factoryedge.exporters.vibration_bundle import build_vibration_bundle
    from factoryedge.features.vibration import default_feature_spec
    from factoryedge.training.trainer import FitConfig
    from factoryedge.training.vibration import VibrationTrainConfig, train_vibration

    rec = simulate_bearing(30.0, sample_rate=RATE, n_channels=AXES, seed=1)
    spec = default_feature_spec(RATE, rec.channels)
    trained = train_vibration([rec], spec, VibrationTrainConfig(fit=FitConfig(epochs=30)), out)
    return build_vibration_bundle(trained, out / "bundle", name="bench-3axis")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="fe-bench-"))
    bundle = load_bundle(args.bundle) if args.bundle else train_bundle(tmp)
    spec = bundle.manifest.preprocessing
    from factoryedge.data.simulator import simulate_bearing
    from factoryedge.runtimes.backends.onnxruntime import OnnxRuntimeBackend

    signal = simulate_bearing(SECONDS, sample_rate=spec.sample_rate, n_channels=len(spec.channels), seed=2).signal
    signal = signal.astype(np.float32)
    windows = np.ascontiguousarray(sliding_windows(signal, spec.window, spec.hop))
    n = len(windows)
    pre = make_preprocessor(spec)
    feats = pre(windows)
    backend = OnnxRuntimeBackend(bundle.model_path, bundle.manifest.model.inputs, bundle.manifest.model.outputs)
    session, name = backend.session, bundle.manifest.model.inputs[0].name

    def bare():
        for i in range(0, n, args.batch):
            session.run(["score"], {name: feats[i : i + args.batch]})

    def features():
        for i in range(0, n, args.batch):
            pre(windows[i : i + args.batch])

    t_bare, t_feat = best_of(bare), best_of(features)
    t_runtime = runtime_time(bundle, signal, args.batch, tmp)
    needed = spec.sample_rate / spec.hop
    print(f"bundle {bundle.manifest.name}: {len(spec.channels)} channel(s) at {spec.sample_rate:g} Hz, "
          f"window {spec.window}, hop {spec.hop}; {n} windows; batch {args.batch}")
    print(f"{'path':<44}{'windows/s':>12}{'x bare ORT':>12}{'x real time':>13}")
    for label, t in (("bare ONNX Runtime loop (features precomputed)", t_bare),
                     ("feature extraction only", t_feat),
                     ("runtime: window+features+ORT+scorer+MQTT", t_runtime)):
        rate = n / t
        print(f"{label:<44}{rate:>12.0f}{t_bare / t:>12.3f}{rate / needed:>13.1f}")
    print(f"(one sensor at this rate and hop needs {needed:.0f} windows/s; "
          "'x real time' is how many such sensors one process keeps up with)")


def runtime_time(bundle, signal: np.ndarray, batch: int, tmp: Path) -> float:
    """Best of 3: ConditionMonitor.process over the recording in BLOCK-sample blocks."""
    from factoryedge.runtimes.devkit.local_broker import LocalBroker
    from factoryedge.runtimes.monitoring.program import ConditionMonitor
    from factoryedge.runtimes.profile import DeviceProfile
    from factoryedge.runtimes.registry import open_sink

    broker = LocalBroker().start()
    try:
        profile = DeviceProfile.model_validate({
            "identity": {"site": "b", "line": "b", "machine": "b", "device_id": "bench"},
            "sensor": {"uri": "replay://unused.npz"},
            "model": {"bundle": str(bundle.path), "batch": batch},
            "scoring": {"baseline": {"mode": "off"}},
            "mqtt": {"uri": broker.uri, "outbox": str(tmp / "outbox.sqlite"), "options": {"protocol": broker.protocol}},
        })
        best = float("inf")
        for _ in range(3):
            sink = open_sink(broker.uri, site="b", line="b", machine="b", device_id="bench",
                             outbox=str(tmp / "outbox.sqlite"), protocol=broker.protocol)
            monitor = ConditionMonitor(profile, source=_NoSource(), sink=sink)
            t = time.perf_counter()
            for i in range(0, len(signal), BLOCK):
                block = signal[i : i + BLOCK]
                monitor.process(block, t_last=i / bundle.manifest.preprocessing.sample_rate)
            best = min(best, time.perf_counter() - t)
            sink.close(5)
        return best
    finally:
        broker.stop()


class _NoSource:
    """The benchmark feeds blocks itself."""

    sample_rate = None

    def close(self):
        pass


if __name__ == "__main__":
    main()
