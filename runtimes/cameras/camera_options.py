"""Camera URI options and OpenCV helpers: what each scheme accepts, and how to ask OpenCV."""
from __future__ import annotations

import functools
import glob
import re
from fractions import Fraction
from typing import Any

from factoryedge.errors import ConfigError, missing_dependency
from factoryedge.runtimes.options import as_bool, as_float, as_int, as_text


def _as_fourcc(key: str, value: Any) -> str:
    text = str(value)
    if len(text) != 4 or not text.isascii() or not text.isprintable():
        raise ConfigError(f"option {key}={value!r} must be four characters, e.g. {key}=MJPG or {key}=YUYV")
    return text


_SIZE = {"width": as_int(16, 16384, 1920), "height": as_int(16, 16384, 1080), "fps": as_float(0.0, 30.0)}
_RECONNECT = {"reconnect_min": as_float(0.0, 0.1), "reconnect_max": as_float(0.0, 5.0), "wait": as_bool}
_LIVE = {"stall_s": as_float(0.0, 5.0), **_RECONNECT}
_CREDENTIALS = ("username", "username_env", "username_file", "password_env", "password_file")
OPTIONS: dict[str, dict[str, Any]] = {
    "csi": {**_SIZE, "flip": as_int(0, 7, 2), **_LIVE},
    "v4l2": {**_SIZE, "fourcc": _as_fourcc, **_LIVE},
    "rtsp": {**{k: as_text for k in _CREDENTIALS}, **_LIVE},
    "file": {"loop": as_bool, "realtime": as_bool, **_RECONNECT},
    "dir": {"pattern": as_text, "fps": as_float(0.0, 5.0), "loop": as_bool, **_RECONNECT},
}
DEFAULTS: dict[str, Any] = {"stall_s": 5.0, "reconnect_min": 0.1, "reconnect_max": 5.0, "wait": False,
                            "loop": False, "realtime": False}
CSI_DEFAULTS = {"width": 1920, "height": 1080, "fps": 30.0, "flip": 0}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
_VIDEO_PATTERNS = ("/dev/video*", "/dev/v4l/by-id/*")
_SECRET_KEYS = {"password", "pass", "passwd", "pwd"}

def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise missing_dependency("cv2", "camera", "reading a camera") from None
    return cv2


@functools.cache
def _has_backend(cv2: Any, name: str) -> bool:
    """Whether OpenCV was built with a video I/O backend, as its build information says."""
    match = re.search(rf"^\s*{name}:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(match) and match.group(1).upper().startswith("YES")


def video_devices() -> str:
    """A sentence listing the V4L2 device nodes present, for error messages."""
    found = sorted({p for pattern in _VIDEO_PATTERNS for p in glob.glob(pattern)})
    if not found:
        return "no video devices found (looked for " + ", ".join(_VIDEO_PATTERNS) + ")"
    return "video devices present: " + ", ".join(found)


def csi_pipeline(sensor_id: int, width: int, height: int, fps: float, flip: int) -> str:
    """The GStreamer pipeline for a Jetson CSI sensor, ending in BGR frames for OpenCV.

    ``appsink drop=true max-buffers=1`` keeps only the newest frame, so a late read never
    gets a stale one from a queue.
    """
    rate = Fraction(fps).limit_denominator(1001)
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM),width={width},height={height},framerate={rate.numerator}/{rate.denominator} ! "
            f"nvvidconv flip-method={flip} ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
            "appsink drop=true max-buffers=1")
