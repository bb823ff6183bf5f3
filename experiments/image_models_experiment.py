"""f-AnoGAN, a convolutional autoencoder and PatchCore on the magnetic-tile set, side by side.

Run from the repository root: ``python -m experiments.image_models_experiment --out DIR [--data FOLDER]``
(15 to 20 minutes on one CPU thread). All three train on train/good only and are scored on
test/ (132 defective vs 40 good images). Writes ``DIR/results.json``, ``DIR/results.md``,
the learning curves per model (``DIR/<model>/learning_curve.csv`` / ``.png``; PatchCore has
no training curve, it fits no weights), and per scored variant ``metrics.json`` and
``model.onnx`` (``DIR/<model>/<reduction>/``, ``DIR/patchcore/``).

Each reconstruction model is trained once and scored with both tile-score reductions
(``score_reduction``): ``mean``, the mean squared residual over the tile (the f-AnoGAN
paper's image term), and ``peak``, the largest mean over a 4 x 4 window inside the tile
(the default, chosen a priori: 4 px at half scale is ~8 native px, a small blowhole). The
reduction only changes the scoring head, so both variants share the same networks; each
gets its own threshold, calibrated on the same held-out good images through its own module.
The heatmap is the per-pixel residual either way, so pixel AUROC is the same for both.

Input of the two reconstruction models, chosen before looking at test results:

- Half resolution (``resize="scale"``, 0.5, box filter), grey levels standardised per image
  (mean 110, std 32, as PatchCore: the set holds each part at several exposures), then
  32 x 32 tiles every 16 px (half overlap). A 32 px tile at half scale sees 64 native px,
  enough context for the grinding texture and for the large "uneven" and "fray" regions.
  Blowholes cover 26-427 native pixels (median 114, about 12 px across): 3-10 px across at
  half scale, so they survive; cracks keep 1-2 px wide lines. Native scale would quadruple
  the tiles (and the GAN's cost) for no more context; a quarter scale erases the smallest
  pores.
- Normalisation (level - 110) / 96 per channel: the standardised tile has std 1/3, so
  nearly all good pixels lie inside the generator's tanh range [-1, 1].
- Image score on the device and here: the maximum tile score; heatmaps are stitched
  (overlaps take the maximum). Training tiles are random crops with flips from 200 of the
  250 good images; the other 50 give validation curves and calibrate the threshold.

The CPU budget caps the WGAN-GP at 6 minutes (a few hundred generator iterations, with
n_critic 5): far from the tens of thousands of the paper, so the generator models the
texture only coarsely. The numbers are reported as they come; nothing was tuned on test/.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from experiments.patchcore_experiment import operating_points
from factoryedge.data.images import load_inspection_set, magnetic_tile_root, read_gray, read_mask
from factoryedge.errors import FactoryEdgeError
from factoryedge.evaluation.image_metrics import image_report, pixel_auroc
from factoryedge.exporters.image_bundle import export_image_onnx
from factoryedge.features.image import ImagePreprocessor, stitch
from factoryedge.training.conv_autoencoder import AutoencoderConfig, fit_conv_autoencoder
from factoryedge.training.fanogan import FAnoGANConfig, fit_fanogan
from factoryedge.training.image_common import TrainedImageModel
from factoryedge.training.image_fit import SCORE_REDUCTIONS, score_tiled, with_score_reduction
from factoryedge.training.image_models import TILED_SPEC

log = logging.getLogger(__name__)

SPEC = TILED_SPEC
FANOGAN = FAnoGANConfig(
    tile=32, width=32, latent_dim=64, batch_size=64, gan_iterations=1500, n_critic=5, gan_lr=2e-4, gan_seconds=360,
    encoder_iterations=2000, encoder_lr=5e-4, encoder_seconds=150, kappa=1.0, eval_every=50, val_tiles=1000,
)
AUTOENCODER = AutoencoderConfig(tile=32, width=32, latent_dim=64, train_tiles=20_000, val_tiles=2_000, epochs=8, patience=3)
RECONSTRUCTION = ("fanogan", "conv_autoencoder")
MODELS = tuple(f"{m}/{r}" for m in RECONSTRUCTION for r in SCORE_REDUCTIONS) + ("patchcore",)


def evaluate(trained: TrainedImageModel, test: list[np.ndarray], types: list[str], masks: list) -> dict:
    """Image report (with the calibrated threshold), operating points and pixel AUROC on test/."""
    t0 = time.perf_counter()
    scores, heats, layouts = score_tiled(trained.module, trained.spec, test)
    report = image_report(scores, types, trained.threshold)
    report["operating_points"] = operating_points(trained.calibration_scores, scores, types)
    full = [stitch(h, lay) for h, lay in zip(heats, layouts)]
    return {"image": report, "pixel": pixel_auroc(full, masks, types, stride=2), "scores": scores.tolist(),
            "seconds_score_test": round(time.perf_counter() - t0, 1)}


def export_and_check(trained: TrainedImageModel, test: list[np.ndarray], path: Path) -> dict:
    """ONNX export (dynamic batch of tiles) and ONNX Runtime parity on two test images' tiles."""
    pre = ImagePreprocessor(trained.spec)
    golden = np.concatenate([pre(test[0]), pre(test[-1])])[:64]
    ((record, _),) = export_image_onnx(trained.module, trained.spec, [golden], path, trained.threshold)
    return record.model_dump()


def run_reconstruction(name: str, trained: TrainedImageModel, data, test, types, masks, out: Path, seconds_fit: float) -> dict:
    """Evaluate and export one scored variant into ``out/<name>/<reduction>/``."""
    reduction = trained.parameters["score_reduction"]
    folder = out / name / reduction
    folder.mkdir(parents=True, exist_ok=True)
    result = {
        "architecture": trained.architecture,
        "score_reduction": reduction,
        "score_definition": trained.score_definition,
        "preprocessing": trained.spec.model_dump(),
        "parameters": trained.parameters,
        "training": trained.info,
        "threshold": trained.threshold,
        "calibration": trained.calibration.model_dump(),
        **evaluate(trained, test, types, masks),
        "parity": export_and_check(trained, test, folder / "model.onnx"),
        "history": trained.history,
        "seconds_fit": round(seconds_fit, 1),
    }
    result["scores"] = {str(s.path.relative_to(data.root)): v for s, v in zip(data.test, result["scores"])}
    (folder / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def run(out: Path, root: Path | None = None, seed: int = 0, with_patchcore: bool = True) -> dict:
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    data = load_inspection_set(magnetic_tile_root(root), require_masks=True)
    train = [read_gray(s.path) for s in data.train]
    test = [read_gray(s.path) for s in data.test]
    types = [s.defect_type for s in data.test]
    masks = [read_mask(s.mask_path) if s.mask_path else None for s in data.test]
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for name, fit_fn, cfg in (("conv_autoencoder", fit_conv_autoencoder, AUTOENCODER), ("fanogan", fit_fanogan, FANOGAN)):
        t = time.perf_counter()
        trained = fit_fn(train, SPEC, replace(cfg, seed=seed))
        seconds_fit = time.perf_counter() - t
        (out / name).mkdir(parents=True, exist_ok=True)
        for fname, blob in trained.curves.items():
            (out / name / fname).write_bytes(blob)
        for reduction in SCORE_REDUCTIONS:
            # Same networks, another scoring head, recalibrated on the fit's held-out good images.
            variant = trained if reduction == cfg.score_reduction else with_score_reduction(trained, train, reduction)
            results[f"{name}/{reduction}"] = run_reconstruction(name, variant, data, test, types, masks, out, seconds_fit)
        log.info("%s done in %.0f s", name, time.perf_counter() - t)
    if with_patchcore:
        from experiments import patchcore_experiment
        from factoryedge.training.patchcore import PatchCoreConfig

        t = time.perf_counter()
        pc = patchcore_experiment.run(out / "patchcore", root, PatchCoreConfig(seed=seed))
        pc["seconds_fit"] = pc["seconds"]["fit"]
        results["patchcore"] = pc
        log.info("patchcore done in %.0f s", time.perf_counter() - t)
    summary = {
        "data": str(data.root),
        "counts": data.counts(),
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "models": {k: _summary(v) for k, v in results.items()},
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    table = format_markdown(summary)
    (out / "results.md").write_text(table + "\n")
    print(table)
    return summary


def _summary(r: dict) -> dict:
    parities = r["parity"] if isinstance(r["parity"], list) else [r["parity"]]  # PatchCore checks several sizes
    return {
        "architecture": r["architecture"],
        "score_definition": r.get("score_definition"),
        "threshold": r["threshold"],
        "image": r["image"],
        "pixel": r["pixel"],
        "parity_max_abs_diff": [max(p["max_abs_diff"].values()) for p in parities],
        "seconds_fit": r["seconds_fit"],
    }


def _metric_table(s: dict, models: list[str], title: str, cell) -> list[str]:
    """Rows: overall and each defect type; columns: the scored variants; ``cell(model, type)`` a number."""
    first = s["models"][models[0]]["image"]
    lines = [title, "", "| defect type | n | " + " | ".join(models) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in models) + " |"]
    for t in ["overall"] + list(first["per_type"]):
        n = first["overall"] if t == "overall" else first["per_type"][t]
        lines.append(f"| {t} | {n['n_defective']} | " + " | ".join(f"{cell(m, t):.3f}" for m in models) + " |")
    return lines + [""]


def format_markdown(s: dict) -> str:
    models = [m for m in MODELS if m in s["models"]]
    first = s["models"][models[0]]["image"]
    n_def, n_good = first["overall"]["n_defective"], first["overall"]["n_good"]

    def img(key):
        def cell(m, t):
            image = s["models"][m]["image"]
            return (image["overall"] if t == "overall" else image["per_type"][t])[key]
        return cell

    def pix(m, t):
        px = s["models"][m]["pixel"]
        return px["overall"] if t == "overall" else px["per_type"][t]

    lines = [
        f"Test set: {n_def} defective vs {n_good} good images (defects over-represented vs a real line); "
        f"trained on train/good only (seed {s['seed']}, {s['torch_threads']} torch thread(s), "
        f"{s['seconds_total']:.0f} s in all). "
        "`/mean`: tile score = mean squared residual over the tile; `/peak`: largest 4 x 4 window mean inside "
        "the tile (same trained networks, own threshold).",
        "",
    ]
    lines += _metric_table(s, models, "Image AUROC:", img("auroc"))
    lines += _metric_table(s, models, "Average precision:", img("average_precision"))
    lines += _metric_table(s, models, "F1 at the calibrated threshold:", img("f1"))
    lines += _metric_table(s, models, "Pixel AUROC (the heatmap does not depend on the reduction):", pix)
    lines += ["| model | threshold | good parts rejected | recall at threshold | fit seconds | ONNX parity max abs diff |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    for m in models:
        v = s["models"][m]
        par = ", ".join(f"{d:.1e}" for d in v["parity_max_abs_diff"])
        lines.append(f"| {m} | {v['threshold']:.4g} | {v['image']['false_reject_rate']:.1%} | "
                     f"{v['image']['overall']['recall']:.3f} | {v['seconds_fit']:.0f} | {par} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for results, ONNX models and learning curves")
    parser.add_argument("--data", type=Path, default=None, help="the magnetic-tile folder (default: shared data)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, tile draws and initialisation")
    parser.add_argument("--skip-patchcore", action="store_true", help="train only f-AnoGAN and the autoencoder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    try:
        run(args.out, args.data, args.seed, not args.skip_patchcore)
    except FactoryEdgeError as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
