"""The convolutional autoencoder baseline on small synthetic textures, in torch and in ONNX."""
import numpy as np
import pytest
import torch

from factoryedge.errors import ConfigError, DataError
from factoryedge.features.image import ImagePreprocessingSpec, ImagePreprocessor, stitch
from factoryedge.training.conv_autoencoder import AutoencoderConfig, ConvDecoder, ConvEncoder, fit_conv_autoencoder
from factoryedge.training.image_fit import TileSampler, score_tiled, split_held_out, whole_images

SPEC = ImagePreprocessingSpec(tile=16, stride=8, mean=(0.5,) * 3, std=(0.25,) * 3)
CONFIG = AutoencoderConfig(tile=16, width=8, latent_dim=16, train_tiles=2000, val_tiles=300, epochs=6, batch_size=32, lr=3e-3)
BLOB = (slice(18, 24), slice(26, 32))


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
    blobs = []
    for _ in range(5):
        img = texture(rng)
        img[BLOB] = 25
        blobs.append(img)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: more threads only contend with parallel test runs
    try:
        return fit_conv_autoencoder(train, SPEC, CONFIG), good, blobs
    finally:
        torch.set_num_threads(threads)


def test_loss_decreases_and_curves_are_written(fitted):
    trained, _, _ = fitted
    h = trained.history
    assert len(h) >= 2 and h[-1]["train_loss"] < h[0]["train_loss"]
    assert min(r["val_loss"] for r in h) < h[0]["val_loss"]
    assert trained.curves["learning_curve.csv"].startswith(b"epoch,train_loss,val_loss")
    assert trained.info["n_train_images"] == 10 and trained.calibration.n == 20
    assert trained.architecture == "conv_autoencoder_tiles" and trained.parameters["tile"] == 16


def test_blob_scores_higher_and_heatmap_peaks_there(fitted):
    trained, good, blobs = fitted
    scores, heats, layouts = score_tiled(trained.module, SPEC, good + blobs)
    assert scores[len(good):].min() > scores[: len(good)].max()
    assert scores[len(good):].min() > trained.threshold
    for heat, layout in zip(heats[len(good):], layouts[len(good):]):
        full = stitch(heat, layout)
        y, x = np.unravel_index(np.argmax(full), full.shape)
        assert 15 <= y <= 27 and 23 <= x <= 35


def test_score_is_the_mean_of_the_heatmap(fitted):
    trained, good, _ = fitted
    x = torch.from_numpy(ImagePreprocessor(SPEC)(good[0]))
    with torch.no_grad():
        score, heat = trained.module(x)
    torch.testing.assert_close(score, heat.flatten(1).mean(1))


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
    with pytest.raises(DataError, match="got 5"):
        fit_conv_autoencoder(imgs[:5], SPEC, CONFIG)
    with pytest.raises(DataError, match=r"image 0 is a uint8 array of shape \(0, 4\)"):
        fit_conv_autoencoder([np.zeros((0, 4), np.uint8)] + imgs, SPEC, CONFIG)


def test_onnx_export_holds_parity(fitted, tmp_path):
    from factoryedge.exporters.onnx_export import check_parity, export_onnx

    trained, good, blobs = fitted
    pre = ImagePreprocessor(SPEC)
    golden = np.concatenate([pre(good[0]), pre(blobs[0])])
    path = tmp_path / "ae.onnx"
    export_onnx(trained.module, golden, path, ["score", "heatmap"])
    record, ort = check_parity(trained.module, path, golden, trained.threshold)
    assert record.decisions_changed == 0 and max(record.max_abs_diff.values()) <= 1e-4
    assert ort["heatmap"].shape == (len(golden), 16, 16)
