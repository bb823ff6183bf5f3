"""Heatmap overlays in numpy: colour tables, bilinear resizing, blending and the errors for bad input."""
import numpy as np
import pytest

from factoryedge.errors import ConfigError
from factoryedge.features.overlay import colour_table, heatmap_overlay, resize_bilinear


def _image(h=40, w=60, channels=None):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w) if channels is None else (h, w, channels), dtype=np.uint8)


@pytest.mark.parametrize("channels", [None, 3])
def test_overlay_is_rgb_uint8_of_the_image_size_for_any_heatmap_size(channels):
    image = _image(channels=channels)
    out = heatmap_overlay(image, np.random.default_rng(1).random((5, 7)))
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)


def test_cold_pixels_show_the_part_and_the_hottest_blends_alpha_of_the_top_colour():
    image = _image(4, 4)
    heat = np.zeros((4, 4))
    heat[1, 2] = 1.0
    out = heatmap_overlay(image, heat, alpha=0.5)
    cold = np.ones((4, 4), bool)
    cold[1, 2] = False
    assert np.array_equal(out[cold], np.repeat(image[..., None], 3, axis=2)[cold])
    expect = np.round(0.5 * image[1, 2] + 0.5 * colour_table("inferno")[255].astype(float))
    assert np.array_equal(out[1, 2], expect.astype(np.uint8))
    # On a fixed scale the same heat is only half as hot.
    half = heatmap_overlay(image, heat, alpha=0.5, vmin=0.0, vmax=2.0)
    assert not np.array_equal(half[1, 2], out[1, 2])


def test_bgr_input_gives_the_same_rgb_picture_and_a_flat_heatmap_changes_nothing():
    rgb = _image(channels=3)
    heat = np.random.default_rng(2).random((10, 15))
    assert np.array_equal(heatmap_overlay(rgb[..., ::-1].copy(), heat, colour_order="bgr"), heatmap_overlay(rgb, heat))
    assert np.array_equal(heatmap_overlay(rgb, np.full((3, 3), 0.7)), rgb)
    # Models often emit (1, h, w) maps.
    assert heatmap_overlay(rgb, heat[None]).shape == (40, 60, 3)


def test_colour_tables_match_their_namesakes():
    inferno = colour_table("inferno")
    assert inferno.shape == (256, 3) and inferno.dtype == np.uint8 and not inferno.flags.writeable
    jet = colour_table("jet")
    assert tuple(jet[0]) == (0, 0, 128) and tuple(jet[255]) == (128, 0, 0)
    matplotlib = pytest.importorskip("matplotlib")
    for name, tolerance in (("inferno", 8), ("jet", 1)):
        reference = np.round(matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255)
        assert np.abs(colour_table(name).astype(int) - reference).max() <= tolerance, name


def test_bilinear_resize_keeps_constants_and_matches_pixel_centre_geometry():
    assert np.allclose(resize_bilinear(np.full((3, 5), 2.5), (17, 9)), 2.5)
    up = resize_bilinear(np.array([[0.0, 4.0]]), (1, 4))
    assert np.allclose(up, [[0.0, 1.0, 3.0, 4.0]])
    cv2 = pytest.importorskip("cv2")
    a = np.random.default_rng(3).random((6, 9)).astype(np.float32)
    expect = cv2.resize(a, (31, 20), interpolation=cv2.INTER_LINEAR)
    assert np.allclose(resize_bilinear(a, (20, 31)), expect, atol=1e-4)


@pytest.mark.parametrize(
    "image, heat, kw, match",
    [
        (np.zeros((4, 4), np.float32), np.zeros((2, 2)), {}, "uint8.*float32"),
        (np.zeros((4, 4, 4), np.uint8), np.zeros((2, 2)), {}, r"\(4, 4, 4\)"),
        ([[1, 2]], np.zeros((2, 2)), {}, "list"),
        (np.zeros((4, 4), np.uint8), np.full((2, 2), np.nan), {}, "NaN"),
        (np.zeros((4, 4), np.uint8), np.zeros((2, 3, 4)), {}, r"\(2, 3, 4\)"),
        (np.zeros((4, 4), np.uint8), np.zeros((0, 3)), {}, r"\(0, 3\)"),
        (np.zeros((4, 4), np.uint8), np.array([["a"]]), {}, "numeric"),
        (np.zeros((4, 4), np.uint8), np.zeros((2, 2)), {"alpha": 1.5}, "1.5"),
        (np.zeros((4, 4), np.uint8), np.zeros((2, 2)), {"vmin": 2.0, "vmax": 1.0}, "vmin=2.0"),
        (np.zeros((4, 4), np.uint8), np.zeros((2, 2)), {"colour_map": "rainbow"}, "'rainbow'.*inferno"),
        (np.zeros((4, 4), np.uint8), np.zeros((2, 2)), {"colour_order": "hsv"}, "'hsv'.*rgb"),
    ],
)
def test_bad_input_names_the_value_and_what_is_valid(image, heat, kw, match):
    with pytest.raises(ConfigError, match=match):
        heatmap_overlay(image, heat, **kw)
