"""systemd's notify protocol: READY=1 once serving, WATCHDOG=1 only while the program makes progress.

With ``Type=notify`` and ``WatchdogSec=`` in the unit (firmware-config/systemd), systemd
sets ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` and restarts the service when no WATCHDOG=1
arrives within that time. Sending it from a timer would prove only that a timer runs; the
shell instead sends it from its reporter thread only when the program's ``progress()``
token changed within ``stall_s`` (half the watchdog time) and ``stuck()`` has nothing to
say: a source read that never returns or a backend call that hangs stops the pings, and
systemd restarts the process. A quiet sensor is not a hang: the sources' read loops time
out and come around, which counts as progress (health shows the quiet input).

The protocol is one datagram per message on a Unix socket (``@`` = Linux abstract
namespace), a few lines with the standard library rather than a dependency. Without
``NOTIFY_SOCKET`` (not under systemd) everything here does nothing.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


class Watchdog:
    """See the module doc; ``env`` defaults to the process environment."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET") or None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        mine = not pid or pid == str(os.getpid())
        self.interval_s = int(usec) / 1e6 if usec and usec.isdigit() and int(usec) > 0 and mine else None
        self.stall_s = self.interval_s / 2 if self.interval_s else None
        self.pings = 0
        self.withheld = 0  # checks that found no progress (or a stuck program) and sent nothing
        self._token: Any = object()
        self._changed = time.monotonic()
        self._last_ping = float("-inf")
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send one state line (e.g. "READY=1"); False when not under systemd or the send failed."""
        if self.address is None:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(state.encode("utf-8"), address)
        except OSError as e:
            log.warning("systemd notify %s failed: %s", state.split("=")[0], e)
            return False
        return True

    def ready(self) -> None:
        self.notify("READY=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def check(self, token: Any, stuck: str | None = None, now: float | None = None) -> bool:
        """Ping if ``token`` moved within ``stall_s`` and nothing is ``stuck``; True when it pinged."""
        if self.interval_s is None:
            return False
        now = time.monotonic() if now is None else now
        if token != self._token:
            self._token, self._changed = token, now
        stalled = now - self._changed
        if stuck is not None or stalled > self.stall_s:
            self.withheld += 1
            if self.withheld == 1 or self.withheld % 10 == 0:
                why = stuck or f"no progress for {stalled:.1f} s"
                log.error("watchdog: %s; withholding WATCHDOG=1 so systemd restarts the program within %g s",
                          why, self.interval_s)
            return False
        if now - self._last_ping < self.interval_s / 4:
            return False  # four pings per watchdog period are plenty
        self._last_ping = now
        if self.notify("WATCHDOG=1"):
            self.pings += 1
            self.withheld = 0
            return True
        return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
