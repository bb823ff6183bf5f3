"""What every kind of camera shares: open/close, reconnect with backoff, pacing, the frame loop, stats.

A kind subclasses ``Camera``, sets ``SCHEME``, ``LIVE``, ``OPTIONS`` and ``DEFAULTS``, may check
more in ``__init__`` after calling this one, and fills in two hooks: ``open_reader()`` and
``read_frame(reader)``. Constructors open nothing, so ``validate`` (from ``UriPlugin``) checks
a URI and its options without hardware. Live cameras that deliver no frame for ``stall_s``
seconds, and files or folders that vanish, are reopened with exponential backoff
(``reconnect_min`` doubling up to ``reconnect_max``), logging each attempt. A paced reader
(one with ``fps``) drops a frame that is over a period late and counts it as ``skipped``.
Only one thread iterates ``frames()``; ``close()`` may be called from any thread.
"""
from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

from factoryedge.errors import ConfigError, SourceError
from factoryedge.runtimes import contracts
from factoryedge.runtimes.cameras.frames import Frame, LatestFrame
from factoryedge.runtimes.cameras.timing import Backoff, Pacer
from factoryedge.runtimes.options import OptionSpec, as_bool, as_float, parse_options, split_uri

log = logging.getLogger(__name__)

RECONNECT_OPTIONS: OptionSpec = {"reconnect_min": as_float(0.0, 0.1), "reconnect_max": as_float(0.0, 5.0),
                                 "wait": as_bool}
LIVE_OPTIONS: OptionSpec = {"stall_s": as_float(0.0, 5.0), **RECONNECT_OPTIONS}
END = object()  # what read_frame returns at the end of a file or folder
_RETRY_S = 0.005  # between failed reads of a live camera, so a dead one does not spin a core


class CameraLost(Exception):
    """Raised by ``read_frame``: the open camera, file or folder stopped delivering; reopen it."""


class Reader:
    """What ``open_reader`` returns: the open handle, and what the frame loop needs to know of it.

    ``fps`` paces delivery (None: as fast as frames come); ``good`` counts the frames read
    through it (the frame loop counts them), so a loop pass that read none is noticed.
    """

    fps: float | None = None
    good: int = 0

    def release(self) -> None:
        """Free the handle; called once, from the thread that reads or from ``close()``."""


class Camera(contracts.UriPlugin, abc.ABC):
    """Frames from one camera URI, as ``Frame`` objects; meets the ``contracts.Camera`` protocol.

    ``stats`` counts ``frames`` delivered, ``skipped`` (dropped by pacing or replaced unseen in
    ``latest()``), ``corrupt`` images, ``disconnects``, ``reconnect_attempts``, ``reconnects``
    (successful) and ``loops``. Keyword options override the URI's query options.
    """

    SCHEME: ClassVar[str] = ""
    LIVE: ClassVar[bool] = False  # a failed read is "no frame yet" (stall_s applies), not the end
    DEFAULTS: ClassVar[dict[str, Any]] = {"stall_s": 5.0, "reconnect_min": 0.1, "reconnect_max": 5.0, "wait": False}

    def __init__(self, uri: str, **options: Any) -> None:
        self.uri = uri
        if urlsplit(uri).scheme.lower() != self.SCHEME:
            raise ConfigError(f"{uri!r} is not a camera URI for {type(self).__name__}; use {self.SCHEME}://..., "
                              "or registry.open_camera(uri), which picks the class by scheme")
        self.location, given = self.split(uri)
        self.options = parse_options(f"{self.SCHEME} camera {uri!r}", {**given, **options}, self.OPTIONS)  # as given
        self.settings = {**self.DEFAULTS, **self.options}  # with the defaults filled in
        if not self.location:
            raise ConfigError(f"{uri!r} names no camera; e.g. csi://0, v4l2:///dev/video0, file://parts.mp4, dir://shots")
        s = self.settings
        if s["reconnect_min"] > s["reconnect_max"]:
            raise ConfigError(f"reconnect_min={s['reconnect_min']} exceeds reconnect_max={s['reconnect_max']}; "
                              "the backoff doubles from min up to max")
        self.loop: bool = s.get("loop", False)
        self.stall_s: float = s["stall_s"]
        self.wait: bool = s["wait"]
        self._counts = dict.fromkeys(("frames", "skipped", "corrupt", "disconnects", "reconnect_attempts",
                                      "reconnects", "loops"), 0)
        self._reader: Reader | None = None
        self._latest: LatestFrame | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._busy = False
        self._pacer = Pacer(self._closing)
        self._backoff = Backoff(s["reconnect_min"], s["reconnect_max"], self._closing)  # reset by a frame
        self._fruitless = False

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> Camera:
        return cls(uri, **options)

    def split(self, uri: str) -> tuple[str, dict[str, str]]:
        """(location, query options) of the URI; a kind whose URI carries more overrides it."""
        return split_uri(uri, self.SCHEME)

    @abc.abstractmethod
    def open_reader(self) -> Reader:
        """Open the camera once; SourceError says what to check. Called again on every reconnect and loop."""

    @abc.abstractmethod
    def read_frame(self, reader: Any) -> Any:
        """One ``(image, pos, name)``, None (a live camera has no frame yet), ``END``, or raise ``CameraLost``."""

    @property
    def stats(self) -> dict[str, int]:
        out = dict(self._counts)
        if self._latest is not None:
            out["skipped"] += self._latest.skipped
        return out

    @property
    def is_open(self) -> bool:
        return self._reader is not None

    # -- opening and closing -------------------------------------------------------------

    def open(self) -> Camera:
        """Open the camera (idempotent); SourceError says what to check, unless ``wait`` (then it waits).

        A closed camera stays closed: make a new one to read again.
        """
        if self._reader is not None:
            return self
        if self._closing.is_set():
            raise SourceError(f"camera {self.uri!r} is closed; create a new source to read again")
        reader = self._open_with_backoff("opening") if self.wait else self.open_reader()
        if reader is None:
            raise SourceError(f"camera {self.uri!r} was closed while waiting for it to appear")
        with self._lock:
            self._reader = reader
        self._pacer.restart()
        log.info("camera %s open", self.uri)
        return self

    def close(self) -> None:
        """Close the camera and end ``frames()`` for good; safe from any thread, idempotent."""
        first = not self._closing.is_set()
        self._closing.set()
        with self._lock:
            if not self._busy:  # else the reading thread releases it when its read returns
                self._release_locked()
        if first and self._latest is not None:
            self._latest.close()

    def __enter__(self) -> Camera:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _release_locked(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.release()

    def _open_with_backoff(self, why: str) -> Reader | None:
        attempt, started = 0, time.monotonic()
        while not self._closing.is_set():
            attempt += 1
            if why == "reconnect":
                self._counts["reconnect_attempts"] += 1
            try:
                reader = self.open_reader()
            except SourceError as e:
                log.info("camera %s: %s attempt %d failed (%s); next in %.2f s", self.uri, why, attempt, e,
                         self._backoff.delay)
                if not self._backoff.wait():
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
        if self._fruitless and not self._backoff.wait():
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
                got = self.read_frame(reader)
            except CameraLost as e:
                got, lost = None, str(e)
            finally:
                with self._lock:
                    self._busy = False
                    if self._closing.is_set():
                        self._release_locked()
            if self._closing.is_set():
                break
            if got is END:
                if not self.loop:
                    log.info("camera %s: end after %d frames", self.uri, self._counts["frames"])
                    break
                lost = self._next_pass(reader)
                if lost is None:
                    gap = True
                    self._pacer.restart()
                    continue
            elif got is None and lost is None:
                if time.monotonic() - last_frame < self.stall_s:
                    self._closing.wait(_RETRY_S)
                    continue
                lost = f"no frame for {self.stall_s:g} s"
            if lost is not None:
                if not self._reconnect(lost):
                    break
                gap, last_frame = True, time.monotonic()
                self._pacer.restart()
                continue
            image, pos, name = got
            reader.good += 1
            image.flags.writeable = False  # shared by every consumer of latest()
            last_frame = time.monotonic()
            if not self._pacer.on_time(reader.fps):
                self._counts["skipped"] += 1
                continue
            frame = Frame(image, time.monotonic(), time.time(), self._counts["frames"], self.uri, pos, name, gap)
            self._counts["frames"] += 1
            gap, self._fruitless = False, False
            self._backoff.reset()
            yield frame

    def _next_pass(self, reader: Reader) -> str | None:
        """Start the next loop pass; None if it started, else why the camera counts as lost."""
        if reader.good == 0:
            return "a whole pass gave no readable frame"
        self._counts["loops"] += 1
        try:
            fresh = self.open_reader()  # reopened, not rewound, to notice a replaced file
        except SourceError as e:
            return f"reopening to loop failed: {e}"
        with self._lock:
            # swap, never passing through None: ``is_open`` is read without the lock, and a
            # sorter that saw None for that instant answered a part "camera_lost" at each loop
            old, self._reader = self._reader, fresh
        if old is not None:
            old.release()
        return None

    def latest(self) -> LatestFrame:
        """Grab frames on a background thread, keeping only the newest; closing it closes the camera."""
        if self._latest is not None:
            raise SourceError(f"camera {self.uri!r} already has a latest-frame grabber; share that one")
        self.open()  # fail here, in the caller's thread, rather than inside the grabber
        self._latest = LatestFrame(self.frames(), name=self.uri, on_close=self.close)
        return self._latest
