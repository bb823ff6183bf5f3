"""Real media for camera tests: video files and image folders whose frames say their own number.

Frame ``k`` is a flat grey image of value ``STEP * k``: a lossy codec moves it by a few
levels at most, so ``number_of(image)`` reads ``k`` back exactly.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

STEP = 12  # frames 0..21 fit in uint8; codec error stays well under STEP / 2
SIZE = (64, 48)  # width, height
FAST = dict(reconnect_min=0.01, reconnect_max=0.05)  # backoff options that keep reconnect tests short


def image_of(k: int, size: tuple[int, int] = SIZE, grey: bool = False) -> np.ndarray:
    w, h = size
    return np.full((h, w) if grey else (h, w, 3), STEP * k, np.uint8)


def number_of(image: np.ndarray) -> int:
    return int(round(float(image.mean()) / STEP))


def write_video(path: Path, n: int, *, first: int = 0, fps: float = 25.0, fourcc: str = "MJPG",
                size: tuple[int, int] = SIZE) -> Path:
    """Write frames ``first .. first+n-1`` and move the file into place in one step."""
    tmp = path.with_name(".tmp-" + path.name)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"this OpenCV cannot write {fourcc} to {tmp.suffix}")
    for k in range(first, first + n):
        writer.write(image_of(k, size))
    writer.release()
    os.replace(tmp, path)  # a looping reader never sees a half-written file
    return path


def write_images(folder: Path, n: int, *, first: int = 0, grey: bool = False) -> list[str]:
    """PNGs ``img_000.png``... written elsewhere and renamed in, so none is seen half-written."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(first, first + n):
        name = f"img_{k:03d}.png"
        tmp = folder.parent / f"tmp-{folder.name}-{name}"
        assert cv2.imwrite(str(tmp), image_of(k, grey=grey))
        os.replace(tmp, folder / name)
        names.append(name)
    return names
