"""file:// cameras against real video files written by OpenCV and read back through FFmpeg."""
from __future__ import annotations

import time

import cv2
import pytest

from factoryedge.errors import ConfigError, SourceError
from factoryedge.runtimes.cameras import opencv
from factoryedge.runtimes.cameras.video_file import VideoFileCamera
from factoryedge.runtimes.registry import open_camera
from tests.runtimes.cameras.media import FAST, number_of, write_video
from tests.support.broker import wait_until


@pytest.mark.parametrize("fourcc, suffix", [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_video_file_frames_come_back_in_order_with_their_content(tmp_path, fourcc, suffix):
    try:
        path = write_video(tmp_path / f"parts{suffix}", 8, fourcc=fourcc)
    except RuntimeError as e:
        pytest.skip(str(e))
    with open_camera(f"file://{path}") as cam:
        frames = list(cam.frames())
    assert [number_of(f.image) for f in frames] == list(range(8))
    assert [(f.index, f.pos) for f in frames] == [(k, k) for k in range(8)]
    first = frames[0]
    assert first.image.dtype == "uint8" and first.shape == (48, 64, 3) and first.uri == f"file://{path}"
    assert not any(f.gap for f in frames)
    assert all(a.t_monotonic <= b.t_monotonic for a, b in zip(frames, frames[1:]))
    assert cam.stats["frames"] == 8 and cam.stats["loops"] == 0 and not cam.is_open


def test_relative_path_and_keyword_options_override_the_uri(tmp_path, monkeypatch):
    write_video(tmp_path / "clip.avi", 3)
    monkeypatch.chdir(tmp_path)
    cam = open_camera("file://clip.avi?loop=false", loop=True)
    got = []
    for f in cam.frames():
        got.append((f.pos, f.gap))
        if len(got) == 7:
            cam.close()
    assert got == [(0, False), (1, False), (2, False), (0, True), (1, False), (2, False), (0, True)]
    assert cam.stats["loops"] == 2 and not cam.is_open
    assert list(cam.frames()) == []
    with pytest.raises(SourceError, match="is closed"):
        cam.open()


def test_realtime_paces_at_the_files_fps(tmp_path):
    path = write_video(tmp_path / "clip.avi", 10, fps=50.0)
    cam = open_camera(f"file://{path}?realtime=true")
    t0 = time.monotonic()
    frames = list(cam.frames())
    assert len(frames) == 10
    assert time.monotonic() - t0 >= 9 / 50 - 0.01
    # never early: frame k is not delivered before k frame periods after frame 0
    assert all(f.t_monotonic - frames[0].t_monotonic >= k / 50 - 0.002 for k, f in enumerate(frames))


def test_realtime_drops_frames_a_busy_consumer_missed_like_a_camera(tmp_path):
    path = write_video(tmp_path / "clip.avi", 20, fps=100.0)
    cam = open_camera(f"file://{path}?realtime=true")
    it = cam.frames()
    assert next(it).pos == 0
    cam._pacer.t0 -= 0.075  # as if the model had spent 75 ms on frame 0
    rest = [f.pos for f in it]
    assert rest[0] >= 7, rest  # frames 1..6 were over a period late when asked for
    assert cam.stats["skipped"] == 20 - 1 - len(rest) and cam.stats["frames"] == 1 + len(rest)


def test_missing_or_undecodable_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        open_camera(f"file://{tmp_path}/nope.mp4").open()
    (tmp_path / "notes.avi").write_text("not a video")
    with pytest.raises(SourceError, match="cannot decode"):
        open_camera(f"file://{tmp_path}/notes.avi").open()


def test_a_deleted_then_replaced_file_is_reconnected_with_backoff(tmp_path):
    path = write_video(tmp_path / "line.avi", 4)
    cam = open_camera(f"file://{path}?loop=true", **FAST)
    with cam.latest() as latest:
        assert number_of(latest.get(timeout=5).image) < 4
        path.unlink()
        wait_until(lambda: cam.stats["reconnect_attempts"] >= 3, 5, "reconnect attempts")
        assert cam.stats["disconnects"] == 1 and cam.stats["reconnects"] == 0
        write_video(path, 4, first=8)  # the replacement shows frames 8..11
        last = latest.peek().index

        def new_content():
            nonlocal last
            f = latest.get(timeout=5, newer_than=last)
            last = f.index
            return number_of(f.image) >= 8

        wait_until(new_content, 5, "frames of the replaced file")
    assert cam.stats["reconnects"] == 1 and not cam.is_open


def test_a_stream_that_stops_delivering_is_reopened_after_stall_s(tmp_path):
    """A file whose reads fail at its end stands in for a live camera whose stream died."""

    class DyingCamera(VideoFileCamera):
        LIVE = True  # a failed read now means 'no frame yet', as for v4l2/rtsp/csi

    path = write_video(tmp_path / "clip.avi", 3)
    cam = DyingCamera(f"file://{path}", **FAST)
    cam.stall_s = 0.05
    got = []
    for f in cam.frames():
        got.append((number_of(f.image), f.gap))
        if len(got) == 6:
            break
    assert got == [(0, False), (1, False), (2, False), (0, True), (1, False), (2, False)]
    assert cam.stats["disconnects"] == 1 and cam.stats["reconnects"] == 1
    assert not cam.is_open  # leaving the loop early releases the capture


def test_file_options_are_checked():
    with pytest.raises(ConfigError, match=r"unknown option 'fps'.*valid: loop, realtime"):
        open_camera("file://a.mp4?fps=3")
    with pytest.raises(ConfigError, match="loop='maybe' must be true or false"):
        open_camera("file://a.mp4", loop="maybe")
    with pytest.raises(ConfigError, match="reconnect_min=2.0 exceeds reconnect_max=1.0"):
        open_camera("file://a.mp4?reconnect_min=2&reconnect_max=1")
    with pytest.raises(ConfigError, match="names no camera"):
        open_camera("file://")


def test_a_wheel_without_ffmpeg_would_be_named(tmp_path):
    # guards the build-information parsing the error messages rely on
    assert opencv.has_backend(cv2, "FFMPEG") is ("FFMPEG:" in cv2.getBuildInformation())
    assert opencv.has_backend(cv2, "NoSuchBackend") is False
