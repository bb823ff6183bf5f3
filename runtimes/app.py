"""The small application shell both device programs stand on.

    profile --> DeviceProgram: identity (once), resources, sink, reporter, command table
                  |-- monitoring.ConditionMonitor:  source -> windows -> VibrationModel -> Debounce -> sink
                  '-- inspection.InspectionStation: camera + trigger -> ImageModel -> Sorter -> sink

The shell owns what every program has: the machine identity (the profile's ``identity``
section is already the message contract's ``Identity``), the MQTT sink opened with it, the
resources the program opened (closed in reverse order, the sink last so the outbox is
flushed), one reporter thread that publishes health and any periodic reports on their own
clocks (so a plant still hears from a device whose sensor or camera went quiet), and a table
of command handlers. A program adds ``serve()`` (its main loop), its health fields and
its commands.

Plant-facing outputs (the Sparkplug B edge node, the operator page and Prometheus metrics,
each on when its profile section is present) read ``live``, a ``plant.live.LiveState`` the
program feeds; they start with ``run()`` and stop before the sink closes. A command from
any of them goes through ``execute``, the same validation and handlers as an MQTT command.

``stop()`` is safe from signal handlers and other threads; ``run()`` returns once ``serve()``
has ended and everything is closed. ``failed`` holds why a program stopped on its own, so
``factoryedge run`` exits non-zero and the service manager restarts it.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from factoryedge.errors import FactoryEdgeError
from factoryedge.runtimes import messages as msg
from factoryedge.runtimes.plant.live import NO_LIVE_STATE, LiveState, model_card
from factoryedge.runtimes.registry import open_sink
from factoryedge.runtimes.watchdog import Watchdog

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 10.0
CommandHandler = Callable[[dict[str, Any]], msg.CommandReply]


class DeviceProgram:
    """Base of the device programs; see the module doc. Subclasses call ``open_sink`` in ``__init__``."""

    name = "device program"
    kind = "device"

    def __init__(self, profile: Any) -> None:
        self.profile = profile
        self.identity: msg.Identity = profile.identity
        self.sink: Any = None
        self.failed: str | None = None
        self._resources: list[Any] = []
        self._periodic: list[tuple[float, Callable[[], None]]] = []
        self._stop = threading.Event()
        self._started = time.monotonic()  # uptime is a duration: a wall-clock jump must not bend it
        self._latencies: deque[float] = deque(maxlen=2048)  # recent per-input model times, seconds
        self._latency_lock = threading.Lock()
        self.watchdog = Watchdog()  # systemd's READY=1 / WATCHDOG=1; inert outside systemd
        self.web: Any = None  # the WebServer once started (its ``url``), for the demo and tests
        self.sparkplug: Any = None
        self.plant_outputs = [name for name in ("sparkplug", "web") if getattr(profile, name, None) is not None]
        web = getattr(profile, "web", None)
        self.live: Any = LiveState(self.identity, self.kind, horizon_s=web.history_s if web else 600.0) \
            if self.plant_outputs else NO_LIVE_STATE

    # -- resources -------------------------------------------------------------------------

    def own(self, resource: Any) -> Any:
        """Register something with ``close()``; closed in reverse order when the program ends."""
        self._resources.append(resource)
        return resource

    def open_sink(self, sink: Any = None) -> Any:
        """Open the profile's sink with the identity (or take a given one), and listen for commands."""
        m = self.profile.mqtt
        self.sink = sink or open_sink(m.uri, identity=self.identity, outbox=str(m.outbox), **m.options)
        self.sink.subscribe_commands(self._on_command, opener=self._command_opener())
        return self.sink

    def _command_opener(self) -> Any:
        """``CommandAuthority.open`` where the profile requires signed commands, else None (plain commands)."""
        cfg = getattr(self.profile, "commands", None)
        if cfg is None or cfg.require != "signed":
            return None
        from factoryedge.runtimes.command_auth import CommandAuthority
        from factoryedge.signing import load_public_keys

        return CommandAuthority(load_public_keys(cfg.trusted_keys), self.sink.topics.base, cfg.max_age_s).open

    def show_model(self, model: Any) -> None:
        """Put the running model's card and threshold on the plant outputs (at start and after a reload)."""
        if self.plant_outputs:
            self.live.set_card(model_card(model.bundle, type(model.backend).__name__, self.profile.model.trusted()),
                               model.threshold)

    def closing_on_error(self) -> _CloseOnError:
        """``with self.closing_on_error(): ...`` in ``__init__``: a failing set-up closes what it opened."""
        return _CloseOnError(self)

    def close(self) -> None:
        """Close the resources in reverse order, then the sink (flushing the outbox)."""
        while self._resources:
            resource = self._resources.pop()
            try:
                resource.close()
            except FactoryEdgeError as e:
                log.error("closing %s: %s", type(resource).__name__, e)
        if self.sink is not None:
            sink, self.sink = self.sink, None
            delivered = sink.close(timeout=CLOSE_TIMEOUT_S)
            log.info("%s stopped; outbox %s", self.name,
                     "flushed" if delivered else "NOT fully flushed (kept on disk for the next start)")

    # -- running ---------------------------------------------------------------------------

    def serve(self) -> None:
        """The program's main loop, until ``stop()``; subclasses implement it."""
        raise NotImplementedError

    def run(self) -> None:
        """``serve()`` with the reporter running beside it; always closes everything on the way out."""
        reporter = threading.Thread(target=self._report_loop, name="factoryedge-reporter", daemon=True)
        reporter.start()
        try:
            self.start_plant_outputs()
            self.watchdog.ready()
            self.serve()
        finally:
            self.watchdog.stopping()
            self._stop.set()
            reporter.join(timeout=5.0)
            self.close()
            self.watchdog.close()

    def stop(self) -> None:
        """Ask ``run()`` to end; safe from signal handlers and other threads."""
        self._stop.set()

    def fail(self, why: str) -> None:
        """Stop because something this process cannot repair failed; ``run`` then exits non-zero."""
        self.failed = why
        log.error("%s; stopping so the service manager restarts the program", why)
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start_plant_outputs(self) -> None:
        """Open the profile's Sparkplug node and web server (owned: closed before the sink)."""
        if "sparkplug" in self.plant_outputs:
            from factoryedge.runtimes.plant.sparkplug import SparkplugNode
            node = self.own(SparkplugNode(self.profile, self.live, self.execute))
            node.start()
            self.sparkplug = node
        if "web" in self.plant_outputs:
            from factoryedge.runtimes.plant.web import WebServer
            web = self.own(WebServer(self.profile.web, self.live, self.execute, archive=self.reject_archive()))
            web.start()
            self.web = web  # set once serving: the demo and tests read its url
            log.info("operator page and metrics at %s", web.url)

    def reject_archive(self) -> Any:
        """The program's reject archive for the operator page's gallery, or None."""
        return None

    # -- reports ---------------------------------------------------------------------------

    def every(self, interval_s: float, report: Callable[[], None]) -> None:
        """Run ``report`` on the reporter thread every ``interval_s`` seconds (first after one interval)."""
        self._periodic.append((interval_s, report))

    def health_fields(self) -> dict[str, Any]:
        """The program's own health fields (``health_payload`` keywords); subclasses extend."""
        return {}

    def health(self) -> msg.HealthPayload:
        stats = self.sink.stats()
        fields = self.health_fields()
        # events the outbox could not store (a full disk): outbox_full; the extra keeps its older
        # name, and how many of them went to the broker directly
        extra = fields.setdefault("extra", {})
        extra["outbox_store_failed"] = getattr(stats, "store_failed", 0)
        extra["outbox_unstored_sent"] = getattr(stats, "unstored_sent", 0)
        with self._latency_lock:
            recent = np.array(self._latencies, dtype=np.float64)
        if len(recent):
            fields["inference_ms_p50"], fields["inference_ms_p99"] = (float(v) for v in
                                                                       np.percentile(recent, [50, 99]) * 1000.0)
        return msg.health_payload(self.identity, uptime_s=time.monotonic() - self._started,
                                  outbox_depth=stats.outbox_depth, mqtt_reconnects=stats.reconnects,
                                  outbox_full=getattr(stats, "store_failed", None),
                                  oldest_undelivered_s=getattr(stats, "oldest_undelivered_s", None),
                                  mqtt_auth_failures=getattr(stats, "auth_failures", None),  # a wrong password
                                  mqtt_tls_failures=getattr(stats, "tls_failures", None),  # an untrusted certificate
                                  commands_refused=getattr(stats, "commands_refused", None), **fields)

    def record_inference(self, seconds: float) -> None:
        """One model call's time per input (window or part), for health's inference_ms_p50/p99."""
        with self._latency_lock:
            self._latencies.append(seconds)

    def watch(self) -> None:
        """Checked on the reporter thread about once a second; subclasses detect failures here."""

    def progress(self) -> Any:
        """A token that changes while the main loop comes around (the watchdog pings only then)."""
        return None

    def stuck(self) -> str | None:
        """Why the program is stuck although ``progress`` may move (e.g. a model call that hangs), or None."""
        return None

    def _report_loop(self) -> None:
        now = time.monotonic()
        health_s = self.profile.mqtt.health_interval_s
        due = [now] + [now + interval for interval, _ in self._periodic]  # health goes out at start
        jobs = [(health_s, self._send_health)] + self._periodic
        while not self._stop.wait(min(1.0, *(i for i, _ in jobs))):
            self.watch()
            if self.watchdog.enabled:
                self.watchdog.check(self.progress(), self.stuck())
            now = time.monotonic()
            for k, (interval, job) in enumerate(jobs):
                if now < due[k]:
                    continue
                due[k] = now + interval
                try:
                    job()
                except Exception:  # noqa: BLE001 - reporting must never stop the program's work
                    log.exception("%s: periodic report failed", self.name)

    def _send_health(self) -> None:
        payload = self.health()
        self.live.set_health(payload)
        self.sink.publish_telemetry(self.sink.topics.health, payload)

    # -- commands --------------------------------------------------------------------------

    def commands(self) -> dict[str, CommandHandler]:
        """Command name -> handler(args) for this program; subclasses extend."""
        return {}

    def execute(self, name: str, args: dict[str, Any], origin: str, authenticated: bool = False) -> msg.CommandReply:
        """Run a command from a plant output (``origin``: e.g. "operator page", "sparkplug DCMD").

        The same validation and handlers as a command over MQTT; a bad command is answered
        ``rejected`` naming what is wrong, a failing handler ``error``; nothing raises. Where
        the profile requires signed commands, only an output that authenticated its user
        itself (``authenticated``: the operator page's token) may run one; a Sparkplug DCMD
        cannot carry a signature and is refused.
        """
        cfg = getattr(self.profile, "commands", None)
        if cfg is not None and cfg.require == "signed" and not authenticated:
            log.warning("command %r from %s refused: this device runs only signed commands", name, origin)
            return msg.CommandReply("rejected", f"this device runs only signed commands (commands.require: signed); "
                                                f"{origin} cannot sign, use the MQTT command topic with "
                                                "'factoryedge sign-command'")
        try:
            command = msg.parse_command(json.dumps({"command": name, "args": args}))
        except (msg.CommandRefused, FactoryEdgeError, TypeError, ValueError) as e:
            log.warning("command %r from %s refused: %s", name, origin, e)
            return msg.CommandReply("rejected", str(e))
        try:
            reply = self._on_command(command)
        except (FactoryEdgeError, ValueError) as e:
            reply = msg.CommandReply("error", str(e))
        log.info("command %s from %s: %s %s", name, origin, reply.status, reply.message)
        return reply

    def _on_command(self, command: msg.Command) -> msg.CommandReply:
        handler = self.commands().get(command.command)
        if handler is None:
            return msg.CommandReply("rejected", f"command {command.command!r} is not handled by the {self.name}")
        return handler(command.args)


class _CloseOnError:
    def __init__(self, program: DeviceProgram) -> None:
        self.program = program

    def __enter__(self) -> DeviceProgram:
        return self.program

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.program.close()
