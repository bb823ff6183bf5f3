"""Stand-ins for the sorter's unit tests: a recording sink, scripted models, real image folders."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from factoryedge.errors import DataError
from factoryedge.runtimes.messages import DecisionPayload, Identity, Topics
from factoryedge.runtimes.triggers import Trigger

IDENTITY = Identity(site="s1", line="l1", machine="sorter1", device_id="dev1")
FAST = {"reconnect_min": 0.01, "reconnect_max": 0.05}


class RecordingSink:
    """What the sorter publishes, with the monotonic time of each publish."""

    def __init__(self) -> None:
        self.identity = IDENTITY
        self.topics = Topics.for_identity(IDENTITY)
        self.published: list[tuple[str, object, float]] = []
        self.closed = False
        self._cv = threading.Condition()

    def publish_event(self, topic, payload, retain=False, wait=True):
        with self._cv:
            self.published.append((topic, payload, time.monotonic()))
            self._cv.notify_all()
        return len(self.published)

    def decisions(self) -> list[DecisionPayload]:
        return [p for t, p, _ in self.published if t.endswith("/decision")]

    def wait_decisions(self, n: int, timeout: float = 5.0) -> list[DecisionPayload]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self.decisions()) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(self.decisions())} of {n} decisions: {self.decisions()}"
                self._cv.wait(left)
        return self.decisions()

    def close(self, timeout=10.0):
        self.closed = True
        return True


@dataclass
class Result:
    score: float
    threshold: float
    heatmap: np.ndarray | None = None

    @property
    def is_anomalous(self) -> bool:
        return self.score >= self.threshold


class BrightnessModel:
    """Score = mean grey level / 255; ``delay`` s per frame; ``fail`` raises that exception."""

    name, version, threshold = "bright", "0.1", 0.5

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.delay, self.fail, self.calls = delay, fail, 0
        self.finished = threading.Event()

    def score(self, frame: np.ndarray) -> Result:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        self.finished.set()
        if self.fail is not None:
            raise self.fail
        if frame.dtype != np.uint8:
            raise DataError(f"a frame must be uint8, got {frame.dtype}")
        s = float(frame.mean()) / 255.0
        return Result(s, self.threshold, np.full(frame.shape[:2], s, np.float32))


def trigger(part_id: str) -> Trigger:
    return Trigger(part_id, time.time(), time.monotonic(), "test")


def write_folder(folder: Path, levels: list[int | None]) -> Path:
    """PNGs img_000.png... of flat grey ``level``; None writes a truncated PNG instead."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, level in enumerate(levels):
        ok, buf = cv2.imencode(".png", np.full((48, 64, 3), level or 0, np.uint8))
        data = buf.tobytes()
        (folder / f"img_{k:03d}.png").write_bytes(data if level is not None else data[: len(data) // 2])
    return folder


def parts_video(path, parts: int, defective, frames_per_part: int = 3, fps: float = 30.0):
    """A lossless (FFV1) video of ``parts`` parts, ``frames_per_part`` frames each; the ``defective`` ones have a pit.

    Lossless because the test model's threshold is calibrated on sensor noise, which MJPG's
    artefacts exceed.
    """
    from tests.support.image_bundle import uniform_part

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (128, 96))
    assert writer.isOpened()
    for p in range(parts):
        image = uniform_part(seed=p, defect=p in defective)
        for _ in range(frames_per_part):
            writer.write(image)
    writer.release()
    return path
