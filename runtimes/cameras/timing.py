"""The two clocks of a camera: pacing frames like a live camera, and backing off between reopens.

Both wait on the camera's closing event, so ``close()`` from another thread ends any wait at once.
"""
from __future__ import annotations

import threading
import time


class Pacer:
    """Delivers a paced reader's frames at ``fps``, as a camera would.

    A frame is held until its time (frame k is due k periods after the first); one whose
    time passed by more than a period while the consumer was busy is to be dropped, as a
    camera's sensor would have overwritten it. ``restart()`` after a gap (reconnect, loop).
    """

    def __init__(self, closing: threading.Event) -> None:
        self._closing = closing
        self.t0: float | None = None
        self.k = 0

    def restart(self) -> None:
        self.t0 = None

    def on_time(self, fps: float | None) -> bool:
        """Wait until the next frame is due; False (skip it) if it is over a frame period late."""
        if not fps:
            return True
        now = time.monotonic()
        if self.t0 is None:
            self.t0, self.k = now, 0
        due = self.t0 + self.k / fps
        self.k += 1
        if now < due:
            self._closing.wait(due - now)
        elif now - due > 1.0 / fps:
            return False
        return True


class Backoff:
    """Exponential waits between reopen attempts: ``lo`` doubling up to ``hi``, back to ``lo`` on ``reset()``."""

    def __init__(self, lo: float, hi: float, closing: threading.Event) -> None:
        self.lo, self.hi, self.delay = lo, hi, lo
        self._closing = closing

    def wait(self) -> bool:
        """Wait the current delay, then double it; False if the camera was closed meanwhile."""
        if self._closing.wait(self.delay):
            return False
        self.delay = min(self.delay * 2, self.hi)
        return True

    def reset(self) -> None:
        self.delay = self.lo
