"""A real Mosquitto broker on a loopback port, and subscribers that run in separate processes.

Subscribers are separate processes on purpose: a paho publisher and a paho subscriber as two
``loop_start`` threads of one process deliver QoS 1 bursts at a few hundred msg/s with
~0.5 s latency (see DESIGN.md), which would make delivery tests slow and misleading.

A missing ``mosquitto`` binary skips the test with a reason, except under ``CI=true``,
where it fails: CI installs it, so its absence there is a broken runner, not a choice.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

HOST = "127.0.0.1"


def find_binary(name: str) -> str | None:
    """A binary on PATH or in the sbin folders Debian puts mosquitto in (often not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_binary(name: str) -> str:
    """The binary's path; skips the test if missing, or fails it when ``CI=true``."""
    path = find_binary(name)
    if path is None:
        reason = f"'{name}' is not installed (apt-get install mosquitto mosquitto-clients)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must provide it", pytrace=False)
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02):
    """Poll ``predicate`` until it returns something truthy; fail the test naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(interval)


class Mosquitto:
    """One broker process; ``restart`` brings it back on the same port (and persistence dir)."""

    def __init__(self, workdir: Path, *, persistence: bool = False, password_file: str | Path | None = None,
                 port: int | None = None, binary: str | None = None, config: str | None = None):
        """``config``: a whole mosquitto.conf (its own listener on ``port``) instead of the generated one."""
        self.binary = binary or require_binary("mosquitto")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = HOST
        self.persistence = persistence
        self.password_file = password_file
        self.log_path = self.workdir / "mosquitto.log"
        self.config_path = self.workdir / "mosquitto.conf"
        self.proc: subprocess.Popen | None = None
        self.config = config

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _write_config(self) -> None:
        if self.config is not None:
            self.config_path.write_text(self.config)
            return
        lines = [f"listener {self.port} {self.host}", f"log_dest file {self.log_path}",
                 "log_type error", "log_type warning", "log_type notice", "log_type information",
                 f"allow_anonymous {'false' if self.password_file else 'true'}",
                 f"persistence {'true' if self.persistence else 'false'}",
                 "set_tcp_nodelay true"]
        if self.persistence:
            lines.append(f"persistence_location {self.workdir}/")
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if os.geteuid() == 0:
            # as root, mosquitto would switch to user 'mosquitto', who cannot write our temp dir
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> Mosquitto:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._write_config()
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config_path)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the broker accepts TCP connections; fail with its log if it exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc else ""
                pytest.fail(f"mosquitto exited early: {err.strip()}\n{self.log_text()}", pytrace=False)
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        pytest.fail(f"mosquitto not ready on port {self.port} after {timeout} s\n{self.log_text()}", pytrace=False)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (a persistent broker saves its sessions) and wait; SIGKILL if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc.stderr.close()
        self.proc = None

    def restart(self, timeout: float = 10.0) -> Mosquitto:
        self.stop()
        return self.start(timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> dict:
        return json.loads(self.payload)


# Runs in its own interpreter; one JSON line per event, flushed at once so the test can poll.
_SUBSCRIBER = r"""
import base64, json, sys
import paho.mqtt.client as mqtt
host, port, out_path, client_id, clean, qos = sys.argv[1:7]
topics = sys.argv[7:]
out = open(out_path, "a", buffering=1)
def write(rec):
    out.write(json.dumps(rec) + "\n")
    out.flush()
def on_connect(client, userdata, flags, reason_code, properties):
    write({"event": "connected", "session_present": bool(flags.session_present)})
    client.subscribe([(t, int(qos)) for t in topics])
def on_subscribe(client, userdata, mid, reason_codes, properties):
    write({"event": "subscribed"})
def on_message(client, userdata, m):
    write({"event": "message", "topic": m.topic, "payload": base64.b64encode(m.payload).decode(),
           "retain": bool(m.retain), "qos": m.qos})
def on_disconnect(client, userdata, flags, reason_code, properties):
    write({"event": "disconnected"})
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean == "1",
                protocol=mqtt.MQTTv311)
c.on_connect, c.on_subscribe, c.on_message, c.on_disconnect = on_connect, on_subscribe, on_message, on_disconnect
c.reconnect_delay_set(0.05, 0.2)
c.connect_async(host, int(port), 30)
c.loop_forever(retry_first_connection=True)
"""


class Subscriber:
    """A paho subscriber in a child process, recording what it receives to a file.

    By default its session is persistent (clean session off, QoS 1), so with a persistent
    broker it keeps receiving across a broker restart, as a plant's SCADA client would.
    """

    _count = 0

    def __init__(self, broker: Mosquitto, topics: list[str], workdir: Path, *, client_id: str | None = None,
                 clean: bool = False, qos: int = 1):
        Subscriber._count += 1
        self.broker = broker
        self.topics = list(topics)
        self.client_id = client_id or f"test-sub-{os.getpid()}-{Subscriber._count}"
        self.clean = clean
        self.qos = qos
        self.path = Path(workdir) / f"{self.client_id}.jsonl"
        self.proc: subprocess.Popen | None = None
        self._records: list[dict] = []
        self._offset = 0

    def start(self, timeout: float = 10.0) -> Subscriber:
        """Start the process and wait until its subscription is acknowledged."""
        before = self.count("subscribed")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SUBSCRIBER, self.broker.host, str(self.broker.port), str(self.path),
             self.client_id, "1" if self.clean else "0", str(self.qos), *self.topics],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: self._alive() and self.count("subscribed") > before, timeout,
                   f"subscriber {self.client_id} to subscribe to {self.topics}")
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"subscriber exited: {self.proc.stderr.read().decode(errors='replace')}", pytrace=False)
        return True

    def records(self) -> list[dict]:
        """Everything recorded so far (complete lines only)."""
        if self.path.exists():
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                self._records.append(json.loads(line))
            self._offset += end
        return list(self._records)

    def count(self, event: str) -> int:
        return sum(r["event"] == event for r in self.records())

    def messages(self, topic: str | None = None) -> list[Received]:
        return [Received(r["topic"], base64.b64decode(r["payload"]), r["retain"], r["qos"])
                for r in self.records() if r["event"] == "message" and (topic is None or r["topic"] == topic)]

    def wait_for(self, predicate: Callable[[list[Received]], object], timeout: float, what: str,
                 topic: str | None = None) -> list[Received]:
        """Poll the received messages (on ``topic``) until ``predicate(messages)`` holds."""
        wait_until(lambda: self._alive() and predicate(self.messages(topic)), timeout, what)
        return self.messages(topic)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(5)
            self.proc.stderr.close()
            self.proc = None
