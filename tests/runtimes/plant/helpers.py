"""Plain HTTP over loopback, a condition-monitor profile with ``web:``, and the program's own server."""
from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

import yaml

from tests.support.broker import wait_until
from tests.support.monitoring import alternating_recording


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)


def request(base_url: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> Response:
    """One request with ``path`` sent exactly as given (no client-side normalising of ``..``)."""
    u = urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def alternating_replay(tmp_path, cycles: int = 4, seg_s: float = 3.0):
    """Healthy and faulty stretches in turn, so scores cross the threshold and events are raised."""
    return alternating_recording(tmp_path, cycles, seg_s)


def monitor_profile(tmp_path, bundle, broker, replay, **web):
    """A condition monitor replaying ``replay`` in a loop at real time, with a ``web`` section."""
    profile = {
        "identity": {"site": "plant1", "line": "l2", "machine": "pump-7", "device_id": "edge-7"},
        "sensor": {"uri": f"replay://{replay}?speed=1&block=512&loop=true"},
        "model": {"bundle": str(bundle.path)},
        "scoring": {"baseline": {"mode": "off"}, "clear_windows": 5},
        "mqtt": {"uri": broker.url, "outbox": str(tmp_path / "outbox.sqlite"),
                 "options": {"reconnect_min": 0.05, "reconnect_max": 0.5},
                 "telemetry_interval_s": 1, "health_interval_s": 1},
        "web": {"port": 0, **web},
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def program_web(program, timeout: float = 30.0):
    """The ``WebServer`` the program's shell started for its ``web:`` section, once it is up."""
    return wait_until(lambda: program.web, timeout, "the program's web server to start")


STATION_BASE = "factoryedge/v1/s1/l1/sorter1"
FRAMES_PER_PART, FPS = 3, 30.0


def parts_video(path, parts: int = 12, defective=frozenset({1, 4, 7, 10})):
    """A lossless video of ``parts`` parts, ``FRAMES_PER_PART`` frames each; the defective ones have a pit."""
    from tests.runtimes.inspection.helpers import parts_video as write

    return write(path, parts, defective, FRAMES_PER_PART, FPS)


def station_profile(tmp_path, bundle, broker, video, **web):
    """An inspection station on a looping video, triggered over MQTT, archiving rejects, with ``web``."""
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump({
        "kind": "inspection",
        "identity": {"site": "s1", "line": "l1", "machine": "sorter1", "device_id": "d1"},
        "inspection": {"camera": f"file://{video}?realtime=true&loop=true", "trigger": "mqtt",
                       "deadline_ms": 400, "frame_max_wait_ms": 200,
                       "archive": {"dir": str(tmp_path / "rejects"), "max_items": 50}},
        "model": {"bundle": str(bundle.path), "backend": "onnxruntime"},
        "mqtt": {"uri": broker.url, "outbox": str(tmp_path / "station-outbox.sqlite"), "health_interval_s": 1,
                 "options": {"reconnect_min": 0.05, "reconnect_max": 0.2}},
        "web": {"port": 0, **web},
    }))
    return path


def plc(broker, tmp_path, parts: int = 12):
    """A software PLC in its own process, triggering one part per part on the video."""
    import subprocess

    from factoryedge.runtimes.devkit.plc import Plan

    plan = Plan(broker.url, STATION_BASE, parts=parts, period=FRAMES_PER_PART / FPS, digits=2,
                report=tmp_path / "plc.json", quiet=True)
    return subprocess.Popen(plan.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def drive_parts_until(broker, tmp_path, condition, timeout: float, what: str):
    """Run the PLC (again, whenever a run ends) until ``condition()`` holds.

    Restarting covers triggers sent before the station's subscription was in place; the
    station answers each part it hears, so a run after that one is enough.
    """
    import time

    import pytest

    deadline = time.monotonic() + timeout
    proc = None
    try:
        while True:
            if condition():
                return
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
            if proc is None or proc.poll() is not None:
                proc = plc(broker, tmp_path)
            time.sleep(0.05)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait(10)
            proc.stderr.close()
