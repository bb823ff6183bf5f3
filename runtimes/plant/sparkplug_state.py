"""Session state of the Sparkplug edge node: the last bdSeq used (kept on disk), the primary host's STATE.

Sparkplug 3.0 wants ``bdSeq`` to grow by one on every MQTT CONNECT (wrapping 255 -> 0), so a
host can tell the NDEATH of a killed process from the BIRTH of its successor. The value is
written (atomically, and synced) before the CONNECT that uses it, so a crash between the
two can only skip a number, never repeat one. A missing or unreadable file starts at 0; a
file that cannot be written is warned about once and the count goes on in memory.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class BdSeqStore:
    """``next()`` gives the bdSeq for the next CONNECT: 0 first, then the last one + 1 modulo 256."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._last: int | None = None
        self._loaded = False
        self._write_failed = False

    def next(self) -> int:
        if not self._loaded:
            self._last, self._loaded = self._load(), True
        value = 0 if self._last is None else (self._last + 1) % 256
        self._save(value)
        self._last = value
        return value

    def _load(self) -> int | None:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8"))["bdSeq"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("sparkplug: bdSeq state %s unreadable (%s); starting at 0", self.path, e)
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
            log.warning("sparkplug: bdSeq state %s holds %r, not 0-255; starting at 0", self.path, value)
            return None
        return value

    def _save(self, value: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"bdSeq": value}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            if not self._write_failed:
                log.warning("sparkplug: cannot keep bdSeq in %s (%s); a restart will begin at 0 again", self.path, e)
                self._write_failed = True


def parse_state(data: bytes) -> tuple[bool, float]:
    """(online, timestamp in ms) of a Sparkplug 3.0 STATE payload; ValueError saying what a valid one is.

    3.0 hosts publish JSON ``{"online": true, "timestamp": 1712...}``; the plain ``ONLINE`` /
    ``OFFLINE`` text of Sparkplug 2.2 hosts is refused, since it carries no timestamp to
    order a late Will against a newer birth.
    """
    try:
        state = json.loads(data)
        online, stamp = state["online"], state["timestamp"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        online = stamp = None
    if not isinstance(online, bool) or isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
        raise ValueError(f"STATE {data[:80]!r} is not Sparkplug 3.0 JSON like "
                         '{"online": true, "timestamp": 1712345678901}')
    return online, stamp
