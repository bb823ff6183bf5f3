"""Folders of images as a camera: ``dir://shots?pattern=*.png&fps=5&loop=true``.

Images come in name order, grey ones as HxW; ``pattern`` (a shell glob) replaces the
default of every file with an image extension, hidden files never count. Unreadable images
are counted as ``corrupt`` and skipped, with one warning per version of the file. ``fps``
paces the folder like a camera; ``loop`` lists it again at the end, picking up new files.
A folder that vanishes is reopened with backoff until it is back.
"""
from __future__ import annotations

import fnmatch
import logging
import os
from typing import Any, ClassVar

import numpy as np

from factoryedge.errors import SourceError
from factoryedge.runtimes.cameras.base import END, RECONNECT_OPTIONS, Camera, CameraLost, Reader
from factoryedge.runtimes.cameras.opencv import import_cv2
from factoryedge.runtimes.options import as_bool, as_float, as_text

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


class Listing(Reader):
    """One pass over a folder: the names it held when opened, and the next one to read."""

    def __init__(self, cv2: Any, folder: str, names: list[str], fps: float | None) -> None:
        self.cv2, self.folder, self.names, self.fps = cv2, folder, names, fps
        self.next = 0


class ImageFolderCamera(Camera):
    """Images of one folder, relative paths from the working directory; see the module docstring."""

    SCHEME: ClassVar[str] = "dir"
    OPTIONS = {"pattern": as_text, "fps": as_float(0.0, 5.0), "loop": as_bool, **RECONNECT_OPTIONS}
    DEFAULTS: ClassVar[dict[str, Any]] = {**Camera.DEFAULTS, "loop": False}

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri, **options)
        self._warned: set[tuple[str, float]] = set()

    def open_reader(self) -> Listing:
        cv2, folder, pattern = import_cv2(), self.location, self.settings.get("pattern")
        if not os.path.isdir(folder):
            raise SourceError(f"image folder {os.path.abspath(folder)!r} does not exist")
        try:
            names = sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".") and (
                fnmatch.fnmatch(e.name, pattern) if pattern else e.name.lower().endswith(IMAGE_EXTENSIONS)))
        except OSError as e:
            raise SourceError(f"cannot list image folder {folder!r}: {e.strerror or e}") from None
        if not names:
            wanted = f"pattern={pattern}" if pattern else "an image extension (" + ", ".join(IMAGE_EXTENSIONS) + ")"
            raise SourceError(f"image folder {os.path.abspath(folder)!r} has no file matching {wanted}")
        return Listing(cv2, folder, names, self.settings.get("fps"))

    def read_frame(self, reader: Listing) -> Any:
        cv2 = reader.cv2
        while reader.next < len(reader.names):
            pos, name = reader.next, reader.names[reader.next]
            reader.next += 1
            path = os.path.join(reader.folder, name)
            try:
                data = np.fromfile(path, dtype=np.uint8)
            except FileNotFoundError:
                if not os.path.isdir(reader.folder):
                    raise CameraLost(f"folder {reader.folder!r} is gone") from None
                log.info("camera %s: image %s vanished before it was read; skipping", self.uri, path)
                continue
            except OSError as e:
                self._corrupt(path, f"unreadable: {e.strerror or e}")
                continue
            try:  # ANYCOLOR keeps grey images grey; depth is converted to 8 bits
                image = cv2.imdecode(data, cv2.IMREAD_ANYCOLOR) if data.size else None
            except cv2.error:
                image = None
            if image is None:
                self._corrupt(path, "not a decodable image")
                continue
            if image.ndim == 3 and image.shape[2] != 3:
                image = np.ascontiguousarray(image[..., 0] if image.shape[2] == 1 else image[..., :3])
            return image, pos, name
        return END

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
