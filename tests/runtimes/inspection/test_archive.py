"""The reject archive: bounded, restart-safe, and never fatal."""
from __future__ import annotations

import json

import numpy as np

from factoryedge.runtimes.inspection.archive import RejectArchive


def frame(level=100):
    return np.full((48, 64, 3), level, np.uint8)


def fill(archive, n, first=0):
    for i in range(first, first + n):
        assert archive.submit(frame(), {"part_id": f"P{i}"}, f"P/{i}", heatmap=lambda: np.eye(48, 64, dtype=np.float32))
    assert archive.flush(10)


def test_entries_have_frame_heatmap_and_record_and_the_oldest_go_first(tmp_path):
    a = RejectArchive(tmp_path, max_items=3)
    fill(a, 5)
    a.close()
    stems = a.entries()
    assert len(stems) == 3 and stems[0].endswith("_P_2") and stems[-1].endswith("_P_4")
    assert a.stats["evicted"] == 2 and a.stats["written"] == 5
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 9
    record = json.loads((tmp_path / f"{stems[0]}.json").read_text())
    assert record["part_id"] == "P2" and record["files"] == [f"{stems[0]}{s}" for s in (".png", ".heat.png", ".json")]


def test_byte_bound_and_heatmaps_off(tmp_path):
    a = RejectArchive(tmp_path, max_items=100, max_bytes=1000, heatmap=False)
    fill(a, 10)
    a.close()
    assert a.stats["bytes"] <= 1000 and 0 < a.stats["items"] < 10
    assert not list(tmp_path.glob("*.heat.png"))


def test_restart_picks_up_entries_and_removes_half_written_ones(tmp_path):
    a = RejectArchive(tmp_path, max_items=10)
    fill(a, 4)
    a.close()
    (tmp_path / "20990101T000000.000Z_000001_crash.png").write_bytes(b"half")  # no JSON: a crash leftover
    (tmp_path / ".tmp-20990101T000000.000Z_000002_x.json").write_bytes(b"{")
    (tmp_path / "notes.txt").write_text("operator notes stay")
    b = RejectArchive(tmp_path, max_items=3)  # a smaller bound applies at start-up
    b.close()
    assert b.stats["items"] == 3 and b.entries() == a.entries()[1:]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("2")) == ["notes.txt"]
    assert not list(tmp_path.glob("*crash*"))


def test_write_errors_are_counted_not_raised(tmp_path, caplog):
    target = tmp_path / "archive"
    a = RejectArchive(target, max_items=10)
    target.rmdir()
    target.write_text("a file where the folder was")  # every write now fails with NotADirectoryError
    fill(a, 2)
    assert a.stats["write_errors"] == 2 and a.stats["items"] == 0
    fill(a, 1)  # still alive
    a.close()
    assert "cannot write part" in caplog.text


def test_a_full_queue_drops_instead_of_blocking(tmp_path):
    a = RejectArchive(tmp_path, queue_size=1)
    big = np.random.default_rng(0).integers(0, 255, (1200, 1600, 3), dtype=np.uint8)
    results = [a.submit(big, {}, f"p{i}") for i in range(20)]
    a.close()
    assert not all(results) and a.stats["dropped"] == results.count(False)


def test_heatmap_picture_is_the_shared_overlay_and_a_bad_heatmap_costs_only_the_picture(tmp_path):
    import cv2

    from factoryedge.features.overlay import heatmap_overlay

    bgr = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    heat = np.random.default_rng(2).random((6, 8))
    a = RejectArchive(tmp_path)
    assert a.submit(bgr, {}, "hot", heatmap=heat)
    assert a.submit(bgr, {}, "nan", heatmap=np.full((6, 8), np.nan))
    a.close()
    hot, nan = a.entries()
    picture = cv2.imread(str(tmp_path / f"{hot}.heat.png"))  # BGR, as the frame was
    np.testing.assert_array_equal(picture[..., ::-1], heatmap_overlay(bgr, heat, colour_order="bgr"))
    assert not (tmp_path / f"{nan}.heat.png").exists() and (tmp_path / f"{nan}.png").is_file()
    assert a.stats["write_errors"] == 0 and a.stats["written"] == 2
