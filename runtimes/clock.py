"""The device's two clocks behind one seam: the wall clock for time stamps, the monotonic clock for durations.

The wall clock is what people and historians read, and it jumps: NTP steps it after a
boot without an RTC battery, an operator sets it, a GNSS receiver corrects it. So it
only ever *stamps* things (``time_epoch``, window times); every duration, timeout, hold-off
and ordering on the device uses the monotonic clock, and payloads that consumers must order
carry the device's own sequence number (see firmware-config/mqtt.md, "Clocks and order").

Every runtime time stamp reads ``wall()`` here, so a test (or a simulator) can replace
``CLOCK`` with one whose wall clock jumps, in-process, without touching the system clock.
"""
from __future__ import annotations

import time


class SystemClock:
    """The operating system's clocks."""

    def wall(self) -> float:
        """Epoch seconds (UTC), as ``time.time()``: may jump either way."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, as ``time.monotonic()``: never goes back; per boot."""
        return time.monotonic()


CLOCK = SystemClock()


def wall() -> float:
    """The wall clock of ``CLOCK``: for time stamps only, never for durations."""
    return CLOCK.wall()


def monotonic() -> float:
    """The monotonic clock of ``CLOCK``: for durations and ordering within one boot."""
    return CLOCK.monotonic()
