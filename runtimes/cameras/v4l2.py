"""USB/V4L2 cameras: ``v4l2:///dev/video0?width=1280&height=720&fps=30&fourcc=MJPG`` (or ``v4l2://0``).

Size, rate and ``fourcc`` are asked of the driver only when given (the driver's own mode
otherwise); a driver that refuses or changes one is logged, not an error, since many
cameras round to the nearest mode they have.
"""
from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

from factoryedge.errors import ConfigError, SourceError
from factoryedge.runtimes.cameras.base import LIVE_OPTIONS
from factoryedge.runtimes.cameras.opencv import SIZE_OPTIONS, CaptureCamera, CaptureReader, import_cv2, live_reader, video_devices

log = logging.getLogger(__name__)


def _as_fourcc(key: str, value: Any) -> str:
    text = str(value)
    if len(text) != 4 or not text.isascii() or not text.isprintable():
        raise ConfigError(f"option {key}={value!r} must be four characters, e.g. {key}=MJPG or {key}=YUYV")
    return text


class V4l2Camera(CaptureCamera):
    """A V4L2 device node (a bare number N means /dev/videoN); see the module docstring."""

    SCHEME: ClassVar[str] = "v4l2"
    LIVE: ClassVar[bool] = True
    OPTIONS = {**SIZE_OPTIONS, "fourcc": _as_fourcc, **LIVE_OPTIONS}

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri, **options)
        if self.location.isdigit():
            self.location = f"/dev/video{self.location}"

    def open_reader(self) -> CaptureReader:
        cv2, dev, o = import_cv2(), self.location, self.options
        if not os.path.exists(dev):
            raise SourceError(f"camera {self.uri!r}: {dev} does not exist; {video_devices()}. Check the cable "
                              "and `v4l2-ctl --list-devices`, or pass wait=true to wait for the device")
        if not os.access(dev, os.R_OK | os.W_OK):
            raise SourceError(f"camera {self.uri!r}: permission denied on {dev}; add the service user to the 'video' group")
        cap = cv2.VideoCapture(dev, cv2.CAP_V4L2)
        if cap.isOpened():
            if "fourcc" in o:  # before the size: the driver picks the sizes a format offers
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*o["fourcc"]))
            for key, prop in (("width", cv2.CAP_PROP_FRAME_WIDTH), ("height", cv2.CAP_PROP_FRAME_HEIGHT),
                              ("fps", cv2.CAP_PROP_FPS)):
                if key in o and not cap.set(prop, o[key]):
                    log.warning("camera %s: the driver refused %s=%s", self.uri, key, o[key])
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer queued buffers, fresher frames
            got = (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            if ("width" in o or "height" in o) and got != (o.get("width", got[0]), o.get("height", got[1])):
                log.warning("camera %s: asked for %sx%s, the driver gives %dx%d", self.uri,
                            o.get("width", "?"), o.get("height", "?"), *got)
        return live_reader(cv2, cap, self.uri, (
            f"{dev} exists but is not a capture device or is in use (check `v4l2-ctl --list-devices` "
            f"and `fuser {dev}`); {video_devices()}"))
