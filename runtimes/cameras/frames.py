"""What a camera yields, and the latest-frame holder that keeps a slow model from building a backlog.

Imports only numpy: no OpenCV is needed to pass frames around.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from factoryedge.errors import SourceError

log = logging.getLogger(__name__)


class FrameTimeout(SourceError, TimeoutError):
    """No frame that satisfies the request arrived within the timeout; the camera may still recover."""


class StreamEnded(SourceError):
    """The source has no more frames (end of a file or folder without ``loop``, or it was closed)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image with its capture times.

    ``image`` is uint8, HxW (grey) or HxWx3 in BGR order, and read-only: one frame may reach
    several consumers, so copy it before drawing on it. ``t_monotonic`` / ``t_wall`` are
    ``time.monotonic()`` / ``time.time()`` when the host received the image, which lags the
    exposure by the camera's pipeline latency (a few ms for CSI, more for RTSP). ``index``
    counts the frames the source delivered, across loops and reconnects, so it only grows.
    ``pos`` is the frame's position in a video file or folder listing, -1 for live cameras;
    ``name`` is the image file's name for ``dir://``. ``gap`` marks the first frame after a
    reconnect or a loop restart.
    """

    image: np.ndarray
    t_monotonic: float
    t_wall: float
    index: int
    uri: str
    pos: int = -1
    name: str = ""
    gap: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)


class LatestFrame:
    """Runs a frame iterator on a background thread and keeps only the newest frame.

    A consumer slower than the camera never builds a backlog: each new frame replaces the
    held one, and a frame replaced before any ``get()`` returned it counts as ``skipped``.
    Memory stays at one frame plus what consumers hold. ``on_close`` is called by
    ``close()`` to stop the producer (e.g. the camera's own ``close``), since the thread may
    be blocked inside a read that only closing the camera ends.
    """

    def __init__(self, frames: Iterable[Frame], *, name: str = "camera",
                 on_close: Callable[[], None] | None = None, start: bool = True) -> None:
        self.name = name
        self._frames = frames
        self._on_close = on_close
        self._cond = threading.Condition()
        self._newest: Frame | None = None
        self._newest_taken = False
        self._ended = False
        self._error: BaseException | None = None
        self._stopping = False
        self.received = 0
        self.skipped = 0
        self.taken = 0
        self._thread = threading.Thread(target=self._grab, name=f"grab:{name}", daemon=True)
        if start:
            self.start()

    def start(self) -> LatestFrame:
        if not self._thread.is_alive() and self._thread.ident is None:
            self._thread.start()
        return self

    @property
    def stats(self) -> dict[str, int]:
        """``received`` from the source, ``skipped`` (replaced unseen), ``taken`` (returned by get)."""
        with self._cond:
            return {"received": self.received, "skipped": self.skipped, "taken": self.taken}

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def failure(self) -> BaseException | None:
        """The exception that stopped the grabber thread, or None (still running, or ended normally)."""
        with self._cond:
            return self._error

    def peek(self) -> Frame | None:
        """The newest frame without waiting, or None; does not count as taken."""
        with self._cond:
            return self._newest

    def get(self, timeout: float = 1.0, newer_than: int | None = None) -> Frame:
        """The newest frame, waiting up to ``timeout`` s for one (with index > ``newer_than``).

        Pass the last frame's index as ``newer_than`` to never process the same frame twice.
        Raises ``FrameTimeout`` if none arrives in time, ``StreamEnded`` once the source is
        exhausted, and ``SourceError`` if the grabber thread failed.
        """
        def ready(f: Frame) -> bool:
            return newer_than is None or f.index > newer_than

        return self._wait(ready, timeout, f"frame newer than index {newer_than}" if newer_than is not None else "frame")

    def wait_for(self, after_t_wall: float, timeout: float = 1.0) -> Frame:
        """A frame received at or after ``after_t_wall`` (a ``time.time()`` trigger instant).

        Call it as soon as the trigger arrives: only the newest frame is kept, so a late
        caller gets the newest frame rather than the first one after the trigger.
        """
        return self._wait(lambda f: f.t_wall >= after_t_wall, timeout,
                          f"frame captured after t_wall={after_t_wall:.3f}")

    def _wait(self, ready: Callable[[Frame], bool], timeout: float, what: str) -> Frame:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                frame = self._newest
                if frame is not None and ready(frame):
                    if not self._newest_taken:
                        self._newest_taken = True
                        self.taken += 1
                    return frame
                if self._error is not None:
                    raise SourceError(f"camera {self.name!r} failed: {self._error}") from self._error
                if self._ended:
                    raise StreamEnded(f"camera {self.name!r} has ended after {self.received} frames; no {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FrameTimeout(f"camera {self.name!r}: no {what} within {timeout:g} s "
                                       f"({self.received} frames received so far)")
                self._cond.wait(left)

    def _grab(self) -> None:
        it = iter(self._frames)
        try:
            for frame in it:
                with self._cond:
                    if self._stopping:
                        break
                    if self._newest is not None and not self._newest_taken:
                        self.skipped += 1
                    self._newest, self._newest_taken = frame, False
                    self.received += 1
                    self._cond.notify_all()
        except Exception as e:  # noqa: BLE001 - handed to the consumer, who decides
            log.exception("camera %s: grabber thread failed", self.name)
            with self._cond:
                self._error = e
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # runs the generator's cleanup (releases the capture) on this thread
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the producer and the thread; idempotent, safe from any thread."""
        with self._cond:
            first, self._stopping = not self._stopping, True
            self._cond.notify_all()
        if first and self._on_close is not None:
            self._on_close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("camera %s: grabber thread still blocked in a read after %.1f s", self.name, timeout)

    def __enter__(self) -> LatestFrame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
