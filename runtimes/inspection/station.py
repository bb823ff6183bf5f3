"""An inspection station from a device profile: camera, image bundle, sorter, MQTT, health.

    camera --> frame at the trigger --> ImageModel (TensorRT / ONNX Runtime) --> Sorter --> MQTT decision

What ``factoryedge run`` starts for a profile with ``kind: inspection``. Besides the sorter's
decisions it publishes a health report every ``mqtt.health_interval_s`` with the sorter's and
the camera's counters, so a plant system sees a station that stopped seeing parts.

A lost stream is the camera's own business (it reconnects; parts meanwhile get fail-safe
``camera_lost`` decisions). But if the camera's reader itself fails (an exception, not a lost
stream), nothing in this process would bring it back: the station then stops with
``failed`` set, ``factoryedge run`` exits with status 1, and the service manager
(``Restart=always`` in the shipped unit) starts it afresh.
"""
from __future__ import annotations

import logging
import threading
import time

from factoryedge.runtimes.inspection.image_model import ImageModel
from factoryedge.runtimes.inspection.sorter import Sorter
from factoryedge.runtimes.profile import InspectionProfile
from factoryedge.runtimes.registry import open_sink
from factoryedge.runtimes.sinks import payloads as pl

log = logging.getLogger(__name__)


class InspectionStation:
    """Owns the model, the sink and the sorter for one camera; ``run()`` blocks until ``stop()``."""

    def __init__(self, profile: InspectionProfile, sink=None, camera=None, trigger=None) -> None:
        self.profile = profile
        i = profile.identity
        self.identity = pl.Identity(site=i.site, line=i.line, machine=i.machine, device_id=i.device_id)
        self.model = ImageModel.load(profile.model.bundle, profile.model.backend)
        try:
            self.sink = sink or open_sink(
                profile.mqtt.uri, site=i.site, line=i.line, machine=i.machine, device_id=i.device_id,
                outbox=str(profile.mqtt.outbox), **profile.mqtt.options,
            )
        except BaseException:
            self.model.close()
            raise
        self.sorter = Sorter(profile.inspection, self.model, self.sink, camera=camera, trigger=trigger)
        self._stop = threading.Event()
        self._started = time.time()
        self.failed: str | None = None
        log.info("inspection station: model %s %s (threshold %.4g), camera %s, trigger %s, deadline %g ms, "
                 "fail-safe %s", self.model.name, self.model.version, self.model.threshold,
                 profile.inspection.camera, profile.inspection.trigger, profile.inspection.deadline_ms,
                 profile.inspection.fail_safe)

    def run(self) -> None:
        reporter = threading.Thread(target=self._health_loop, name="factoryedge-health", daemon=True)
        reporter.start()
        try:
            self.sorter.run()  # closes camera, archive and sink on the way out
        finally:
            self._stop.set()
            reporter.join(5)
            self.model.close()
            log.info("inspection stopped: %s", self.sorter.stats())

    def stop(self) -> None:
        self._stop.set()
        self.sorter.stop()

    def health(self) -> pl.HealthPayload:
        stats = self.sink.stats()
        camera = getattr(self.sorter, "camera", None)
        extra = {"sorter": self.sorter.stats(), "camera": dict(getattr(camera, "stats", {}) or {})}
        return pl.health_payload(self.identity, uptime_s=time.time() - self._started,
                                 outbox_depth=stats.outbox_depth, mqtt_reconnects=stats.reconnects, extra=extra)

    def _health_loop(self) -> None:
        interval = self.profile.mqtt.health_interval_s
        next_report = time.monotonic() + interval
        while not self._stop.wait(min(1.0, interval)):
            if self._camera_failed():
                return
            if time.monotonic() < next_report:
                continue
            next_report += interval
            try:
                self.sink.publish_telemetry(self.sink.topics.health, self.health())
            except Exception:  # noqa: BLE001 - health reporting must never stop the sorting
                log.exception("health report failed")

    def _camera_failed(self) -> bool:
        latest = self.sorter.frames
        error = latest.failure if latest is not None else None
        if error is None:
            return False
        self.failed = f"camera reader failed: {type(error).__name__}: {error}"
        log.error("%s; stopping so the service manager restarts the station", self.failed)
        self.stop()
        return True
