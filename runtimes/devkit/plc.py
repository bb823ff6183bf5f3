"""A PLC in software: triggers parts over MQTT on a schedule and collects the decisions.

Run it as its own process (``python -m factoryedge.runtimes.devkit.plc --help``): DESIGN.md
measured that a paho client sharing a process with the device's client crawls under a
burst, so the demo, the tests and the benchmarks start it with ``subprocess`` and read what
it reports. Part ``k`` (id ``<prefix><k zero-padded>``) is triggered ``k * period`` seconds
after the first, on ``<machine topic>/trigger`` at QoS 1 (JSON ``{"part_id", "t"}`` or the
plain id); decisions are read from ``<machine topic>/decision``, subscribed before the first
trigger. After the last trigger it waits up to ``wait`` seconds for the missing decisions.

Prints one line per decision and a summary; ``--report FILE`` writes every decision with
its send and receive times as JSON (``Report``). Exit status 0 once every trigger was
acknowledged by the broker, whatever the decisions said; 1 if the broker was unreachable
or a trigger went unacknowledged; 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from factoryedge.errors import ConfigError, FactoryEdgeError

MODULE = "factoryedge.runtimes.devkit.plc"
PAYLOADS = ("json", "text")
# what a PLC with a broken string encoder sends: not UTF-8, so the device must answer it on
# <machine topic>/trigger/error rather than drop it
MALFORMED = b"\xff\xfe not a part id"
_ID_SAFE = re.compile(r"[A-Za-z0-9._-]{0,100}")


@dataclass(frozen=True)
class Plan:
    """What the PLC does: where, how many parts, how fast, and what it sends."""

    broker: str
    machine_topic: str
    parts: int = 16
    period: float = 0.25
    first_at: float | None = None  # epoch seconds of the first trigger; None: once subscribed
    prefix: str = "part-"
    digits: int = 4
    payload: str = "json"
    malformed_first: bool = False
    tcp_nodelay: bool = False
    wait: float = 10.0
    report: Path | None = None
    quiet: bool = False

    def part_id(self, k: int) -> str:
        return f"{self.prefix}{k:0{self.digits}d}"

    def command(self, python: str = sys.executable) -> list[str]:
        """The argv that runs this plan as its own process."""
        argv = [python, "-m", MODULE, "--broker", self.broker, "--machine-topic", self.machine_topic,
                "--parts", str(self.parts), "--period", repr(self.period), "--prefix", self.prefix,
                "--digits", str(self.digits), "--payload", self.payload, "--wait", repr(self.wait)]
        if self.first_at is not None:
            argv += ["--first-at", repr(self.first_at)]
        if self.report is not None:
            argv += ["--report", str(self.report)]
        argv += [flag for flag, on in (("--malformed-first", self.malformed_first), ("--tcp-nodelay", self.tcp_nodelay),
                                       ("--quiet", self.quiet)) if on]
        return argv


@dataclass
class Decision:
    """One decision as received: monotonic and epoch times of its trigger and its arrival."""

    part_id: str
    sent_mono: float
    sent_epoch: float
    received_mono: float
    received_epoch: float
    payload: dict

    @property
    def round_trip_ms(self) -> float:
        return (self.received_mono - self.sent_mono) * 1000.0


@dataclass
class Report:
    """What one run saw; ``missing`` lists triggered parts that got no decision in time."""

    sent: int = 0
    wall_s: float = 0.0
    decisions: list[Decision] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    duplicates: int = 0
    foreign: int = 0  # decisions for parts this run did not trigger

    def summary(self) -> str:
        verdicts: dict[str, int] = {}
        for d in self.decisions:
            v = str(d.payload.get("verdict"))
            verdicts[v] = verdicts.get(v, 0) + 1
        shown = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())) or "none"
        return (f"plc: {self.sent} triggers sent, {len(self.decisions)} decisions ({shown}), "
                f"{len(self.missing)} missing, in {self.wall_s:.1f} s")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def read(cls, path: str | Path) -> Report:
        data = json.loads(Path(path).read_text())
        data["decisions"] = [Decision(**d) for d in data["decisions"]]
        return cls(**data)


def broker_address(uri: str) -> tuple[str, int]:
    """(host, port) of an ``mqtt://HOST[:PORT]`` URI, or ConfigError saying what is expected."""
    try:
        parts = urlsplit(uri)
        port = parts.port or 1883
    except ValueError:
        raise ConfigError(f"--broker {uri!r} has an invalid port; use a number from 1 to 65535") from None
    if parts.scheme != "mqtt" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"--broker {uri!r} is not mqtt://HOST[:PORT] (plain MQTT, no path or options), "
                          "e.g. mqtt://127.0.0.1:1883")
    return parts.hostname, port


def check_plan(plan: Plan) -> Plan:
    """The plan, or ConfigError naming the first bad setting and what would be valid."""
    broker_address(plan.broker)
    topic = plan.machine_topic
    if not topic or any(c in topic for c in "+#") or topic.startswith("/") or topic.endswith("/"):
        raise ConfigError(f"--machine-topic {topic!r} must be a topic path without wildcards or edge slashes, "
                          "e.g. factoryedge/v1/site/line/machine")
    if not 1 <= plan.parts <= 10**7:
        raise ConfigError(f"--parts {plan.parts} must be between 1 and 10000000")
    if not (math.isfinite(plan.period) and 0 <= plan.period <= 3600):
        raise ConfigError(f"--period {plan.period!r} must be seconds between 0 and 3600")
    if not (math.isfinite(plan.wait) and 0 <= plan.wait <= 3600):
        raise ConfigError(f"--wait {plan.wait!r} must be seconds between 0 and 3600")
    if plan.first_at is not None and not math.isfinite(plan.first_at):
        raise ConfigError(f"--first-at {plan.first_at!r} must be epoch seconds")
    if not 1 <= plan.digits <= 12:
        raise ConfigError(f"--digits {plan.digits} must be between 1 and 12")
    if plan.payload not in PAYLOADS:
        raise ConfigError(f"--payload {plan.payload!r} is not one of {', '.join(PAYLOADS)}")
    if not _ID_SAFE.fullmatch(plan.prefix):
        # the device's own rule, imported only here: it pulls in numpy, and a PLC started just
        # in time for the first part should not spend a tenth of a second on it
        from factoryedge.runtimes.triggers import check_part_id

        try:
            check_part_id(plan.part_id(plan.parts - 1))
        except ConfigError as e:
            raise ConfigError(f"--prefix {plan.prefix!r}: {e}") from None
    return plan


def run(plan: Plan) -> Report:
    """Trigger every part of ``plan`` and collect decisions; FactoryEdgeError if the broker fails us."""
    import paho.mqtt.client as mqtt

    host, port = broker_address(plan.broker)
    trigger_topic, decision_topic = f"{plan.machine_topic}/trigger", f"{plan.machine_topic}/decision"
    report = Report()
    sent: dict[str, tuple[float, float]] = {}
    got: dict[str, Decision] = {}
    lock, subscribed, complete = threading.Lock(), threading.Event(), threading.Event()
    refused: list[str] = []
    acked: set[int] = set()  # mids the broker PUBACKed

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            refused.append(f"connection refused: {reason_code}")
            subscribed.set()
            return
        if plan.tcp_nodelay:
            client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(decision_topic, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        refused.extend(f"subscription to {decision_topic} refused: {rc}" for rc in reason_codes if rc.is_failure)
        subscribed.set()

    def on_publish(client, userdata, mid, reason_code, properties):
        if not reason_code.is_failure:
            with lock:
                acked.add(mid)

    def on_message(client, userdata, msg):
        now_mono, now_epoch = time.monotonic(), time.time()
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = None
        payload = payload if isinstance(payload, dict) else {}
        pid = payload.get("part_id") if isinstance(payload.get("part_id"), str) else None
        with lock:
            if pid not in sent:
                report.foreign += 1
            elif pid in got:
                report.duplicates += 1  # QoS 1 is at least once; the first arrival is the latency
            else:
                got[pid] = Decision(pid, *sent[pid], now_mono, now_epoch, payload)
                if not plan.quiet:
                    print(f"{pid} {payload.get('verdict')} ({payload.get('reason')}) "
                          f"{got[pid].round_trip_ms:.1f} ms", flush=True)
                if len(got) == plan.parts:
                    complete.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.on_publish = on_publish
    try:
        client.connect(host, port, 30)
    except OSError as e:
        raise FactoryEdgeError(f"cannot reach the MQTT broker {plan.broker}: {e}") from None
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise FactoryEdgeError(f"the broker {plan.broker} did not acknowledge the subscription to {decision_topic}")
        if refused:
            raise FactoryEdgeError(f"{plan.broker}: {refused[0]}")
        infos = [client.publish(trigger_topic, MALFORMED, qos=1)] if plan.malformed_first else []
        # The schedule runs on the monotonic clock, --first-at only places its origin. An origin
        # already past is kept: the parts due meanwhile go at once, and the rest stay on time,
        # as a PLC tied to a running conveyor would do.
        origin = time.monotonic() + (plan.first_at - time.time() if plan.first_at is not None else 0.0)
        for k in range(plan.parts):
            time.sleep(max(0.0, origin + k * plan.period - time.monotonic()))
            pid = plan.part_id(k)
            with lock:
                sent[pid] = (time.monotonic(), time.time())
            data = json.dumps({"part_id": pid, "t": sent[pid][1]}) if plan.payload == "json" else pid
            infos.append(client.publish(trigger_topic, data, qos=1))
        # A trigger published while the broker restarts is queued by paho (its rc says "not connected",
        # so wait_for_publish would raise) and sent after the reconnect, as a real PLC keeps
        # triggering through an outage: the PUBACK, not the rc, says the broker accepted it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if all(info.mid in acked for info in infos):
                    break
            time.sleep(0.01)
        with lock:
            unacked = sum(info.mid not in acked for info in infos)
        if unacked:
            raise FactoryEdgeError(f"{unacked} of {len(infos)} triggers were not acknowledged by {plan.broker}")
        complete.wait(plan.wait)
        wall_s = time.monotonic() - origin
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        report.sent, report.wall_s = len(sent), wall_s
        report.decisions = sorted(got.values(), key=lambda d: d.sent_mono)
        report.missing = [pid for pid in sent if pid not in got]
    return report


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as a script calling us can show it
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"python -m {MODULE}", description=__doc__.split("\n", 1)[0])
    p.add_argument("--broker", required=True, help="mqtt://HOST[:PORT] of the broker the device uses")
    p.add_argument("--machine-topic", required=True, metavar="TOPIC",
                   help="the device's machine topic, e.g. factoryedge/v1/site/line/machine")
    p.add_argument("--parts", type=int, default=Plan.parts, help=f"parts to trigger (default {Plan.parts})")
    p.add_argument("--period", type=float, default=Plan.period,
                   help=f"seconds between triggers, 0 = a burst (default {Plan.period})")
    p.add_argument("--first-at", type=float, metavar="EPOCH",
                   help="wall-clock time of the first trigger (default: as soon as subscribed)")
    p.add_argument("--prefix", default=Plan.prefix, help=f"part id prefix (default {Plan.prefix})")
    p.add_argument("--digits", type=int, default=Plan.digits, help=f"zero-padded part number width (default {Plan.digits})")
    p.add_argument("--payload", choices=PAYLOADS, default=Plan.payload,
                   help='trigger body: JSON {"part_id", "t"} or the plain id (default json)')
    p.add_argument("--malformed-first", action="store_true", help="send one non-UTF-8 trigger before the parts")
    p.add_argument("--tcp-nodelay", action="store_true", help="disable Nagle on the PLC socket (paho leaves it on)")
    p.add_argument("--wait", type=float, default=Plan.wait,
                   help=f"seconds to wait for missing decisions after the last trigger (default {Plan.wait})")
    p.add_argument("--report", type=Path, metavar="FILE", help="write every decision with its times as JSON")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    return p


def parse_plan(argv: list[str] | None = None) -> Plan:
    """A checked plan from command-line arguments; exits with status 2 and one line if bad."""
    p = parser()
    args = p.parse_args(argv)
    try:
        return check_plan(Plan(**vars(args)))
    except ConfigError as e:
        p.error(str(e))
        raise  # not reached: error() exits


def main(argv: list[str] | None = None) -> int:
    plan = parse_plan(argv)
    try:
        report = run(plan)
    except FactoryEdgeError as e:
        print(f"plc: error: {e}", file=sys.stderr, flush=True)
        return 1
    if plan.report is not None:
        plan.report.write_text(report.to_json())
    print(report.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
