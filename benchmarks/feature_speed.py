"""Vibration features against their FFT bound, and against the implementation they replaced.

    python benchmarks/feature_speed.py [--batch 256] [--workers 1]

One 3-axis 25.6 kHz spec (window 2048, hop 512, SKF 6205 defect lines), float32 windows of
simulated bearing vibration, all timed in the same run, best of 5 after a warm-up:
- the bound: the four real FFTs of 2048 points per channel and window that the features
  need (band energies, envelope band, analytic-signal inverse counted as two, envelope
  spectrum), float32 ``scipy.fft`` on the same windows, at its best of several batchings;
- ``FeatureExtractor`` as shipped;
- the reference extractor it replaced (float64 numpy, kept in tests/sdk/features).
The three are timed in turn, round after round, and each keeps its best round, so a busy
moment of the machine falls on all of them alike. It prints microseconds per window and the
ratios, writes ``features_vs_fft_bound`` with ``--json PATH``; it asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.fft as sfft
from report import entry, write  # benchmarks/: this folder is on sys.path when run as a script
from timing import interleaved_best

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(batch: int = 256, workers: int = 1, rounds: int = 15) -> dict:
    from factoryedge.data.simulator import simulate_bearing
    from factoryedge.features.vibration import SKF6205_ORDERS, FeatureExtractor, default_feature_spec
    from factoryedge.features.windowing import sliding_windows
    from tests.sdk.features.reference_vibration import ReferenceFeatureExtractor

    fs, rpm = 25600.0, 1797.0
    spec = default_feature_spec(fs, ("x", "y", "z"), shaft_hz=rpm / 60, defect_orders=SKF6205_ORDERS)
    rec = simulate_bearing(8.0, sample_rate=fs, rpm=rpm, fault="outer_race", fault_onset_s=4.0, seed=3)
    signal = np.repeat(rec.signal, 3, axis=1) * np.array([1.0, 0.8, 0.6], dtype=np.float32)
    windows = np.ascontiguousarray(sliding_windows(signal, spec.window, spec.hop)[:batch], dtype=np.float32)
    n = len(windows)
    extractor = FeatureExtractor(spec, workers=workers)
    reference = ReferenceFeatureExtractor(spec)
    block = np.ascontiguousarray(windows.transpose(0, 2, 1))

    def fft_bound(chunk: int):
        for i in range(0, n, chunk):
            part = block[i : i + chunk]
            for _ in range(4):
                sfft.rfft(part, axis=-1, workers=workers)

    # the bound at its own best batching, so the ratio is not flattered by a slow bound
    fns = {f"bound{c}": (lambda c=c: fft_bound(c)) for c in (8, 16, 32, 64, n)}
    fns["new"] = lambda: extractor(windows)
    fns["ref"] = lambda: reference(windows)
    best = interleaved_best(fns, rounds)
    t_bound = min(v for k, v in best.items() if k.startswith("bound"))
    t_new, t_ref = best["new"], best["ref"]
    return {"windows": n, "features": extractor.n_features,
            "us_bound": t_bound / n * 1e6, "us_features": t_new / n * 1e6, "us_reference": t_ref / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", help="write the result here (benchmarks/report.py format)")
    args = ap.parse_args()
    r = measure(args.batch, args.workers, args.rounds)
    print(f"3-axis 25.6 kHz, window 2048, {r['features']} features, batch {r['windows']}, "
          f"scipy.fft workers {args.workers}")
    print(f"{'path':<40}{'us/window':>11}{'x bound':>9}")
    for label, key in (("FFT bound (4 real FFTs, float32)", "us_bound"), ("FeatureExtractor", "us_features"),
                       ("reference extractor (before)", "us_reference")):
        print(f"{label:<40}{r[key]:>11.1f}{r['us_bound'] / r[key]:>9.3f}")
    print(f"speed-up over the reference: {r['us_reference'] / r['us_features']:.2f}x")
    write(args.json, {"features_vs_fft_bound": entry(
        r["us_features"], "us/window", "the 4 real float32 FFTs per channel the features need (scipy.fft)",
        r["us_bound"], r["us_bound"] / r["us_features"], goal=0.5, windows=r["windows"],
        features=r["features"], workers=args.workers, us_reference_extractor=r["us_reference"],
        spec="3-axis 25.6 kHz, window 2048, SKF 6205 defect lines")})


if __name__ == "__main__":
    main()
