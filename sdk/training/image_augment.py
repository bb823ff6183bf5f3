"""Augmented views of labelled part images for the supervised defect classifier.

Crops keep a masked defect whole (a crop that cut the defect away would teach the model that
a defective part looks good); flips, quarter turns, gamma and sensor noise vary the rest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factoryedge.features.image import resize_uint8


@dataclass(frozen=True)
class AugmentConfig:
    """Random view of a part. A crop (probability ``crop_prob``) keeps ``crop_min``..1 of each
    side and, on a defective image with a mask, always the whole masked defect; a defective
    image without a mask is never cropped. Good images get the same crop sizes, so zoom says
    nothing about the label. ``gamma`` changes contrast non-linearly (per-image
    standardisation would cancel a linear gain); ``noise_std`` is in grey levels."""

    crop_prob: float = 0.7
    crop_min: float = 0.6
    flips: bool = True
    rot90: bool = True
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 3.0


def augment(image: np.ndarray, mask: np.ndarray | None, is_defect: bool, rng: np.random.Generator, cfg: AugmentConfig):
    """(image, mask) after crop, flips, rot90, gamma and noise; uint8 in, uint8 out, size may change."""
    h, w = image.shape[:2]
    if rng.random() < cfg.crop_prob and (mask is not None or not is_defect):
        span = None
        if mask is not None and mask.any():
            rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
            span = ((rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1))
        y0, ch = _crop(h, rng.uniform(cfg.crop_min, 1), None if span is None else span[0], rng)
        x0, cw = _crop(w, rng.uniform(cfg.crop_min, 1), None if span is None else span[1], rng)
        image = image[y0 : y0 + ch, x0 : x0 + cw]
        mask = None if mask is None else mask[y0 : y0 + ch, x0 : x0 + cw]
    if cfg.flips:
        for axis in (0, 1):
            if rng.random() < 0.5:
                image, mask = np.flip(image, axis), None if mask is None else np.flip(mask, axis)
    if cfg.rot90:
        k = int(rng.integers(4))
        image, mask = np.rot90(image, k), None if mask is None else np.rot90(mask, k)
    lut = 255.0 * (np.arange(256) / 255.0) ** rng.uniform(*cfg.gamma)
    out = lut[image]
    if cfg.noise_std > 0:
        out = out + rng.normal(0, cfg.noise_std, out.shape)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out, None if mask is None else np.ascontiguousarray(mask)


def _crop(length: int, share: float, keep: tuple[int, int] | None, rng) -> tuple[int, int]:
    """Origin and size of a crop of ``share`` of ``length`` that contains [keep[0], keep[1])."""
    size = max(1, int(round(length * share)))
    lo, hi = 0, length - size
    if keep is not None:
        size = max(size, keep[1] - keep[0])
        lo, hi = max(0, keep[1] - size), min(keep[0], length - size)
    return int(rng.integers(lo, hi + 1)), size


def cell_targets(mask: np.ndarray | None, is_defect: bool, grid: tuple[int, int]) -> np.ndarray:
    """(h, w) float32: 1 where the mask covers any of the cell (box-filtered), 0 elsewhere and on good images."""
    if not is_defect:
        return np.zeros(grid, np.float32)
    if mask is None:
        return np.full(grid, np.nan, np.float32)
    return (resize_uint8(mask.astype(np.uint8) * 255, *grid, interpolation="area") > 0).astype(np.float32)
