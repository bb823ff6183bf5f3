"""Image bundles the benchmarks score: PatchCore on the real magnetic-tile data, cached, or the tests' small one.

Training PatchCore on magnetic-tile (``factoryedge train image --data magnetic-tile
--model patchcore``) takes minutes on two cores, so its bundle is trained once into
``~/.cache/factoryedge-bench/`` (``$FACTORYEDGE_BENCH_CACHE``), keyed by a hash of the code
that makes it (training, exporters, bundle format; see ``TRAINING_CODE``); a change to that
code trains a new one. Nothing generated lands in the repository.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The code that makes a PatchCore bundle; editing anything else keeps the cache. Image preprocessing
# (sdk/features/image.py) is left out on purpose: its outputs are pinned bit for bit by the parity
# tests, so a change there is a speed change that must not alter the bundle (and the bundle
# records its recipe, which the device reads).
TRAINING_CODE = ("sdk/training", "sdk/data/images.py", "sdk/cli/train_image.py", "sdk/manifest.py", "sdk/bundle.py",
                 "exporters")


def cache_dir() -> Path:
    return Path(os.environ.get("FACTORYEDGE_BENCH_CACHE", Path.home() / ".cache" / "factoryedge-bench"))


def training_code_key() -> str:
    """sha256 (12 hex) over the paths and bytes of ``TRAINING_CODE`` as they are in the working tree."""
    h = hashlib.sha256()
    for entry in TRAINING_CODE:
        p = ROOT / entry
        for f in sorted([p] if p.is_file() else p.rglob("*.py")):
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def magnetic_tile_root() -> Path | None:
    from factoryedge.errors import DataError

    try:
        from factoryedge.data.images import magnetic_tile_root as root

        return root()
    except DataError:
        return None


def patchcore_bundle(train: bool = True) -> Path | None:
    """The cached magnetic-tile PatchCore bundle; trained first if missing and ``train``; None without the data."""
    target = cache_dir() / f"patchcore-magnetic-tile-{training_code_key()}"
    if (target / "bundle" / "manifest.json").is_file():
        return target / "bundle"
    if not train or magnetic_tile_root() is None:
        return None
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="train-", dir=cache_dir()))
    print(f"training the magnetic-tile PatchCore bundle once into {target} (minutes) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "factoryedge", "train", "image", "--data", "magnetic-tile",
                        "--out", str(work), "--model", "patchcore"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        work.rename(target)  # atomic: a half-trained folder is never taken for a bundle
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / "bundle"


def small_image_bundle(directory: Path) -> Path:
    """The tests' template-difference image bundle (64 x 64, needs torch to export)."""
    sys.path.insert(0, str(ROOT))
    from tests.support.image_bundle import make_image_bundle

    return make_image_bundle(directory).path


def image_bundle(directory: Path, train: bool = True) -> tuple[Path, str]:
    """(bundle path, what it is): PatchCore on magnetic-tile where possible, else the test bundle."""
    path = patchcore_bundle(train)
    if path is not None:
        return path, f"PatchCore trained on magnetic-tile (cached at {path.parent})"
    return small_image_bundle(directory), "tests' 64x64 template-difference bundle (no magnetic-tile data or cache)"


def magnetic_tile_images(limit: int | None = None) -> list[Path]:
    """Test images of the magnetic-tile set (good and defective), sorted; empty without the data."""
    root = magnetic_tile_root()
    if root is None:
        return []
    files = sorted((root / "test").glob("*/*.jpg"))
    return files[:limit] if limit else files
