"""f-AnoGAN on small synthetic textures: a dark blob must stand out, in torch and in ONNX.

The magnetic-tile figures come from ``python -m experiments.image_models_experiment``;
these tests train tiny networks on 16 px tiles for a few hundred iterations (seconds).
"""
import numpy as np
import pytest
import torch

from factoryedge.errors import ConfigError, DataError
from factoryedge.features.image import ImagePreprocessingSpec, ImagePreprocessor, stitch
from factoryedge.scoring import calibrate_threshold
from factoryedge.training.fanogan import FAnoGANConfig, FAnoGANScorer, fit_fanogan, gradient_penalty
from factoryedge.training.image_fit import score_tiled, split_held_out, with_score_reduction

SPEC = ImagePreprocessingSpec(tile=16, stride=8, mean=(0.5,) * 3, std=(0.25,) * 3)
CONFIG = FAnoGANConfig(
    tile=16, width=8, latent_dim=16, batch_size=32, gan_iterations=60, n_critic=3, gan_lr=5e-4,
    encoder_iterations=240, encoder_lr=2e-3, eval_every=30, val_tiles=200, score_reduction="peak",
)
BLOB = (slice(18, 24), slice(26, 32))
SMALL_BLOB = (slice(19, 22), slice(27, 30))  # 3 x 3 px: a pore that a 16 px tile's mean dilutes


def texture(rng, h=40, w=48):
    """Vertical stripes with noise around grey 128, like a ground magnet surface."""
    phase = rng.uniform(0, 2 * np.pi)
    x = 128 + 15 * np.sin(np.arange(w) / 2.0 + phase)[None, :] + rng.normal(0, 5, (h, w))
    return np.clip(x, 0, 255).astype(np.uint8)


def with_blob(rng, region=BLOB):
    img = texture(rng)
    img[region] = 25
    return img


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train = [texture(rng) for _ in range(30)]
    good = [texture(rng) for _ in range(5)]
    blobs = [with_blob(rng) for _ in range(5)]
    small = [with_blob(rng, SMALL_BLOB) for _ in range(5)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: more threads only contend with parallel test runs
    try:
        peak = fit_fanogan(train, SPEC, CONFIG)
        mean = with_score_reduction(peak, train, "mean")  # the paper's score, same networks, not retrained
        return {"peak": peak, "mean": mean}, good, blobs, small, train
    finally:
        torch.set_num_threads(threads)


def test_encoder_loss_decreases_and_history_is_complete(fitted):
    trained = fitted[0]["peak"]
    gan = [r for r in trained.history if r["stage"] == "gan"]
    enc = [r for r in trained.history if r["stage"] == "encoder"]
    assert len(gan) == 2 and len(enc) == 8
    assert [r["epoch"] for r in trained.history] == list(range(1, 11))
    assert all(np.isfinite(r["wasserstein_val"]) and r["gradient_penalty"] >= 0 for r in gan)
    assert enc[-1]["izif_train"] < enc[0]["izif_train"]
    assert min(r["izif_val"] for r in enc) < enc[0]["izif_val"]
    assert trained.info["gan"]["iterations"] == 60 and trained.info["encoder"]["iterations"] == 240
    assert trained.info["n_held_out_images"] == 20 and trained.calibration.n == 20
    assert b"izif_val" in trained.curves["learning_curve.csv"].splitlines()[0]
    assert trained.architecture.startswith("fanogan") and "critic" in trained.score_definition
    assert trained.parameters["kappa"] == 1.0 and trained.rule.quantile == 0.99


@pytest.mark.parametrize("reduction", ["peak", "mean"])
def test_blob_scores_higher_and_heatmap_peaks_there(fitted, reduction):
    models, good, blobs, _, _ = fitted
    trained = models[reduction]
    scores, heats, layouts = score_tiled(trained.module, SPEC, good + blobs)
    assert scores[len(good):].min() > scores[: len(good)].max()
    assert scores[len(good):].min() > trained.threshold
    for heat, layout in zip(heats[len(good):], layouts[len(good):]):
        assert heat.shape == (layout.n_tiles, 16, 16)
        full = stitch(heat, layout)
        y, x = np.unravel_index(np.argmax(full), full.shape)
        assert 15 <= y <= 27 and 23 <= x <= 35


def test_peak_separates_a_small_blob_better_than_mean(fitted):
    models, good, _, small, _ = fitted
    margin = {}
    for reduction, trained in models.items():
        scores = score_tiled(trained.module, SPEC, good + small)[0]
        margin[reduction] = scores[len(good):].min() / scores[: len(good)].max()
    assert margin["peak"] > 1.5 * margin["mean"] and margin["peak"] > 1


def test_variants_share_networks_and_calibrate_through_their_own_module(fitted):
    models, _, _, _, train = fitted
    peak, mean = models["peak"], models["mean"]
    assert peak.module.encoder is mean.module.encoder and peak.module.critic is mean.module.critic
    assert (peak.module.reduction, mean.module.reduction) == ("peak", "mean") and mean.module.kappa == peak.module.kappa
    assert "4 x 4 window" in peak.score_definition and "per tile: mean of" in mean.score_definition
    held = [train[i] for i in split_held_out(len(train), CONFIG.held_out_fraction, CONFIG.seed)[1]]
    for trained in (peak, mean):
        scores = score_tiled(trained.module, SPEC, held)[0]
        np.testing.assert_allclose(trained.calibration_scores, scores, rtol=1e-6)
        assert trained.threshold == pytest.approx(calibrate_threshold(scores, trained.rule)[0], rel=1e-6)


def test_score_is_image_plus_kappa_feature_residual(fitted):
    models, good, _, _, _ = fitted
    x = torch.from_numpy(ImagePreprocessor(SPEC)(good[0]))
    m: FAnoGANScorer = models["mean"].module
    with torch.no_grad():
        score_mean, heat = m(x)
        score_peak, _ = models["peak"].module(x)
        pixel, feat = m.residuals(x[:, :1])
    torch.testing.assert_close(score_mean, pixel.flatten(1).mean(1) + feat)
    windows = np.lib.stride_tricks.sliding_window_view(pixel[:, 0].numpy(), (4, 4), axis=(1, 2)).mean((-1, -2))
    np.testing.assert_allclose(score_peak.numpy(), windows.reshape(len(x), -1).max(1) + feat.numpy(), rtol=1e-5)
    torch.testing.assert_close(heat, pixel[:, 0])
    assert heat.shape == (x.shape[0], 16, 16) and bool((heat >= 0).all())


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic():
    w = torch.randn(1, 16, 16)
    w = w / w.norm()
    g = torch.Generator().manual_seed(0)
    gp = gradient_penalty(lambda x: (x[:, 0] * w).flatten(1).sum(1), torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16), g)
    assert float(gp) < 1e-10
    gp2 = gradient_penalty(lambda x: 3 * (x[:, 0] * w).flatten(1).sum(1), torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16), g)
    assert float(gp2) == pytest.approx(4.0, rel=1e-4)


def test_bad_input_is_a_clear_error():
    rng = np.random.default_rng(1)
    imgs = [texture(rng) for _ in range(24)]
    with pytest.raises(ConfigError, match="built for 16 px tiles .* tile=32"):
        fit_fanogan(imgs, SPEC.model_copy(update={"tile": 32, "stride": None}), CONFIG)
    with pytest.raises(ConfigError, match="tile 24 must be a power of two"):
        FAnoGANConfig(tile=24).check()
    with pytest.raises(ConfigError, match="model_colour='gray'"):
        fit_fanogan(imgs, SPEC.model_copy(update={"model_colour": "rgb"}), CONFIG)
    with pytest.raises(ConfigError, match="kappa"):
        FAnoGANConfig(kappa=-1).check()
    with pytest.raises(ConfigError, match=r"score_reduction 'median' is not one of \['mean', 'peak'\]"):
        FAnoGANConfig(score_reduction="median").check()
    with pytest.raises(ConfigError, match="peak_window 0 must be an integer from 1 to the tile size 32"):
        FAnoGANConfig(peak_window=0).check()
    with pytest.raises(DataError, match="at least 24 good images .* got 3"):
        fit_fanogan(imgs[:3], SPEC, CONFIG)
    with pytest.raises(DataError, match="image 2 is a float64 array"):
        fit_fanogan(imgs[:2] + [imgs[2].astype(np.float64)] + imgs[3:], SPEC, CONFIG)


def test_scorer_rejects_a_wrong_tile_size(fitted):
    with pytest.raises(ConfigError, match=r"expects 16 x 16 tiles, got input of shape \(2, 3, 32, 32\)"):
        fitted[0]["peak"].module(torch.zeros(2, 3, 32, 32))


@pytest.mark.parametrize("reduction", ["peak", "mean"])
def test_onnx_export_holds_parity(fitted, tmp_path, reduction):
    from factoryedge.exporters.onnx_export import check_parity, export_onnx

    models, good, blobs, small, _ = fitted
    trained = models[reduction]
    pre = ImagePreprocessor(SPEC)
    golden = np.concatenate([pre(good[0]), pre(blobs[0]), pre(small[0])])
    path = tmp_path / "fanogan.onnx"
    export_onnx(trained.module, golden, path, ["score", "heatmap"])
    record, ort = check_parity(trained.module, path, golden, trained.threshold)
    assert record.decisions_changed == 0 and max(record.max_abs_diff.values()) <= 1e-4
    assert ort["heatmap"].shape == (len(golden), 16, 16) and ort["score"].shape == (len(golden),)
