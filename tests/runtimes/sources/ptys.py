"""Real pseudo-terminals standing in for a sensor's serial port in tests, and a threaded block reader."""
from __future__ import annotations

import os
import threading
import time
import tty

from factoryedge.runtimes.sources.base import SampleBlock


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


class Reader:
    """Runs ``blocks()`` in a thread, as the device runtime does, collecting what arrives."""

    def __init__(self, source) -> None:
        self.source, self.blocks, self.error = source, [], None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for block in self.source.blocks():
                self.blocks.append(block)
        except Exception as e:  # surfaced to the test by stop()
            self.error = e

    def samples(self) -> int:
        return sum(b.n for b in list(self.blocks))

    def stop(self) -> list[SampleBlock]:
        self.source.close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "close() did not end blocks()"
        if self.error:
            raise self.error
        return self.blocks
