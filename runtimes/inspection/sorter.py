"""On-line sorting: trigger -> frame -> image model -> pass/reject published within a deadline.

    trigger source --(trigger thread)--> frame at/after the trigger --> scoring worker --> decision
                                   \\--> deadline watcher: fail-safe decision at the deadline

Threads: the trigger thread takes each trigger, registers its deadline, and fetches the
first frame captured at or after it (the camera keeps only its newest frame, so this must
happen at once, not when the model is free). One worker scores frames in trigger order.
The deadline watcher publishes the fail-safe verdict (reason ``deadline``) for any part
still undecided ``publish_margin_ms`` before its deadline; a result that comes later is
logged and counted as ``late``, never published as a second verdict. Every trigger gets
exactly one decision: ``no_frame`` (none within ``frame_max_wait_ms``), ``camera_lost``
(the camera is reconnecting or has ended; its own reconnect carries on), ``corrupt_frame``
(the model cannot read the frame, or the camera skipped an unreadable image right before
the answering one, which then may show the next part), ``model_error`` (anything else the
model raised). A trigger that arrives already past its deadline by the PLC's ``t`` (the
broker held it while the station reconnected) is answered at once with the fail-safe verdict,
reason ``deadline``, without a frame: the part has left the camera. Rejected parts with a
frame go to the reject archive after publishing.

``run()`` returns when the trigger source ends or ``stop()`` is called (any thread, signal
handlers included), then closes camera and archive. The sink belongs to whoever opened it
(the station): the sorter publishes on it and never closes it.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from factoryedge.errors import DataError, FactoryEdgeError, SourceError
from factoryedge.runtimes.cameras.frames import Frame, FrameTimeout, LatestFrame, StreamEnded
from factoryedge.runtimes.inspection.archive import RejectArchive
from factoryedge.runtimes.inspection.config import InspectionConfig
from factoryedge.runtimes.messages import decision_payload, trigger_error_payload
from factoryedge.runtimes.plant.live import NO_LIVE_STATE
from factoryedge.runtimes.registry import open_camera, open_trigger
from factoryedge.runtimes.triggers import Trigger, TriggerSource

log = logging.getLogger(__name__)

# A trigger whose t is older than this is taken for a PLC clock that is off, not a held trigger.
IMPLAUSIBLE_TRIGGER_AGE_S = 600.0


class PartModel(Protocol):
    """What the sorter needs from a model (``image_model.ImageModel`` is one)."""

    name: str
    version: str
    threshold: float

    def score(self, frame: np.ndarray) -> Any:
        """An object with ``score``, ``threshold``, ``is_anomalous`` and ``heatmap``."""


@dataclass(eq=False)
class _Part:
    trigger: Trigger
    fire_at: float  # monotonic: when the fail-safe decision is made if nothing else was
    frame: Frame | None = None
    decided: bool = False
    scoring_s: float | None = None  # how long the model took, once it scored the part
    lock: threading.Lock = field(default_factory=threading.Lock)


class Sorter:
    """Runs the sorting loop for one camera; see the module doc.

    ``sink`` is an ``MqttSink`` (or anything with ``publish_event``, ``topics`` and ``identity``).
    ``camera`` defaults to opening ``config.camera``; ``trigger`` to the registry's trigger
    for ``config.trigger`` on this sink; ``archive`` to one under ``config.archive.dir``.
    """

    def __init__(self, config: InspectionConfig, model: PartModel, sink: Any, *, camera: Any = None,
                 trigger: TriggerSource | None = None, archive: RejectArchive | None = None,
                 live: Any = NO_LIVE_STATE, on_scored: Any = None) -> None:
        self.config = config
        self.live = live  # plant.live.LiveState: what the operator page and Sparkplug show
        self.on_scored = on_scored  # called with each model call's seconds (the station's health latency)
        self.model = model
        self.sink = sink
        self.identity = sink.identity
        self.topic = sink.topics.decision
        self.error_topic = sink.topics.trigger_error
        self.trigger = trigger if trigger is not None else open_trigger(config.trigger, sink)
        self.trigger.on_error = self._on_trigger_error
        a = config.archive
        self.archive = archive if archive is not None else (
            RejectArchive(a.dir, a.max_items, int(a.max_mb * 2**20), a.heatmap, a.queue) if a.dir else None)
        self.camera = camera
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # counters
        self._latest: LatestFrame | None = None
        self._skips: OrderedDict[int, int] = OrderedDict()  # frame index -> images skipped as corrupt before it
        self._work: queue.SimpleQueue[_Part | None] = queue.SimpleQueue()
        self._heap: list[tuple[float, int, _Part]] = []
        self._heap_cv = threading.Condition()
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self.scoring_since: float | None = None  # monotonic start of the model call in progress, if any
        self._closed = False
        self._lost_parts = 0  # parts answered camera_lost since the camera last gave a frame (logged once)
        self._lost_since = 0.0  # monotonic time of the outage's first camera_lost part

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> Sorter:
        """Open the camera and start the worker and deadline threads (idempotent)."""
        if self._started:
            return self
        if self.camera is None:
            self.camera = open_camera(self.config.camera, **self.config.camera_options)
        self.camera.open()
        self._latest = LatestFrame(self._frames_noting_skips(), name=self.camera.uri, on_close=self.camera.close)
        for target, name in ((self._score_loop, "factoryedge-sorter-score"),
                             (self._deadline_loop, "factoryedge-sorter-deadline")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._started = True
        log.info("sorting with %s %s, threshold %.4g, deadline %g ms, fail-safe %s, camera %s, trigger %s",
                 self.model.name, self.model.version, self.model.threshold, self.config.deadline_ms,
                 self.config.fail_safe, self.camera.uri, self.config.trigger)
        return self

    def run(self) -> None:
        """Judge parts until the trigger source ends or ``stop()``; always closes on the way out."""
        try:
            self.start()
            for trigger in self.trigger:
                if self._stop.is_set():
                    break
                self.handle(trigger)
        finally:
            self.close()

    def stop(self) -> None:
        """Ask ``run()`` to end; safe from signal handlers and other threads."""
        self._stop.set()
        self.trigger.close()

    def close(self, timeout: float = 10.0) -> None:
        """Decide what is pending (fail-safe at its deadline), stop threads, close camera and archive."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self.trigger.close()
        self._work.put(None)
        for t in self._threads[:1]:  # the worker first: its parts still get their decisions
            t.join(timeout)
        with self._heap_cv:
            self._heap_cv.notify_all()
        for t in self._threads[1:]:
            t.join(timeout)
        if self._latest is not None:
            self._latest.close()
        if self.archive is not None:
            self.archive.close()
        c = self.stats()
        log.info("sorter stopped: %d triggers, %d pass, %d reject %s, %d late results", c["triggers"], c["pass"],
                 c["reject"], {k[7:]: v for k, v in c.items() if k.startswith("reason_")}, c["late"])

    @property
    def frames(self) -> LatestFrame | None:
        """The camera's latest-frame buffer once started (its ``failure``, ``ended``, ``peek``)."""
        return self._latest

    def stats(self) -> dict[str, int]:
        """Counters: triggers, decisions, pass, reject, reason_<reason>, late, late_triggers, publish_errors, more.

        Also ``trigger_*`` (the trigger source's) and ``archive_*`` (the reject archive's).

        ``late_triggers``: triggers that arrived past their deadline (by the PLC's ``t``) and were
        answered at once with the fail-safe verdict, reason ``deadline``.
        """
        with self._lock:
            out = {"triggers": 0, "decisions": 0, "pass": 0, "reject": 0, "late": 0, "late_triggers": 0,
                   "publish_errors": 0, **self.counts}
        out.update({f"trigger_{k}": v for k, v in self.trigger.stats.items()})
        if self.archive is not None:
            out.update({f"archive_{k}": v for k, v in self.archive.stats.items()})
        return out

    def _count(self, *names: str) -> None:
        with self._lock:
            for name in names:
                self.counts[name] += 1

    # -- per trigger (trigger thread) ------------------------------------------------------

    def handle(self, trigger: Trigger) -> None:
        """Judge one part: fetch its frame now, queue it for scoring; its decision is guaranteed."""
        self.start()
        self._count("triggers")
        cfg = self.config
        held = self._arrived_late(trigger)
        if held is not None:  # the part has left the camera: any frame now shows another one
            self._count("late_triggers")
            self._decide(_Part(trigger, trigger.t_mono), cfg.fail_safe, "deadline", detail=held)
            return
        part = _Part(trigger, trigger.t_mono + (cfg.deadline_ms - cfg.publish_margin_ms) / 1000.0)
        with self._heap_cv:
            heapq.heappush(self._heap, (part.fire_at, next(self._seq), part))
            self._heap_cv.notify_all()
        frame, reason, detail = self._frame_for(trigger)
        if frame is None:
            self._decide(part, self.config.fail_safe, reason, detail=detail)
            return
        part.frame = frame
        if reason is not None:
            self._decide(part, self.config.fail_safe, reason, detail=detail)
            return
        self._work.put(part)

    def _arrived_late(self, trigger: Trigger) -> str | None:
        """Why ``trigger`` is already past its deadline by the PLC's ``t``, or None (on time, or no ``t``).

        A trigger the broker held for this station while it reconnected (``sinks.trigger_session``)
        arrives seconds late; judging it by the frame at hand would judge a later part. An age
        over ``IMPLAUSIBLE_TRIGGER_AGE_S`` is taken for a PLC clock that is off, not a held
        trigger (the broker holds them for ``trigger_session_s``, 30 s by default): ``t`` is then
        ignored and the trigger timed from its arrival, with a warning.
        """
        if trigger.t_plc is None:
            return None
        age_s = trigger.t_wall - trigger.t_plc
        if age_s * 1000.0 <= self.config.deadline_ms:
            return None
        if age_s > IMPLAUSIBLE_TRIGGER_AGE_S:
            self._count("trigger_clock_suspect")
            if self.counts["trigger_clock_suspect"] % 1000 == 1:
                log.warning("part %r: its trigger's t is %.0f s behind this device's clock; taking the PLC's clock "
                            "for wrong and timing the part from its arrival (synchronise the clocks)",
                            trigger.part_id, age_s)
            return None
        return (f"the trigger arrived {age_s * 1000.0:.0f} ms after the PLC sent it (its t), past the "
                f"{self.config.deadline_ms:g} ms deadline (held while the station reconnected?)")

    def _frame_for(self, trigger: Trigger) -> tuple[Frame | None, str | None, str]:
        """(frame, fail-safe reason or None, detail) for the first frame at/after the trigger."""
        cfg, latest, cam = self.config, self._latest, self.camera
        if latest is None or latest.ended:
            return None, "camera_lost", self._lost_detail()
        if not cam.is_open:
            return None, "camera_lost", f"camera {cam.uri} is reconnecting"
        left = trigger.t_mono + cfg.frame_max_wait_ms / 1000.0 - time.monotonic()
        try:
            frame = latest.wait_for(trigger.t_wall - cfg.frame_max_age_ms / 1000.0, max(0.0, left))
        except FrameTimeout:
            if not cam.is_open:
                return None, "camera_lost", f"camera {cam.uri} was lost while waiting for the frame"
            return None, "no_frame", f"no frame within {cfg.frame_max_wait_ms:g} ms of the trigger"
        except StreamEnded as e:
            return None, "camera_lost", str(e)
        except SourceError as e:
            log.error("camera failed: %s", e)
            return None, "camera_lost", str(e)
        skipped = self._skips.get(frame.index, 0)
        if skipped:
            return frame, "corrupt_frame", (f"the camera skipped {skipped} unreadable image(s) right before frame "
                                            f"{frame.index}, which may show another part")
        return frame, None, ""

    def _lost_detail(self) -> str:
        """Why a camera that delivers no more frames stopped, for a camera_lost decision's detail."""
        latest, uri = self._latest, self.camera.uri
        if latest is None:
            return f"camera {uri} is not started"
        error = latest.failure
        if error is not None:
            return f"camera {uri} failed: {type(error).__name__}: {error}"
        return (f"camera {uri} has ended after {latest.received} frames and does not reconnect "
                "(a file or folder without loop=true, or a closed camera)")

    def _frames_noting_skips(self) -> Iterator[Frame]:
        """The camera's frames, noting how many corrupt images were skipped right before each."""
        cam = self.camera
        before = cam.stats.get("corrupt", 0)
        for frame in cam.frames():
            now = cam.stats.get("corrupt", 0)
            if now > before:
                self._skips[frame.index] = now - before
                while len(self._skips) > 256:
                    self._skips.popitem(last=False)
            before = now
            yield frame

    # -- scoring (worker thread) ---------------------------------------------------------

    def _score_loop(self) -> None:
        while (part := self._work.get()) is not None:
            try:
                self._score(part)
            except Exception:  # noqa: BLE001 - one part must not end sorting; its deadline still decides it
                log.exception("sorter: scoring part %r failed unexpectedly", part.trigger.part_id)

    def _score(self, part: _Part) -> None:
        if part.decided:  # the deadline passed while it queued: skip the work, the line is behind
            self._count("late")
            log.warning("part %r: deadline passed before scoring started; not scored", part.trigger.part_id)
            return
        fail = self.config.fail_safe
        try:
            t0 = time.perf_counter()
            self.scoring_since = time.monotonic()
            try:
                result = self.model.score(part.frame.image)
            finally:
                self.scoring_since = None
            part.scoring_s = time.perf_counter() - t0
            if self.on_scored is not None:
                self.on_scored(part.scoring_s)
            score, threshold = float(result.score), float(result.threshold)
            verdict = "reject" if result.is_anomalous else "pass"
        except DataError as e:
            log.error("part %r: frame %d cannot be scored: %s", part.trigger.part_id, part.frame.index, e)
            self._decide(part, fail, "corrupt_frame", detail=str(e))
            return
        except Exception as e:  # noqa: BLE001 - any model failure becomes a fail-safe decision
            log.exception("part %r: model %s failed", part.trigger.part_id, self.model.name)
            self._decide(part, fail, "model_error", detail=f"{type(e).__name__}: {e}")
            return
        if not self._decide(part, verdict, "score", score=score, threshold=threshold, result=result):
            self._count("late")
            late_ms = (time.monotonic() - part.trigger.t_mono) * 1000.0
            log.warning("part %r: result %s (score %.4g) came %.1f ms after the trigger, past the %g ms deadline; "
                        "the fail-safe decision stands", part.trigger.part_id, verdict, score, late_ms,
                        self.config.deadline_ms)

    # -- deadlines (deadline thread) -----------------------------------------------------

    def _deadline_loop(self) -> None:
        with self._heap_cv:
            while True:
                if not self._heap:
                    if self._stop.is_set():
                        return
                    self._heap_cv.wait(0.5)
                    continue
                fire_at, _, part = self._heap[0]
                wait = fire_at - time.monotonic()
                if wait > 0:
                    self._heap_cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if not part.decided:
                    self._heap_cv.release()
                    try:
                        self._decide(part, self.config.fail_safe, "deadline",
                                     detail=f"no result within {self.config.deadline_ms:g} ms")
                    finally:
                        self._heap_cv.acquire()

    # -- deciding (any thread; exactly once per part) ------------------------------------

    def _decide(self, part: _Part, verdict: str, reason: str, *, score: float | None = None,
                threshold: float | None = None, result: Any = None, detail: str = "") -> bool:
        with part.lock:
            if part.decided:
                return False
            part.decided = True
        t, frame = part.trigger, part.frame
        latency_ms = (time.monotonic() - t.t_mono) * 1000.0
        try:
            payload = decision_payload(
                self.identity, part_id=t.part_id, verdict=verdict, reason=reason, score=score,
                threshold=threshold if threshold is not None else float(self.model.threshold),
                trigger_source=t.source, trigger_epoch=t.t_wall,
                capture_epoch=frame.t_wall if frame is not None else None, latency_ms=latency_ms,
                deadline_ms=self.config.deadline_ms, model_name=self.model.name, model_version=self.model.version,
                frame_index=frame.index if frame is not None else None,
                frame_pos=frame.pos if frame is not None else None,
                frame_name=frame.name if frame is not None else None, detail=detail)
            self.sink.publish_event(self.topic, payload)
        except FactoryEdgeError as e:
            self._count("publish_errors")
            log.error("part %r: decision %s (%s) could NOT be published: %s", t.part_id, verdict, reason, e)
            return True
        self._count("decisions", verdict, f"reason_{reason}")
        self.live.add_decision(payload, part.scoring_s)
        level = logging.DEBUG if reason == "score" and verdict == "pass" else logging.INFO
        if reason != "score":
            level = logging.WARNING
        if self._camera_outage(reason, frame):
            level = logging.DEBUG  # the outage was logged at its first part; its count is in stats()
        log.log(level, "part %r: %s (%s) score=%s latency=%.1f ms%s", t.part_id, verdict, reason,
                f"{score:.4g}" if score is not None else "-", latency_ms, f" ({detail})" if detail else "")
        if verdict == "reject" and frame is not None and self.archive is not None:
            heat = (lambda: result.heatmap) if result is not None else None
            self.archive.submit(frame.image, payload.model_dump(by_alias=True), t.part_id, heat, t.t_wall)
        return True

    def _camera_outage(self, reason: str, frame: Frame | None) -> bool:
        """Whether this decision is a camera_lost one after the first of its outage (logged quieter).

        A camera that ended or is reconnecting answers every part camera_lost: at ten parts a
        second a warning per part would bury the log. The first part of an outage is logged at
        WARNING with a note, the rest at DEBUG; a frame that reaches a part again ends the outage
        with one line saying how many parts it cost.
        """
        with self._lock:
            if reason == "camera_lost":
                self._lost_parts += 1
                first = self._lost_parts == 1
                if first:
                    self._lost_since = time.monotonic()
            elif frame is not None and self._lost_parts and frame.t_monotonic > self._lost_since:
                # a frame captured since the outage began (a part scored from an older frame, still
                # queued when the camera went, says nothing about the camera now)
                lost, self._lost_parts = self._lost_parts, 0
                first = None
            else:
                return False
        if first:
            log.warning("camera %s lost: parts are answered %s (camera_lost) until it delivers again; they are "
                        "counted in reason_camera_lost and logged at DEBUG from now", self.camera.uri,
                        self.config.fail_safe)
            return False
        if first is None:
            log.warning("camera %s delivers again: %d part(s) were answered camera_lost while it was lost",
                        self.camera.uri, lost)
            return False
        return True

    def _on_trigger_error(self, reason: str, raw: bytes) -> None:
        payload = trigger_error_payload(self.identity, source=self.trigger.name, error=reason, raw=raw)
        try:
            self.sink.publish_event(self.error_topic, payload)
        except FactoryEdgeError as e:
            log.error("cannot report a malformed trigger on %s: %s", self.error_topic, e)

