"""Image preprocessing shared by training and the device: exact resampling, colour, tiles, errors."""
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from factoryedge.errors import ConfigError
from factoryedge.features.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImagePreprocessingSpec,
    ImagePreprocessor,
    bgr_to_gray,
    resize_uint8,
    stitch,
    tile_origins,
)

PIL_FILTERS = {"bilinear": Image.BILINEAR, "area": Image.BOX}


def _pil(img, h, w, mode):
    return np.asarray(Image.fromarray(img).resize((w, h), PIL_FILTERS[mode]))


def _texture(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["bilinear", "area"])
def test_each_resampling_pass_equals_pillow_bit_for_bit(mode):
    rng = np.random.default_rng(1)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(2, 300, 2))
        out = int(rng.integers(1, 400))
        img = _texture(h, w, int(rng.integers(1 << 30)))
        assert np.array_equal(resize_uint8(img, h, out, mode), _pil(img, h, out, mode))
        assert np.array_equal(resize_uint8(img, out, w, mode), _pil(img, out, w, mode))


@pytest.mark.parametrize("mode", ["bilinear", "area"])
def test_two_pass_resize_is_within_one_level_of_pillow(mode):
    # Pillow 13 may run the vertical pass first; each pass rounds, so results differ by <= 1.
    img = _texture(157, 233)
    for h, w in [(60, 90), (300, 500), (80, 400), (311, 100)]:
        diff = np.abs(resize_uint8(img, h, w, mode).astype(int) - _pil(img, h, w, mode))
        assert diff.max() <= 1


def test_known_patterns():
    assert np.all(resize_uint8(np.full((37, 53), 77, np.uint8), 91, 20) == 77)
    # A 2x area reduction of levels that are multiples of 4 is the exact 2x2 block mean.
    img = (_texture(8, 12) // 4 * 4).astype(np.uint8)
    blocks = img.reshape(4, 2, 6, 2).astype(int).mean(axis=(1, 3))
    assert np.array_equal(resize_uint8(img, 4, 6, "area"), blocks.astype(np.uint8))
    # Shrinking a one-pixel checkerboard 4x averages it (antialiased) instead of aliasing it.
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    small = resize_uint8(board, 16, 16, "bilinear")
    assert np.all(np.abs(small.astype(int) - 128) <= 2)
    # Doubling a horizontal ramp keeps it a ramp (away from the clamped edges).
    ramp = np.tile(np.arange(0, 200, 10, dtype=np.uint8), (3, 1))
    up = resize_uint8(ramp, 3, 40)[0, 2:-2].astype(int)
    assert np.all(np.diff(up) >= 0) and set(np.diff(up)) <= {5}
    # Colour frames resize per channel.
    rgb = np.stack([img, 255 - img, img // 2], axis=-1)
    out = resize_uint8(rgb, 4, 6, "area")
    assert out.shape == (4, 6, 3) and np.array_equal(out[..., 0], resize_uint8(img, 4, 6, "area"))


def test_normalisation_and_layout():
    spec = ImagePreprocessingSpec()
    x = ImagePreprocessor(spec)(np.full((5, 7), 51, np.uint8))
    assert x.shape == (1, 3, 5, 7) and x.dtype == np.float32
    expected = (0.2 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x[0, :, 2, 3], expected, rtol=1e-6)


def test_bgr_frames_convert_like_opencv_and_match_grey_input():
    cv2 = pytest.importorskip("cv2")
    bgr = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert np.array_equal(bgr_to_gray(bgr), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    from_bgr = ImagePreprocessor(ImagePreprocessingSpec(colour="bgr"))(bgr)
    from_gray = ImagePreprocessor(ImagePreprocessingSpec(colour="gray"))(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    assert np.array_equal(from_bgr, from_gray)
    rgb_model = ImagePreprocessor(ImagePreprocessingSpec(colour="rgb", model_colour="rgb"))
    assert np.array_equal(rgb_model(bgr[..., ::-1].copy()), ImagePreprocessor(
        ImagePreprocessingSpec(colour="bgr", model_colour="rgb"))(bgr))


def test_standardize_cancels_exposure():
    base = np.clip(_texture(64, 80) // 4 + 40, 0, 255).astype(np.uint8)
    bright = (base.astype(int) * 2).astype(np.uint8)  # twice the exposure, no clipping
    pre = ImagePreprocessor(ImagePreprocessingSpec(intensity="standardize"))
    np.testing.assert_allclose(pre(base), pre(bright), atol=1e-5)
    flat = pre(np.full((8, 8), 30, np.uint8))  # a blank frame is not amplified into noise
    assert all(np.ptp(flat[0, c]) == 0 for c in range(3))


def test_deterministic_and_batch_of_one_equals_many():
    spec = ImagePreprocessingSpec(resize="scale", scale=0.7, multiple=8, intensity="standardize", margin=8, tile=32, stride=24)
    a, b = _texture(61, 90, 3), _texture(45, 30, 4)
    pre = ImagePreprocessor(spec)
    xa, xb = pre(a), pre(b)
    assert np.array_equal(xa.view(np.uint32), ImagePreprocessor(spec)(a).view(np.uint32))
    many, layouts = pre.batch([a, b])
    assert np.array_equal(many, np.concatenate([xa, xb]))
    assert [lay.n_tiles for lay in layouts] == [len(xa), len(xb)]
    whole = ImagePreprocessor(ImagePreprocessingSpec())
    with pytest.raises(ConfigError, match="cannot batch whole images of different sizes"):
        whole.batch([a, b])


def test_resize_modes_margin_and_multiple():
    img = _texture(113, 290)
    assert ImagePreprocessingSpec(resize="shorter", size=64).resized_shape(290, 113) == (164, 64)
    assert ImagePreprocessingSpec(resize="none", multiple=32).resized_shape(290, 113) == (288, 128)
    assert ImagePreprocessingSpec(resize="fixed", size=(64, 96)).resized_shape(290, 113) == (64, 96)
    spec = ImagePreprocessingSpec(multiple=32, margin=16)
    x, layout = ImagePreprocessor(spec).with_layout(img)
    assert x.shape == (1, 3, 128 + 32, 288 + 32) and layout.resized == (128, 288) and layout.margin == 16
    # The margin mirrors the image: the first margin row equals the first image row.
    np.testing.assert_array_equal(x[0, :, 15, 16:-16], x[0, :, 16, 16:-16])


def test_tiles_cover_the_image_and_small_images_are_padded():
    assert tile_origins(100, 32, 24) == [0, 22, 45, 68]
    assert tile_origins(20, 32, 24) == [0]
    spec = ImagePreprocessingSpec(tile=32, stride=24)
    x, layout = ImagePreprocessor(spec).with_layout(_texture(20, 100))
    assert x.shape == (4, 3, 32, 32) and layout.padded == (32, 100)
    assert [o[1] + 32 for o in layout.origins][-1] == 100


def test_stitch_puts_peaks_back_where_they_were():
    spec = ImagePreprocessingSpec(tile=32, stride=24)
    _, layout = ImagePreprocessor(spec).with_layout(_texture(40, 70))
    maps = np.zeros((layout.n_tiles, 4, 4), np.float32)
    # Tile 0 starts at (0, 0): its cell (1, 2) covers pixels 8-15 x 16-23.
    maps[0, 1, 2] = 10.0
    heat = stitch(maps, layout)
    assert heat.shape == (40, 70)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert 8 <= y < 16 and 16 <= x < 24
    whole_spec = ImagePreprocessingSpec(resize="scale", scale=0.5, multiple=8, margin=8)
    _, whole = ImagePreprocessor(whole_spec).with_layout(_texture(64, 96))
    grid = np.zeros((1, 4, 6), np.float32)
    grid[0, 3, 0] = 1.0
    heat = stitch(grid, whole)
    assert heat.shape == (64, 96) and np.unravel_index(np.argmax(heat), heat.shape)[0] >= 48
    with pytest.raises(ConfigError, match=r"expected \(1, gh, gw\) heatmaps"):
        stitch(np.zeros((2, 4, 6)), whole)


def _interp_matrix(n_in, n_out):
    """The (n_out, n_in) bilinear matrix (half-pixel centres, clamped edges) stitch was first written with."""
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - (src - lo)
    m[np.arange(n_out), hi] += src - lo
    return m


@pytest.mark.parametrize("spec", [ImagePreprocessingSpec(resize="scale", scale=0.5, multiple=8, margin=8),
                                  ImagePreprocessingSpec(resize="scale", scale=0.5, tile=32, stride=24)])
def test_stitch_equals_interpolation_matrix_products(spec):
    # stitch interpolates with two taps per pixel (no BLAS call); the result is the float64 matrix
    # formulation's to float32 rounding
    _, layout = ImagePreprocessor(spec).with_layout(_texture(75, 131))
    maps = np.random.default_rng(3).random((layout.n_tiles, 5, 7), dtype=np.float32) * 10
    (h, w), (oh, ow) = layout.resized, layout.original
    if layout.tile is None:
        ref = _interp_matrix(5, h) @ maps[0] @ _interp_matrix(7, w).T
    else:
        t, m = layout.tile, layout.margin
        canvas = np.full(layout.padded, -np.inf)
        for tile_map, (y, x) in zip(maps, layout.origins):
            canvas[y : y + t, x : x + t] = np.maximum(canvas[y : y + t, x : x + t],
                                                      _interp_matrix(5, t) @ tile_map @ _interp_matrix(7, t).T)
        ref = canvas[m : m + h, m : m + w]
    ref = _interp_matrix(h, oh) @ ref @ _interp_matrix(w, ow).T
    heat = stitch(maps, layout)
    assert heat.dtype == np.float32 and heat.shape == (75, 131)
    np.testing.assert_allclose(heat, ref, rtol=1e-5, atol=1e-5)


def test_shape_colour_and_spec_errors():
    gray = ImagePreprocessor(ImagePreprocessingSpec(colour="gray"))
    with pytest.raises(ConfigError, match=r"'gray' expects \(H, W\) frames, got shape \(4, 5, 3\)"):
        gray(np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ConfigError, match="must be a uint8 numpy array, got float32"):
        gray(np.zeros((4, 5), np.float32))
    with pytest.raises(ConfigError, match=r"is empty"):
        gray(np.zeros((0, 5), np.uint8))
    bgr = ImagePreprocessor(ImagePreprocessingSpec(colour="bgr"))
    with pytest.raises(ConfigError, match=r"'bgr' expects \(H, W, 3\) frames, got shape \(4, 5\)"):
        bgr(np.zeros((4, 5), np.uint8))
    with pytest.raises(ValidationError, match="needs scale"):
        ImagePreprocessingSpec(resize="scale")
    with pytest.raises(ValidationError, match="would leave gaps"):
        ImagePreprocessingSpec(tile=32, stride=40)
    with pytest.raises(ValidationError, match="not a multiple of 32"):
        ImagePreprocessingSpec(resize="fixed", size=(100, 64), multiple=32)
    with pytest.raises(ConfigError, match="interpolation 'cubic'"):
        resize_uint8(np.zeros((4, 4), np.uint8), 2, 2, "cubic")
