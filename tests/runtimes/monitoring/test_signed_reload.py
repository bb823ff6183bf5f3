"""A device with ``model.trusted_keys`` refuses a ``reload`` to an unsigned, foreign-signed or
edited bundle over a real Mosquitto, answers with an error naming the bundle and the reason, and
keeps scoring with the model it had; a bundle signed by a trusted key is taken."""
from __future__ import annotations

import json
import subprocess
import threading

import yaml

from factoryedge.bundle import sign_bundle
from factoryedge.data.loaders import save_npz
from factoryedge.data.simulator import simulate_bearing
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from factoryedge.signing import generate_keypair, load_private_key
from tests.support.broker import wait_until
from tests.support.monitoring import write_profile
from tests.support.tiny_bundle import tiny_bundle

BASE = "factoryedge/v1/plant1/l2/pump-7"


def test_refused_reload_keeps_the_old_model_scoring(tmp_path, broker, subscribe):
    ours, ours_pub, _ = generate_keypair(tmp_path / "keys", "ours")
    theirs, _, _ = generate_keypair(tmp_path / "keys", "theirs")

    def bundle(name, threshold, key=ours):
        b = tiny_bundle(tmp_path / name, threshold=threshold)
        if key is not None:
            sign_bundle(b.path, load_private_key(key))
        return b

    running = bundle("running", 2.0)
    unsigned = bundle("unsigned", 3.0, key=None).path
    foreign = bundle("foreign", 3.0, key=theirs).path
    edited = bundle("edited", 3.0).path
    (edited / "manifest.json").write_text(
        (edited / "manifest.json").read_text().replace('"threshold": 3.0', '"threshold": 99.0'))
    good = bundle("good", 5.0).path

    sub = subscribe([f"{BASE}/command/response"])
    replay = save_npz(simulate_bearing(120.0, seed=7), tmp_path / "normal.npz")
    path = write_profile(tmp_path, running, f"replay://{replay}?speed=1&block=512", broker)
    raw = yaml.safe_load(path.read_text())
    raw["model"]["trusted_keys"] = [str(ours_pub)]
    path.write_text(yaml.safe_dump(raw))
    monitor = ConditionMonitor(load_profile(path))
    first = monitor.model
    runner = threading.Thread(target=monitor.run)
    runner.start()

    def command(body: dict) -> dict:
        rid = body["request_id"]
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
                        "-t", f"{BASE}/command", "-m", json.dumps(body)], check=True, timeout=10)
        return wait_until(lambda: next((m.json() for m in sub.messages() if m.json().get("request_id") == rid), None),
                          15, f"the response to {rid}")

    try:
        wait_until(lambda: monitor.counters.windows > 0, 20, "the first scored windows")
        for rid, bad, reason in [("u", unsigned, "is not signed"), ("f", foreign, "not among the trusted keys"),
                                 ("e", edited, "manifest.json was changed after it was signed")]:
            r = command({"command": "reload", "args": {"bundle": str(bad)}, "request_id": rid})
            assert r["status"] == "error", r
            assert "reload refused, still running tiny 0.0.1" in r["message"] and reason in r["message"], r
            assert f"bundle {bad}" in r["message"] and "\n" not in r["message"]
            assert monitor.model is first and monitor.debounce.threshold == 2.0
            scored = monitor.counters.windows
            wait_until(lambda s=scored: monitor.counters.windows > s, 20, "windows scored after the refused reload")
        r = command({"command": "reload", "args": {"bundle": str(good)}, "request_id": "g"})
        assert r["status"] == "ok", r
        assert monitor.model is not first and monitor.debounce.threshold == 5.0
        scored = monitor.counters.windows
        wait_until(lambda: monitor.counters.windows > scored, 20, "windows scored by the reloaded model")
    finally:
        monitor.stop()
        runner.join(timeout=30)
    assert not runner.is_alive() and monitor.failed is None
