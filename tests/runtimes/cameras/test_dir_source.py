"""dir:// cameras: folders of real PNGs written by OpenCV, with corrupt and vanishing files."""
from __future__ import annotations

import logging
import os
import shutil
import time

import pytest

from factoryedge.errors import ConfigError, SourceError
from factoryedge.runtimes.registry import open_camera
from tests.runtimes.cameras.media import FAST, number_of, write_images
from tests.support.broker import wait_until


def test_images_come_in_name_order_and_corrupt_ones_are_counted_and_skipped(tmp_path, caplog):
    shots = tmp_path / "shots"
    write_images(shots, 5)
    (shots / "img_001b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (shots / "img_003b.png").write_bytes(b"")
    (shots / "readme.txt").write_text("not an image")
    (shots / ".hidden.png").write_bytes(b"editor swap file")
    with caplog.at_level(logging.WARNING), open_camera(f"dir://{shots}") as cam:
        frames = list(cam.frames())
    assert [number_of(f.image) for f in frames] == [0, 1, 2, 3, 4]
    assert [f.name for f in frames] == [f"img_{k:03d}.png" for k in range(5)]
    assert [f.pos for f in frames] == [0, 1, 3, 4, 6]  # positions in the listing, corrupt ones included
    assert cam.stats["corrupt"] == 2 and cam.stats["frames"] == 5
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "img_001b.png" in warned and "img_003b.png" in warned


def test_corrupt_images_warn_once_but_count_every_pass(tmp_path, caplog):
    shots = tmp_path / "shots"
    write_images(shots, 2)
    (shots / "img_000x.png").write_bytes(b"junk")
    cam = open_camera(f"dir://{shots}?loop=true")
    with caplog.at_level(logging.WARNING):
        for f in cam.frames():
            if f.index == 5:
                cam.close()
    assert cam.stats["corrupt"] == 3 and cam.stats["loops"] == 2
    assert sum("img_000x.png" in r.getMessage() for r in caplog.records) == 1


def test_pattern_grey_images_and_pacing(tmp_path):
    shots = tmp_path / "shots"
    write_images(shots, 4, grey=True)
    (shots / "other.jpg").write_bytes(b"would be corrupt if it were read")
    t0 = time.monotonic()
    with open_camera(f"dir://{shots}?pattern=img_*.png&fps=50") as cam:
        frames = list(cam.frames())
    assert time.monotonic() - t0 >= 3 / 50 - 0.01
    assert [number_of(f.image) for f in frames] == [0, 1, 2, 3]
    assert frames[0].image.shape == (48, 64)  # grey stays HxW
    assert cam.stats["corrupt"] == 0


def test_a_removed_folder_is_reconnected_when_it_reappears(tmp_path):
    shots = tmp_path / "shots"
    write_images(shots, 3)
    cam = open_camera(f"dir://{shots}?loop=true", **FAST)
    with cam.latest() as latest:
        latest.get(timeout=5)
        shutil.rmtree(shots)
        wait_until(lambda: cam.stats["reconnect_attempts"] >= 3, 5, "reconnect attempts")
        assert cam.stats["reconnects"] == 0
        staged = tmp_path / "staged"
        write_images(staged, 3, first=7)
        os.rename(staged, shots)  # the folder comes back whole
        wait_until(lambda: number_of(latest.get(timeout=5).image) >= 7, 5, "frames from the new folder")
        frame = latest.get(timeout=5)
    assert cam.stats["reconnects"] == 1 and cam.stats["disconnects"] == 1
    assert frame.name.startswith("img_00") and not cam.is_open


def test_a_folder_of_only_corrupt_images_backs_off_instead_of_spinning(tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "a.png").write_bytes(b"junk")
    cam = open_camera(f"dir://{shots}?loop=true", **FAST)
    t0 = time.monotonic()
    with cam.latest() as latest:
        wait_until(lambda: cam.stats["disconnects"] >= 5, 5, "a fifth loss")
        elapsed = time.monotonic() - t0
        assert latest.peek() is None
    # waits of 10, 20 and 40 ms before the 3rd, 4th and 5th pass, where a spinning loop would take ~1 ms
    assert elapsed >= 0.065 and cam.stats["corrupt"] <= cam.stats["disconnects"] + 1


def test_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        open_camera(f"dir://{tmp_path}/nope").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"no file matching an image extension \(.png"):
        open_camera(f"dir://{tmp_path}/empty").open()
    with pytest.raises(SourceError, match=r"no file matching pattern=\*.bmp"):
        open_camera(f"dir://{tmp_path}/empty?pattern=*.bmp").open()
    with pytest.raises(ConfigError, match=r"unknown option 'realtime'.*valid: pattern, fps, loop"):
        open_camera(f"dir://{tmp_path}?realtime=true")
    with pytest.raises(ConfigError, match="fps='0' must be a number > 0"):
        open_camera(f"dir://{tmp_path}?fps=0")
