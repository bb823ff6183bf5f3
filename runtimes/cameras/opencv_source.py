"""Cameras through OpenCV, opened by URI, as a stream of ``Frame`` objects.

``csi://0?width=1920&height=1080&fps=30&flip=0``: a Jetson CSI camera through nvarguscamerasrc
(needs an OpenCV built with GStreamer, as JetPack's is; the pip wheels are not).
``v4l2:///dev/video0?width=1280&height=720&fps=30&fourcc=MJPG`` (or ``v4l2://0``): a USB/V4L2
camera. ``rtsp://cam:554/stream``: an IP camera through FFmpeg; credentials never go in the
URI (it is logged) but in ``username=`` / ``username_env=`` / ``username_file=`` and
``password_env=`` / ``password_file=``; query keys that are not factoryedge options are
passed on to the camera. ``file://parts.mp4?loop=true&realtime=true``: a video file;
``realtime`` paces it at the file's fps. ``dir://shots?pattern=*.png&fps=5&loop=true``:
images in name order; unreadable ones are counted as ``corrupt`` and skipped.

Paced sources (realtime files, ``dir://`` with ``fps``) behave like a camera: a frame whose
time has passed by more than one frame period while the consumer was busy is dropped and
counted as ``skipped``. Live cameras that deliver no frame for ``stall_s`` seconds, and files
or folders that vanish, are reopened with exponential backoff (``reconnect_min`` doubling up
to ``reconnect_max``), logging each attempt. Only one thread iterates ``frames()``;
``close()`` may be called from any thread. OpenCV is imported when the camera is opened.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

import numpy as np

from factoryedge.errors import ConfigError, SourceError
from factoryedge.runtimes.cameras.camera_options import (
    _SECRET_KEYS,
    CSI_DEFAULTS,
    DEFAULTS,
    OPTIONS,
    _has_backend,
    _import_cv2,
    csi_pipeline,
    video_devices,
)
from factoryedge.runtimes.cameras.frames import Frame, LatestFrame
from factoryedge.runtimes.cameras.readers import _END, _FolderReader, _Lost, _VideoReader
from factoryedge.runtimes.contracts import UriPlugin
from factoryedge.runtimes.options import parse_options, read_secret, split_uri

log = logging.getLogger(__name__)


_RETRY_S = 0.005  # between failed reads of a live camera, so a dead one does not spin a core


class CameraSource(UriPlugin):
    """Frames from one camera URI; see the module docstring for schemes and options.

    ``stats`` counts ``frames`` delivered, ``skipped`` (dropped by pacing or replaced unseen in
    ``latest()``), ``corrupt`` images, ``disconnects``, ``reconnect_attempts``, ``reconnects``
    (successful) and ``loops``.
    """

    def __init__(self, uri: str, **options: Any) -> None:
        self.uri = uri
        self.scheme = urlsplit(uri).scheme.lower()
        if self.scheme not in OPTIONS:
            raise ConfigError(f"{uri!r} is not a camera URI; use one of: {', '.join(s + '://' for s in OPTIONS)}")
        where = f"{self.scheme} camera {uri!r}"
        if self.scheme == "rtsp":
            self.location, given = self._split_rtsp(uri)
        else:
            self.location, given = split_uri(uri, self.scheme)
        self.options = parse_options(where, {**given, **options}, OPTIONS[self.scheme])  # as given
        opts = {**DEFAULTS, **(CSI_DEFAULTS if self.scheme == "csi" else {}), **self.options}
        if not self.location:
            raise ConfigError(f"{uri!r} names no camera; e.g. csi://0, v4l2:///dev/video0, file://parts.mp4, dir://shots")
        if opts["reconnect_min"] > opts["reconnect_max"]:
            raise ConfigError(f"reconnect_min={opts['reconnect_min']} exceeds reconnect_max={opts['reconnect_max']}; "
                              "the backoff doubles from min up to max")
        if self.scheme == "csi" and not self.location.isdigit():
            raise ConfigError(f"{uri!r}: a CSI camera is named by its sensor id, e.g. csi://0")
        if self.scheme == "v4l2" and self.location.isdigit():
            self.location = f"/dev/video{self.location}"
        self.live = self.scheme in ("csi", "v4l2", "rtsp")
        self.loop: bool = opts["loop"] and not self.live
        self.stall_s: float = opts["stall_s"]
        self.reconnect_min: float = opts["reconnect_min"]
        self.reconnect_max: float = opts["reconnect_max"]
        self.wait: bool = opts["wait"]
        self._opts = opts
        self._target = self._rtsp_target() if self.scheme == "rtsp" else ""  # secrets read once, checked early
        self._counts = dict.fromkeys(("frames", "skipped", "corrupt", "disconnects", "reconnect_attempts",
                                      "reconnects", "loops"), 0)
        self._warned: set[tuple[str, float]] = set()
        self._reader: Any = None
        self._latest: LatestFrame | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._busy = False
        self._pace_t0: float | None = None
        self._pace_k = 0
        self._delay = self.reconnect_min  # grows while reconnects bring no frame
        self._fruitless = False

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> CameraSource:
        """A camera for ``uri``; keyword options override the URI's query options."""
        return cls(uri, **options)

    def _split_rtsp(self, uri: str) -> tuple[str, dict[str, str]]:
        parts = urlsplit(uri)
        if parts.username is not None or parts.password is not None:
            raise ConfigError(f"credentials in the URI ('rtsp://{parts.username or ''}"
                              f"{':***' if parts.password is not None else ''}@{parts.hostname}') are not allowed, "
                              "because URIs are logged; give username=NAME (or username_env=VAR / username_file=PATH) "
                              "and password_env=VAR or password_file=PATH as options instead")
        ours: dict[str, str] = {}
        theirs = []
        for piece in filter(None, parts.query.split("&")):
            key, _, value = (unquote_plus(x) for x in piece.partition("="))
            if key.lower() in _SECRET_KEYS:
                raise ConfigError(f"a {key}= query key in an rtsp:// URI is not allowed, because URIs are logged; "
                                  "use username=/username_env=/username_file= and password_env=/password_file=")
            if key in ours:
                raise ConfigError(f"option {key!r} is given twice in {uri!r}")
            if key in OPTIONS["rtsp"]:
                ours[key] = value
            else:
                theirs.append(piece)  # the camera's own, e.g. Axis ?videocodec=h264, passed on as written
        self._rtsp_query = "&".join(theirs)
        return (parts.netloc + parts.path) if parts.hostname else "", ours

    def _rtsp_target(self) -> str:
        """The URL handed to FFmpeg, with the credentials from the options; never logged."""
        user = read_secret(self._opts, "user name", ("username", "username_env", "username_file"))
        password = read_secret(self._opts, "password", ("password_env", "password_file"))
        if password is not None and user is None:
            raise ConfigError("an rtsp password is given without a user name; add username=NAME (or username_env/_file)")
        netloc, _, path = self.location.partition("/")
        if user is not None:
            auth = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "")
            netloc = f"{auth}@{netloc}"
        return urlunsplit(("rtsp", netloc, "/" + path if path else "", self._rtsp_query, ""))

    @property
    def stats(self) -> dict[str, int]:
        out = dict(self._counts)
        if self._latest is not None:
            out["skipped"] += self._latest.skipped
        return out

    @property
    def is_open(self) -> bool:
        return self._reader is not None

    def _corrupt(self, path: str, why: str) -> None:
        self._counts["corrupt"] += 1
        try:
            key = (path, os.stat(path).st_mtime)
        except OSError:
            key = (path, 0.0)
        # warn once per version of a file: a looping folder would repeat it every pass
        if key not in self._warned:
            self._warned.add(key)
            log.warning("camera %s: skipping corrupt image %s (%s)", self.uri, path, why)

    # -- opening and closing -------------------------------------------------------------

    def open(self) -> CameraSource:
        """Open the camera (idempotent); SourceError says what to check, unless ``wait``.

        A closed source stays closed: make a new one to read again.
        """
        if self._reader is not None:
            return self
        if self._closing.is_set():
            raise SourceError(f"camera {self.uri!r} is closed; create a new source to read again")
        reader = self._open_with_backoff("opening") if self.wait else self._open_reader()
        if reader is None:
            raise SourceError(f"camera {self.uri!r} was closed while waiting for it to appear")
        with self._lock:
            self._reader = reader
        self._pace_t0 = None
        log.info("camera %s open", self.uri)
        return self

    def close(self) -> None:
        """Close the camera and end ``frames()`` for good; safe from any thread, idempotent."""
        first = not self._closing.is_set()
        self._closing.set()
        with self._lock:
            if not self._busy:
                self._release_locked()
        if first and self._latest is not None:
            self._latest.close()

    def __enter__(self) -> CameraSource:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _release_locked(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.release()

    def _open_reader(self) -> Any:
        cv2, o = _import_cv2(), self._opts
        if self.scheme == "dir":
            return _FolderReader(cv2, self.location, o.get("pattern"), o.get("fps"), self)
        if self.scheme == "file":
            return self._open_file(cv2)
        if self.scheme == "csi":
            if not _has_backend(cv2, "GStreamer"):
                raise SourceError(
                    f"camera {self.uri!r}: this OpenCV ({cv2.__version__}, {cv2.__file__}) was built without "
                    "GStreamer (cv2.getBuildInformation() says 'GStreamer: NO'), which csi:// needs; use JetPack's "
                    "OpenCV (apt packages nvidia-opencv / python3-opencv): pip uninstall opencv-python-headless and "
                    "give the venv --system-site-packages")
            pipeline = csi_pipeline(int(self.location), o["width"], o["height"], o["fps"], o["flip"])
            cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
            hint = (f"check the ribbon cable and sensor-id={self.location}, that nvargus-daemon runs "
                    "(sudo systemctl restart nvargus-daemon), and that "
                    f"{o['width']}x{o['height']}@{o['fps']:g} is a mode of the sensor; pipeline: {pipeline}")
        elif self.scheme == "v4l2":
            cap, hint = self._open_v4l2(cv2)
        else:
            cap, hint = self._open_rtsp(cv2)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open camera {self.uri!r}; {hint}")
        return _VideoReader(cv2, cap, live=True)

    def _open_file(self, cv2: Any) -> _VideoReader:
        path = os.path.abspath(os.path.expanduser(self.location))
        if not os.path.isfile(path):
            raise SourceError(f"video file {path!r} does not exist")
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG if _has_backend(cv2, "FFMPEG") else cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"OpenCV cannot decode video file {path!r}; check its codec with ffprobe "
                              "(MJPG in .avi and mp4v/H.264 in .mp4 work with FFmpeg builds)")
        fps = None
        if self._opts["realtime"]:
            fps = cap.get(cv2.CAP_PROP_FPS)
            if not (np.isfinite(fps) and 0 < fps <= 1000):
                log.warning("camera %s: the file states no usable fps (%r); pacing at 30 fps", self.uri, fps)
                fps = 30.0
        return _VideoReader(cv2, cap, live=False, fps=fps)

    def _open_v4l2(self, cv2: Any) -> tuple[Any, str]:
        dev, o = self.location, self.options
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
        return cap, (f"{dev} exists but is not a capture device or is in use (check `v4l2-ctl --list-devices` "
                     f"and `fuser {dev}`); {video_devices()}")

    def _open_rtsp(self, cv2: Any) -> tuple[Any, str]:
        # bound blocking opens and reads so a dead stream is noticed within stall_s
        ms = int(self.stall_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(ms, 5000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        if not _has_backend(cv2, "FFMPEG"):
            raise SourceError(f"camera {self.uri!r}: this OpenCV was built without FFmpeg, which rtsp:// needs")
        cap = cv2.VideoCapture(self._target, cv2.CAP_FFMPEG, params)
        return cap, ("check the camera's address, port and stream path (try it with ffplay), the network, "
                     "and the user name and password options")

    def _open_with_backoff(self, why: str) -> Any:
        attempt, started = 0, time.monotonic()
        while not self._closing.is_set():
            attempt += 1
            if why == "reconnect":
                self._counts["reconnect_attempts"] += 1
            try:
                reader = self._open_reader()
            except SourceError as e:
                log.info("camera %s: %s attempt %d failed (%s); next in %.2f s", self.uri, why, attempt, e, self._delay)
                if not self._backoff():
                    break
                continue
            log.info("camera %s: open after %d attempt(s), %.2f s", self.uri, attempt, time.monotonic() - started)
            return reader
        return None

    def _reconnect(self, reason: str) -> bool:
        """Release, then reopen with backoff; False if closed meanwhile."""
        self._counts["disconnects"] += 1
        log.warning("camera %s lost (%s); reconnecting", self.uri, reason)
        with self._lock:
            self._release_locked()
        # a camera that opens but then gives nothing (a folder of corrupt images) must not spin
        if self._fruitless and not self._backoff():
            return False
        self._fruitless = True
        reader = self._open_with_backoff("reconnect")
        with self._lock:
            if reader is None or self._closing.is_set():
                if reader is not None:
                    reader.release()
                return False
            self._reader = reader
        self._counts["reconnects"] += 1
        log.warning("camera %s reconnected (reconnect %d)", self.uri, self._counts["reconnects"])
        return True

    def _backoff(self) -> bool:
        """Wait the current delay and double it up to reconnect_max; False if closed meanwhile."""
        if self._closing.wait(self._delay):
            return False
        self._delay = min(self._delay * 2, self.reconnect_max)
        return True

    # -- reading ---------------------------------------------------------------------------

    def frames(self) -> Iterator[Frame]:
        """Frames as they come, until ``close()`` or the end of a file/folder without ``loop``."""
        if self._closing.is_set():
            return
        self.open()
        try:
            yield from self._read_loop()
        finally:
            with self._lock:  # also when the consumer stops early: the camera is not left open
                if not self._busy:
                    self._release_locked()

    __iter__ = frames

    def _read_loop(self) -> Iterator[Frame]:
        gap, last_frame = False, time.monotonic()
        while not self._closing.is_set():
            with self._lock:
                reader = self._reader
                if reader is None:
                    break
                self._busy = True
            lost = None
            try:
                got = reader.read()
            except _Lost as e:
                got, lost = None, str(e)
            finally:
                with self._lock:
                    self._busy = False
                    if self._closing.is_set():
                        self._release_locked()
            if self._closing.is_set():
                break
            if got is _END:
                if not self.loop:
                    log.info("camera %s: end after %d frames", self.uri, self._counts["frames"])
                    break
                if reader.good == 0:
                    lost = "a whole pass gave no readable frame"
                else:
                    self._counts["loops"] += 1
                    try:
                        fresh = self._open_reader()  # reopened, not rewound, to notice a replaced file
                    except SourceError as e:
                        lost = f"reopening to loop failed: {e}"
                    else:
                        with self._lock:
                            self._release_locked()
                            self._reader = fresh
                        gap, self._pace_t0 = True, None
                        continue
            elif got is None and lost is None:
                if time.monotonic() - last_frame < self.stall_s:
                    self._closing.wait(_RETRY_S)
                    continue
                lost = f"no frame for {self.stall_s:g} s"
            if lost is not None:
                if not self._reconnect(lost):
                    break
                gap, last_frame, self._pace_t0 = True, time.monotonic(), None
                continue
            image, pos, name = got
            image.flags.writeable = False  # shared by every consumer of latest()
            last_frame = time.monotonic()
            if not self._on_time(reader.fps):
                continue
            frame = Frame(image, time.monotonic(), time.time(), self._counts["frames"], self.uri, pos, name, gap)
            self._counts["frames"] += 1
            gap, self._fruitless, self._delay = False, False, self.reconnect_min
            yield frame

    def _on_time(self, fps: float | None) -> bool:
        """Wait until the frame is due; False (skip it) if it is over a frame period late."""
        if not fps:
            return True
        now = time.monotonic()
        if self._pace_t0 is None:
            self._pace_t0, self._pace_k = now, 0
        due = self._pace_t0 + self._pace_k / fps
        self._pace_k += 1
        if now < due:
            self._closing.wait(due - now)
        elif now - due > 1.0 / fps:
            self._counts["skipped"] += 1
            return False
        return True

    def latest(self) -> LatestFrame:
        """Grab frames on a background thread, keeping only the newest; closing it closes the camera."""
        if self._latest is not None:
            raise SourceError(f"camera {self.uri!r} already has a latest-frame grabber; share that one")
        self.open()  # fail here, in the caller's thread, rather than inside the grabber
        self._latest = LatestFrame(self.frames(), name=self.uri, on_close=self.close)
        return self._latest
