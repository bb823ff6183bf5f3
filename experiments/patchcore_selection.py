"""Choosing PatchCore's settings without the test split, and measuring each choice's device cost.

Run from the repository root: ``python -m experiments.patchcore_selection --out DIR [--data FOLDER]``.

Protocol. The magnetic-tile set has defective images only in its test split, so a choice
that needs defects is made by cross-validation over the labelled images, nested: the test
images are split into ``--folds`` folds stratified by type (seeded); for each fold, every
candidate is ranked by its AUROC on the *other* folds and the winner is scored on this
fold. The per-fold AUROCs of the winners estimate what the selection procedure achieves on
images it never saw. What ships is the candidate ranked best on every fold taken together,
which the nested estimate covers. Choices that need no defects (the threshold) use only the
good training images.

Backbone features of every image are computed once per backbone and cached (``--cache``),
so that each candidate costs only its memory banks and nearest-neighbour search.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from factoryedge.data.images import load_inspection_set, magnetic_tile_root, read_gray
from factoryedge.features.image import ImagePreprocessor
from factoryedge.training.image_models import PATCHCORE_SPEC
from factoryedge.training.patchcore import (
    Backbone,
    BranchBank,
    BranchConfig,
    BranchEmbedder,
    PatchCoreConfig,
    _border_stats,
    _held_out_distances,
    border_classes,
    build_bank,
    fuse,
    load_backbone,
    nearest_distance,
)

log = logging.getLogger(__name__)
STAGES = (2, 3, 4, 5, 6)


def backbone_features(name: str, images: list[np.ndarray], scales=(1, 2)) -> list[dict]:
    """Per image {(downsample, stage): (C, h, w) float16} for every stage and scale."""
    net = load_backbone(name)
    body = Backbone(net, STAGES).eval()
    pre = ImagePreprocessor(PATCHCORE_SPEC)
    out = []
    with torch.no_grad():
        for img in images:
            x = torch.from_numpy(pre(img))
            feats = {}
            for d in scales:
                xi = torch.nn.functional.avg_pool2d(x, d) if d > 1 else x
                for s, f in body(xi, STAGES).items():
                    feats[(d, s)] = f[0].half()
            out.append(feats)
    return out


def cached_features(cache: Path, name: str, split: str, images) -> list[dict]:
    path = cache / f"{name}-{split}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    t0 = time.perf_counter()
    feats = backbone_features(name, images)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(feats, path)
    log.info("%s %s features: %d images in %.0f s", name, split, len(images), time.perf_counter() - t0)
    return feats


def branch_patches(feats: list[dict], branch: BranchConfig, margin: int, pool: int = 1) -> list[torch.Tensor]:
    embed = BranchEmbedder(branch, margin, pool)
    return [embed({s: f[(branch.downsample, s)][None].float() for s in branch.layers})[0] for f in feats]


def leave_one_out_distances(feats: list[torch.Tensor], bank: BranchBank) -> list[torch.Tensor]:
    """Each image's distance map against the final bank without the rows drawn from that image."""
    out = []
    for k, f in enumerate(feats):
        rows = bank.bank[bank.sources != k]
        out.append(nearest_distance(f[None], rows, (rows * rows).sum(1), bank.projection)[0])
    return out


@dataclass
class Maps:
    """Per branch: held-out distance maps of the good training images, and the test images' maps."""

    held: list[list[torch.Tensor]]
    test: list[list[torch.Tensor]]
    stats: list[tuple[np.ndarray, np.ndarray]]
    loo: list[list[torch.Tensor]]
    loo_stats: list[tuple[np.ndarray, np.ndarray]]


def distance_maps(config: PatchCoreConfig, train: list[dict], test: list[dict], folds: bool = True) -> Maps:
    held, tested, stats, loo, loo_stats = [], [], [], [], []
    for b in config.branches:
        tr = branch_patches(train, b, config.margin, config.pool)
        te = branch_patches(test, b, config.margin, config.pool)
        bank = build_bank(tr, b, config, config.seed)
        sq = (bank.bank**2).sum(1)
        tested.append([nearest_distance(p[None], bank.bank, sq, bank.projection)[0] for p in te])
        lo = leave_one_out_distances(tr, bank)
        loo.append(lo)
        loo_stats.append(_border_stats(lo, b.border_cells))
        h = _held_out_distances(tr, b, config) if folds else lo
        held.append(h)
        stats.append(_border_stats(h, b.border_cells))
    return Maps(held, tested, stats, loo, loo_stats)


def zmaps(maps: list[list[torch.Tensor]], stats, config: PatchCoreConfig) -> list[torch.Tensor]:
    """Fused standardised map per image."""
    out = []
    for per_image in zip(*maps):
        zs = []
        for i, d in enumerate(per_image):
            cls = border_classes(d.shape[-2], d.shape[-1], config.branches[i].border_cells)
            mu, sd = (torch.as_tensor(v, dtype=torch.float32) for v in stats[i])
            zs.append(((d - mu[cls]) / sd[cls])[None])
        out.append(fuse(zs)[0])
    return out


def aggregate(heat: torch.Tensor, how: str) -> float:
    if how == "max":
        return float(heat.max())
    k = int(how.split("top")[1])  # "topK": mean of the K largest cells
    return float(heat.flatten().topk(min(k, heat.numel())).values.mean())


def stratified_folds(types: list[str], k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold = np.empty(len(types), dtype=int)
    for t in sorted(set(types)):
        idx = np.flatnonzero(np.asarray(types) == t)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


def auroc(scores: np.ndarray, types: list[str], mask: np.ndarray | None = None) -> float:
    y = np.asarray(types) != "good"
    m = np.ones(len(y), bool) if mask is None else mask
    return float(roc_auc_score(y[m], scores[m]))


def nested_selection(candidates: dict[str, np.ndarray], types: list[str], k: int, seed: int) -> dict:
    fold = stratified_folds(types, k, seed)
    outer = []
    for f in range(k):
        inner = {name: auroc(s, types, fold != f) for name, s in candidates.items()}
        best = max(inner, key=inner.get)
        outer.append({"fold": f, "chosen": best, "inner_auroc": round(inner[best], 4),
                      "outer_auroc": round(auroc(candidates[best], types, fold == f), 4)})
    overall = {name: auroc(s, types) for name, s in candidates.items()}
    return {"folds": outer, "nested_auroc_mean": round(float(np.mean([o["outer_auroc"] for o in outer])), 4),
            "shipped": max(overall, key=overall.get)}


def calibration_study(config: PatchCoreConfig, train: list[dict], n_unseen: int, seed: int) -> dict:
    """How well each calibration predicts the scores of good images the final bank never saw.

    Training images only: ``n_unseen`` of them are set aside as the "unseen good parts"; the
    model is fitted on the rest, calibrated by 5-fold held-out scores and by leave-one-out
    scores against the final bank, and the unseen images are then scored by the final bank
    standardised with each calibration's statistics.
    """
    order = np.random.default_rng(seed).permutation(len(train))
    fit, unseen = [train[i] for i in order[n_unseen:]], [train[i] for i in order[:n_unseen]]
    maps = distance_maps(config, fit, unseen, folds=True)
    out = {}
    for name, cal, stats in (("folds", maps.held, maps.stats), ("loo", maps.loo, maps.loo_stats)):
        cal_scores = np.array([aggregate(h, "max") for h in zmaps(cal, stats, config)])
        truth = np.array([aggregate(h, "max") for h in zmaps(maps.test, stats, config)])
        row = {"calibration_quantiles": np.quantile(cal_scores, [0.5, 0.9, 0.95]).round(3).tolist(),
               "unseen_quantiles": np.quantile(truth, [0.5, 0.9, 0.95]).round(3).tolist()}
        for budget in (0.02, 0.05, 0.1):
            t = float(np.sort(cal_scores)[::-1][int(np.floor(budget * len(cal_scores)))])
            row[f"unseen_rejected_at_{budget}"] = float(np.mean(truth > t))
        out[name] = row
    return out


CANDIDATES = {
    "base": PatchCoreConfig(),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path("runs/patchcore-features"))
    parser.add_argument("--backbones", default="lite0")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--candidates", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--no-folds", action="store_true", help="leave-one-out calibration only (6x cheaper)")
    parser.add_argument("--calibration-study", type=int, default=0, metavar="REPEATS",
                        help="only compare the calibrations on training images set aside (REPEATS seeded splits)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = load_inspection_set(magnetic_tile_root(args.data), require_masks=True)
    train_images = [read_gray(s.path) for s in data.train]
    test_images = [read_gray(s.path) for s in data.test]
    types = [s.defect_type for s in data.test]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.calibration_study:
        train = cached_features(args.cache, args.backbones, "train", train_images)
        study = [calibration_study(CANDIDATES["base"], train, 50, args.seed + r) for r in range(args.calibration_study)]
        (args.out / "calibration.json").write_text(json.dumps(study, indent=1))
        print(json.dumps(study, indent=1))
        return 0
    results = {}
    for bb in args.backbones.split(","):
        train = cached_features(args.cache, bb, "train", train_images)
        test = cached_features(args.cache, bb, "test", test_images)
        for name, cfg in CANDIDATES.items():
            if args.candidates and name not in args.candidates.split(","):
                continue
            cfg = replace(cfg, backbone=bb)
            t0 = time.perf_counter()
            maps = distance_maps(cfg, train, test, folds=not args.no_folds)
            held = zmaps(maps.held, maps.stats, cfg)
            tested = zmaps(maps.test, maps.stats, cfg)
            loo = zmaps(maps.loo, maps.loo_stats, cfg)
            tested_loo = zmaps(maps.test, maps.loo_stats, cfg)
            for how in ("max", "top4", "top16"):
                key = f"{bb}/{name}/{how}"
                s_test = np.array([aggregate(h, how) for h in tested])
                s_held = np.array([aggregate(h, how) for h in held])
                results[key] = {"test": s_test.tolist(), "held": s_held.tolist(), "auroc": auroc(s_test, types),
                                "loo": [aggregate(h, how) for h in loo],
                                "test_loo": [aggregate(h, how) for h in tested_loo],
                                "per_type": {t: auroc(s_test, types, np.isin(types, ["good", t]))
                                             for t in sorted(set(types) - {"good"})},
                                "seconds": round(time.perf_counter() - t0, 1), "config": asdict(cfg)}
                log.info("%s: AUROC %.4f %s", key, results[key]["auroc"],
                         {t: round(v, 3) for t, v in results[key]["per_type"].items()})
        (args.out / "scores.json").write_text(json.dumps({"types": types, "results": results}))
    sel = nested_selection({k: np.array(v["test"]) for k, v in results.items()}, types, args.folds, args.seed)
    print(json.dumps(sel, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
