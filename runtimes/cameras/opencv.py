"""What the camera kinds ask of OpenCV: importing it, its build's backends, V4L2 nodes, VideoCapture reads.

cv2 is imported only by ``import_cv2()``, when a camera opens, so importing this module
needs no OpenCV; a missing one raises an error naming the ``camera`` extra.
"""
from __future__ import annotations

import functools
import glob
import re
from typing import Any

from factoryedge.errors import SourceError, missing_dependency
from factoryedge.runtimes.cameras.base import END, Camera, CameraLost, Reader
from factoryedge.runtimes.options import OptionSpec, as_float, as_int

SIZE_OPTIONS: OptionSpec = {"width": as_int(16, 16384, 1920), "height": as_int(16, 16384, 1080),
                            "fps": as_float(0.0, 30.0)}
VIDEO_PATTERNS = ("/dev/video*", "/dev/v4l/by-id/*")


def import_cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise missing_dependency("cv2", "camera", "reading a camera") from None
    return cv2


@functools.cache
def has_backend(cv2: Any, name: str) -> bool:
    """Whether OpenCV was built with a video I/O backend, as its build information says."""
    match = re.search(rf"^\s*{name}:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(match) and match.group(1).upper().startswith("YES")


def video_devices() -> str:
    """A sentence listing the V4L2 device nodes present, for error messages."""
    found = sorted({p for pattern in VIDEO_PATTERNS for p in glob.glob(pattern)})
    if not found:
        return "no video devices found (looked for " + ", ".join(VIDEO_PATTERNS) + ")"
    return "video devices present: " + ", ".join(found)


class CaptureReader(Reader):
    """An open ``cv2.VideoCapture``; ``fps`` paces a file played in real time."""

    def __init__(self, cv2: Any, cap: Any, fps: float | None = None) -> None:
        self.cv2, self.cap, self.fps = cv2, cap, fps

    def release(self) -> None:
        self.cap.release()


def live_reader(cv2: Any, cap: Any, uri: str, hint: str) -> CaptureReader:
    """The reader for a live camera's capture; SourceError with ``hint`` if OpenCV could not open it."""
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open camera {uri!r}; {hint}")
    return CaptureReader(cv2, cap)


class CaptureCamera(Camera):
    """A camera read through ``cv2.VideoCapture``: a failed read is "no frame yet" if live, else the end."""

    def read_frame(self, reader: CaptureReader) -> Any:
        try:
            ok, image = reader.cap.read()
        except reader.cv2.error as e:
            raise CameraLost(f"read failed: {e}") from None
        if not ok or image is None:
            return None if self.LIVE else END
        return image, (-1 if self.LIVE else reader.good), ""
