"""Synthetic machined parts on a conveyor, with pixel-exact defect masks, for demos and tests.

A part (a turned washer or a brushed rectangular tile) lies on a dark belt with slight
position, rotation and exposure jitter and sensor noise. Defects: "scratch" (a thin dark
line), "pit" (a small dark blowhole), "chip" (a piece missing from the outer edge) and
"stain" (a soft discoloured blob). Each covers 0.1-3 % of the part at 256 x 256 px (pits
and hairline scratches have pixel-sized widths, so they weigh more in smaller images).

Everything is a pure function of (seed, part index, defect): part ``k`` with a defect is
part ``k`` without it plus the defect, bit for bit outside the mask, so the mask is exactly
the set of pixels the defect changed. Numpy only; writing PNGs needs Pillow (the ``train``
extra), imported when used. Parts videos are written by ``parts_video``.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from factoryedge.errors import ConfigError, DataError, missing_dependency

log = logging.getLogger(__name__)

DEFECTS = ("scratch", "pit", "chip", "stain")
SHAPES = ("washer", "tile")
COLOURS = ("gray", "bgr")
NOISE_SIGMA = 2.5  # sensor read noise, grey levels

# BGR tints: brushed steel, a dark green belt, and what a rust stain leaves at full depth.
_PART_TINT = np.array([1.0, 0.97, 0.93])
_BELT_TINT = np.array([0.85, 1.0, 0.88])
_STAIN_TINT = np.array([0.3, 0.5, 0.75])


class PartPass(NamedTuple):
    """One part in a conveyor video: the frames it is seen in, its id and its defect (None = good)."""

    frames: range
    part_id: str
    defect: str | None


class _Scene(NamedTuple):
    value: np.ndarray  # float (H, Wc) or (H, Wc, 3), before exposure and noise
    mask: np.ndarray  # bool (H, Wc)
    gain: float
    offset: float


class SyntheticParts:
    """A deterministic generator of part images of ``size`` = (height, width).

    ``make()`` without ``index`` numbers parts 0, 1, 2... in call order; with ``index`` it
    renders that part regardless of what was made before. ``colour`` "gray" gives (H, W)
    images, "bgr" (H, W, 3) in OpenCV's channel order.
    """

    def __init__(self, size: tuple[int, int] = (256, 256), seed: int = 0, shape: str = "washer", colour: str = "gray"):
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(n, (int, np.integer)) for n in size)
                and min(size) >= 32):
            raise ConfigError(f"size {size!r} must be (height, width), two integers of at least 32")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed {seed!r} must be a non-negative integer")
        for what, value, valid in (("part shape", shape, SHAPES), ("colour", colour, COLOURS)):
            if value not in valid:
                raise ConfigError(f"{what} {value!r} is not one of {list(valid)}")
        self.size, self.seed = (int(size[0]), int(size[1])), int(seed)
        self.shape, self.colour = shape, colour
        self._next = 0

    def make(self, defect: str | None = None, index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One part image (uint8) and its defect mask (uint8 0/255, (H, W); all zero for a good part)."""
        if index is None:
            index, self._next = self._next, self._next + 1
        scene = self._scene(_check_index(index), check_defect(defect), travel=0)
        return self._expose(scene, index, frame=0, offset=0)

    def passing(self, defect: str | None, index: int, n_frames: int,
                travel: float = 0.2) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The frames of part ``index`` riding the belt left to right by ``travel`` x width, with masks.

        The part stays whole in view in every frame; each frame has its own sensor noise.
        """
        if not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
            raise ConfigError(f"n_frames {n_frames!r} must be a positive integer")
        if not 0.0 <= float(travel) <= 0.2:
            raise ConfigError(f"travel {travel!r} must be between 0 and 0.2 of the width (the part must stay in view)")
        travel_px = int(round(float(travel) * self.size[1]))
        scene = self._scene(_check_index(index), check_defect(defect), travel=travel_px)
        offsets = np.round(np.linspace(travel_px, 0, int(n_frames))).astype(int)
        return (self._expose(scene, index, frame=k, offset=int(off)) for k, off in enumerate(offsets))

    # -- rendering -------------------------------------------------------------------------

    def _scene(self, index: int, defect: str | None, travel: int) -> _Scene:
        h, w = self.size[0], self.size[1] + travel
        s = float(min(self.size))
        rng = np.random.default_rng([self.seed, index, 0])
        cy, cx = h / 2 + rng.uniform(-0.03, 0.03) * s, w / 2 + rng.uniform(-0.03, 0.03) * s
        theta = rng.uniform(0, 2 * np.pi) if self.shape == "washer" else np.deg2rad(rng.uniform(-10, 10))
        gain, offset = rng.uniform(0.9, 1.1), rng.uniform(-6, 6)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        dx, dy = xx - cx, yy - cy
        c, sn = np.cos(theta), np.sin(theta)
        u, v = dx * c + dy * sn, -dx * sn + dy * c
        cov, surface, geom = (_washer if self.shape == "washer" else _tile)(u, v, s, rng)
        surface = surface + 14.0 * (dx - dy) / s + _grain(rng, (h, w), 4.0)
        belt = 45.0 + 3.0 * np.sin(2 * np.pi * xx / 7) * np.sin(2 * np.pi * yy / 7) + _grain(rng, (h, w), 3.0)
        mask = np.zeros((h, w), bool)
        mult = np.ones((h, w, 3))
        if defect is not None:
            drng = np.random.default_rng([self.seed, index, 1, DEFECTS.index(defect)])
            local = _Local(cx, cy, c, sn, geom, s)
            if defect == "chip":
                mask = _chip(local, drng, xx, yy) & (cov > 0)
                cov = np.where(mask, 0.0, cov)
            else:
                shape, depth = _SURFACE[defect](local, drng, xx, yy, cov >= 1.0)
                mask = shape & (cov >= 1.0)  # only on full-coverage part pixels: diff == mask
                tint = _STAIN_TINT if defect == "stain" else np.zeros(3)
                mult = 1.0 - (depth * mask)[..., None] * (1.0 - tint)
        if self.colour == "gray":
            part, belt_v = surface[..., None] * mult.mean(axis=2, keepdims=True), belt[..., None]
        else:
            part, belt_v = surface[..., None] * _PART_TINT * mult, belt[..., None] * _BELT_TINT
        value = cov[..., None] * part + (1.0 - cov[..., None]) * belt_v
        return _Scene(value[..., 0] if self.colour == "gray" else value, mask, float(gain), float(offset))

    def _expose(self, scene: _Scene, index: int, frame: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
        w = self.size[1]
        value = scene.value[:, offset:offset + w]
        noise = np.random.default_rng([self.seed, index, 2, frame]).normal(0.0, NOISE_SIGMA, value.shape)
        image = np.clip(np.round(scene.gain * value + scene.offset + noise), 0, 255).astype(np.uint8)
        mask = scene.mask[:, offset:offset + w].astype(np.uint8) * 255
        return image, mask


class _Local(NamedTuple):
    """The part's pose (centre, rotation) and size parameters; ``s`` is the image's shorter side."""

    cx: float
    cy: float
    cos: float
    sin: float
    geom: dict
    s: float

    def to_image(self, pu: float, pv: float) -> tuple[float, float]:
        return self.cx + pu * self.cos - pv * self.sin, self.cy + pu * self.sin + pv * self.cos


def _washer(u, v, s, rng):
    r_out = 0.3 * s * rng.uniform(0.98, 1.02)
    r_in = 0.42 * r_out
    r = np.hypot(u, v)
    cov = np.clip(r_out - r + 0.5, 0, 1) * np.clip(r - r_in + 0.5, 0, 1)
    turning = 5.0 * np.sin(2 * np.pi * r / rng.uniform(2.5, 3.5) + rng.uniform(0, 6.3))
    turning += 3.0 * np.sin(2 * np.pi * r / rng.uniform(9, 13) + rng.uniform(0, 6.3))
    chamfer = 30.0 * (np.exp(-(((r_out - r) / 1.5) ** 2)) + np.exp(-(((r - r_in) / 1.5) ** 2)))
    return cov, rng.uniform(155, 175) + turning + chamfer, {"shape": "washer", "r_out": r_out, "r_in": r_in}


def _tile(u, v, s, rng):
    a, b = 0.3 * s * rng.uniform(0.98, 1.02), 0.2 * s * rng.uniform(0.98, 1.02)
    cov = np.clip(a - np.abs(u) + 0.5, 0, 1) * np.clip(b - np.abs(v) + 0.5, 0, 1)
    brushed = sum(rng.uniform(0.8, 2.5) * np.sin(2 * np.pi * v / rng.uniform(1.5, 8) + rng.uniform(0, 6.3)) for _ in range(10))
    edge = np.minimum(a - np.abs(u), b - np.abs(v))
    return cov, rng.uniform(140, 160) + brushed + 30.0 * np.exp(-((edge / 1.5) ** 2)), {"shape": "tile", "a": a, "b": b}


def _grain(rng, shape, sigma):
    g = rng.normal(0.0, sigma, shape)
    return (g + np.roll(g, 1, 0) + np.roll(g, 1, 1) + np.roll(g, (1, 1), (0, 1))) / 2.0  # std stays ~sigma


def _interior_point(local: _Local, rng, margin: float) -> tuple[float, float]:
    """A point on the part's surface at least ``margin`` px from its edges, in local coordinates."""
    g = local.geom
    if g["shape"] == "washer":
        r, phi = rng.uniform(g["r_in"] + margin, max(g["r_out"] - margin, g["r_in"] + margin + 1)), rng.uniform(0, 2 * np.pi)
        return r * np.cos(phi), r * np.sin(phi)
    return rng.uniform(-1, 1) * max(g["a"] - margin, 1), rng.uniform(-1, 1) * max(g["b"] - margin, 1)


def _scratch(local: _Local, rng, xx, yy, full):
    """A thin, slightly curved dark line 10-25 % of the part's size long; retried until it lies on the part."""
    for _ in range(20):
        pu, pv = _interior_point(local, rng, 4.0)
        length = rng.uniform(0.1, 0.25) * local.s
        washer = local.geom["shape"] == "washer"
        ang = np.arctan2(pv, pu) + np.pi / 2 + rng.uniform(-0.6, 0.6) if washer else rng.uniform(0, np.pi)
        t = np.linspace(-0.5, 0.5, 40)[:, None]
        bend = rng.uniform(-0.08, 0.08) * length * (1 - 4 * t**2)
        d = np.array([np.cos(ang), np.sin(ang)])
        pts_local = np.array([pu, pv]) + t * length * d + bend * np.array([-d[1], d[0]])
        pts = np.array([local.to_image(*p) for p in pts_local])
        dist = _polyline_distance(pts, xx, yy)
        half_width = rng.uniform(0.75, 1.2)
        shape = dist <= half_width
        if np.count_nonzero(shape & full) >= 0.85 * np.count_nonzero(shape):
            break
    # Deepest on the centre line, shallower towards the edges: less staircase, still visible.
    return shape, rng.uniform(0.5, 0.7) * (1.0 - 0.45 * np.clip(dist / half_width, 0, 1))


def _pit(local: _Local, rng, xx, yy, full):
    """A round blowhole of radius 1.5-3.5 px, darker in the middle."""
    px, py = local.to_image(*_interior_point(local, rng, 6.0))
    rho = np.hypot(xx - px, yy - py) / rng.uniform(1.5, 3.5)
    return rho <= 1.0, rng.uniform(0.55, 0.75) * (1.0 - 0.3 * np.clip(rho, 0, 1))


def _stain(local: _Local, rng, xx, yy, full):
    """An irregular discoloured blob of radius 2.5-4.5 % of the image, faded towards its rim."""
    radius = rng.uniform(0.025, 0.045) * local.s
    rho = _blob(local.to_image(*_interior_point(local, rng, radius * 1.3 + 2)), radius, (0.25, 0.12), rng, xx, yy)
    return rho <= 1.0, rng.uniform(0.5, 0.75) * (0.6 + 0.4 * (1 - np.clip(rho, 0, 1)))


_SURFACE = {"scratch": _scratch, "pit": _pit, "stain": _stain}


def _chip(local: _Local, rng, xx, yy) -> np.ndarray:
    """A jagged bite out of the outer edge, radius 4-7 % of the image."""
    radius = rng.uniform(0.04, 0.07) * local.s
    g = local.geom
    if g["shape"] == "washer":  # centred just outside the rim, so it bites a piece off
        phi, rc = rng.uniform(0, 2 * np.pi), g["r_out"] + 0.3 * radius
        pu, pv = rc * np.cos(phi), rc * np.sin(phi)
    else:
        side, along = rng.integers(4), rng.uniform(-0.7, 0.7)
        nu, nv = g["a"] + 0.3 * radius, g["b"] + 0.3 * radius
        pu, pv = [(nu, along * g["b"]), (along * g["a"], nv), (-nu, along * g["b"]), (along * g["a"], -nv)][side]
    return _blob(local.to_image(pu, pv), radius, (0.12, 0.05), rng, xx, yy) <= 1.0


def _blob(centre, radius, wobble, rng, xx, yy) -> np.ndarray:
    """Distance from ``centre`` relative to an irregular outline (<= 1 inside it)."""
    phi = np.arctan2(yy - centre[1], xx - centre[0])
    edge = radius * (1 + wobble[0] * np.sin(3 * phi + rng.uniform(0, 6.3)) + wobble[1] * np.sin(7 * phi + rng.uniform(0, 6.3)))
    return np.hypot(xx - centre[0], yy - centre[1]) / edge


def _polyline_distance(pts: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Distance of every pixel centre to a polyline, computed only in its bounding box."""
    out = np.full(xx.shape, np.inf)
    x0, y0 = np.maximum(np.floor(pts.min(axis=0)) - 3, 0).astype(int)
    x1, y1 = (np.ceil(pts.max(axis=0)) + 4).astype(int)
    bx, by = xx[y0:y1, x0:x1], yy[y0:y1, x0:x1]
    best = np.full(bx.shape, np.inf)
    for (ax, ay), (qx, qy) in zip(pts[:-1], pts[1:]):
        sx, sy = qx - ax, qy - ay
        t = np.clip(((bx - ax) * sx + (by - ay) * sy) / max(sx * sx + sy * sy, 1e-12), 0, 1)
        best = np.minimum(best, np.hypot(bx - ax - t * sx, by - ay - t * sy))
    out[y0:y1, x0:x1] = best
    return out


def check_defect(defect: str | None) -> str | None:
    if defect is not None and defect not in DEFECTS:
        raise ConfigError(f"defect {defect!r} is not one of {list(DEFECTS)} (or None for a good part)")
    return defect


def _check_index(index) -> int:
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index < 0:
        raise ConfigError(f"part index {index!r} must be a non-negative integer")
    return int(index)


# -- writers ---------------------------------------------------------------------------------


def write_inspection_set(
    root: str | os.PathLike,
    n_train_good: int,
    n_test_good: int,
    n_per_defect: int,
    seed: int = 0,
    *,
    size: tuple[int, int] = (256, 256),
    shape: str = "washer",
    defects: Sequence[str] = DEFECTS,
    overwrite: bool = False,
):
    """Write an MVTec-layout set of grey PNGs under ``root`` and return it as ``load_inspection_set`` reads it.

    ``train/good/000.png``..., ``test/good/``, ``test/<defect>/`` and
    ``ground_truth/<defect>/<stem>_mask.png`` (0/255). Every image is a different part.
    An existing set under ``root`` is an error unless ``overwrite`` removes its train/,
    test/ and ground_truth/ folders first.
    """
    from factoryedge.data.images import load_inspection_set

    for name, n, least in (("n_train_good", n_train_good, 1), ("n_test_good", n_test_good, 0), ("n_per_defect", n_per_defect, 0)):
        if not isinstance(n, (int, np.integer)) or n < least:
            raise ConfigError(f"{name} {n!r} must be an integer of at least {least}")
    defects = [check_defect(d) for d in defects]
    if n_test_good + n_per_defect * len(defects) < 1:
        raise ConfigError("the test split would be empty; ask for test good parts or defects")
    root = Path(root)
    folders = [root / "train", root / "test", root / "ground_truth"]
    if any(f.exists() for f in folders):
        if not overwrite:
            raise DataError(f"'{root}' already holds an inspection set; pass overwrite=True to replace it")
        for f in folders:
            shutil.rmtree(f, ignore_errors=True)
    gen = SyntheticParts(size, seed, shape, "gray")
    plan = [("train", "good", None, n_train_good), ("test", "good", None, n_test_good)]
    plan += [("test", d, d, n_per_defect) for d in defects]
    for split, folder, defect, n in plan:
        out = root / split / folder
        out.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            image, mask = gen.make(defect)
            _write_png(out / f"{k:03d}.png", image)
            if defect is not None:
                gt = root / "ground_truth" / folder
                gt.mkdir(parents=True, exist_ok=True)
                _write_png(gt / f"{k:03d}_mask.png", mask)
    log.info("synthetic inspection set written", extra={"root": str(root), "parts": gen._next, "seed": seed})
    return load_inspection_set(root, require_masks=True)


def _write_png(path: Path, array: np.ndarray) -> None:
    try:
        from PIL import Image
    except ImportError as e:
        raise missing_dependency("PIL", "train", "writing PNG images") from e
    Image.fromarray(array).save(path)
