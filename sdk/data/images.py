"""Inspection image sets in the MVTec AD layout: good parts to train on, labelled parts to test.

Layout under ``root``::

    train/good/<stem>.<ext>                  defect-free parts (the only training data)
    test/good/<stem>.<ext>                   defect-free parts held out for testing
    test/<defect>/<stem>.<ext>               defective parts, one folder per defect type
    ground_truth/<defect>/<stem>_mask.png    optional pixel masks of the defective parts

Torch-free: the device's replay and commissioning tools use it too. Images are read with
PIL; the data itself lives outside the repository (see ``factoryedge.data.cwru.shared_data_dir``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from factoryedge.errors import DataError

GOOD = "good"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_SUFFIX = "_mask.png"
# Masks are stored as 0/255 with a few anti-aliased values on the edges.
MASK_THRESHOLD = 127
MAGNETIC_TILE_FOLDER = "magnetic-tile-defect"


@dataclass(frozen=True)
class ImageSample:
    """One image: ``label`` is "good" or "defect"; ``mask_path`` is None where no mask exists."""

    path: Path
    label: str
    defect_type: str
    split: str
    mask_path: Path | None = None

    @property
    def is_defect(self) -> bool:
        return self.label != GOOD


@dataclass(frozen=True)
class InspectionSet:
    """The train (good only) and test samples of one inspection data set, in sorted order."""

    root: Path
    train: list[ImageSample]
    test: list[ImageSample]

    @property
    def defect_types(self) -> list[str]:
        return sorted({s.defect_type for s in self.test if s.is_defect})

    def counts(self) -> dict[str, int]:
        """Number of images per "<split>/<defect_type>", e.g. {"train/good": 250, ...}."""
        out: dict[str, int] = {}
        for s in self.train + self.test:
            key = f"{s.split}/{s.defect_type}"
            out[key] = out.get(key, 0) + 1
        return out


def load_inspection_set(root: str | os.PathLike, require_masks: bool = False,
                        require_train: bool = True) -> InspectionSet:
    """Index an MVTec-style folder; reads no pixels.

    A defective test image without a mask gets ``mask_path`` None, unless ``require_masks``
    makes that an error. Files with other suffixes (READMEs, CSVs) are ignored. Evaluating
    a trained bundle reads only ``test/`` (and ``ground_truth/``): with ``require_train``
    False a folder without ``train/good/`` is indexed with an empty ``train``.
    """
    root = Path(root)
    layout = "train/good/, test/good/, test/<defect>/, ground_truth/<defect>/<stem>_mask.png"
    if not root.is_dir():
        needs = "train/good/ and test/" if require_train else "test/ (and optionally ground_truth/)"
        raise DataError(f"inspection data folder '{root}' does not exist; expected {needs} inside it")
    train_good = root / "train" / GOOD
    test_dir = root / "test"
    for need in (train_good, test_dir) if require_train else (test_dir,):
        if not need.is_dir():
            raise DataError(f"'{root}' has no {need.relative_to(root)}/ folder; expected the MVTec layout {layout}"
                            + ("" if require_train else " (train/ is not needed to evaluate)"))
    train = [ImageSample(p, GOOD, GOOD, "train") for p in _images(train_good)] if train_good.is_dir() else []
    if require_train and not train:
        raise DataError(f"'{train_good}' holds no images (suffixes {list(IMAGE_SUFFIXES)})")
    test = []
    for folder in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        kind = folder.name
        for path in _images(folder):
            if kind == GOOD:
                test.append(ImageSample(path, GOOD, GOOD, "test"))
                continue
            mask = root / "ground_truth" / kind / f"{path.stem}{MASK_SUFFIX}"
            if not mask.is_file():
                if require_masks:
                    raise DataError(f"defective image '{path}' has no mask at '{mask}'")
                mask = None
            test.append(ImageSample(path, "defect", kind, "test", mask))
    if not test:
        raise DataError(f"'{test_dir}' holds no images in any sub-folder")
    return InspectionSet(root, train, test)


def magnetic_tile_root(root: str | os.PathLike | None = None) -> Path:
    """The magnetic-tile defect set: ``root`` if given, else ``shared_data_dir()/magnetic-tile-defect``."""
    if root is not None:
        return Path(root)
    from factoryedge.data.cwru import shared_data_dir

    path = shared_data_dir() / MAGNETIC_TILE_FOLDER
    if not path.is_dir():
        raise DataError(f"magnetic-tile data not found at '{path}'; set FACTORYEDGE_DATA to the folder holding it")
    return path


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 grey levels (H, W); colour images are converted with PIL's "L" (ITU-R 601).

    PIL rounds that conversion differently from OpenCV; when the device will see colour
    camera frames, train on ``read_rgb`` with the spec's colour "rgb" instead, so the shared
    preprocessing converts both.
    """
    return np.asarray(_open(path).convert("L"), dtype=np.uint8)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 (H, W, 3) in RGB order."""
    return np.asarray(_open(path).convert("RGB"), dtype=np.uint8)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A defect mask as bool (H, W): grey level above 127 is defect."""
    return np.asarray(_open(path).convert("L")) > MASK_THRESHOLD


def _open(path: str | os.PathLike):
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"image file '{p}' does not exist")
    try:
        with Image.open(p) as im:
            im.load()  # decode now: a truncated file fails here, not later in convert()
            return im.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image '{p}': {e}; the file is corrupt or not an image") from e


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
