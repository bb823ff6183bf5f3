"""Real pseudo-terminals standing in for a sensor's serial port in tests."""
from __future__ import annotations

import os
import threading
import time
import tty


class Pty:
    """A pty in raw mode: the test writes to ``master``, the source opens ``path`` (the slave)."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # binary-safe: no echo, no CR/LF translation
        self.path = os.ttyname(self._slave)
        self._threads: list[threading.Thread] = []

    def write(self, data: bytes) -> None:
        """Write everything, blocking while the reader is behind; stops quietly once closed."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view) :]
            except OSError:
                return

    def write_in_thread(self, data: bytes) -> threading.Thread:
        t = threading.Thread(target=self.write, args=(data,), daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def close(self) -> None:
        """Hang up: the source's next read fails, as when a USB adapter is unplugged."""
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self._slave = -1
        for t in self._threads:
            t.join(timeout=2)


def poll(condition, timeout: float = 5.0, interval: float = 0.005):
    """Wait until ``condition()`` is truthy or the deadline passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
