"""Readers behind a camera source: one for cv2.VideoCapture, one for a folder of images."""
from __future__ import annotations

import fnmatch
import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from factoryedge.errors import SourceError
from factoryedge.runtimes.cameras.camera_options import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from factoryedge.runtimes.cameras.opencv_source import CameraSource

log = logging.getLogger(__name__)

_END = object()


class _Lost(Exception):
    """The open camera, file or folder stopped delivering; reopen it."""

class _VideoReader:
    """A cv2.VideoCapture; a failed read is 'no frame yet' for a live camera, the end for a file."""

    def __init__(self, cv2: Any, cap: Any, live: bool, fps: float | None = None) -> None:
        self.cv2, self.cap, self.live, self.fps = cv2, cap, live, fps
        self.good = 0

    def read(self) -> Any:
        try:
            ok, image = self.cap.read()
        except self.cv2.error as e:
            raise _Lost(f"read failed: {e}") from None
        if not ok or image is None:
            return None if self.live else _END
        self.good += 1
        return image, (-1 if self.live else self.good - 1), ""

    def release(self) -> None:
        self.cap.release()


class _FolderReader:
    """One pass over a folder's images in name order; a new one per loop picks up new files."""

    def __init__(self, cv2: Any, folder: str, pattern: str | None, fps: float | None, source: CameraSource) -> None:
        self.cv2, self.folder, self.fps, self.source = cv2, folder, fps, source
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
        self.names, self.next, self.good = names, 0, 0

    def read(self) -> Any:
        while self.next < len(self.names):
            pos, name = self.next, self.names[self.next]
            self.next += 1
            path = os.path.join(self.folder, name)
            try:
                data = np.fromfile(path, dtype=np.uint8)
            except FileNotFoundError:
                if not os.path.isdir(self.folder):
                    raise _Lost(f"folder {self.folder!r} is gone") from None
                log.info("camera %s: image %s vanished before it was read; skipping", self.source.uri, path)
                continue
            except OSError as e:
                self.source._corrupt(path, f"unreadable: {e.strerror or e}")
                continue
            try:  # ANYCOLOR keeps grey images grey; depth is converted to 8 bits
                image = self.cv2.imdecode(data, self.cv2.IMREAD_ANYCOLOR) if data.size else None
            except self.cv2.error:
                image = None
            if image is None:
                self.source._corrupt(path, "not a decodable image")
                continue
            if image.ndim == 3 and image.shape[2] != 3:
                image = np.ascontiguousarray(image[..., 0] if image.shape[2] == 1 else image[..., :3])
            self.good += 1
            return image, pos, name
        return _END

    def release(self) -> None:
        pass
