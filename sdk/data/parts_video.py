"""Parts videos: synthetic parts passing the camera, written as AVI for the camera sources to play.

What the demo's conveyor and the inspection tests play through OpenCV as a ``file://``
camera. MJPG (OpenCV's own encoder, exact frame counts) or FFV1 (lossless, as raw frames
from a CSI camera). OpenCV (the ``camera`` extra) is imported when a video is written.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from factoryedge.data.synthetic_parts import PartPass, SyntheticParts, check_defect
from factoryedge.errors import ConfigError, DataError, missing_dependency

log = logging.getLogger(__name__)

VIDEO_FOURCC = "MJPG"  # intra-frame only: exact frame counts and seeks, and OpenCV's own encoder
# FFV1: lossless and intra-frame, as raw frames from a CSI or GigE camera arrive (no codec
# artefacts between the training images and what the station sees); needs FFmpeg's writer.
VIDEO_CODECS = ("MJPG", "FFV1")
VIDEO_SUFFIX = ".avi"


def write_parts_video(
    path: str | os.PathLike,
    parts: Sequence[str | None],
    frames_per_part: int = 8,
    fps: float = 25.0,
    seed: int = 0,
    *,
    size: tuple[int, int] = (256, 256),
    shape: str = "washer",
    travel: float = 0.2,
    codec: str = VIDEO_FOURCC,
) -> list[PartPass]:
    """Write an MJPG ``.avi`` of ``parts`` (defect names, None for good) passing the camera, one after another.

    Part ``i`` is ``SyntheticParts(size, seed, shape, "bgr").passing(parts[i], i,
    frames_per_part, travel)``, seen in frames ``i * frames_per_part`` up to the next part's.
    The file appears in one step (written beside it, then renamed), so a reader that loops
    over it never opens half a video. Returns the ground truth, one ``PartPass`` per part.
    """
    parts = [check_defect(d) for d in parts]
    if codec not in VIDEO_CODECS:
        raise ConfigError(f"codec {codec!r} is not one of {VIDEO_CODECS}")
    if not parts:
        raise ConfigError("parts is empty; give at least one defect name or None")
    if not isinstance(frames_per_part, (int, np.integer)) or frames_per_part < 1:
        raise ConfigError(f"frames_per_part {frames_per_part!r} must be a positive integer")
    if not float(fps) > 0:
        raise ConfigError(f"fps {fps!r} must be positive")
    path = Path(path)
    if path.suffix.lower() != VIDEO_SUFFIX:
        raise ConfigError(f"video path '{path}' must end in {VIDEO_SUFFIX} (parts videos are MJPG or FFV1 in AVI)")
    try:
        import cv2
    except ImportError as e:
        raise missing_dependency("cv2", "camera", "writing a parts video") from e
    gen = SyntheticParts(size, seed, shape, "bgr")
    tmp = path.with_name(".tmp-" + path.name)
    writer = _video_writer(cv2, tmp, float(fps), (gen.size[1], gen.size[0]), codec)
    if not writer.isOpened():
        raise DataError(f"OpenCV cannot write {codec} video to '{tmp}'; check the folder exists and is writable")
    truth, n = [], int(frames_per_part)
    try:
        for i, defect in enumerate(parts):
            for image, _ in gen.passing(defect, i, n, travel):
                writer.write(image)
            truth.append(PartPass(range(i * n, (i + 1) * n), f"part-{i:04d}", defect))
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise
    writer.release()
    os.replace(tmp, path)
    log.info("synthetic parts video written",
             extra={"path": str(path), "parts": len(parts), "frames": len(parts) * frames_per_part})
    return truth


def _video_writer(cv2, path: Path, fps: float, size: tuple[int, int], codec: str = VIDEO_FOURCC):
    """FFmpeg's writer where OpenCV has it (it keeps a fractional frame rate), else OpenCV's own MJPG."""
    fourcc = cv2.VideoWriter_fourcc(*codec)
    if cv2.CAP_FFMPEG in cv2.videoio_registry.getWriterBackends():
        writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, fourcc, fps, size)
        if writer.isOpened():
            return writer
    if codec != VIDEO_FOURCC:
        raise DataError(f"this OpenCV cannot write {codec} video (it needs FFmpeg's writer); use codec='MJPG'")
    if fps != round(fps):
        log.warning("this OpenCV has no FFmpeg writer; its own MJPEG writer records %s fps as %d", fps, round(fps))
    return cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, fourcc, fps, size, [cv2.VIDEOWRITER_PROP_QUALITY, 95])
