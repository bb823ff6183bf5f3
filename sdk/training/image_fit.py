"""What the tile-reconstruction trainers share: input checks, held-out split, tiles, scoring, curves.

Training tiles are random crops of the preprocessed images (plus flips), which gives many
more distinct good tiles than the device's fixed grid; validation and calibration use the
device's own grid (``ImagePreprocessor`` with the spec's tile and stride), so the threshold
is set on exactly the numbers the device will compute.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging

import numpy as np
import torch
import torch.nn.functional as F

from factoryedge.errors import ConfigError, DataError
from factoryedge.features.image import ImagePreprocessingSpec, ImagePreprocessor, TileLayout
from factoryedge.manifest import FalseRejectBudget, ScoreStats, ThresholdRule
from factoryedge.scoring import MIN_CALIBRATION_WINDOWS, calibrate_threshold
from factoryedge.training.image_common import TrainedImageModel

log = logging.getLogger(__name__)

# As PatchCore: a good part above the held-out good parts' 99th percentile is rejected.
DEFAULT_RULE = ThresholdRule(quantile=0.99, margin=1.0)
MIN_TRAIN_IMAGES = 4
SCORE_REDUCTIONS = ("mean", "peak")


def check_reduction(reduction: str, window: int, tile: int) -> None:
    """A ConfigError unless ``reduction`` is known and the peak window fits in the tile."""
    if reduction not in SCORE_REDUCTIONS:
        raise ConfigError(f"score_reduction {reduction!r} is not one of {list(SCORE_REDUCTIONS)}")
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= tile:
        raise ConfigError(f"peak_window {window!r} must be an integer from 1 to the tile size {tile}")


def reduce_residual(pixel: torch.Tensor, reduction: str, window: int) -> torch.Tensor:
    """One figure per tile (N,) from a per-pixel residual map (N, 1, t, t): its mean or its smoothed peak.

    ``"peak"`` is the largest mean over a ``window`` x ``window`` square lying wholly inside
    the tile (average pooling with stride 1 and no padding): a defect of about the window's
    size counts at full strength instead of being diluted by the whole tile, while a single
    noisy pixel is still averaged down. No padding means no invented pixels: zero padding
    would pull border windows down, replicate padding would count edge pixels twice. Every
    border pixel still lies in at least one window, and the device's tiles overlap by half,
    so a defect cut by one tile's edge lies whole inside its neighbour. Exports to ONNX as
    AveragePool + ReduceMax.
    """
    if reduction == "mean":
        return pixel.flatten(1).mean(1)
    return F.avg_pool2d(pixel, window, stride=1).flatten(1).amax(1)


def reduction_phrase(reduction: str, window: int) -> str:
    """How a score definition names the reduction: "mean" or "largest k x k window mean"."""
    return "mean" if reduction == "mean" else f"largest {window} x {window} window mean (within the tile)"


def check_tiled_spec(spec: ImagePreprocessingSpec, tile: int) -> None:
    """The tile models need grey tiles of their own size; anything else is a ConfigError."""
    if spec.tile != tile:
        raise ConfigError(f"the model is built for {tile} px tiles but the preprocessing spec has tile={spec.tile}; "
                          "set both equal")
    if spec.model_colour != "gray":
        raise ConfigError(f"the tile models read one grey channel; set model_colour='gray' (got {spec.model_colour!r})")
    if spec.margin:
        raise ConfigError(f"the tile models crop nothing off; set the spec's margin to 0 (got {spec.margin})")


def check_images(images) -> None:
    """Raise DataError unless ``images`` is a list of enough uint8 (H, W) or (H, W, C) arrays."""
    n_min = MIN_TRAIN_IMAGES + MIN_CALIBRATION_WINDOWS
    if not isinstance(images, (list, tuple)) or len(images) < n_min:
        n = len(images) if isinstance(images, (list, tuple)) else type(images).__name__
        raise DataError(f"need a list of at least {n_min} good images (some train, >= {MIN_CALIBRATION_WINDOWS} "
                        f"calibrate), got {n}")
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim not in (2, 3) or min(im.shape[:2]) < 1:
            what = f"{im.dtype} array of shape {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
            raise DataError(f"image {i} is a {what}; expected uint8 (H, W) or (H, W, C) as the camera delivers it")


def split_held_out(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image indices to train on and to hold out (validation curves and calibration), seeded."""
    if not 0 < fraction < 1:
        raise ConfigError(f"held_out_fraction {fraction} must lie between 0 and 1")
    n_held = max(MIN_CALIBRATION_WINDOWS, int(round(fraction * n)))
    if n - n_held < MIN_TRAIN_IMAGES:
        raise DataError(f"{n} good images leave fewer than {MIN_TRAIN_IMAGES} to train on after holding out {n_held}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def whole_images(images: list[np.ndarray], spec: ImagePreprocessingSpec) -> list[np.ndarray]:
    """Each image preprocessed whole (resize, intensity, normalisation; no tiles): float32 (H, W).

    Images smaller than a tile are mirror-padded at the bottom/right, as the tiler does.
    """
    pre = ImagePreprocessor(spec.model_copy(update={"tile": None, "stride": None}))
    t = spec.tile or 1
    out = []
    for im in images:
        x = pre(im)[0, 0]
        pad = ((0, max(0, t - x.shape[0])), (0, max(0, t - x.shape[1])))
        out.append(np.pad(x, pad, mode="symmetric") if any(p[1] for p in pad) else x)
    return out


class TileSampler:
    """Random square crops (N, 1, t, t) of preprocessed images, with random flips.

    A crop position is drawn uniformly over all positions of all images, so large images
    contribute in proportion to their area, as on the device's tile grid.
    """

    def __init__(self, images: list[np.ndarray], tile: int, seed: int, flips: bool = True):
        if not images:
            raise DataError("no images to draw tiles from")
        self.images, self.tile, self.flips = images, tile, flips
        counts = np.array([(h - tile + 1) * (w - tile + 1) for h, w in (im.shape for im in images)], dtype=np.float64)
        self.p = counts / counts.sum()
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> np.ndarray:
        t, rng = self.tile, self.rng
        out = np.empty((n, 1, t, t), dtype=np.float32)
        for k, i in enumerate(rng.choice(len(self.images), size=n, p=self.p)):
            im = self.images[i]
            y, x = rng.integers(0, im.shape[0] - t + 1), rng.integers(0, im.shape[1] - t + 1)
            crop = im[y : y + t, x : x + t]
            if self.flips and rng.random() < 0.5:
                crop = crop[:, ::-1]
            if self.flips and rng.random() < 0.5:
                crop = crop[::-1, :]
            out[k, 0] = crop
        return out


def grid_tiles(images: list[np.ndarray], spec: ImagePreprocessingSpec, limit: int | None = None, seed: int = 0) -> np.ndarray:
    """The device's tiles of ``images`` (first channel, (N, 1, t, t)); a seeded subset of ``limit``."""
    pre = ImagePreprocessor(spec)
    tiles = np.concatenate([pre(im)[:, :1] for im in images])
    if limit is not None and len(tiles) > limit:
        tiles = tiles[np.sort(np.random.default_rng(seed).choice(len(tiles), limit, replace=False))]
    return np.ascontiguousarray(tiles)


def score_tiled(
    module: torch.nn.Module, spec: ImagePreprocessingSpec, images: list[np.ndarray], batch: int = 1024
) -> tuple[np.ndarray, list[np.ndarray], list[TileLayout]]:
    """Image scores (max over tiles), per-image tile heatmaps (tiles, h, w) and tile layouts.

    What the device computes: preprocess, run the module on every tile, take the largest
    tile score. ``factoryedge.features.image.stitch`` turns a heatmap stack into an image map.
    """
    pre = ImagePreprocessor(spec)
    prepared = [pre.with_layout(im) for im in images]
    x = np.concatenate([p[0] for p in prepared])
    module.eval()
    scores, heats = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            s, h = module(torch.from_numpy(x[i : i + batch]))
            scores.append(s.numpy())
            heats.append(h.numpy())
    tile_scores, tile_heats = np.concatenate(scores), np.concatenate(heats)
    bounds = np.cumsum([0] + [p[1].n_tiles for p in prepared])
    image_scores = np.array([tile_scores[a:b].max() for a, b in zip(bounds[:-1], bounds[1:])], dtype=np.float64)
    return image_scores, [tile_heats[a:b] for a, b in zip(bounds[:-1], bounds[1:])], [p[1] for p in prepared]


def calibrate_on_images(
    module: torch.nn.Module, spec: ImagePreprocessingSpec, images: list[np.ndarray], rule: ThresholdRule | FalseRejectBudget
) -> tuple[float, ScoreStats, np.ndarray]:
    """Threshold from held-out good images' image scores: (threshold, stats, scores)."""
    scores = score_tiled(module, spec, images)[0]
    threshold, stats = calibrate_threshold(scores, rule)
    return threshold, stats, scores


def with_score_reduction(
    trained: TrainedImageModel, images: list[np.ndarray], reduction: str, peak_window: int | None = None
) -> TrainedImageModel:
    """The same trained networks with another score reduction, recalibrated on the same held-out images.

    ``images`` are the good images the model was fitted on: the held-out split is drawn again
    from the fit's ``seed`` and ``held_out_fraction``, so the threshold comes from the very
    images the fit calibrated on, now scored through the new module (what the device runs).
    No weights change and nothing is retrained; the new module shares the networks.
    """
    p = trained.parameters
    n_fit = trained.info.get("n_good_images")
    if n_fit is not None and n_fit != len(images):
        raise DataError(f"the model was fitted on {n_fit} good images but {len(images)} were given; pass the same list "
                        "so that the held-out split (and the threshold) is the fit's")
    window = p["peak_window"] if peak_window is None else peak_window
    check_reduction(reduction, window, p["tile"])
    module = trained.module.with_reduction(reduction, window)
    _, held_idx = split_held_out(len(images), p["held_out_fraction"], p["seed"])
    threshold, stats, scores = calibrate_on_images(module, trained.spec, [images[i] for i in held_idx], trained.rule)
    return dataclasses.replace(
        trained, module=module, threshold=threshold, calibration=stats, calibration_scores=scores,
        score_definition=module.score_definition, parameters={**p, "score_reduction": reduction, "peak_window": window},
    )


def curve_files(history: list[dict], panels: list[tuple[str, list[str]]], title: str) -> dict[str, bytes]:
    """learning_curve.csv (every key of every row) and, where matplotlib exists, learning_curve.png.

    ``panels``: (y label, keys) per subplot, plotted against ``epoch``; rows without a key
    (another training stage) are skipped in that line.
    """
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    files = {"learning_curve.csv": buf.getvalue().encode()}
    png = _plot(history, panels, title)
    if png is not None:
        files["learning_curve.png"] = png
    return files


def _plot(history: list[dict], panels: list[tuple[str, list[str]]], title: str) -> bytes | None:
    from factoryedge.evaluation.plots import _pyplot

    plt = _pyplot()
    if plt is None or not history:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (label, keys) in zip(axes[0], panels):
        for key in keys:
            pts = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle(f"Learning curve: {title}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
