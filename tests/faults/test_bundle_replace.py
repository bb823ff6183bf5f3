"""The model bundle changes under a running monitoring device, and ``reload`` is pointed at corrupt files.

The device is the real ``ConditionMonitor`` (a looping replay of healthy and faulty stretches,
the bundle's ONNX model on ONNX Runtime, the debounce, the MQTT sink and its outbox) on a real
Mosquitto; commands go in through ``mosquitto_pub`` and every answer, event, telemetry and
health report is read by a subscriber process. Anomaly events are this test's events: every
one the outbox stored must reach the plant across the replacement, whatever the reloads do.

(a) In place: the running bundle's ``model.onnx`` is overwritten while the device scores. The
    model was loaded into memory, so scoring goes on; a ``reload`` then finds the file no
    longer matches its manifest and is refused in one line. The directory is then swapped for
    another valid bundle, and ``reload`` takes it: events, telemetry and health carry the new
    version.
(b) ``reload`` pointed at corrupt files: a truncated ONNX (hashed into its manifest, so only
    ONNX Runtime can tell), a garbage manifest, a truncated packed bundle, and a well-formed
    model for other features than this bundle's preprocessing makes. Each is refused on the
    command reply topic with one line naming the bundle and the reason, counted in health, and
    the old model keeps scoring.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from factoryedge.bundle import pack_bundle, write_bundle
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from tests.support.broker import require_binary, wait_until
from tests.support.monitoring import alternating_recording, write_profile
from tests.support.tiny_bundle import tiny_bundle, tiny_onnx

BASE = "factoryedge/v1/plant1/l2/pump-7"
ANOMALY, RESPONSE = f"{BASE}/event/anomaly", f"{BASE}/command/response"
HEALTH, TELEMETRY = f"{BASE}/health", f"{BASE}/telemetry/score"


class Device:
    """The monitor on its own thread, with a command line to it and its outbox to read back."""

    def __init__(self, tmp_path: Path, bundle_dir: Path, broker, sub) -> None:
        self.tmp_path, self.broker, self.sub = tmp_path, broker, sub
        # 2 s healthy / 2 s faulty, twice, looped at 8x: an anomaly raised and cleared about every 0.5 s
        replay = alternating_recording(tmp_path, cycles=2)
        profile = write_profile(tmp_path, SimpleNamespace(path=bundle_dir),
                                f"replay://{replay}?speed=8&block=512&loop=true", broker, clear_windows=5)
        self.monitor = ConditionMonitor(load_profile(profile))
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.monitor.run()
        except BaseException as e:  # noqa: BLE001 - the test reports it: the device must not die
            self.errors.append(e)
            raise

    def alive(self) -> bool:
        if not self.thread.is_alive():
            pytest.fail(f"the device stopped: {self.errors or self.monitor.failed}", pytrace=False)
        return True

    def more_events(self, n: int, what: str) -> None:
        """Until the device has produced ``n`` more anomaly events (raised or cleared)."""
        start = self.monitor.counters.events
        wait_until(lambda: self.alive() and self.monitor.counters.events >= start + n, 30, what)

    def command(self, rid: str, name: str, **args) -> dict:
        body = {"command": name, "args": args, "request_id": rid}
        subprocess.run([require_binary("mosquitto_pub"), "-h", self.broker.host, "-p", str(self.broker.port), "-q",
                        "1", "-t", f"{BASE}/command", "-m", json.dumps(body)], check=True, timeout=10)
        return wait_until(lambda: next((m.json() for m in self.sub.messages(RESPONSE)
                                        if m.json().get("request_id") == rid), None), 30, f"the answer to {rid}")

    def stop(self) -> None:
        self.monitor.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the device did not stop"
        assert not self.errors and self.monitor.failed is None, (self.errors, self.monitor.failed)

    def stored_events(self) -> list[dict]:
        """Every anomaly event the outbox stored, in order (the profile keeps delivered rows)."""
        con = sqlite3.connect(self.tmp_path / "outbox.sqlite")
        try:
            rows = con.execute("SELECT payload FROM outbox WHERE topic = ? ORDER BY id", (ANOMALY,)).fetchall()
        finally:
            con.close()
        return [json.loads(r[0]) for r in rows]


def last(sub, topic: str) -> dict | None:
    got = sub.messages(topic)
    return got[-1].json() if got else None


def report(name: str, device: Device) -> tuple[list[dict], Counter]:
    """Wait for every stored event at the plant, then print ``NAME: produced N / delivered N / duplicated N``."""
    stored = device.stored_events()
    ids = {e["event_id"] for e in stored}
    device.sub.wait_for(lambda m: ids <= {x.json()["event_id"] for x in m}, 30, "every stored event at the plant",
                        topic=ANOMALY)
    copies = Counter(m.json()["event_id"] for m in device.sub.messages(ANOMALY))
    versions = Counter(e["model_version"] for e in stored)
    print(f"\n{name}: produced {len(stored)} / delivered {len(ids & set(copies))} / "
          f"duplicated {sum(copies.values()) - len(copies)} (events by model version {dict(sorted(versions.items()))})")
    return stored, copies


def check_refused(reply: dict, bundle: Path, reason: str, running: str = "tiny 1.0.0") -> None:
    """One line: the refusal, what still runs, the bundle and the reason."""
    message = reply["message"]
    assert reply["status"] == "error", reply
    assert message.startswith(f"reload refused, still running {running}: "), message
    assert str(bundle) in message and reason in message and "\n" not in message, message


def refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("reload refused")]


@pytest.fixture
def sub(subscribe):
    return subscribe([ANOMALY, RESPONSE, HEALTH, TELEMETRY])


def test_bundle_overwritten_in_place_then_swapped_for_a_new_version(tmp_path, broker, sub, caplog):
    caplog.set_level(logging.INFO, logger="factoryedge")
    current = tmp_path / "models" / "current"
    tiny_bundle(current, version="1.0.0")
    incoming = tiny_bundle(tmp_path / "models" / "incoming", threshold=2.5, version="2.0.0").path
    device = Device(tmp_path, current, broker, sub)
    try:
        device.more_events(2, "anomalies from the first model")
        first = device.monitor.model

        # (a) a copy over the running bundle's model, cut short: the loaded model does not notice
        with open(current / "model.onnx", "r+b") as f:
            f.truncate(100)
        device.more_events(2, "anomalies after model.onnx was overwritten in place")
        reply = device.command("r1", "reload")  # the profile's bundle path: the damaged directory
        check_refused(reply, current, "model.onnx has been modified or corrupted")
        assert device.monitor.model is first
        device.more_events(2, "anomalies after the refused reload")

        # the directory swapped for another valid bundle, as a deployment tool renames it in
        os.rename(current, tmp_path / "models" / "damaged")
        os.rename(incoming, current)
        reply = device.command("r2", "reload")
        assert reply["status"] == "ok" and reply["result"] == {"model_name": "tiny", "model_version": "2.0.0"}, reply
        assert device.monitor.model.version == "2.0.0" and device.monitor.debounce.threshold == 2.5
        device.more_events(2, "anomalies from the new model")
        sub.wait_for(lambda m: any(x.json()["model_version"] == "2.0.0" for x in m), 30,
                     "telemetry naming the new model version", topic=TELEMETRY)
        sub.wait_for(lambda m: m and m[-1].json()["extra"]["model"]["version"] == "2.0.0", 30,
                     "health naming the new model version", topic=HEALTH)
        health = last(sub, HEALTH)
    finally:
        device.stop()
    stored, copies = report("bundle overwritten in place, then swapped", device)
    assert set(copies) == {e["event_id"] for e in stored}  # nothing lost, nothing foreign
    assert len(stored) == device.monitor.counters.events
    # events name the model that scored them: the old version up to the reload, the new one after
    versions = [e["model_version"] for e in stored]
    assert versions == sorted(versions) and set(versions) == {"1.0.0", "2.0.0"}, versions
    assert health["extra"]["reloads"] == {"done": 1, "refused": 1}
    assert len(refusals(caplog)) == 1


def test_reload_to_corrupt_bundles_is_refused_and_the_old_model_keeps_scoring(tmp_path, broker, sub, caplog,
                                                                             monkeypatch):
    caplog.set_level(logging.INFO, logger="factoryedge")
    monkeypatch.setenv("FACTORYEDGE_CACHE", str(tmp_path / "cache"))  # where packed bundles are unpacked
    running = tiny_bundle(tmp_path / "running", version="1.0.0")
    onnx = running.model_path.read_bytes()
    golden = {"golden.npz": (running.path / "golden.npz").read_bytes()}
    n_features = running.manifest.model.inputs[0].shape[1]

    truncated = write_bundle(tmp_path / "truncated", running.manifest, {"model.onnx": onnx[: len(onnx) // 2],
                                                                        **golden}).path
    garbage = tmp_path / "garbage"
    shutil.copytree(running.path, garbage)
    (garbage / "manifest.json").write_bytes(b"\x00\xff{garbage" * 20)
    packed = pack_bundle(running.path, tmp_path / "good.febundle").read_bytes()
    cut = tmp_path / "cut.febundle"
    cut.write_bytes(packed[: len(packed) // 2])
    # verifies (hashes and schema), but its model takes one feature more than the preprocessing makes
    other = write_bundle(tmp_path / "other", running.manifest, {"model.onnx": tiny_onnx(n_features + 1),
                                                                **golden}).path
    cases = [(truncated, "ONNX Runtime cannot load"), (garbage, "is not valid JSON"),
             (cut, "cannot be unpacked"), (other, "its model cannot score a window")]

    device = Device(tmp_path, running.path, broker, sub)
    try:
        device.more_events(2, "anomalies from the running model")
        first = device.monitor.model
        for k, (bundle, reason) in enumerate(cases):
            reply = device.command(f"c{k}", "reload", bundle=str(bundle))
            check_refused(reply, bundle, reason)
            assert device.monitor.model is first
            device.more_events(2, f"anomalies after the refused reload of {bundle.name}")
        sub.wait_for(lambda m: m and m[-1].json()["extra"]["reloads"]["refused"] == len(cases), 30,
                     "health counting the refused reloads", topic=HEALTH)
        health = last(sub, HEALTH)
    finally:
        device.stop()
    stored, copies = report("reload to corrupt bundles x4", device)
    assert set(copies) == {e["event_id"] for e in stored}
    assert len(stored) == device.monitor.counters.events
    assert {e["model_version"] for e in stored} == {"1.0.0"}
    assert health["extra"]["reloads"] == {"done": 0, "refused": len(cases)}
    assert health["extra"]["model"] == {"name": "tiny", "version": "1.0.0"}
    assert len(refusals(caplog)) == len(cases)  # one line each, in the log as on the reply topic
