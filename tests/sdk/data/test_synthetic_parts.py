"""Synthetic parts: deterministic by seed, masks that are exactly the defect, sets and videos that load back."""
import numpy as np
import pytest

from factoryedge.data.images import load_inspection_set, read_gray, read_mask
from factoryedge.data.parts_video import write_parts_video
from factoryedge.data.synthetic_parts import DEFECTS, SyntheticParts, write_inspection_set
from factoryedge.errors import ConfigError, DataError

SIZE = (96, 128)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a.astype(int) - b.astype(int))
    return d.max(axis=2) if d.ndim == 3 else d


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(mask, (dy, dx), axis=(0, 1))
    return out


def test_same_seed_same_parts_other_seed_other_parts():
    a, b = SyntheticParts(SIZE, seed=7), SyntheticParts(SIZE, seed=7)
    for defect in (None, "scratch", "chip"):
        ia, ma = a.make(defect)
        ib, mb = b.make(defect)
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
    # Part 2 by index is the third part made in sequence, whatever was made before.
    assert np.array_equal(SyntheticParts(SIZE, seed=7).make("chip", index=2)[0], ia)
    assert not np.array_equal(SyntheticParts(SIZE, seed=8).make("chip", index=2)[0], ia)
    assert not np.array_equal(a.make(None, index=0)[0], a.make(None, index=1)[0])


@pytest.mark.parametrize("colour", ["gray", "bgr"])
@pytest.mark.parametrize("shape", ["washer", "tile"])
def test_masks_are_exactly_the_pixels_the_defect_changed(shape, colour):
    gen = SyntheticParts(SIZE, seed=3, shape=shape, colour=colour)
    for index in range(3):
        good, good_mask = gen.make(None, index=index)
        assert good.dtype == np.uint8 and good.shape == (SIZE if colour == "gray" else SIZE + (3,))
        assert good_mask.shape == SIZE and good_mask.dtype == np.uint8 and not good_mask.any()
        part_area = np.count_nonzero((good.mean(axis=2) if good.ndim == 3 else good) > 100)
        for defect in DEFECTS:
            image, mask = gen.make(defect, index=index)
            m = mask > 0
            assert set(np.unique(mask)) <= {0, 255}
            d = _diff(image, good)
            assert m.any(), (shape, defect, index)
            assert not d[~m].any(), f"{defect} changed pixels outside its mask"
            assert np.mean(d[m] > 2) > 0.95 and d[m].mean() > 15, f"{defect} is not visible"
            # Visible but not huge: a few % of the part at most.
            assert m.sum() / part_area < 0.04, (defect, m.sum(), part_area)


def test_frames_of_a_passing_part_move_right_and_keep_the_mask_on_the_defect():
    gen = SyntheticParts(SIZE, seed=1, colour="bgr")
    frames = list(gen.passing("pit", 4, 5))
    goods = list(gen.passing(None, 4, 5))
    xs = [np.nonzero(m)[1].mean() for _, m in frames]
    assert len(frames) == 5 and all(b > a for a, b in zip(xs, xs[1:]))
    for (image, mask), (good, _) in zip(frames, goods):
        d = _diff(image, good)
        assert not d[mask == 0].any() and d[mask > 0].mean() > 15


def test_bad_arguments_quote_the_value_and_the_valid_ones():
    gen = SyntheticParts(SIZE)
    with pytest.raises(ConfigError, match="'dent'.*scratch"):
        gen.make("dent")
    with pytest.raises(ConfigError, match="-1"):
        gen.make(None, index=-1)
    with pytest.raises(ConfigError, match=r"\(10, 10\)"):
        SyntheticParts((10, 10))
    with pytest.raises(ConfigError, match="'hexagon'.*washer"):
        SyntheticParts(SIZE, shape="hexagon")
    with pytest.raises(ConfigError, match="0.5"):
        gen.passing(None, 0, 3, travel=0.5)


def test_written_set_loads_with_the_right_counts_and_masks(tmp_path):
    root = tmp_path / "parts"
    ds = write_inspection_set(root, n_train_good=3, n_test_good=2, n_per_defect=2, seed=5, size=(64, 64))
    expected = {"train/good": 3, "test/good": 2} | {f"test/{d}": 2 for d in DEFECTS}
    assert ds.counts() == expected
    assert load_inspection_set(root, require_masks=True).counts() == expected
    assert ds.defect_types == sorted(DEFECTS)
    defective = [s for s in ds.test if s.is_defect]
    assert all(s.mask_path is not None for s in defective)
    # Parts are numbered in writing order: train good, test good, then each defect in DEFECTS order.
    first_chip = next(s for s in defective if s.defect_type == "chip")
    image, mask = SyntheticParts((64, 64), seed=5).make("chip", index=3 + 2 + 2 * DEFECTS.index("chip"))
    assert np.array_equal(read_gray(first_chip.path), image)
    assert np.array_equal(read_mask(first_chip.mask_path), mask > 0)
    with pytest.raises(DataError, match="overwrite"):
        write_inspection_set(root, 1, 1, 0, size=(64, 64))
    again = write_inspection_set(root, 1, 1, 0, size=(64, 64), overwrite=True)
    assert again.counts() == {"train/good": 1, "test/good": 1}


def test_video_reads_back_with_every_frame_and_the_defects_where_the_masks_say(tmp_path):
    pytest.importorskip("cv2")
    parts = [None, "scratch", "pit", "chip"]
    path = tmp_path / "parts.avi"
    truth = write_parts_video(path, parts, frames_per_part=4, fps=10, seed=3, size=SIZE)
    assert [(t.frames, t.part_id, t.defect) for t in truth] == [
        (range(4 * i, 4 * i + 4), f"part-{i:04d}", d) for i, d in enumerate(parts)]
    frames = read_frames(path)
    assert len(frames) == 16 and frames[0].shape == SIZE + (3,)
    gen = SyntheticParts(SIZE, seed=3, colour="bgr")
    for i, defect in enumerate(parts):
        goods = list(gen.passing(None, i, 4))
        for k, (written, mask) in zip(truth[i].frames, gen.passing(defect, i, 4)):
            good = goods[k - truth[i].frames.start][0]
            # MJPG smooths the sensor noise (sigma 2.5) and moves levels a little, no more.
            assert np.abs(frames[k].astype(int) - written).mean() < 4
            m = mask > 0
            d = _diff(frames[k], good)
            assert d[~_dilate(m, 4)].mean() < 6
            if defect is not None:
                assert d[m].mean() > 30, f"{defect} not visible in frame {k}"
    assert not list(tmp_path.glob(".tmp-*"))


def test_video_without_an_ffmpeg_writer_falls_back_to_opencvs_own_mjpeg(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    monkeypatch.setattr(cv2.videoio_registry, "getWriterBackends", lambda: ())
    path = tmp_path / "own.avi"
    write_parts_video(path, [None, "stain"], frames_per_part=3, fps=10, seed=1, size=(64, 64))
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 6 and cap.get(cv2.CAP_PROP_FPS) == 10


def test_video_needs_an_avi_path(tmp_path):
    with pytest.raises(ConfigError, match=r"parts\.mp4.*\.avi"):
        write_parts_video(tmp_path / "parts.mp4", [None])


def test_lossless_video_gives_back_the_exact_frames(tmp_path):
    path = tmp_path / "raw.avi"
    write_parts_video(path, [None, "pit"], frames_per_part=2, fps=10, seed=4, size=(64, 64), travel=0.0, codec="FFV1")
    gen = SyntheticParts((64, 64), seed=4, colour="bgr")
    expected = [img for i, d in enumerate([None, "pit"]) for img, _ in gen.passing(d, i, 2, 0.0)]
    frames = read_frames(path)
    assert len(frames) == 4 and all(np.array_equal(a, b) for a, b in zip(frames, expected))


def test_unknown_video_codec_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="H264"):
        write_parts_video(tmp_path / "x.avi", [None], codec="H264")


def read_frames(path) -> list[np.ndarray]:
    """Every frame of a video file, as OpenCV decodes it."""
    cv2 = pytest.importorskip("cv2")
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames
