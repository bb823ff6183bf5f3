"""The latest-frame policy: a slow consumer always gets the newest frame and memory stays bounded."""
from __future__ import annotations

import time
import tracemalloc

import pytest

from factoryedge.errors import SourceError
from factoryedge.runtimes.cameras.frames import Frame, FrameTimeout, LatestFrame, StreamEnded
from factoryedge.runtimes.registry import open_camera
from tests.runtimes.cameras.media import number_of, write_video
from tests.support.broker import wait_until

VGA = (640, 480)
VGA_BYTES = 640 * 480 * 3


def test_a_slow_consumer_gets_the_newest_frame_and_memory_stays_bounded(tmp_path):
    path = write_video(tmp_path / "line.avi", 20, size=VGA)
    tracemalloc.start()
    try:
        cam = open_camera(f"file://{path}?loop=true")
        with cam.latest() as latest:
            frame = latest.get(timeout=5)
            seen = [(frame.index, frame.pos, number_of(frame.image))]  # not the frames: they would stay alive
            for _ in range(4):
                # the model is busy until the camera has moved on by at least 10 frames
                target = latest.stats["received"] + 10
                wait_until(lambda target=target: latest.stats["received"] >= target, 5, "10 more frames")
                frame = latest.get(timeout=5, newer_than=frame.index)
                seen.append((frame.index, frame.pos, number_of(frame.image)))
            stats = latest.stats
            del frame
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    jumps = [b[0] - a[0] for a, b in zip(seen, seen[1:])]
    assert min(jumps) >= 10, jumps
    assert all(pos == number for _, pos, number in seen)
    assert stats["received"] >= 41 and stats["taken"] == 5
    assert stats["skipped"] >= stats["received"] - 5 - 1  # all but the taken (and maybe the newest)
    assert cam.stats["skipped"] == stats["skipped"] and cam.stats["frames"] >= stats["received"]
    # tens of VGA frames passed through; only a handful were ever alive at once
    print(f"peak {peak / VGA_BYTES:.1f} frames for {stats['received']} received")
    assert peak < 5 * VGA_BYTES, f"peak {peak / VGA_BYTES:.1f} frames for {stats['received']} received"


def test_wait_for_returns_a_frame_captured_after_the_trigger(tmp_path):
    path = write_video(tmp_path / "line.avi", 20, fps=100.0)
    with open_camera(f"file://{path}?loop=true&realtime=true").latest() as latest:
        latest.get(timeout=5)
        trigger = time.time() + 0.05  # the PLC's part-present signal, slightly ahead
        frame = latest.wait_for(trigger, timeout=2)
        assert frame.t_wall >= trigger
        assert frame.t_wall - trigger < 0.5
        with pytest.raises(FrameTimeout, match=r"no frame captured after") as err:
            latest.wait_for(time.time() + 60, timeout=0.05)
        assert isinstance(err.value, TimeoutError) and isinstance(err.value, SourceError)


def test_the_end_of_a_file_ends_the_holder(tmp_path):
    path = write_video(tmp_path / "clip.avi", 5)
    cam = open_camera(f"file://{path}")
    latest = cam.latest()
    wait_until(lambda: latest.ended, 5, "the end of the file")
    last = latest.get(timeout=1)
    assert last.pos == 4  # the newest frame stays available after the end
    with pytest.raises(StreamEnded, match="ended after 5 frames"):
        latest.get(timeout=1, newer_than=last.index)
    latest.close()
    latest.close()
    assert not latest._thread.is_alive() and not cam.is_open


def test_closing_the_camera_stops_its_grabber(tmp_path):
    path = write_video(tmp_path / "clip.avi", 5)
    cam = open_camera(f"file://{path}?loop=true&realtime=true")
    latest = cam.latest()
    latest.get(timeout=5)
    with pytest.raises(SourceError, match="already has a latest-frame grabber"):
        cam.latest()
    cam.close()
    assert not latest._thread.is_alive() and latest.ended and not cam.is_open


def _frames(n, fail=None):
    for k in range(n):
        yield Frame(image=None, t_monotonic=time.monotonic(), t_wall=time.time(), index=k, uri="test://")
    if fail:
        raise fail


def test_a_failing_producer_surfaces_in_get():
    latest = LatestFrame(_frames(3, fail=OSError("usb bus reset")), name="test://")
    wait_until(lambda: latest.ended, 5, "the producer to fail")
    assert latest.get(timeout=1).index == 2
    with pytest.raises(SourceError, match="usb bus reset") as err:
        latest.get(timeout=1, newer_than=2)
    assert isinstance(err.value.__cause__, OSError)
    assert latest.stats == {"received": 3, "skipped": 2, "taken": 1}


def test_nothing_yet_is_a_timeout_not_an_end():
    latest = LatestFrame(_frames(0), start=False)
    with pytest.raises(FrameTimeout, match="no frame within 0.01 s"):
        latest.get(timeout=0.01)
    latest.start()
    wait_until(lambda: latest.ended, 5, "the empty producer to end")
    with pytest.raises(StreamEnded):
        latest.get(timeout=0.01)
