"""Anomaly heatmaps drawn over part images, in numpy alone.

Training's contact sheets and the device's reject archive draw the same picture, so this
module needs neither matplotlib nor OpenCV nor torch. The colour maps are built-in 256-entry
tables: "inferno" (matplotlib's, interpolated from 17 samples, within 3 % of it) and "jet"
(matplotlib's segment definition, exact).

The overlay's opacity follows the heat: a cold pixel shows the part unchanged and the hottest
one is ``alpha`` colour, so a small defect stands out without tinting the whole image.
"""
from __future__ import annotations

from functools import cache

import numpy as np

from factoryedge.errors import ConfigError

COLOUR_MAPS = ("inferno", "jet")
COLOUR_ORDERS = ("rgb", "bgr")

# matplotlib's inferno sampled at t = 0, 1/16, ..., 1 (RGB, 0..1).
_INFERNO_KNOTS = (
    (0.001, 0.000, 0.014), (0.042, 0.028, 0.141), (0.129, 0.047, 0.291), (0.238, 0.037, 0.396),
    (0.342, 0.062, 0.429), (0.441, 0.099, 0.432), (0.541, 0.135, 0.415), (0.640, 0.171, 0.381),
    (0.736, 0.216, 0.330), (0.822, 0.275, 0.266), (0.894, 0.353, 0.194), (0.947, 0.449, 0.115),
    (0.978, 0.558, 0.035), (0.988, 0.675, 0.065), (0.975, 0.798, 0.206), (0.948, 0.917, 0.411),
    (0.988, 0.998, 0.645),
)

# matplotlib's jet: (x, value) knots of red, green and blue.
_JET_SEGMENTS = (
    ((0.0, 0.35, 0.66, 0.89, 1.0), (0.0, 0.0, 1.0, 1.0, 0.5)),
    ((0.0, 0.125, 0.375, 0.64, 0.91, 1.0), (0.0, 0.0, 1.0, 1.0, 0.0, 0.0)),
    ((0.0, 0.11, 0.34, 0.65, 1.0), (0.5, 1.0, 1.0, 0.0, 0.0)),
)


@cache
def colour_table(name: str = "inferno") -> np.ndarray:
    """A (256, 3) uint8 RGB lookup table for ``name`` ("inferno" or "jet"); read-only."""
    t = np.linspace(0.0, 1.0, 256)
    if name == "inferno":
        knots = np.asarray(_INFERNO_KNOTS)
        x = np.linspace(0.0, 1.0, len(knots))
        rgb = np.stack([np.interp(t, x, knots[:, c]) for c in range(3)], axis=1)
    elif name == "jet":
        rgb = np.stack([np.interp(t, x, y) for x, y in _JET_SEGMENTS], axis=1)
    else:
        raise ConfigError(f"colour map {name!r} is not one of {list(COLOUR_MAPS)}")
    table = np.round(rgb * 255).astype(np.uint8)
    table.setflags(write=False)
    return table


def resize_bilinear(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D float array resized to ``size`` = (height, width) with pixel-centre bilinear sampling.

    The same geometry as OpenCV's INTER_LINEAR (half-pixel centres, edges clamped), so a
    coarse feature-map heatmap lands over the image region each cell saw.
    """
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ConfigError(f"resize target {size!r} must be at least (1, 1)")
    a = np.asarray(a, dtype=np.float64)
    out = a
    for axis, n in ((0, h), (1, w)):
        m = out.shape[axis]
        if m == n:
            continue
        pos = np.clip((np.arange(n) + 0.5) * (m / n) - 0.5, 0.0, m - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, m - 1)
        frac = pos - lo
        shape = [1, 1]
        shape[axis] = n
        frac = frac.reshape(shape)
        out = np.take(out, lo, axis=axis) * (1 - frac) + np.take(out, hi, axis=axis) * frac
    return out


def heatmap_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    alpha: float = 0.6,
    vmin: float | None = None,
    vmax: float | None = None,
    colour_map: str = "inferno",
    colour_order: str = "rgb",
) -> np.ndarray:
    """The image with the heatmap painted over it, as uint8 RGB (H, W, 3).

    ``image`` is uint8 (H, W) grey or (H, W, 3) in ``colour_order`` ("rgb" from PIL, "bgr"
    from OpenCV); the result is always RGB. ``heatmap`` is any 2-D array (a model's coarse
    anomaly map included) and is resized bilinearly to the image. Heat is scaled linearly
    from ``vmin`` (transparent) to ``vmax`` (opacity ``alpha``), by default the heatmap's own
    min and max; pass fixed values to compare several images on one scale.
    """
    rgb = _as_rgb(image, colour_order)
    heat = _as_heatmap(heatmap)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"alpha {alpha!r} must be between 0 and 1")
    lo = float(np.min(heat)) if vmin is None else float(vmin)
    hi = float(np.max(heat)) if vmax is None else float(vmax)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ConfigError(f"heat range vmin={lo!r}, vmax={hi!r} must be finite with vmin <= vmax")
    heat = resize_bilinear(heat, rgb.shape[:2])
    norm = np.clip((heat - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(heat)
    colours = colour_table(colour_map)[np.round(norm * 255).astype(np.intp)].astype(np.float64)
    a = (float(alpha) * norm)[..., None]
    out = rgb.astype(np.float64) * (1.0 - a) + colours * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _as_rgb(image: np.ndarray, colour_order: str) -> np.ndarray:
    if colour_order not in COLOUR_ORDERS:
        raise ConfigError(f"colour_order {colour_order!r} is not one of {list(COLOUR_ORDERS)}")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        what = f"dtype {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ConfigError(f"image must be a uint8 numpy array (H, W) or (H, W, 3), got {what}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ConfigError(f"image of shape {image.shape} is empty")
    return image[..., ::-1] if colour_order == "bgr" else image


def _as_heatmap(heatmap: np.ndarray) -> np.ndarray:
    heat = np.asarray(heatmap)
    if heat.dtype.kind not in "biuf":
        raise ConfigError(f"heatmap must be a numeric array, got dtype {heat.dtype}")
    if heat.ndim > 2:  # (1, h, w) or (h, w, 1) as models emit them
        heat = heat.reshape([n for n in heat.shape if n != 1] or [1])
    if heat.ndim != 2 or heat.size == 0:
        raise ConfigError(f"heatmap must be a non-empty 2-D array (h, w), got shape {np.shape(heatmap)}")
    if not np.all(np.isfinite(heat)):
        raise ConfigError(f"heatmap holds {int(np.sum(~np.isfinite(heat)))} NaN or infinite values")
    return heat.astype(np.float64)
