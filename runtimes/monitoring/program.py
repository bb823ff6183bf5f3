"""The condition-monitoring program that runs unattended next to a machine.

    source -> StreamWindower -> VibrationModel (preprocessing + backend) -> Debounce -> sink (outbox)

One thread reads the source and scores; the shell's reporter thread publishes telemetry and
health on their own clocks, so a plant still hears from a device whose sensor was
unplugged; MQTT commands (set_threshold, recalibrate, reload) run on the sink's command
thread under the same lock as scoring. The source's declared sample rate is checked against
the bundle's before the first block is scored: a rate mismatch alone makes every window look
anomalous.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from factoryedge.debounce import Debounce
from factoryedge.errors import ConfigError, FactoryEdgeError, SourceError
from factoryedge.features.windowing import StreamWindower
from factoryedge.runtimes import clock
from factoryedge.runtimes import messages as msg
from factoryedge.runtimes.app import DeviceProgram
from factoryedge.runtimes.monitoring.baselining import Baseliner
from factoryedge.runtimes.monitoring.vibration_model import VibrationModel
from factoryedge.runtimes.registry import open_source

log = logging.getLogger(__name__)


@dataclass
class _Counters:
    samples: int = 0
    windows: int = 0
    events: int = 0
    telemetry: int = 0  # telemetry payloads made (the last one's seq)
    dropped_frames: int = 0
    gaps: int = 0
    period_gaps: int = 0
    last_window_end: float | None = None
    last_window_mono: float | None = None  # the same instant on the monotonic clock, for lag_s
    period_scores: list = field(default_factory=list)


def check_source_rate(source: Any, uri: str, model: VibrationModel) -> None:
    """ConfigError unless the source declares the sample rate the model was trained at."""
    rate, expected = getattr(source, "sample_rate", None), model.spec.sample_rate
    if rate is None:
        raise ConfigError(f"sensor {uri} declares no sample rate; add rate={expected:g} to its URI if the sensor "
                          f"samples at the {expected:g} Hz bundle {model.name} was trained at")
    if float(rate) != float(expected):
        raise ConfigError(f"sensor {uri} delivers {float(rate):g} Hz but bundle {model.name} expects {expected:g} Hz; "
                          "use a bundle trained at the sensor's rate")


class ConditionMonitor(DeviceProgram):
    """Watches one machine: scores its vibration windows and publishes anomaly events, telemetry and health.

    ``source`` and ``sink`` default to opening the profile's; tests pass their own.
    """

    name = "condition monitor"
    kind = "condition_monitoring"

    def __init__(self, profile: Any, source: Any = None, sink: Any = None) -> None:
        super().__init__(profile)
        with self.closing_on_error():
            self.model = self.own(VibrationModel.load(profile.model.bundle, profile.model.backend, profile.model.batch,
                                                      profile.model.trusted()))
            self.show_model(self.model)
            self.debounce = Debounce(self.model.rule, profile.scoring)
            self.baseliner = self._make_baseliner()
            self.live.set_threshold(self.debounce.threshold)  # the profile's or this machine's baseline may differ
            self.windower = self._make_windower()
            self.source = source or open_source(profile.sensor.uri, **profile.sensor.options)
            if getattr(self.source, "RATE_BEFORE_OPEN", False) or getattr(self.source, "sample_rate", None):
                check_source_rate(self.source, profile.sensor.uri, self.model)  # before connecting anywhere
            self.counters = _Counters()
            self.reloads = {"done": 0, "refused": 0}  # reload commands, for health (a refusal answers "error")
            self._lock = threading.RLock()
            self._period_start = clock.wall()
            # The device's own order of what it publishes, immune to wall-clock jumps: one run
            # id per start, and a sequence per payload kind (see firmware-config/mqtt.md).
            self.run_id = uuid.uuid4().hex
            self._event_seq = itertools.count(1)
            self._telemetry_seq = itertools.count(1)
            self._last = {"samples": 0, "windows": 0, "t": time.monotonic()}
            self.open_sink(sink)
            self.every(profile.mqtt.telemetry_interval_s, self._send_telemetry)

    # -- set-up --------------------------------------------------------------------------

    def _make_baseliner(self) -> Baseliner | None:
        cfg = self.profile.scoring.baseline
        if cfg.mode == "off":
            return None
        spec = self.model.spec
        windows = int(cfg.duration_s * spec.sample_rate / spec.hop)
        b = Baseliner(cfg.state, self.model.bundle, self.identity.machine, min_windows=windows,
                      hop_s=spec.hop / spec.sample_rate, skip_s=cfg.skip_s)
        state = b.load() if cfg.mode == "auto" else None
        if state is not None and self.profile.scoring.threshold is None:
            self.debounce.set_threshold(state.threshold)
            log.info("using this machine's baseline threshold %.4g (learned %s)", state.threshold, state.created_utc)
        elif self.profile.scoring.threshold is None:
            b.start()
        return b

    def _make_windower(self) -> StreamWindower:
        spec = self.model.spec
        return StreamWindower(spec.window, spec.hop, len(spec.channels), spec.sample_rate)

    # -- the loop ------------------------------------------------------------------------

    def serve(self) -> None:
        i = self.identity
        log.info("monitoring %s/%s/%s with %s %s, threshold %.4g", i.site, i.line, i.machine, self.model.name,
                 self.model.version, self.debounce.threshold)
        with self.source:
            check_source_rate(self.source, self.profile.sensor.uri, self.model)  # a replay knows it once open
            for block in self.source.blocks():
                if self.stopping:
                    break
                self.process(block.samples, block.t_wall, gap=block.gap, dropped=block.dropped,
                             t_mono=block.t_monotonic)
        log.info("stopped: %d windows scored, %d events", self.counters.windows, self.counters.events)

    def stop(self) -> None:
        """Ask the loop to end; safe from signal handlers and other threads."""
        super().stop()
        try:
            self.source.close()
        except FactoryEdgeError as e:  # closing a source that failed to open
            log.debug("closing source: %s", e)

    def process(self, samples: np.ndarray, t_last: float, gap: bool = False, dropped: int = 0,
                t_mono: float | None = None) -> list:
        """Window, score and debounce one block of samples; publishes the events it causes.

        ``t_last`` stamps the block's last sample on the wall clock, ``t_mono`` (default: now)
        on the monotonic one, so health's ``lag_s`` stays true when the wall clock jumps.
        """
        spec = self.model.spec
        if samples.shape[1] != len(spec.channels):
            raise SourceError(
                f"sensor {self.profile.sensor.uri} delivers {samples.shape[1]} channel(s); bundle "
                f"{self.model.name} expects {len(spec.channels)} {list(spec.channels)}"
            )
        with self._lock:
            c = self.counters
            c.samples += len(samples)
            c.dropped_frames += dropped
            c.gaps += int(gap)
            c.period_gaps += int(gap)
            windows, ends = self.windower.push(samples, t_last, gap=gap)
            if not len(windows):
                return []
            t0 = time.perf_counter()
            scores, details = self.model.score(windows)
            took = time.perf_counter() - t0
            self.record_inference(took / len(scores))
            self.live.add_scores(float(ends[-1]), scores, self.debounce.rule, took)
            starts = ends - (spec.window - 1) / spec.sample_rate
            c.windows += len(scores)
            c.last_window_end = float(ends[-1])
            c.last_window_mono = (time.monotonic() if t_mono is None else t_mono) - (t_last - c.last_window_end)
            c.period_scores.extend(scores.tolist())
            if self.baseliner is not None and self.baseliner.collecting:
                state = self.baseliner.add(scores, ends)
                if state is not None and self.profile.scoring.threshold is None:
                    self.debounce.set_threshold(state.threshold)
                    self.live.set_threshold(state.threshold)
                skip = self.baseliner.skipped_last  # run-in: scored, never debounced
                scores, starts, ends = scores[skip:], starts[skip:], ends[skip:]
                details = None if details is None else details[skip:]
            events = self.debounce.update(scores, starts, ends)
            for ev in events:
                self._publish_event(ev, scores, details)
            self.live.set_state(self.debounce.active)
            return events

    def _publish_event(self, ev, scores: np.ndarray, details: np.ndarray | None) -> None:
        extra = {"baselining": self._baselining}
        names = self.model.detail_names
        if details is not None and details.ndim == 2 and names:
            # What deviated most in the batch's worst window: the first thing a technician asks.
            worst = details[int(np.argmax(scores))] ** 2
            top = np.argsort(-worst)[:3]
            extra["top_contributors"] = {names[i]: round(float(worst[i]), 4) for i in top}
        payload = msg.anomaly_from_event(self.identity, ev, self.model.name, self.model.version, extra,
                                         seq=next(self._event_seq), run_id=self.run_id)
        # Handed to the sink's writer thread: scoring does not wait for the disk. The writer
        # commits it (and logs and counts a failure) within about one fsync.
        self.sink.publish_event(self.sink.topics.anomaly, payload, wait=False)
        self.live.add_event(payload)
        self.counters.events += 1
        log.warning("anomaly %s severity=%s score=%.4g threshold=%.4g event_id=%s", ev.kind, ev.severity,
                    ev.score, ev.threshold, ev.event_id)

    @property
    def _baselining(self) -> bool:
        return bool(self.baseliner and self.baseliner.collecting)

    # -- telemetry and health ------------------------------------------------------------

    def _send_telemetry(self) -> None:
        with self._lock:
            scores, self.counters.period_scores = self.counters.period_scores, []
            gaps, self.counters.period_gaps = self.counters.period_gaps, 0
            state = self.debounce.active
            rule = self.debounce.rule
        end = clock.wall()
        self.sink.publish_telemetry(self.sink.topics.telemetry, msg.telemetry_payload(
            self.identity, scores, threshold=rule.threshold, period_start=self._period_start, period_end=end,
            model_name=self.model.name, model_version=self.model.version, anomaly_state=state,
            n_over_threshold=int(np.count_nonzero(rule.is_anomalous(np.asarray(scores, float)))),
            seq=next(self._telemetry_seq), run_id=self.run_id, gaps=gaps))
        self.counters.telemetry += 1
        self._period_start = end

    def health_fields(self) -> dict[str, Any]:
        c, last, now = self.counters, self._last, time.monotonic()
        dt = max(now - last["t"], 1e-6)
        fields = dict(
            input_rate_hz=(c.samples - last["samples"]) / dt, window_rate_hz=(c.windows - last["windows"]) / dt,
            lag_s=(now - c.last_window_mono) if c.last_window_mono is not None else None, dropped_frames=c.dropped_frames,
            extra={"gaps": c.gaps, "events": c.events, "threshold": self.debounce.threshold,
                   "baselining": self._baselining, "model": {"name": self.model.name, "version": self.model.version},
                   "reloads": dict(self.reloads)},
        )
        last.update(samples=c.samples, windows=c.windows, t=now)
        stats = getattr(self.source, "stats", None)  # read here, not from blocks: garbage yields no block
        if isinstance(stats, dict):
            fields["source_stats"] = {k: int(v) for k, v in stats.items()}
        return fields

    def progress(self) -> Any:
        # samples scored, or the source's read loop coming around without data (a quiet sensor is not a hang)
        return self.counters.samples, getattr(self.source, "heartbeat", None)

    # -- commands ------------------------------------------------------------------------

    def commands(self):
        return {"set_threshold": self._set_threshold, "recalibrate": self._recalibrate, "reload": self._reload}

    def _set_threshold(self, args: dict) -> msg.CommandReply:
        with self._lock:
            old = self.debounce.threshold
            self.debounce.set_threshold(args["threshold"])
        self.live.set_threshold(args["threshold"])
        log.info("threshold changed by command from %.4g to %.4g", old, args["threshold"])
        return msg.CommandReply("ok", f"threshold {old:.6g} -> {args['threshold']:.6g}",
                                {"old": old, "new": args["threshold"]})

    def _recalibrate(self, args: dict) -> msg.CommandReply:
        if self.baseliner is None:
            return msg.CommandReply("rejected", "baselining is off in this device's profile (scoring.baseline.mode)")
        spec = self.model.spec
        with self._lock:
            if args.get("duration_s"):
                self.baseliner.min_windows = max(
                    self.baseliner.min_windows // 10, int(args["duration_s"] * spec.sample_rate / spec.hop))
            self.baseliner.start()
        return msg.CommandReply("accepted", f"learning this machine's normal state over {self.baseliner.min_windows} windows")

    def _reload(self, args: dict) -> msg.CommandReply:
        path = Path(args.get("bundle") or self.profile.model.bundle)
        old = self.model
        try:
            model = VibrationModel.load(path, self.profile.model.backend, self.profile.model.batch,
                                        self.profile.model.trusted())
            new, cur = model.spec, old.spec
            if (new.sample_rate, tuple(new.channels)) != (cur.sample_rate, tuple(cur.channels)):
                model.close()
                raise ConfigError(
                    f"bundle {path} expects {new.sample_rate:g} Hz {list(new.channels)}; this sensor "
                    f"delivers {cur.sample_rate:g} Hz {list(cur.channels)}")
        except FactoryEdgeError as e:
            self.reloads["refused"] += 1
            log.error("reload refused, still running %s %s: %s", old.name, old.version, e)
            return msg.CommandReply("error", f"reload refused, still running {old.name} {old.version}: {e}")
        with self._lock:
            self._resources[self._resources.index(old)] = model
            self.model = model
            self.windower = self._make_windower()
            rule = model.rule if self.profile.scoring.threshold is None else model.rule.with_threshold(
                self.debounce.threshold)
            self.debounce.rule = rule
            if self.baseliner is not None:
                self.baseliner = self._make_baseliner()
        old.close()  # TensorRT holds GPU memory until closed
        self.reloads["done"] += 1
        self.show_model(model)
        self.live.set_threshold(self.debounce.threshold)
        log.info("reloaded bundle %s: %s %s", path, model.name, model.version)
        return msg.CommandReply("ok", f"running {model.name} {model.version}",
                                {"model_name": model.name, "model_version": model.version})
