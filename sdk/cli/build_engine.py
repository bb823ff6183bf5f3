"""``factoryedge build-engine``: build a TensorRT engine for this device from a bundle's ONNX model.

Run it on the device (a Jetson) that will use the engine: a plan only runs on the TensorRT
version and GPU that built it. The engine is checked against the bundle's golden outputs and
recorded in the bundle (or the engine cache when the bundle is read-only). Imports no torch.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _core(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a DLA core number (0 or 1)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"DLA core {value} must be 0 or more")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory or .febundle file")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16",
                   help="engine precision (default fp16; int8 is calibrated on the bundle's golden normal inputs)")
    p.add_argument("--batch", type=_positive, default=8, help="batch size TensorRT optimises for (default 8)")
    p.add_argument("--max-batch", type=_positive, default=64,
                   help="largest batch the engine accepts; larger ones are split (default 64)")
    p.add_argument("--workspace-mb", type=_positive, default=512,
                   help="TensorRT builder workspace limit in MB (default 512; Jetson memory is shared with the CPU)")
    p.add_argument("--dla-core", type=_core, default=None,
                   help="build for this DLA core with GPU fallback (AGX Orin / Orin NX: 0 or 1; Orin Nano has none)")
    p.add_argument("--force", action="store_true",
                   help="record the engine even if it fails the parity check against the golden outputs")
    p.add_argument("--timing-cache", type=Path, default=None,
                   help="TensorRT timing cache file to load and update (default: one per TensorRT version and GPU "
                        "beside the engines)")


def run(args: argparse.Namespace) -> int:
    from factoryedge.bundle import load_bundle
    from factoryedge.runtimes.backends.tensorrt_build import build_engine

    bundle = load_bundle(args.bundle)
    result = build_engine(bundle, precision=args.precision, batch=args.batch, max_batch=args.max_batch,
                          workspace_mb=args.workspace_mb, dla_core=args.dla_core, force=args.force,
                          timing_cache=args.timing_cache)
    r = result.record
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in r.parity.max_abs_diff.items())
    target = "GPU" if r.dla_core is None else f"DLA core {r.dla_core}"
    print(f"engine      {result.plan_path}")
    print(f"built       {r.precision} on {target} of {r.device_name} (compute capability {r.compute_capability}), "
          f"TensorRT {r.tensorrt_version}, max batch {r.max_batch}, {r.build_seconds:.1f} s")
    print(f"parity      max abs diff {diffs} on {r.parity.n_inputs} golden inputs "
          f"(rtol {r.parity.tolerance:g}, atol {r.parity.atol:g}), {r.parity.decisions_changed} decisions changed"
          + ("  [FORCED: parity failed]" if r.forced else ""))
    return 0
