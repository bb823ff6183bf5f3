"""Jetson CSI cameras: ``csi://0?width=1920&height=1080&fps=30&flip=0`` through nvarguscamerasrc.

Needs an OpenCV built with GStreamer, as JetPack's is; the pip wheels are not, and opening
says so. ``flip`` is nvvidconv's flip-method (0-7, e.g. 2 for a sensor mounted upside down).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, ClassVar

from factoryedge.errors import ConfigError, SourceError
from factoryedge.runtimes.cameras.base import LIVE_OPTIONS, Camera
from factoryedge.runtimes.cameras.opencv import SIZE_OPTIONS, CaptureCamera, CaptureReader, has_backend, import_cv2, live_reader
from factoryedge.runtimes.options import as_int


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


class CsiCamera(CaptureCamera):
    """A CSI sensor by its sensor id; see the module docstring for the options."""

    SCHEME: ClassVar[str] = "csi"
    LIVE: ClassVar[bool] = True
    OPTIONS = {**SIZE_OPTIONS, "flip": as_int(0, 7, 2), **LIVE_OPTIONS}
    # argus needs a complete mode, so the size and rate have defaults (V4L2 keeps the driver's)
    DEFAULTS: ClassVar[dict[str, Any]] = {**Camera.DEFAULTS, "width": 1920, "height": 1080, "fps": 30.0, "flip": 0}

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri, **options)
        if not self.location.isdigit():
            raise ConfigError(f"{uri!r}: a CSI camera is named by its sensor id, e.g. csi://0")

    def open_reader(self) -> CaptureReader:
        cv2, s = import_cv2(), self.settings
        if not has_backend(cv2, "GStreamer"):
            raise SourceError(
                f"camera {self.uri!r}: this OpenCV ({cv2.__version__}, {cv2.__file__}) was built without "
                "GStreamer (cv2.getBuildInformation() says 'GStreamer: NO'), which csi:// needs; use JetPack's "
                "OpenCV (apt packages nvidia-opencv / python3-opencv): pip uninstall opencv-python-headless and "
                "give the venv --system-site-packages")
        pipeline = csi_pipeline(int(self.location), s["width"], s["height"], s["fps"], s["flip"])
        cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        return live_reader(cv2, cap, self.uri, (
            f"check the ribbon cable and sensor-id={self.location}, that nvargus-daemon runs "
            "(sudo systemctl restart nvargus-daemon), and that "
            f"{s['width']}x{s['height']}@{s['fps']:g} is a mode of the sensor; pipeline: {pipeline}"))
