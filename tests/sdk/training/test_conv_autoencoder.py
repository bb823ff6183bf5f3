"""The convolutional autoencoder baseline on small synthetic textures, in torch and in ONNX."""
import numpy as np
import pytest
import torch

from factoryedge.errors import ConfigError, DataError
from factoryedge.features.image import ImagePreprocessingSpec, ImagePreprocessor, stitch
from factoryedge.scoring import calibrate_threshold
from factoryedge.training.conv_autoencoder import AutoencoderConfig, ConvDecoder, ConvEncoder, fit_conv_autoencoder
from factoryedge.training.image_fit import (
    TileSampler,
    reduce_residual,
    score_tiled,
    split_held_out,
    whole_images,
    with_score_reduction,
)

SPEC = ImagePreprocessingSpec(tile=16, stride=8, mean=(0.5,) * 3, std=(0.25,) * 3)
CONFIG = AutoencoderConfig(tile=16, width=8, latent_dim=16, train_tiles=2000, val_tiles=300, epochs=6, batch_size=32, lr=3e-3,
                           score_reduction="peak")
BLOB = (slice(18, 24), slice(26, 32))
SMALL_BLOB = (slice(19, 22), slice(27, 30))  # 3 x 3 px: a pore that a 16 px tile's mean dilutes


def texture(rng, h=40, w=48):
    """Vertical stripes with noise around grey 128, like a ground magnet surface."""
    phase = rng.uniform(0, 2 * np.pi)
    x = 128 + 15 * np.sin(np.arange(w) / 2.0 + phase)[None, :] + rng.normal(0, 5, (h, w))
    return np.clip(x, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train = [texture(rng) for _ in range(30)]
    good = [texture(rng) for _ in range(5)]
    blobs, small = [], []
    for region, out in ((BLOB, blobs), (SMALL_BLOB, small)):
        for _ in range(5):
            img = texture(rng)
            img[region] = 25
            out.append(img)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: more threads only contend with parallel test runs
    try:
        peak = fit_conv_autoencoder(train, SPEC, CONFIG)
        mean = with_score_reduction(peak, train, "mean")  # the same networks, not retrained
        return {"peak": peak, "mean": mean}, good, blobs, small, train
    finally:
        torch.set_num_threads(threads)


def test_loss_decreases_and_curves_are_written(fitted):
    trained = fitted[0]["peak"]
    h = trained.history
    assert len(h) >= 2 and h[-1]["train_loss"] < h[0]["train_loss"]
    assert min(r["val_loss"] for r in h) < h[0]["val_loss"]
    assert trained.curves["learning_curve.csv"].startswith(b"epoch,train_loss,val_loss")
    assert trained.info["n_train_images"] == 10 and trained.calibration.n == 20
    assert trained.architecture == "conv_autoencoder_tiles" and trained.parameters["tile"] == 16
    # Trained on the pixel MSE whatever the reduction: the validation loss is the mean-reduced score.
    assert trained.history[trained.info["best_epoch"] - 1]["val_loss"] == pytest.approx(trained.info["best_val_loss"])


@pytest.mark.parametrize("reduction", ["peak", "mean"])
def test_blob_scores_higher_and_heatmap_peaks_there(fitted, reduction):
    models, good, blobs, _, _ = fitted
    trained = models[reduction]
    scores, heats, layouts = score_tiled(trained.module, SPEC, good + blobs)
    assert scores[len(good):].min() > scores[: len(good)].max()
    assert scores[len(good):].min() > trained.threshold
    for heat, layout in zip(heats[len(good):], layouts[len(good):]):
        full = stitch(heat, layout)
        y, x = np.unravel_index(np.argmax(full), full.shape)
        assert 15 <= y <= 27 and 23 <= x <= 35


def test_peak_separates_a_small_blob_better_than_mean(fitted):
    models, good, _, small, _ = fitted
    margin = {}
    for reduction, trained in models.items():
        scores = score_tiled(trained.module, SPEC, good + small)[0]
        margin[reduction] = scores[len(good):].min() / scores[: len(good)].max()
    assert margin["peak"] > 2 * margin["mean"] and margin["peak"] > 1


def test_variants_share_networks_and_calibrate_through_their_own_module(fitted):
    models, _, _, _, train = fitted
    peak, mean = models["peak"], models["mean"]
    assert peak.module.encoder is mean.module.encoder and peak.module.decoder is mean.module.decoder
    assert (peak.parameters["score_reduction"], mean.parameters["score_reduction"]) == ("peak", "mean")
    assert "4 x 4 window" in peak.score_definition and "per tile: mean of" in mean.score_definition
    held = [train[i] for i in split_held_out(len(train), CONFIG.held_out_fraction, CONFIG.seed)[1]]
    for trained in (peak, mean):
        scores = score_tiled(trained.module, SPEC, held)[0]
        np.testing.assert_allclose(trained.calibration_scores, scores, rtol=1e-6)
        assert trained.threshold == pytest.approx(calibrate_threshold(scores, trained.rule)[0], rel=1e-6)
    assert peak.threshold > mean.threshold  # a window's mean is never below the tile's mean
    with pytest.raises(DataError, match="fitted on 30 good images but 29 were given"):
        with_score_reduction(peak, train[:-1], "mean")
    with pytest.raises(ConfigError, match="peak_window 32 must be an integer from 1 to the tile size 16"):
        with_score_reduction(peak, train, "peak", 32)


def test_score_reduces_the_heatmap(fitted):
    models, good, _, _, _ = fitted
    x = torch.from_numpy(ImagePreprocessor(SPEC)(good[0]))
    with torch.no_grad():
        score_mean, heat = models["mean"].module(x)
        score_peak, heat_peak = models["peak"].module(x)
    torch.testing.assert_close(heat, heat_peak)
    torch.testing.assert_close(score_mean, heat.flatten(1).mean(1))
    windows = np.lib.stride_tricks.sliding_window_view(heat.numpy(), (4, 4), axis=(1, 2)).mean((-1, -2))
    np.testing.assert_allclose(score_peak.numpy(), windows.reshape(len(x), -1).max(1), rtol=1e-5)


def test_peak_keeps_border_windows_whole():
    """No padding: a 4 x 4 defect in a tile's corner counts in full, a lone hot pixel is averaged down."""
    pixel = torch.zeros(3, 1, 16, 16)
    pixel[0, 0, :4, :4] = 1.0
    pixel[1, 0, 12:, 12:] = 1.0
    pixel[2, 0, 0, 15] = 1.0
    torch.testing.assert_close(reduce_residual(pixel, "peak", 4), torch.tensor([1.0, 1.0, 1 / 16]))
    torch.testing.assert_close(reduce_residual(pixel, "mean", 4), torch.tensor([1 / 16, 1 / 16, 1 / 256]))
    torch.testing.assert_close(reduce_residual(pixel, "peak", 1), torch.ones(3))


def test_shapes_of_the_shared_blocks():
    e, d = ConvEncoder(32, 4, 10), ConvDecoder(32, 4, 10).eval()
    assert e(torch.zeros(3, 1, 32, 32)).shape == (3, 10) and e.features(torch.zeros(3, 1, 32, 32)).shape == (3, 16 * 16)
    with torch.no_grad():
        out = d(torch.zeros(3, 10))
    assert out.shape == (3, 1, 32, 32) and float(out.abs().max()) <= 1.0


def test_tiles_and_split_helpers():
    rng = np.random.default_rng(0)
    imgs = whole_images([texture(rng, 10, 12), texture(rng)], SPEC)
    assert imgs[0].shape == (16, 16) and imgs[1].shape == (40, 48)  # small images are mirror-padded
    tiles = TileSampler(imgs, 16, seed=0).sample(50)
    assert tiles.shape == (50, 1, 16, 16) and tiles.dtype == np.float32
    train, held = split_held_out(30, 0.2, 0)
    assert len(held) == 20 and len(train) == 10 and not set(train) & set(held)
    with pytest.raises(DataError, match="fewer than 4 to train on"):
        split_held_out(22, 0.2, 0)


def test_bad_input_is_a_clear_error():
    rng = np.random.default_rng(1)
    imgs = [texture(rng) for _ in range(24)]
    with pytest.raises(ConfigError, match="built for 16 px tiles .* tile=None"):
        fit_conv_autoencoder(imgs, SPEC.model_copy(update={"tile": None, "stride": None}), CONFIG)
    with pytest.raises(ConfigError, match="margin to 0"):
        fit_conv_autoencoder(imgs, SPEC.model_copy(update={"margin": 8}), CONFIG)
    with pytest.raises(ConfigError, match="train_tiles 8 must be at least batch_size 32"):
        AutoencoderConfig(tile=16, train_tiles=8, batch_size=32).check()
    with pytest.raises(ConfigError, match=r"score_reduction 'max' is not one of \['mean', 'peak'\]"):
        AutoencoderConfig(tile=16, score_reduction="max").check()
    with pytest.raises(ConfigError, match="peak_window 17 must be an integer from 1 to the tile size 16"):
        AutoencoderConfig(tile=16, peak_window=17).check()
    with pytest.raises(DataError, match="got 5"):
        fit_conv_autoencoder(imgs[:5], SPEC, CONFIG)
    with pytest.raises(DataError, match=r"image 0 is a uint8 array of shape \(0, 4\)"):
        fit_conv_autoencoder([np.zeros((0, 4), np.uint8)] + imgs, SPEC, CONFIG)


@pytest.mark.parametrize("reduction", ["peak", "mean"])
def test_onnx_export_holds_parity(fitted, tmp_path, reduction):
    from factoryedge.exporters.onnx_export import check_parity, export_onnx

    models, good, blobs, small, _ = fitted
    trained = models[reduction]
    pre = ImagePreprocessor(SPEC)
    golden = np.concatenate([pre(good[0]), pre(blobs[0]), pre(small[0])])
    path = tmp_path / "ae.onnx"
    export_onnx(trained.module, golden, path, ["score", "heatmap"])
    record, ort = check_parity(trained.module, path, golden, trained.threshold)
    assert record.decisions_changed == 0 and max(record.max_abs_diff.values()) <= 1e-4
    assert ort["heatmap"].shape == (len(golden), 16, 16) and ort["score"].shape == (len(golden),)
