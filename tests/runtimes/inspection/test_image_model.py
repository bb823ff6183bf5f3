"""ImageModel: a real image bundle through ONNX Runtime on camera-like frames."""
from __future__ import annotations

import numpy as np
import pytest

from factoryedge.errors import BundleError, DataError
from factoryedge.features.image import ImagePreprocessingSpec
from factoryedge.runtimes.inspection.image_model import ImageModel
from tests.support.image_bundle import make_image_bundle, uniform_part
from tests.support.tiny_bundle import tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_image_bundle(tmp_path_factory.mktemp("img") / "b")


@pytest.fixture
def model(bundle):
    with ImageModel.load(bundle.path, backend="onnxruntime") as m:
        yield m


def test_good_passes_and_defect_rejects(model):
    goods = [model.score(uniform_part(seed=200 + i)) for i in range(5)]
    bads = [model.score(uniform_part(seed=300 + i, defect=True)) for i in range(5)]
    assert not any(r.is_anomalous for r in goods)
    assert all(r.is_anomalous for r in bads)
    assert min(r.score for r in bads) > max(r.score for r in goods)


def test_heatmap_is_on_the_frame_grid_and_peaks_at_the_defect(model):
    frame = uniform_part(seed=7, defect=True)
    r = model.score(frame)
    heat = r.heatmap
    assert heat.shape == frame.shape[:2] and heat.dtype == np.float32
    dark = frame[..., 0] < 100
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    ys, xs = np.nonzero(dark)
    assert ys.min() - 8 <= y <= ys.max() + 8 and xs.min() - 8 <= x <= xs.max() + 8


def test_grey_and_bgr_frames_score_the_same(model):
    frame = uniform_part(seed=3, defect=True)
    assert model.score(frame).score == pytest.approx(model.score(frame[..., 0]).score, abs=1e-6)


def test_tiled_model_scores_worst_tile(tmp_path):
    spec = ImagePreprocessingSpec(tile=64, stride=32, mean=(0, 0, 0), std=(1, 1, 1), multiple=4)
    bundle = make_image_bundle(tmp_path / "tiled", spec=spec)
    with ImageModel.load(bundle.path, backend="onnxruntime") as m:
        r = m.score(uniform_part(seed=5, defect=True, size=(128, 160)))
        assert len(r.tile_scores) > 1 and r.score == pytest.approx(float(r.tile_scores.max()))
        assert r.is_anomalous and r.heatmap.shape == (128, 160)


@pytest.mark.parametrize("frame, what", [
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    ("not an image", "uint8"),
    (np.zeros((10, 10, 4), np.uint8), "expects"),
])
def test_corrupt_frames_raise_data_error(model, frame, what):
    with pytest.raises(DataError, match=what):
        model.score(frame)


def test_vibration_bundle_is_refused(tmp_path):
    tiny_bundle(tmp_path / "vib")
    with pytest.raises(BundleError, match="'image' bundle"):
        ImageModel.load(tmp_path / "vib")


def test_the_manifests_direction_decides(bundle):
    """A lower-is-anomalous manifest: the part's score is its lowest tile's and at or below the threshold rejects."""
    from factoryedge.bundle import Bundle
    from factoryedge.runtimes.backends.select import open_backend

    m = bundle.manifest
    flipped = Bundle(bundle.path, m.model_copy(update={"score": m.score.model_copy(update={"higher_is_anomalous": False})}))
    with ImageModel(flipped, open_backend(flipped, "onnxruntime")) as model:
        assert model.rule.higher_is_anomalous is False and model.threshold == m.score.threshold
        good = model.score(uniform_part(seed=200))
        assert good.score == pytest.approx(float(good.tile_scores.min())) and good.threshold == model.threshold
        assert good.is_anomalous == (good.score <= model.threshold) and good.is_anomalous  # good scores are low
