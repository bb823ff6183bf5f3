"""The inspection program: one camera, one image bundle, a sorter, decisions over MQTT.

    camera + trigger --> frame at the trigger --> ImageModel (TensorRT / ONNX Runtime) --> Sorter --> sink

What ``factoryedge run`` starts for a profile with ``kind: inspection``; the twin of
``monitoring.program.ConditionMonitor`` on the same shell (``app.DeviceProgram``). The
station opens and owns the model, the sink, the camera and the trigger; the sorter only
sorts. Besides the decisions it publishes a health report every ``mqtt.health_interval_s``
with the sorter's and the camera's counters, so a plant system sees a station that stopped
seeing parts.

A lost stream is the camera's own business (it reconnects; parts meanwhile get fail-safe
``camera_lost`` decisions, the outage logged once). A file or folder without ``loop`` that
reaches its end stays ended: the station keeps running and answers every later part
``camera_lost``, since a PLC must never wait on silence; health's ``extra.camera.state``
says ``ended`` (or ``reconnecting``) beside the camera's counters. But if the camera's
reader itself fails (an exception, not a lost stream), nothing in this process would bring
it back: the station then stops with ``failed`` set, ``factoryedge run`` exits with
status 1, and the service manager (``Restart=always`` in the shipped unit) starts it afresh.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from factoryedge.runtimes import messages as msg
from factoryedge.runtimes.app import DeviceProgram
from factoryedge.runtimes.inspection.image_model import ImageModel
from factoryedge.runtimes.inspection.sorter import Sorter
from factoryedge.runtimes.registry import open_camera, open_trigger

log = logging.getLogger(__name__)


class InspectionStation(DeviceProgram):
    """Sorts the parts one camera sees; ``run()`` blocks until ``stop()`` or the trigger source ends.

    ``sink``, ``camera`` and ``trigger`` default to opening the profile's; tests pass their own.
    """

    name = "inspection station"
    kind = "inspection"

    def __init__(self, profile: Any, sink: Any = None, camera: Any = None, trigger: Any = None) -> None:
        super().__init__(profile)
        cfg = profile.inspection
        with self.closing_on_error():
            self.model = self.own(ImageModel.load(profile.model.bundle, profile.model.backend, profile.model.trusted()))
            self.show_model(self.model)
            self.open_sink(sink)
            self.camera = self.own(camera or open_camera(cfg.camera, **cfg.camera_options))
            self.trigger = self.own(trigger or open_trigger(cfg.trigger, self.sink))
            self.sorter = Sorter(cfg, self.model, self.sink, camera=self.camera, trigger=self.trigger, live=self.live,
                                 on_scored=self.record_inference)
        log.info("inspection station: model %s %s (threshold %.4g), camera %s, trigger %s, deadline %g ms, "
                 "fail-safe %s", self.model.name, self.model.version, self.model.threshold,
                 cfg.camera, cfg.trigger, cfg.deadline_ms, cfg.fail_safe)

    def serve(self) -> None:
        self.sorter.run()  # closes the camera's frame reader and the archive on the way out
        log.info("inspection stopped: %s", self.sorter.stats())

    def stop(self) -> None:
        super().stop()
        self.sorter.stop()

    def health_fields(self) -> dict[str, Any]:
        sorter = self.sorter.stats()
        camera = {**dict(getattr(self.camera, "stats", {}) or {}), "state": self.camera_state()}
        return {"extra": {"sorter": sorter, "camera": camera, "reject_rate": self._reject_rate(sorter)}}

    def camera_state(self) -> str:
        """``streaming``, ``reconnecting``, ``ended`` (a file or folder without loop), ``failed`` or ``starting``.

        Anything but ``streaming`` means parts are answered fail-safe (camera_lost); the counts
        alone would not say so, since a camera that ended simply stops counting.
        """
        latest = self.sorter.frames
        if latest is None:
            return "starting"
        if latest.failure is not None:
            return "failed"
        if latest.ended:
            return "ended"
        return "streaming" if getattr(self.camera, "is_open", True) else "reconnecting"

    def _reject_rate(self, sorter: dict[str, int]) -> dict[str, Any]:
        """Observed rejects / decisions beside the bundle's expected false-reject rate.

        On a line that makes few defects the two should be close; an observed rate well above
        the expected one (and its 95 % bound) says the line or the camera drifted from the
        good parts the threshold was set on. Fail-safe rejects count too: they are rejects.
        """
        est = self.model.bundle.manifest.score.false_reject
        decisions = int(sorter.get("decisions", 0))
        return {"observed": sorter.get("reject", 0) / decisions if decisions else None, "decisions": decisions,
                "expected_false_reject": est.expected if est else None,
                "expected_upper_bound": est.upper_bound if est else None}

    def reject_archive(self) -> Any:
        return self.sorter.archive

    def commands(self):
        return {"set_threshold": self._set_threshold}

    def _set_threshold(self, args: dict) -> msg.CommandReply:
        old, new = self.model.threshold, float(args["threshold"])
        self.model.rule = self.model.rule.with_threshold(new)  # the next part scored uses it
        self.live.set_threshold(new)
        log.info("threshold changed by command from %.4g to %.4g", old, new)
        return msg.CommandReply("ok", f"threshold {old:.6g} -> {new:.6g}", {"old": old, "new": new})

    def progress(self) -> Any:
        # frames captured (or the camera's reconnect attempts) and decisions made
        cam = dict(getattr(self.camera, "stats", {}) or {})
        return cam.get("frames"), cam.get("reconnect_attempts"), self.sorter.stats()["decisions"]

    def stuck(self) -> str | None:
        since = self.sorter.scoring_since
        limit = max(10.0, 20 * self.profile.inspection.deadline_ms / 1000.0)
        if since is not None and time.monotonic() - since > limit:
            return f"the model has been scoring one part for {time.monotonic() - since:.0f} s (limit {limit:g} s)"
        return None

    def watch(self) -> None:
        latest = self.sorter.frames
        error = latest.failure if latest is not None else None
        if error is not None and self.failed is None:
            self.fail(f"camera reader failed: {type(error).__name__}: {error}")
