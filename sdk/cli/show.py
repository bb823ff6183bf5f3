"""``factoryedge show``: verify a bundle and show what is in it.

Called ``inspect`` before, a name that read as the visual inspection of parts; ``factoryedge
inspect`` still works as a hidden, deprecated alias (see ``ALIASES`` in ``factoryedge.cli``).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory or .febundle file")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.add_argument("--trusted-key", type=Path, action="append", default=[], metavar="PUB",
                   help="refuse the bundle unless signed by this public key, as a device with model.trusted_keys "
                        "does (repeatable)")


def run(args: argparse.Namespace) -> int:
    from factoryedge.bundle import load_bundle
    from factoryedge.signing import describe_signature, load_public_keys

    trusted = load_public_keys(args.trusted_key)
    bundle = load_bundle(args.bundle, trusted_keys=trusted)
    m = bundle.manifest
    if args.json:
        print(m.model_dump_json(indent=2))
        return 0
    pre = m.preprocessing
    sc = m.score
    lines = [
        f"bundle      {bundle.path}",
        f"model       {m.name} {m.version} ({m.kind}, {m.model.architecture}, ONNX opset {m.model.opset})",
        "inputs      " + ", ".join(f"{t.name}{t.shape} {t.dtype}" for t in m.model.inputs),
        "outputs     " + ", ".join(f"{t.name}{t.shape} {t.dtype}" for t in m.model.outputs),
        *_describe_input(pre),
        f"score       {sc.definition}",
        f"threshold   {sc.threshold:.6g} {_describe_rule(sc)}",
    ]
    if m.parity:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in m.parity.max_abs_diff.items())
        lines.append(f"parity      {m.parity.runtime} vs {m.parity.reference}: max abs diff {diffs} "
                     f"(tolerance {m.parity.tolerance:g}, {m.parity.n_inputs} golden inputs, "
                     f"{m.parity.decisions_changed} decisions changed)")
    if m.baseline:
        lines.append(f"baseline    {m.baseline.architecture}, threshold {m.baseline.threshold:.4g}")
    p = m.provenance
    lines.append(f"trained     {p.created_utc} with {p.framework}, factoryedge {p.factoryedge_version}")
    for d in p.data:
        lines.append(f"  data      {d.split:<12} {d.label:<8} {d.n_samples:>8} samples  {d.source}")
    for r in p.recalibrations:
        lines.append(f"calibrated  {r.created_utc} on {r.n_images} good images in {r.source}: threshold "
                     f"{r.previous_threshold:.4g} -> {r.threshold:.4g}")
    lines.append(f"artefacts   {len(m.artefacts)} verified (sha256): {', '.join(m.artefacts)}")
    lines.append(f"signature   {describe_signature(bundle.path, trusted)}")
    print("\n".join(lines))
    return 0


def _describe_input(pre) -> list[str]:
    if pre.type == "image":
        # only the chosen resize's text is formatted: the others' fields are None (a dict would format them all)
        size = ("native size" if pre.resize == "none" else f"scaled x{pre.scale:g}" if pre.resize == "scale"
                else f"shorter side {pre.size} px" if pre.resize == "shorter" else f"resized to {pre.size}")
        tiles = f"tiles {pre.tile} px every {pre.tile_stride} px" if pre.tile else "whole image"
        return [f"image       {pre.colour} frames as {pre.model_colour}, {size} (multiple of {pre.multiple}), "
                f"intensity {pre.intensity}, margin {pre.margin} px, {tiles}"]
    return [f"signal      {pre.sample_rate:g} Hz, channels {list(pre.channels)}, window {pre.window}, hop {pre.hop} "
            f"({pre.window / pre.sample_rate * 1000:.1f} ms / {pre.hop / pre.sample_rate * 1000:.1f} ms)",
            f"features    {pre.type}"]


def _describe_rule(sc) -> str:
    from factoryedge.scoring import describe_false_reject

    cal = sc.calibration
    budget = describe_false_reject(sc)
    if budget is not None:
        return f"({budget}; median {cal.median:.4g}, max {cal.max:.4g})"
    if sc.rule is None:
        return (f"(operating point chosen on labelled data; {cal.n} held-out good parts: "
                f"median {cal.median:.4g}, max {cal.max:.4g})")
    return (f"(median + {sc.rule.margin:g} x (q{sc.rule.quantile:g} - median) of {cal.n} held-out normal "
            f"samples; median {cal.median:.4g}, max {cal.max:.4g})")
