"""The device path's scoring rate against its own parts (features + bare ONNX Runtime) on the same windows.

Run: ``python benchmarks/runtime_throughput.py [--bundle DIR] [--batch 8] [--json PATH]``.
Without ``--bundle`` it trains a small dense model on a simulated 3-axis 25.6 kHz sensor
first (about a minute). Timed in turn, round after round, on one recording (best round each):
  - bare ONNX Runtime: precomputed features, ``session.run`` in batches of the profile's size;
  - features: the shared feature extraction on the same windows, in the same batches;
  - the runtime: ``ConditionMonitor.process`` on raw sample blocks of batch x hop samples,
    the blocks a serial source hands over when it is busy (windowing, features, backend,
    debounce, counters; events through the MQTT sink to a local broker, of which normal
    running raises none).
``runtime_vs_features_plus_ort`` is (features + bare ORT time) / runtime time: 1.0 means the
runtime adds nothing of its own. Features and ORT run in one loop (each batch's features,
then its inference) are also timed: on one core each slows the other (caches), so the
runtime's own overhead is the ratio against that loop, given in the context. The rate with
one window per block (the smallest block a real-time stream gives) is printed beside it.
Prints rates and ratios; asserts nothing.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
from report import entry, write  # benchmarks/: this folder is on sys.path when run as a script
from timing import interleaved_best

from factoryedge.bundle import load_bundle
from factoryedge.features import make_preprocessor
from factoryedge.features.windowing import sliding_windows

RATE, AXES, SECONDS = 25_600.0, 3, 20.0


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
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", help="write the result here (benchmarks/report.py format)")
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

    def features_then_ort():  # the two in one loop, as the runtime runs them: each slows the other
        for i in range(0, n, args.batch):
            session.run(["score"], {name: pre(windows[i : i + args.batch])})

    from factoryedge.runtimes.devkit.local_broker import LocalBroker

    broker = LocalBroker().start()
    try:
        monitor = make_monitor(bundle, args.batch, broker, tmp)
        try:
            fns = {"bare": bare, "features": features, "both": features_then_ort,
                   "runtime": lambda: feed(monitor, signal, args.batch * spec.hop, spec.sample_rate),
                   "runtime_hop": lambda: feed(monitor, signal, spec.hop, spec.sample_rate)}
            best = interleaved_best(fns, args.rounds)
            scored = monitor.counters.windows
        finally:
            monitor.close()
    finally:
        broker.stop()
    assert_same = scored % n == 0  # every round scored every window (reported, not asserted)
    t_bare, t_feat, t_run, t_hop = best["bare"], best["features"], best["runtime"], best["runtime_hop"]
    t_both = best["both"]
    needed = spec.sample_rate / spec.hop
    print(f"bundle {bundle.manifest.name}: {len(spec.channels)} channel(s) at {spec.sample_rate:g} Hz, "
          f"window {spec.window}, hop {spec.hop}; {n} windows; batch {args.batch}; best of {args.rounds} rounds")
    print(f"{'path':<52}{'windows/s':>11}{'x real time':>13}")
    rows = (("bare ONNX Runtime (features precomputed)", t_bare), ("features", t_feat),
            ("features + bare ORT (sum of the two)", t_feat + t_bare),
            ("features then ORT in one loop", t_both),
            (f"runtime, blocks of {args.batch * spec.hop} samples ({args.batch} windows)", t_run),
            (f"runtime, blocks of {spec.hop} samples (1 window)", t_hop))
    for label, t in rows:
        print(f"{label:<52}{n / t:>11.0f}{n / t / needed:>13.1f}")
    ratio = (t_feat + t_bare) / t_run
    print(f"runtime / (features + bare ORT): {ratio:.3f}; with 1-window blocks {(t_feat + t_bare) / t_hop:.3f}"
          f"{'' if assert_same else ' (warning: a round did not score every window)'}")
    print(f"runtime / (features then ORT in one loop): {t_both / t_run:.3f} (what the runtime adds of its own)")
    print(f"(one sensor at this rate and hop needs {needed:.0f} windows/s; "
          "'x real time' is how many such sensors one process keeps up with)")
    write(args.json, {"runtime_vs_features_plus_ort": entry(
        n / t_run, "windows/s", f"features + bare ONNX Runtime on the same windows, batch {args.batch}",
        n / (t_feat + t_bare), ratio, goal=0.9, windows=n, batch=args.batch,
        block_samples=args.batch * spec.hop, bare_ort_windows_per_s=n / t_bare, features_windows_per_s=n / t_feat,
        runtime_one_window_blocks_per_s=n / t_hop, ratio_one_window_blocks=(t_feat + t_bare) / t_hop,
        features_then_ort_one_loop_windows_per_s=n / t_both, ratio_vs_features_then_ort_one_loop=t_both / t_run)})


def make_monitor(bundle, batch: int, broker, tmp: Path):
    from factoryedge.runtimes.monitoring.program import ConditionMonitor
    from factoryedge.runtimes.profile import DeviceProfile

    profile = DeviceProfile.model_validate({
        "identity": {"site": "b", "line": "b", "machine": "b", "device_id": "bench"},
        "sensor": {"uri": "replay://unused.npz"},
        "model": {"bundle": str(bundle.path), "batch": batch},
        "scoring": {"baseline": {"mode": "off"}},
        "mqtt": {"uri": broker.uri, "outbox": str(tmp / "outbox.sqlite"), "options": {"protocol": broker.protocol}},
    })
    return ConditionMonitor(profile, source=_NoSource())


def feed(monitor, signal: np.ndarray, block: int, fs: float) -> None:
    """The recording through ``process`` in blocks; the first block starts windowing afresh."""
    for i in range(0, len(signal), block):
        monitor.process(signal[i : i + block], t_last=(i + block - 1) / fs, gap=i == 0)


class _NoSource:
    """The benchmark feeds blocks itself."""

    sample_rate = None

    def close(self):
        pass


if __name__ == "__main__":
    main()
