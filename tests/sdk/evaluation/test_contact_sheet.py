"""Contact sheets: choosing the worst false accepts and rejects, and drawing them to one PNG."""
import numpy as np
import pytest
from PIL import Image

import factoryedge.evaluation.contact_sheet as cs
from factoryedge.errors import ConfigError, DataError
from factoryedge.evaluation.contact_sheet import contact_sheet, select_worst

#                 0       1         2       3      4       5       6      7
LABELS = ["good", "scratch", "good", "pit", "good", "chip", "good", "pit"]
SCORES = [0.20, 0.10, 0.90, 0.45, 0.50, 0.80, 0.70, 0.30]


def test_worst_errors_first_and_only_errors_when_there_are_any():
    w = select_worst(SCORES, LABELS, threshold=0.5)
    # Defective below 0.5, lowest first; good at or above 0.5, highest first.
    assert w.false_accepts == [1, 7, 3] and w.accepts_are_errors and w.n_false_accepts == 3
    assert w.false_rejects == [2, 6, 4] and w.rejects_are_errors and w.n_false_rejects == 3
    assert (w.n_defective, w.n_good) == (4, 4)
    capped = select_worst(SCORES, LABELS, threshold=0.5, n_worst=2)
    assert capped.false_accepts == [1, 7] and capped.false_rejects == [2, 6] and capped.n_false_accepts == 3
    # Booleans (True = defective) mean the same as "good"/defect-type strings.
    as_bool = select_worst(SCORES, [label != "good" for label in LABELS], 0.5)
    assert as_bool == w


def test_without_errors_of_a_kind_the_nearest_to_the_threshold_are_chosen_and_flagged():
    low = select_worst(SCORES, LABELS, threshold=0.05, n_worst=2)  # everything rejected
    assert not low.accepts_are_errors and low.false_accepts == [1, 7]  # nearest: lowest defective scores
    assert low.rejects_are_errors and low.false_rejects == [2, 6]
    high = select_worst(SCORES, LABELS, threshold=0.95, n_worst=2)  # everything accepted
    assert not high.rejects_are_errors and high.false_rejects == [2, 6]  # nearest: highest good scores
    assert high.accepts_are_errors and high.n_false_accepts == 4
    assert "No false rejects" in cs._reject_title(high, 0.95) and "nearest" in cs._reject_title(high, 0.95)
    assert "No false accepts" in cs._accept_title(low, 0.05)
    only_good = select_worst([0.1, 0.2], ["good", "good"], 0.15)
    assert only_good.false_accepts == [] and only_good.n_defective == 0
    assert "no defective parts" in cs._accept_title(only_good, 0.15)


@pytest.mark.parametrize(
    "scores, labels, threshold, n_worst, error, match",
    [
        ([0.1, 0.2], ["good"], 0.5, 8, DataError, "1 labels for 2"),
        ([0.1, float("nan")], ["good", "pit"], 0.5, 8, DataError, "NaN"),
        ([0.1, 0.2], ["good", "pit"], "high", 8, ConfigError, "'high'"),
        ([0.1, 0.2], ["good", "pit"], 0.5, 0, ConfigError, "n_worst 0"),
        ([0.1, 0.2], [0.5, 1.5], 0.5, 8, DataError, "float64"),
    ],
)
def test_bad_selection_input_is_named(scores, labels, threshold, n_worst, error, match):
    with pytest.raises(error, match=match):
        select_worst(scores, labels, threshold, n_worst)


def _parts(n):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(n)]
    heatmaps = [rng.random((6, 8)) for _ in range(n)]
    return images, heatmaps


def test_sheet_is_a_png_and_takes_paths_grey_images_and_missing_heatmaps(tmp_path):
    pytest.importorskip("matplotlib")
    images, heatmaps = _parts(len(SCORES))
    heatmaps[1] = None
    images[2] = images[2][..., 0].copy()  # a grey image among colour ones
    Image.fromarray(images[3]).save(tmp_path / "p3.png")
    images[3] = tmp_path / "p3.png"
    names = [f"part-{i}" for i in range(len(SCORES))]
    out = contact_sheet(images, heatmaps, SCORES, LABELS, 0.5, names, tmp_path / "sheets" / "worst.png",
                        n_worst=3, title="synthetic washers")
    assert out == tmp_path / "sheets" / "worst.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 400 and im.height > 300
    # No heatmaps at all, and no errors of either kind, still make a sheet.
    calm = contact_sheet(images, None, SCORES, LABELS, 0.99, names, tmp_path / "calm.png", n_worst=2)
    assert calm.is_file()


def test_sheet_checks_lengths_and_skips_without_matplotlib(tmp_path, monkeypatch):
    images, heatmaps = _parts(3)
    with pytest.raises(DataError, match="2 names for 3 images"):
        contact_sheet(images, heatmaps, [0.1, 0.2, 0.3], ["good"] * 3, 0.5, ["a", "b"], tmp_path / "x.png")
    monkeypatch.setattr(cs, "_pyplot", lambda: None)
    assert contact_sheet(images, heatmaps, [0.1, 0.2, 0.3], ["good"] * 3, 0.5, ["a", "b", "c"], tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_lower_is_anomalous_picks_the_mirror_image():
    """Negated scores, negated threshold, other direction: the same parts are the worst errors."""
    higher = select_worst(SCORES, LABELS, threshold=0.5)
    lower = select_worst([-s for s in SCORES], LABELS, threshold=-0.5, higher_is_anomalous=False)
    assert lower.false_accepts == higher.false_accepts == [1, 7, 3]
    assert lower.false_rejects == higher.false_rejects == [2, 6, 4]
    assert not lower.higher_is_anomalous and lower.n_false_accepts == higher.n_false_accepts
    assert "scored above the threshold -0.5; the 3 highest" in cs._accept_title(lower, -0.5)
    assert "scored at or below the threshold -0.5; the 3 lowest" in cs._reject_title(lower, -0.5)


def _cyan_pixels(path) -> int:
    px = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(np.count_nonzero((px[..., 0] < 90) & (px[..., 1] > 180) & (px[..., 2] > 180)))


def test_ground_truth_of_a_false_accept_is_outlined(tmp_path):
    pytest.importorskip("matplotlib")
    grey = [np.full((64, 64), 128, np.uint8) for _ in range(2)]
    mask = np.zeros((32, 32), np.uint8)  # stored at half the image's size, as masks sometimes are
    mask[8:20, 10:24] = 255
    args = (grey, None, [0.2, 0.1], ["crack", "good"], 0.5, ["crack/a.png", "good/b.png"])
    plain = contact_sheet(*args, tmp_path / "plain.png", n_worst=1)
    outlined = contact_sheet(*args, tmp_path / "outlined.png", n_worst=1, masks=[mask, None])
    assert _cyan_pixels(plain) == 0
    assert _cyan_pixels(outlined) > 40  # the defect's outline, drawn on the part that would ship
    with pytest.raises(DataError, match="1 masks for 2 images"):
        contact_sheet(*args, tmp_path / "x.png", masks=[mask])
