"""A bounded on-disk archive of rejected parts for operator review.

Each entry is ``<stem>.png`` (the frame), ``<stem>.heat.png`` (heatmap over the frame, when
there is one and heatmaps are on) and ``<stem>.json`` (the decision), with ``stem`` =
``<UTC time>_<seq>_<part id>`` so names sort oldest first. Files are written under a
temporary name and renamed; the JSON goes last, so an entry without JSON is a crash
leftover and is removed at start-up. The archive is bounded by ``max_items`` and
``max_bytes``: the oldest entries go first.

``submit`` never blocks: entries queue for one writer thread (PNG encoding takes
milliseconds), and when the queue is full the entry is dropped and counted. Write errors
(disk full, permissions) are logged and counted; they never reach the decision path.
OpenCV (PNG encoding) is imported by the writer thread. The heatmap picture is
``factoryedge.features.overlay.heatmap_overlay``, the one training's contact sheets draw, so
an operator sees a reject as the quality engineer saw it in evaluation.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from factoryedge.errors import ConfigError
from factoryedge.features.overlay import heatmap_overlay

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SUFFIXES = (".png", ".heat.png", ".json")


@dataclass
class _Entry:
    image: np.ndarray
    heatmap: Callable[[], np.ndarray | None] | np.ndarray | None
    record: dict[str, Any]
    part_id: str
    t_wall: float


class RejectArchive:
    """See the module doc. ``stats``: items, bytes, written, evicted, dropped, write_errors."""

    def __init__(self, directory: str | Path, max_items: int = 1000, max_bytes: int = 500 * 2**20,
                 heatmap: bool = True, queue_size: int = 64) -> None:
        self.dir = Path(directory)
        self.max_items, self.max_bytes, self.heatmap = int(max_items), int(max_bytes), heatmap
        self.counts = dict.fromkeys(("written", "evicted", "dropped", "write_errors"), 0)
        self._entries: list[tuple[str, int]] = []  # (stem, bytes), oldest first
        self._bytes = 0
        self._seq = 0
        self._queue: queue.Queue[_Entry | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._scan()
        self._thread = threading.Thread(target=self._write_loop, name="factoryedge-reject-archive", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"items": len(self._entries), "bytes": self._bytes, **self.counts}

    def entries(self) -> list[str]:
        """Stems of the archived entries, oldest first."""
        with self._lock:
            return [stem for stem, _ in self._entries]

    def recent(self, n: int = 20) -> list[dict[str, Any]]:
        """The newest ``n`` entries, newest first: ``{"stem", "record", "files"}``.

        ``record`` is the archived decision; ``files`` maps ``"frame"``/``"heatmap"`` to file
        names in the archive directory (``heatmap`` only where one was written). An entry
        evicted while this reads is left out rather than reported half.
        """
        with self._lock:
            stems = [stem for stem, _ in self._entries[-max(0, int(n)):]] if n > 0 else []
        out = []
        for stem in reversed(stems):
            try:
                record = json.loads((self.dir / f"{stem}.json").read_text())
            except (OSError, ValueError):
                continue
            files = {"frame": f"{stem}.png"}
            if (self.dir / f"{stem}.heat.png").is_file():
                files["heatmap"] = f"{stem}.heat.png"
            out.append({"stem": stem, "record": record, "files": files})
        return out

    def file(self, name: str) -> Path | None:
        """The path of ``name`` if it is one of the archived entries' files, else None.

        Only names the archive itself listed resolve, so a caller serving files by name (the
        operator page) cannot be led outside the directory.
        """
        stem = _stem_of(name)
        if stem is None or name.startswith(".tmp-"):
            return None
        with self._lock:
            listed = any(s == stem for s, _ in self._entries)
        path = self.dir / name
        return path if listed and path.is_file() else None

    def _scan(self) -> None:
        """Pick up what an earlier run left, drop half-written leftovers, and apply the bounds."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            names = sorted(os.listdir(self.dir))
        except OSError as e:
            self.counts["write_errors"] += 1
            log.error("reject archive %s is unusable (%s); rejects will not be archived until it is fixed",
                      self.dir, e.strerror or e)
            return
        complete = {n[:-5] for n in names if n.endswith(".json")}
        for name in names:
            stem = _stem_of(name)
            if stem is None:
                continue
            if stem not in complete or name.startswith(".tmp-"):
                _remove(self.dir / name)
        for stem in sorted(complete):
            self._entries.append((stem, sum(_size(self.dir / (stem + s)) for s in _SUFFIXES)))
        self._bytes = sum(b for _, b in self._entries)
        if self._entries:
            log.info("reject archive %s holds %d entries (%.1f MB) from earlier runs", self.dir,
                     len(self._entries), self._bytes / 2**20)
        self._evict()

    def submit(self, image: np.ndarray, record: dict[str, Any], part_id: str,
               heatmap: Callable[[], np.ndarray | None] | np.ndarray | None = None,
               t_wall: float | None = None) -> bool:
        """Queue one rejected part; False (counted as dropped) if the writer is that far behind.

        ``heatmap`` may be a callable, so a lazily computed heatmap is made on the writer thread.
        """
        try:
            self._queue.put_nowait(_Entry(image, heatmap, record, part_id, time.time() if t_wall is None else t_wall))
            return True
        except queue.Full:
            self.counts["dropped"] += 1
            log.warning("reject archive: writer behind (%d queued); not archiving part %r", self._queue.qsize(), part_id)
            return False

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued entry is written (or failed); False at the timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        self._queue.put(None)
        self._thread.join(timeout)

    def _write_loop(self) -> None:
        while (entry := self._queue.get()) is not None:
            try:
                self._write(entry)
            except Exception:  # noqa: BLE001 - the archive must outlive any one bad entry
                self.counts["write_errors"] += 1
                log.exception("reject archive: archiving part %r failed", entry.part_id)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _write(self, entry: _Entry) -> None:
        import cv2

        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(entry.t_wall)) + f"{entry.t_wall % 1:.3f}"[1:]
        stem = f"{stamp}Z_{self._seq:06d}_{_UNSAFE.sub('_', entry.part_id)[:64]}"
        files: dict[str, bytes] = {}
        ok, png = cv2.imencode(".png", entry.image)
        if not ok:
            raise ValueError(f"cannot encode a frame of shape {entry.image.shape} as PNG")
        files[".png"] = png.tobytes()
        heat = entry.heatmap() if callable(entry.heatmap) else entry.heatmap
        if self.heatmap and heat is not None:
            try:
                # frames are OpenCV's BGR (or grey); the overlay returns RGB, imencode wants BGR
                picture = heatmap_overlay(entry.image, heat, colour_order="bgr")[..., ::-1]
            except ConfigError as e:  # a NaN or misshapen heatmap costs the picture, not the entry
                log.warning("reject archive: no heatmap picture for part %r: %s", entry.part_id, e)
            else:
                ok, png = cv2.imencode(".png", np.ascontiguousarray(picture))
                if ok:
                    files[".heat.png"] = png.tobytes()
        files[".json"] = json.dumps({**entry.record, "files": [stem + s for s in (*files, ".json")]}, indent=1).encode()
        written = []
        try:
            for suffix, data in files.items():  # .json last: it marks the entry complete
                tmp, final = self.dir / f".tmp-{stem}{suffix}", self.dir / f"{stem}{suffix}"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, final)
                written.append(final)
        except OSError as e:
            self.counts["write_errors"] += 1
            log.error("reject archive: cannot write part %r to %s (%s); the decision was published, only the "
                      "image is lost", entry.part_id, self.dir, e.strerror or e)
            for path in [*written, *(self.dir / f".tmp-{stem}{s}" for s in files)]:
                _remove(path)
            return
        with self._lock:
            self._entries.append((stem, sum(len(d) for d in files.values())))
            self._bytes += self._entries[-1][1]
            self.counts["written"] += 1
        self._evict()

    def _evict(self) -> None:
        while True:
            with self._lock:
                if not self._entries or (len(self._entries) <= self.max_items and self._bytes <= self.max_bytes):
                    return
                stem, size = self._entries.pop(0)
                self._bytes -= size
                self.counts["evicted"] += 1
            for suffix in (".json", ".png", ".heat.png"):  # JSON first: a half-deleted entry is a leftover
                _remove(self.dir / (stem + suffix))


def _stem_of(name: str) -> str | None:
    bare = name[5:] if name.startswith(".tmp-") else name
    for suffix in (".heat.png", ".png", ".json"):
        if bare.endswith(suffix):
            return bare[: -len(suffix)]
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("reject archive: cannot remove %s (%s)", path, e.strerror or e)
