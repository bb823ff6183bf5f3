"""The condition-monitoring loop that runs unattended next to a machine.

    source -> StreamWindower -> preprocessing -> backend -> Scorer -> MQTT sink (outbox)

One thread reads the source and scores; a reporter thread publishes telemetry and health
on its own clock, so a plant still hears from a device whose sensor was unplugged; MQTT
commands (set_threshold, recalibrate, reload) run on the sink's command thread under the
same lock as scoring. ``stop()`` ends the loop from any thread (signal handlers use it);
``run()`` then closes the sink, which flushes the outbox within the profile's timeout.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from factoryedge.bundle import Bundle, load_bundle
from factoryedge.errors import ConfigError, FactoryEdgeError, SourceError
from factoryedge.features import make_preprocessor
from factoryedge.features.windowing import StreamWindower
from factoryedge.runtimes.baselining import Baseliner
from factoryedge.runtimes.profile import DeviceProfile
from factoryedge.runtimes.registry import open_sink, open_source
from factoryedge.runtimes.scorer import Scorer

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 10.0


@dataclass
class _Model:
    """What scoring needs from one bundle; swapped whole on reload."""

    bundle: Bundle
    preprocess: object
    backend: object
    detail_names: list[str]

    @property
    def name(self) -> str:
        return self.bundle.manifest.name

    @property
    def version(self) -> str:
        return self.bundle.manifest.version


@dataclass
class _Counters:
    samples: int = 0
    windows: int = 0
    events: int = 0
    dropped_frames: int = 0
    gaps: int = 0
    last_window_end: float | None = None
    period_scores: list = field(default_factory=list)


def load_model(path: Path, backend: str = "auto") -> _Model:
    """Verify a bundle and build its preprocessing and inference backend."""
    from factoryedge.runtimes.backends.select import open_backend

    bundle = load_bundle(path)
    bundle.require_kind("vibration")
    m = bundle.manifest
    return _Model(bundle, make_preprocessor(m.preprocessing), open_backend(bundle, backend), m.score.detail_names)


class ConditionMonitor:
    def __init__(self, profile: DeviceProfile, source=None, sink=None):
        self.profile = profile
        self.identity = profile.identity
        self.model = load_model(profile.model.bundle, profile.model.backend)
        spec = self.model.bundle.manifest.preprocessing
        self.spec = spec
        self.scorer = Scorer(self.model.bundle.manifest.score.threshold, profile.scoring)
        self.baseliner = self._make_baseliner()
        self.windower = StreamWindower(spec.window, spec.hop, len(spec.channels), spec.sample_rate)
        self.source = source or open_source(profile.sensor.uri, **profile.sensor.options)
        self._check_source_rate()
        self.sink = sink or open_sink(
            profile.mqtt.uri,
            site=self.identity.site, line=self.identity.line, machine=self.identity.machine,
            device_id=self.identity.device_id, outbox=str(profile.mqtt.outbox), **profile.mqtt.options,
        )
        self.counters = _Counters()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._started = time.time()
        self.sink.subscribe_commands(self._on_command)

    # -- set-up --------------------------------------------------------------------------

    def _make_baseliner(self) -> Baseliner | None:
        cfg = self.profile.scoring.baseline
        if cfg.mode == "off":
            return None
        windows = int(cfg.duration_s * self.spec.sample_rate / self.spec.hop)
        b = Baseliner(cfg.state, self.model.bundle, self.identity.machine, min_windows=windows)
        state = b.load() if cfg.mode == "auto" else None
        if state is not None and self.profile.scoring.threshold is None:
            self.scorer.set_threshold(state.threshold)
            log.info("using this machine's baseline threshold %.4g (learned %s)", state.threshold, state.created_utc)
        elif self.profile.scoring.threshold is None:
            b.start()
        return b

    def _check_source_rate(self) -> None:
        rate = getattr(self.source, "sample_rate", None)
        if rate is not None and float(rate) != self.spec.sample_rate:
            raise ConfigError(
                f"source {self.profile.sensor.uri} delivers {rate:g} Hz but bundle {self.model.name} expects "
                f"{self.spec.sample_rate:g} Hz; use a bundle trained at the sensor's rate"
            )

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Score until ``stop()``; always closes the sink (flushing the outbox) on the way out."""
        reporter = threading.Thread(target=self._report_loop, name="factoryedge-reporter", daemon=True)
        reporter.start()
        log.info("monitoring %s/%s/%s with %s %s, threshold %.4g", self.identity.site, self.identity.line,
                 self.identity.machine, self.model.name, self.model.version, self.scorer.threshold)
        try:
            with self.source:
                for block in self.source.blocks():
                    if self._stop.is_set():
                        break
                    self.process(block.samples, block.t_wall, gap=block.gap, dropped=block.dropped)
        finally:
            self._stop.set()
            reporter.join(timeout=2.0)
            delivered = self.sink.close(timeout=CLOSE_TIMEOUT_S)
            log.info("stopped: %d windows scored, %d events; outbox %s", self.counters.windows,
                     self.counters.events, "flushed" if delivered else "NOT fully flushed (kept on disk for the next start)")

    def stop(self) -> None:
        """Ask the loop to end; safe from signal handlers and other threads."""
        self._stop.set()
        try:
            self.source.close()
        except FactoryEdgeError as e:  # closing a source that failed to open
            log.debug("closing source: %s", e)

    def process(self, samples: np.ndarray, t_last: float, gap: bool = False, dropped: int = 0) -> list:
        """Window, score and debounce one block of samples; publishes the events it causes."""
        if samples.shape[1] != len(self.spec.channels):
            raise SourceError(
                f"sensor {self.profile.sensor.uri} delivers {samples.shape[1]} channel(s); bundle "
                f"{self.model.name} expects {len(self.spec.channels)} {list(self.spec.channels)}"
            )
        with self._lock:
            c = self.counters
            c.samples += len(samples)
            c.dropped_frames += dropped
            c.gaps += int(gap)
            windows, ends = self.windower.push(samples, t_last, gap=gap)
            if not len(windows):
                return []
            scores, details = self._score(windows)
            starts = ends - (self.spec.window - 1) / self.spec.sample_rate
            c.windows += len(scores)
            c.last_window_end = float(ends[-1])
            c.period_scores.extend(scores.tolist())
            if self.baseliner is not None and self.baseliner.collecting:
                state = self.baseliner.add(scores)
                if state is not None and self.profile.scoring.threshold is None:
                    self.scorer.set_threshold(state.threshold)
            events = self.scorer.update(scores, starts, ends)
            for ev in events:
                self._publish_event(ev, scores, details)
            return events

    def _score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        m = self.model.bundle.manifest
        batch = self.profile.model.batch
        scores, details = [], []
        for i in range(0, len(windows), batch):
            out = self.model.backend.run_single(self.model.preprocess(windows[i : i + batch]))
            scores.append(out[m.score.output])
            if m.score.detail_output:
                details.append(out[m.score.detail_output])
        return np.concatenate(scores).astype(np.float64), (np.concatenate(details) if details else None)

    def _publish_event(self, ev, scores: np.ndarray, details: np.ndarray | None) -> None:
        from factoryedge.runtimes.sinks import payloads as pl

        extra = {"baselining": bool(self.baseliner and self.baseliner.collecting)}
        if details is not None and details.ndim == 2 and self.model.detail_names:
            # What deviated most in the batch's worst window: the first thing a technician asks.
            worst = details[int(np.argmax(scores))] ** 2
            top = np.argsort(-worst)[:3]
            extra["top_contributors"] = {self.model.detail_names[i]: round(float(worst[i]), 4) for i in top}
        payload = pl.anomaly_from_scorer_event(self._pl_identity(), ev, self.model.name, self.model.version, extra)
        self.sink.publish_anomaly(payload)
        self.counters.events += 1
        log.warning("anomaly %s severity=%s score=%.4g threshold=%.4g event_id=%s", ev.kind, ev.severity,
                    ev.score, ev.threshold, ev.event_id)

    def _pl_identity(self):
        from factoryedge.runtimes.sinks import payloads as pl

        i = self.identity
        return pl.Identity(site=i.site, line=i.line, machine=i.machine, device_id=i.device_id)

    # -- telemetry and health ------------------------------------------------------------

    def _report_loop(self) -> None:
        cfg = self.profile.mqtt
        next_tel = time.monotonic() + cfg.telemetry_interval_s
        next_health = time.monotonic()
        period_start = time.time()
        last = {"samples": 0, "windows": 0, "t": time.monotonic()}
        while not self._stop.wait(0.2):
            now = time.monotonic()
            try:
                if now >= next_tel:
                    period_start = self._send_telemetry(period_start)
                    next_tel = now + cfg.telemetry_interval_s
                if now >= next_health:
                    self._send_health(last)
                    next_health = now + cfg.health_interval_s
            except FactoryEdgeError as e:
                log.error("reporting failed: %s", e)

    def _send_telemetry(self, period_start: float) -> float:
        from factoryedge.runtimes.sinks import payloads as pl

        with self._lock:
            scores, self.counters.period_scores = self.counters.period_scores, []
            state = self.scorer.active
        end = time.time()
        self.sink.publish_telemetry(self.sink.topics.telemetry, pl.telemetry_payload(
            self._pl_identity(), scores, threshold=self.scorer.threshold, period_start=period_start,
            period_end=end, model_name=self.model.name, model_version=self.model.version, anomaly_state=state))
        return end

    def _send_health(self, last: dict) -> None:
        from factoryedge.runtimes.sinks import payloads as pl

        c = self.counters
        now = time.monotonic()
        dt = max(now - last["t"], 1e-6)
        stats = self.sink.stats()
        payload = pl.health_payload(
            self._pl_identity(), uptime_s=time.time() - self._started,
            input_rate_hz=(c.samples - last["samples"]) / dt, window_rate_hz=(c.windows - last["windows"]) / dt,
            lag_s=(time.time() - c.last_window_end) if c.last_window_end else None,
            dropped_frames=c.dropped_frames, outbox_depth=stats.outbox_depth, mqtt_reconnects=stats.reconnects,
            extra={"gaps": c.gaps, "events": c.events, "threshold": self.scorer.threshold,
                   "baselining": bool(self.baseliner and self.baseliner.collecting)},
        )
        last.update(samples=c.samples, windows=c.windows, t=now)
        self.sink.publish_telemetry(self.sink.topics.health, payload)

    # -- commands ------------------------------------------------------------------------

    def _on_command(self, command):
        from factoryedge.runtimes.sinks.payloads import CommandReply

        args = command.args
        if command.command == "set_threshold":
            with self._lock:
                old = self.scorer.threshold
                self.scorer.set_threshold(args["threshold"])
            log.info("threshold changed by command from %.4g to %.4g", old, args["threshold"])
            return CommandReply("ok", f"threshold {old:.6g} -> {args['threshold']:.6g}",
                                {"old": old, "new": args["threshold"]})
        if command.command == "recalibrate":
            if self.baseliner is None:
                return CommandReply("rejected", "baselining is off in this device's profile (scoring.baseline.mode)")
            with self._lock:
                if args.get("duration_s"):
                    self.baseliner.min_windows = max(
                        self.baseliner.min_windows // 10, int(args["duration_s"] * self.spec.sample_rate / self.spec.hop))
                self.baseliner.start()
            return CommandReply("accepted", f"learning this machine's normal state over {self.baseliner.min_windows} windows")
        if command.command == "reload":
            path = Path(args.get("bundle") or self.profile.model.bundle)
            try:
                model = load_model(path, self.profile.model.backend)
                new_spec = model.bundle.manifest.preprocessing
                if (new_spec.sample_rate, tuple(new_spec.channels)) != (self.spec.sample_rate, tuple(self.spec.channels)):
                    raise ConfigError(
                        f"bundle {path} expects {new_spec.sample_rate:g} Hz {list(new_spec.channels)}; this sensor "
                        f"delivers {self.spec.sample_rate:g} Hz {list(self.spec.channels)}")
            except FactoryEdgeError as e:
                return CommandReply("error", f"reload refused, still running {self.model.name} {self.model.version}: {e}")
            with self._lock:
                old_backend = self.model.backend
                self.model, self.spec = model, new_spec
                self.windower = StreamWindower(new_spec.window, new_spec.hop, len(new_spec.channels), new_spec.sample_rate)
                if self.profile.scoring.threshold is None:
                    self.scorer.set_threshold(model.bundle.manifest.score.threshold)
                if self.baseliner is not None:
                    self.baseliner = self._make_baseliner()
            old_backend.close()  # TensorRT holds GPU memory until closed
            log.info("reloaded bundle %s: %s %s", path, model.name, model.version)
            return CommandReply("ok", f"running {model.name} {model.version}",
                                {"model_name": model.name, "model_version": model.version})
        return CommandReply("rejected", f"command {command.command!r} is not handled by the condition monitor")
