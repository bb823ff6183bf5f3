"""Camera URIs: the registry, option checking, rtsp credentials, and what unopenable cameras say."""
from __future__ import annotations

import glob
import os
import socket
import sys

import cv2
import pytest

from factoryedge.errors import BackendUnavailableError, ConfigError, SourceError
from factoryedge.runtimes import registry
from factoryedge.runtimes.cameras import opencv
from factoryedge.runtimes.cameras.csi import csi_pipeline
from factoryedge.runtimes.cameras.video_file import VideoFileCamera

HAS_GSTREAMER = opencv.has_backend(cv2, "GStreamer")


def test_camera_schemes_are_registered_and_importable():
    assert set(registry.BUILTIN["camera"]) == {"csi", "v4l2", "rtsp", "file", "dir"}
    for scheme in registry.known("camera"):
        assert hasattr(registry.resolve("camera", f"{scheme}://x"), "from_uri"), scheme


def test_unknown_camera_scheme_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        registry.open_camera("gige://192.168.1.20")
    msg = str(err.value)
    assert "unknown camera scheme 'gige'" in msg
    assert all(s in msg for s in ("csi", "dir", "file", "rtsp", "v4l2"))


def test_options_are_checked_per_scheme():
    with pytest.raises(ConfigError, match=r"unknown option 'fourcc' for csi camera.*valid: width, height, fps, flip"):
        registry.open_camera("csi://0?fourcc=MJPG")
    with pytest.raises(ConfigError, match="flip='9' must be an integer from 0 to 7"):
        registry.open_camera("csi://0?flip=9")
    with pytest.raises(ConfigError, match="sensor id"):
        registry.open_camera("csi://front")
    with pytest.raises(ConfigError, match="fourcc='MJPEG' must be four characters"):
        registry.open_camera("v4l2:///dev/video0", fourcc="MJPEG")
    with pytest.raises(ConfigError, match="width='wide' must be an integer"):
        registry.open_camera("v4l2:///dev/video0?width=wide")
    with pytest.raises(ConfigError, match="option 'fps' is given twice"):
        registry.open_camera("v4l2:///dev/video0?fps=30&fps=60")
    with pytest.raises(ConfigError, match="stall_s='-1' must be a number > 0"):
        registry.open_camera("rtsp://cam/stream", stall_s="-1")
    with pytest.raises(ConfigError, match="is not a camera URI for VideoFileCamera; use file://"):
        VideoFileCamera("serial:///dev/ttyUSB0")


def test_v4l2_number_is_a_device_path():
    assert registry.open_camera("v4l2://2").location == "/dev/video2"


def test_csi_pipeline_asks_argus_for_the_mode_and_appsink_for_the_newest_frame():
    p = csi_pipeline(1, 1280, 720, 59.94, 2)
    assert p.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1280,height=720,")
    assert "framerate=2997/50 !" in p and "nvvidconv flip-method=2 ! video/x-raw,format=BGRx" in p
    assert p.endswith("videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1")
    assert "framerate=30/1" in csi_pipeline(0, 1920, 1080, 30, 0)


@pytest.mark.skipif(HAS_GSTREAMER, reason="this OpenCV has GStreamer; the hardware test below covers csi://")
def test_csi_without_gstreamer_says_so():
    with pytest.raises(SourceError, match=r"built without GStreamer.*JetPack's OpenCV"):
        registry.open_camera("csi://0").open()


@pytest.mark.hardware
@pytest.mark.jetson
@pytest.mark.skipif(not (HAS_GSTREAMER and os.path.exists("/usr/sbin/nvargus-daemon")),
                    reason="needs a Jetson with a CSI camera (nvargus-daemon) and an OpenCV built with GStreamer")
def test_csi_camera_delivers_bgr_frames_at_the_asked_size():
    with registry.open_camera("csi://0?width=1280&height=720&fps=30").latest() as latest:
        first = latest.get(timeout=10)
        second = latest.get(timeout=2, newer_than=first.index)
    assert second.image.shape == (720, 1280, 3) and second.t_monotonic > first.t_monotonic


@pytest.mark.hardware
@pytest.mark.skipif(not glob.glob("/dev/video*"), reason="needs a V4L2 camera at /dev/video*")
def test_v4l2_camera_delivers_frames():
    dev = sorted(glob.glob("/dev/video*"))[0]
    with registry.open_camera(f"v4l2://{dev}").latest() as latest:
        frame = latest.get(timeout=10)
    assert frame.image.ndim in (2, 3) and frame.pos == -1


def test_v4l2_missing_device_lists_the_devices_present(tmp_path, monkeypatch):
    for name in ("video0", "video1"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(opencv, "VIDEO_PATTERNS", (str(tmp_path / "video*"),))
    with pytest.raises(SourceError) as err:
        registry.open_camera("v4l2:///dev/video7").open()
    msg = str(err.value)
    assert "/dev/video7 does not exist" in msg and "video devices present:" in msg
    assert str(tmp_path / "video0") in msg and str(tmp_path / "video1") in msg and "wait=true" in msg
    monkeypatch.setattr(opencv, "VIDEO_PATTERNS", (str(tmp_path / "none*"),))
    with pytest.raises(SourceError, match="no video devices found"):
        registry.open_camera("v4l2:///dev/video7").open()


def test_v4l2_node_that_is_not_a_camera(tmp_path):
    node = tmp_path / "video9"
    node.write_bytes(b"")
    with pytest.raises(SourceError, match=r"not a capture device or is in use .*v4l2-ctl --list-devices"):
        registry.open_camera(f"v4l2://{node}").open()


@pytest.mark.parametrize("uri", ["rtsp://admin:hunter2@10.0.0.5/stream", "rtsp://admin@10.0.0.5/stream"])
def test_rtsp_credentials_in_the_uri_are_rejected_without_echoing_them(uri):
    with pytest.raises(ConfigError, match="password_env=VAR or password_file=PATH") as err:
        registry.open_camera(uri)
    assert "hunter2" not in str(err.value)


def test_rtsp_password_in_the_query_is_rejected():
    with pytest.raises(ConfigError, match="password= query key") as err:
        registry.open_camera("rtsp://10.0.0.5/stream?channel=1&password=hunter2")
    assert "hunter2" not in str(err.value)


def test_rtsp_credentials_from_options_and_the_cameras_own_query_reach_ffmpeg(monkeypatch):
    monkeypatch.setenv("CAM_PW", "p@ss/w:rd")
    cam = registry.open_camera("rtsp://10.0.0.5:554/axis-media/media.amp?videocodec=h264&resolution=1280x720"
                               "&stall_s=2", username="op", password_env="CAM_PW")
    assert cam.stall_s == 2.0
    assert cam._target == ("rtsp://op:p%40ss%2Fw%3Ard@10.0.0.5:554/axis-media/media.amp"
                           "?videocodec=h264&resolution=1280x720")
    assert "p@ss" not in repr(cam) and "p@ss" not in str(cam.options)


def test_frames_are_read_only(tmp_path):
    from tests.runtimes.cameras.media import write_images

    write_images(tmp_path, 1)
    with registry.open_camera(f"dir://{tmp_path}") as cam:
        frame = next(iter(cam))
    with pytest.raises(ValueError, match="read-only"):
        frame.image[0, 0] = 0


def test_rtsp_unreachable_camera_is_a_source_error_that_hides_the_password(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CAM_PASSWORD", "s3cret!")
    secret = tmp_path / "user"
    secret.write_text("operator\n")
    cam = registry.open_camera(f"rtsp://127.0.0.1:{port}/live?videocodec=h264", username_file=str(secret),
                               password_env="CAM_PASSWORD", stall_s=1)
    with pytest.raises(SourceError, match=rf"cannot open camera 'rtsp://127.0.0.1:{port}/live\?videocodec=h264'") as err:
        cam.open()
    assert "s3cret" not in str(err.value) and "operator" not in str(err.value)


def test_rtsp_credential_options_are_checked():
    with pytest.raises(ConfigError, match="without a user name"):
        registry.open_camera("rtsp://cam/x", password_env="HOME").open()
    with pytest.raises(ConfigError, match="NO_SUCH_VAR_FE.*not set"):
        registry.open_camera("rtsp://cam/x", username="op", password_env="NO_SUCH_VAR_FE").open()
    with pytest.raises(ConfigError, match="one way only"):
        registry.open_camera("rtsp://cam/x", username="op", username_env="USER").open()


def test_missing_opencv_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "cv2", None)
    cam = registry.open_camera(f"dir://{tmp_path}")  # URIs are checked without OpenCV
    with pytest.raises(BackendUnavailableError, match=r"'cv2'.*factoryedge\[camera\]"):
        cam.open()
