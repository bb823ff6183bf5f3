"""Image preprocessing shared by training and the device: colour, resize, tiles, normalisation.

Numpy only (no OpenCV, PIL or torch): the device calls it on OpenCV frames, training on PIL
images, and both must produce the same bits. So every step up to the final lookup is integer
arithmetic: colour conversion with OpenCV's fixed-point weights, resampling with PIL's
separable algorithm in 22-bit fixed point (rounded to uint8 after each pass, as PIL does), and
normalisation through a 256-entry float32 table per channel. Nothing depends on BLAS,
summation order or FMA, so an x86 workstation and an ARM Jetson agree bit for bit.

Small defects (pores, hairline cracks) vanish when a part image is shrunk to a network's
usual input size, so images can go in whole at (near) native resolution with a mirrored
margin, or, for frames too large for one pass, as overlapping square tiles whose heatmaps
``stitch`` puts back together. About 13 ms for a 400 x 600 grey image on one x86 core.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from factoryedge.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BITS = 22  # PIL's PRECISION_BITS for 8-bit images: 32 - 8 - 2
# OpenCV's fixed-point BGR->grey weights (ITU-R BT.601, 15-bit, as cv2.cvtColor's 8-bit path
# uses since 4.x), so frames converted here and by OpenCV agree exactly.
_GRAY_W = (3735, 19235, 9798)  # B, G, R
_GRAY_SHIFT = 15


class ImagePreprocessingSpec(BaseModel):
    """How a camera frame becomes model input, as a bundle's manifest records it.

    ``colour`` is the channel order of the frames handed to the preprocessor (OpenCV gives
    "bgr", PIL "rgb", a mono camera "gray"); ``model_colour`` "gray" converts to luminance and
    repeats it in the three channels an ImageNet backbone expects.

    ``resize``: "none", "scale" (by ``scale``), "shorter" (shorter side to ``size``, aspect
    kept) or "fixed" (to ``size`` = (height, width)); computed sizes are rounded to a multiple
    of ``multiple`` (a CNN's total stride, so no feature cell is cut). ``intensity``
    "standardize" maps each image's grey levels linearly to mean ``target_mean`` and standard
    deviation ``target_std`` (0..255 units), which cancels exposure and gain differences
    between parts. ``margin`` mirrors that many pixels on every side, so the network sees
    the same kind of context at the part's edge in every image; the model crops it off again.

    ``tile`` None feeds the whole image (one item, variable size); otherwise square tiles of
    ``tile`` pixels start every ``stride`` pixels (the last flush with the edge), and an image
    smaller than a tile is mirror-padded at the bottom/right. Output: float32 NCHW.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["image"] = "image"
    colour: Literal["gray", "rgb", "bgr"] = "gray"
    model_colour: Literal["gray", "rgb"] = "gray"
    resize: Literal["none", "scale", "shorter", "fixed"] = "none"
    scale: float | None = Field(None, gt=0, le=8)
    size: int | tuple[int, int] | None = None
    multiple: int = Field(1, ge=1, le=256)
    interpolation: Literal["bilinear", "area"] = "bilinear"
    intensity: Literal["none", "standardize"] = "none"
    target_mean: float = Field(110.0, ge=0, le=255)
    target_std: float = Field(32.0, gt=0, le=128)
    margin: int = Field(0, ge=0, le=256)
    tile: int | None = Field(None, ge=16)
    stride: int | None = Field(None, ge=1)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"

    @model_validator(mode="after")
    def _consistent(self):
        if self.resize == "scale" and self.scale is None:
            raise ValueError("resize 'scale' needs scale (e.g. 0.5)")
        if self.resize == "shorter" and not (isinstance(self.size, int) and self.size > 0):
            raise ValueError(f"resize 'shorter' needs size as one positive integer, got {self.size!r}")
        if self.resize == "fixed":
            if not (isinstance(self.size, tuple) and min(self.size) > 0):
                raise ValueError(f"resize 'fixed' needs size = (height, width), got {self.size!r}")
            if any(n % self.multiple for n in self.size):
                raise ValueError(f"fixed size {self.size} is not a multiple of {self.multiple}")
        if self.stride is not None and self.tile is None:
            raise ValueError("stride needs tile")
        if self.tile is not None and self.stride is not None and self.stride > self.tile:
            raise ValueError(f"stride ({self.stride}) larger than the tile ({self.tile}) would leave gaps")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        return self

    @property
    def tile_stride(self) -> int | None:
        """The stride in use: ``stride``, or three quarters of the tile (a quarter overlap)."""
        if self.tile is None:
            return None
        return self.stride or max(1, (3 * self.tile) // 4)

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """The image size after resizing, before the margin."""
        if self.resize == "fixed":
            return tuple(self.size)  # type: ignore[return-value]
        f = {"none": 1.0, "scale": self.scale, "shorter": (self.size or 0) / min(height, width)}[self.resize]
        m = self.multiple
        return max(m, round(height * f / m) * m), max(m, round(width * f / m) * m)


@dataclass(frozen=True)
class TileLayout:
    """Where an image went: its size before and after resizing, the margin, and each tile's origin.

    ``padded`` is the canvas the tiles were cut from (resized image plus margins plus any
    padding up to one tile); the image itself occupies rows and columns
    ``margin .. margin + resized``.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    margin: int
    padded: tuple[int, int]
    tile: int | None
    origins: tuple[tuple[int, int], ...]

    @property
    def n_tiles(self) -> int:
        return len(self.origins)


class ImagePreprocessor:
    """uint8 frames (H, W) or (H, W, C) to float32 model input (items, 3, H', W').

    Calling it returns the input array; ``with_layout`` also returns the ``TileLayout``, and
    ``batch`` concatenates several images' tiles (equal to calling one by one; whole images
    must then share one size).
    """

    def __init__(self, spec: ImagePreprocessingSpec):
        self.spec = spec
        self._mean = np.asarray(spec.mean, dtype=np.float64)[:, None]
        self._std = np.asarray(spec.std, dtype=np.float64)[:, None]
        self._fixed_lut = self._lut(1.0, 0.0) if spec.intensity == "none" else None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.with_layout(image)[0]

    def batch(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[TileLayout]]:
        outs = [self.with_layout(im) for im in images]
        shapes = {o[0].shape[1:] for o in outs}
        if len(shapes) > 1:
            raise ConfigError(f"cannot batch whole images of different sizes {sorted(shapes)}; use a fixed size or tiles")
        return np.concatenate([o[0] for o in outs]), [o[1] for o in outs]

    def with_layout(self, image: np.ndarray) -> tuple[np.ndarray, TileLayout]:
        s = self.spec
        img = self._to_model_colour(image)
        h0, w0 = img.shape[:2]
        h, w = s.resized_shape(h0, w0)
        img = resize_uint8(img, h, w, s.interpolation)
        lut = self._fixed_lut if self._fixed_lut is not None else self._image_lut(img)
        if s.margin:
            img = _mirror(img, [(s.margin, s.margin), (s.margin, s.margin)])
        if s.tile is None:
            tiles, origins = img[None], ((0, 0),)
        else:
            img = _mirror(img, [(0, max(0, s.tile - img.shape[0])), (0, max(0, s.tile - img.shape[1]))])
            ys = tile_origins(img.shape[0], s.tile, s.tile_stride)
            xs = tile_origins(img.shape[1], s.tile, s.tile_stride)
            origins = tuple((y, x) for y in ys for x in xs)
            tiles = np.stack([img[y : y + s.tile, x : x + s.tile] for y, x in origins])
        layout = TileLayout((h0, w0), (h, w), s.margin, img.shape[:2], s.tile, origins)
        return _apply_lut(tiles, lut), layout

    def _lut(self, gain: float, offset: float) -> np.ndarray:
        """(3, 256) float32: grey level -> (gain * level + offset) / 255, ImageNet-normalised."""
        levels = gain * np.arange(256, dtype=np.float64)[None, :] + offset
        return ((levels / 255.0 - self._mean) / self._std).astype(np.float32)

    def _image_lut(self, img: np.ndarray) -> np.ndarray:
        # Integer sums are exact, so the statistics (and the table) are the same on any machine.
        v = img.astype(np.int64)
        n = v.size
        total, squares = int(v.sum()), int((v * v).sum())
        mean = total / n
        var = max(squares / n - mean * mean, 0.0)
        # A flat image (a blank frame) keeps its level rather than amplifying noise.
        gain = self.spec.target_std / math.sqrt(var) if var > 1.0 else 1.0
        return self._lut(gain, self.spec.target_mean - gain * mean)

    def _to_model_colour(self, image: np.ndarray) -> np.ndarray:
        s = self.spec
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            what = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
            raise ConfigError(f"image must be a uint8 numpy array, got {what}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if min(image.shape[:2], default=0) < 1:
            raise ConfigError(f"image of shape {image.shape} is empty")
        if s.colour == "gray":
            if image.ndim != 2:
                raise ConfigError(f"spec colour 'gray' expects (H, W) frames, got shape {image.shape}")
            return image
        if image.ndim != 3 or image.shape[2] != 3:
            raise ConfigError(f"spec colour {s.colour!r} expects (H, W, 3) frames, got shape {image.shape}")
        bgr = image if s.colour == "bgr" else image[..., ::-1]
        if s.model_colour == "gray":
            return bgr_to_gray(bgr)
        return np.ascontiguousarray(bgr[..., ::-1])  # the model wants rgb


def _apply_lut(tiles: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """(n, H, W) or (n, H, W, 3) uint8 to (n, 3, H, W) float32."""
    if tiles.ndim == 3:
        return np.stack([lut[c][tiles] for c in range(3)], axis=1)
    return np.stack([lut[c][tiles[..., c]] for c in range(3)], axis=1)


def bgr_to_gray(bgr: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) BGR to grey exactly as ``cv2.cvtColor(..., COLOR_BGR2GRAY)`` rounds it."""
    x = bgr.astype(np.int32)
    acc = x[..., 0] * _GRAY_W[0] + x[..., 1] * _GRAY_W[1] + x[..., 2] * _GRAY_W[2]
    return ((acc + (1 << (_GRAY_SHIFT - 1))) >> _GRAY_SHIFT).astype(np.uint8)


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets covering ``length`` (>= tile) with steps of at most ``stride``, last flush."""
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / stride) + 1
    # Even spacing, so the last tile's overlap is not much larger than the others'.
    return [(i * (length - tile)) // (n - 1) for i in range(n)]


def _mirror(img: np.ndarray, pads: list[tuple[int, int]]) -> np.ndarray:
    if not any(a or b for a, b in pads):
        return img
    return np.pad(img, pads + [(0, 0)] * (img.ndim - 2), mode="symmetric")


def resize_uint8(img: np.ndarray, height: int, width: int, interpolation: str = "bilinear") -> np.ndarray:
    """PIL's ``Image.resize`` (BILINEAR or BOX, antialiased when shrinking) in numpy integers.

    Horizontal pass, rounded to uint8, then vertical, as Pillow up to 12 orders them (Pillow 13
    runs the vertical pass first when the height shrinks much more, so a few pixels of its
    result differ by one level); each single pass equals Pillow's bit for bit. An unchanged
    axis is skipped. (H, W) or (H, W, C) uint8.
    """
    if height < 1 or width < 1:
        raise ConfigError(f"resize target {height}x{width} must be at least 1x1")
    out = img
    for axis, size in ((1, width), (0, height)):
        if size != img.shape[axis]:
            idx, w = _coefficients(img.shape[axis], size, interpolation)
            out = _resample_axis(out, idx, w, axis=axis)
    return out


def _resample_axis(img: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * img.ndim
    shape[axis] = idx.shape[0]
    # int32 cannot overflow: the weights are non-negative and sum to 2**22, so 255 * 2**22 + 2**21 < 2**31.
    acc = np.full(
        tuple(idx.shape[0] if a == axis else n for a, n in enumerate(img.shape)), 1 << (_BITS - 1), dtype=np.int32
    )
    for k in range(idx.shape[1]):
        acc += np.take(img, idx[:, k], axis=axis).astype(np.int32) * w[:, k].reshape(shape)
    return np.clip(acc >> _BITS, 0, 255).astype(np.uint8)


@lru_cache(maxsize=64)
def _coefficients(in_size: int, out_size: int, interpolation: str) -> tuple[np.ndarray, np.ndarray]:
    """PIL's precompute_coeffs: tap indices (out, K) and 22-bit integer weights (out, K)."""
    if interpolation not in ("bilinear", "area"):
        raise ConfigError(f"interpolation {interpolation!r} is not one of 'bilinear', 'area'")
    base = 1.0 if interpolation == "bilinear" else 0.5
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = base * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64) - xmin
    taps = np.arange(ksize)
    # Multiply by the reciprocal, as PIL does: dividing rounds differently in the last bit.
    x = (taps[None, :] + xmin[:, None] - center[:, None] + 0.5) * (1.0 / filterscale)
    if interpolation == "bilinear":
        k = np.maximum(1.0 - np.abs(x), 0.0)
    else:
        k = ((x > -0.5) & (x <= 0.5)).astype(np.float64)
    k[taps[None, :] >= xmax[:, None]] = 0.0
    total = np.zeros(out_size)
    for j in range(ksize):  # sequential, as PIL sums, so rounding cannot depend on the platform
        total += k[:, j]
    k = np.divide(k, total[:, None], out=np.zeros_like(k), where=total[:, None] != 0)
    weights = np.trunc(k * (1 << _BITS) + 0.5).astype(np.int32)  # both filters are non-negative
    idx = np.minimum(xmin[:, None] + taps[None, :], in_size - 1)
    return idx, weights


def stitch(maps: np.ndarray, layout: TileLayout, size: Literal["original", "resized"] = "original") -> np.ndarray:
    """Heatmaps of one image's items to one float32 heatmap of the original (or resized) image.

    Whole images: one map (1, gh, gw) covering the resized image (the model has cropped the
    margin). Tiles: one map per tile covering that tile; each is upsampled bilinearly (cell
    centres on patch centres), overlaps take the maximum, and margins and padding are cut
    off. For display and pixel metrics, not for decisions.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3 or len(maps) != layout.n_tiles:
        raise ConfigError(f"expected ({layout.n_tiles}, gh, gw) heatmaps for this layout, got shape {maps.shape}")
    h, w = layout.resized
    if layout.tile is None:
        out = _upsample(maps[0], h, w)
    else:
        t, m = layout.tile, layout.margin
        tiles = _upsample(maps, t, t)
        canvas = np.full(layout.padded, -np.inf, dtype=np.float32)
        for tile_map, (y, x) in zip(tiles, layout.origins):
            view = canvas[y : y + t, x : x + t]
            np.maximum(view, tile_map, out=view)
        out = canvas[m : m + h, m : m + w]
    if size == "resized" or (h, w) == layout.original:
        return np.ascontiguousarray(out, dtype=np.float32)
    oh, ow = layout.original
    return _upsample(out, oh, ow)


def _upsample(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of the last two axes of float32 ``a``: rows first, then columns.

    Two taps and a weighted sum per pixel in elementwise numpy, not a product with an
    interpolation matrix: a matrix product starts BLAS's thread pool, whose threads spin on
    after the call and, on a device with few cores, slowed the next part's inference more
    than the heatmap itself costs.
    """
    lo, hi, w_lo, w_hi = _interp_taps(a.shape[-2], height)
    a = a[..., lo, :] * w_lo[:, None] + a[..., hi, :] * w_hi[:, None]
    lo, hi, w_lo, w_hi = _interp_taps(a.shape[-1], width)
    return a[..., lo] * w_lo + a[..., hi] * w_hi


@lru_cache(maxsize=64)
def _interp_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation with half-pixel centres and clamped edges: (lo, hi) source indices, float32 weights."""
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (src - lo).astype(np.float32)
    taps = (lo, hi, (1 - frac).astype(np.float32), frac)
    for arr in taps:
        arr.flags.writeable = False  # cached and shared
    return taps
