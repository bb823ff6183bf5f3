"""Inspection image sets in the MVTec layout: indexing, reading, and the errors users meet."""
import numpy as np
import pytest
from PIL import Image

from factoryedge.data.images import load_inspection_set, magnetic_tile_root, read_gray, read_mask, read_rgb
from factoryedge.errors import DataError


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def tiny_set(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        _save(tmp_path / "train" / "good" / f"g{i}.png", rng.integers(0, 256, (20, 30), dtype=np.uint8))
    _save(tmp_path / "test" / "good" / "t0.jpg", rng.integers(0, 256, (20, 30), dtype=np.uint8))
    _save(tmp_path / "test" / "scratch" / "s0.png", rng.integers(0, 256, (20, 30), dtype=np.uint8))
    _save(tmp_path / "test" / "scratch" / "s1.png", rng.integers(0, 256, (20, 30), dtype=np.uint8))
    mask = np.zeros((20, 30), np.uint8)
    mask[5:8, 10:20] = 255
    mask[4, 10] = 100  # an anti-aliased edge value below the threshold
    _save(tmp_path / "ground_truth" / "scratch" / "s0_mask.png", mask)
    (tmp_path / "test" / "scratch" / "notes.txt").write_text("not an image")
    return tmp_path


def test_layout_is_indexed_with_labels_and_masks(tiny_set):
    ds = load_inspection_set(tiny_set)
    assert [s.path.name for s in ds.train] == ["g0.png", "g1.png", "g2.png"]
    assert all(s.label == "good" and s.split == "train" and s.mask_path is None for s in ds.train)
    by_name = {s.path.name: s for s in ds.test}
    assert set(by_name) == {"t0.jpg", "s0.png", "s1.png"}
    assert by_name["t0.jpg"].label == "good" and not by_name["t0.jpg"].is_defect
    assert by_name["s0.png"].defect_type == "scratch" and by_name["s0.png"].is_defect
    assert by_name["s0.png"].mask_path.name == "s0_mask.png"
    assert by_name["s1.png"].mask_path is None
    assert ds.defect_types == ["scratch"]
    assert ds.counts() == {"train/good": 3, "test/good": 1, "test/scratch": 2}


def test_missing_mask_is_an_error_when_required(tiny_set):
    with pytest.raises(DataError, match="s1.png' has no mask at '.*s1_mask.png'"):
        load_inspection_set(tiny_set, require_masks=True)


def test_reading_pixels_and_masks(tiny_set):
    gray = read_gray(tiny_set / "train" / "good" / "g0.png")
    assert gray.dtype == np.uint8 and gray.shape == (20, 30)
    rgb = read_rgb(tiny_set / "train" / "good" / "g0.png")
    assert rgb.shape == (20, 30, 3) and np.array_equal(rgb[..., 0], gray)
    mask = read_mask(tiny_set / "ground_truth" / "scratch" / "s0_mask.png")
    assert mask.dtype == bool and mask.sum() == 30 and not mask[4, 10]


def test_missing_folders_are_named(tmp_path):
    with pytest.raises(DataError, match="'.*nowhere' does not exist"):
        load_inspection_set(tmp_path / "nowhere")
    (tmp_path / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="has no test/ folder"):
        load_inspection_set(tmp_path)
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_inspection_set(tmp_path)


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    good = tmp_path / "ok.jpg"
    _save(good, np.full((64, 64), 128, np.uint8))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="cannot read image '.*truncated.jpg'.*corrupt"):
        read_gray(truncated)
    text = tmp_path / "text.png"
    text.write_text("hello")
    with pytest.raises(DataError, match="cannot read image '.*text.png'"):
        read_mask(text)
    with pytest.raises(DataError, match="'.*absent.png' does not exist"):
        read_gray(tmp_path / "absent.png")


def test_magnetic_tile_counts():
    try:
        root = magnetic_tile_root()
    except DataError as e:
        pytest.skip(f"magnetic-tile data not available: {e}")
    ds = load_inspection_set(root, require_masks=True)
    assert ds.counts() == {
        "train/good": 250,
        "test/good": 40,
        "test/blowhole": 35,
        "test/break": 30,
        "test/crack": 20,
        "test/fray": 12,
        "test/uneven": 35,
    }
    sample = next(s for s in ds.test if s.defect_type == "crack")
    img, mask = read_gray(sample.path), read_mask(sample.mask_path)
    assert img.shape == mask.shape and 0 < mask.mean() < 0.05
