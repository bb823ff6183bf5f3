"""Video files as a camera: ``file://parts.mp4?loop=true&realtime=true``.

``realtime`` paces the file at its own fps (30 if it states none), dropping frames a busy
consumer missed, as a camera would; without it frames come as fast as they decode.
``loop`` reopens the file at its end (reopened, not rewound, so a replaced file is
noticed); a file that vanishes is reopened with backoff until it is back.
"""
from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

import numpy as np

from factoryedge.errors import SourceError
from factoryedge.runtimes.cameras.base import RECONNECT_OPTIONS, Camera
from factoryedge.runtimes.cameras.opencv import CaptureCamera, CaptureReader, has_backend, import_cv2
from factoryedge.runtimes.options import as_bool

log = logging.getLogger(__name__)


class VideoFileCamera(CaptureCamera):
    """A video file, relative paths from the working directory; see the module docstring."""

    SCHEME: ClassVar[str] = "file"
    OPTIONS = {"loop": as_bool, "realtime": as_bool, **RECONNECT_OPTIONS}
    DEFAULTS: ClassVar[dict[str, Any]] = {**Camera.DEFAULTS, "loop": False, "realtime": False}

    def open_reader(self) -> CaptureReader:
        cv2 = import_cv2()
        path = os.path.abspath(os.path.expanduser(self.location))
        if not os.path.isfile(path):
            raise SourceError(f"video file {path!r} does not exist")
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG if has_backend(cv2, "FFMPEG") else cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"OpenCV cannot decode video file {path!r}; check its codec with ffprobe "
                              "(MJPG in .avi and mp4v/H.264 in .mp4 work with FFmpeg builds)")
        fps = None
        if self.settings["realtime"]:
            fps = cap.get(cv2.CAP_PROP_FPS)
            if not (np.isfinite(fps) and 0 < fps <= 1000):
                log.warning("camera %s: the file states no usable fps (%r); pacing at 30 fps", self.uri, fps)
                fps = 30.0
        return CaptureReader(cv2, cap, fps)
