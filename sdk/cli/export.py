"""``factoryedge export``: a training run's checkpoint to a verified bundle."""
from __future__ import annotations

import argparse
from pathlib import Path

from factoryedge.errors import ExportError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run directory written by 'factoryedge train' (holds checkpoint.pt)")
    p.add_argument("--out", type=Path, help="bundle directory (default RUN/bundle)")
    p.add_argument("--name", help="bundle name (default: the run directory's name)")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--pack", action="store_true", help="also pack the bundle into one .febundle file")


def run(args: argparse.Namespace) -> int:
    import pickle

    import torch

    from factoryedge.bundle import pack_bundle
    from factoryedge.exporters.vibration_bundle import build_vibration_bundle

    checkpoint = args.run / "checkpoint.pt"
    if not checkpoint.is_file():
        raise ExportError(f"{args.run} has no checkpoint.pt; give a run directory written by 'factoryedge train'")
    try:
        # The checkpoint is this SDK's own training output (a pickled training result).
        trained = torch.load(checkpoint, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as e:
        raise ExportError(f"{checkpoint} cannot be read: {e}") from None
    out = args.out or args.run / "bundle"
    bundle = build_vibration_bundle(trained, out, name=args.name or args.run.name, version=args.version)
    parity = bundle.manifest.parity
    print(f"bundle: {bundle.path}; ONNX parity max abs diff {max(parity.max_abs_diff.values()):.2e}")
    if args.pack:
        print(f"packed: {pack_bundle(bundle.path)}")
    return 0
