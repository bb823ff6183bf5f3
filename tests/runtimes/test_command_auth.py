"""Signed commands: the envelope, its checks (key, signature, machine, age, replay), and a real
monitor over a real Mosquitto that runs only signed, fresh, unreplayed commands."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import yaml

from factoryedge.data.loaders import save_npz
from factoryedge.data.simulator import simulate_bearing
from factoryedge.runtimes import messages as msg
from factoryedge.runtimes.command_auth import CommandAuthority
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from factoryedge.signed_commands import sign_command
from factoryedge.signing import generate_keypair, load_private_key, load_public_key
from tests.cli.test_cli import assert_one_line_error, cli
from tests.support.broker import require_binary, wait_until
from tests.support.monitoring import write_profile
from tests.support.tiny_bundle import tiny_bundle

DEVICE = "factoryedge/v1/plant1/l2/pump-7"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    ours, ours_pub, _ = generate_keypair(d, "ops")
    theirs, _, _ = generate_keypair(d, "intruder")
    return {"ours": load_private_key(ours), "ours_pub": ours_pub, "theirs": load_private_key(theirs)}


def _refused(authority, payload, *says):
    with pytest.raises(msg.CommandRefused) as e:
        authority.open(payload)
    for s in says:
        assert s in str(e.value), str(e.value)
    return e.value


def test_a_signed_fresh_command_opens_once(keys):
    auth = CommandAuthority([load_public_key(keys["ours_pub"])], DEVICE, max_age_s=30)
    env = sign_command(keys["ours"], "set_threshold", {"threshold": 4.2}, DEVICE, request_id="r-1")
    command = auth.open(env)
    assert (command.command, command.args, command.request_id) == ("set_threshold", {"threshold": 4.2}, "r-1")
    assert command.signer == load_public_key(keys["ours_pub"]).fingerprint
    replay = _refused(auth, env, "replayed")
    assert replay.request_id == "r-1"  # the refusal can still be matched to its request


def test_everything_but_a_valid_envelope_is_refused_with_the_reason(keys):
    auth = CommandAuthority([load_public_key(keys["ours_pub"])], DEVICE, max_age_s=30)
    _refused(auth, b'{"command": "set_threshold", "args": {"threshold": 9}, "request_id": "u"}',
             "runs only signed commands", "sign-command")
    _refused(auth, sign_command(keys["theirs"], "set_threshold", {"threshold": 9}, DEVICE), "not among")
    _refused(auth, sign_command(keys["ours"], "set_threshold", {"threshold": 9}, "factoryedge/v1/plant1/l2/pump-8"),
             "not this machine")
    _refused(auth, sign_command(keys["ours"], "set_threshold", {"threshold": 9}, DEVICE, t=time.time() - 120),
             "stale", "max_age_s")
    _refused(auth, sign_command(keys["ours"], "set_threshold", {"threshold": 9}, DEVICE, t=time.time() + 120),
             "stale")
    _refused(auth, sign_command(keys["ours"], "set_threshold", {"threshold": 9}, DEVICE, nonce="short"), "nonce")
    tampered = json.loads(sign_command(keys["ours"], "set_threshold", {"threshold": 9}, DEVICE))
    tampered["signed"] = tampered["signed"].replace("9", "99")
    _refused(auth, json.dumps(tampered), "signature does not match")
    _refused(auth, b"[" * 1000, "nested deeper")
    # a valid signature over an invalid command: refused by the usual checks, nothing runs
    _refused(auth, sign_command(keys["ours"], "set_threshold", {"threshold": -1}, DEVICE), "threshold")
    _refused(auth, sign_command(keys["ours"], "explode", {}, DEVICE), "unknown command")


def test_a_monitor_requiring_signed_commands_over_mosquitto(tmp_path, broker, subscribe, keys):
    pub = require_binary("mosquitto_pub")
    sub = subscribe([f"{DEVICE}/command/response", f"{DEVICE}/health"])
    replay = save_npz(simulate_bearing(120.0, seed=7), tmp_path / "normal.npz")
    path = write_profile(tmp_path, tiny_bundle(tmp_path / "b", threshold=2.0), f"replay://{replay}?speed=1&block=512",
                         broker)
    raw = yaml.safe_load(path.read_text())
    raw["commands"] = {"require": "signed", "trusted_keys": [str(keys["ours_pub"])], "max_age_s": 30}
    path.write_text(yaml.safe_dump(raw))
    monitor = ConditionMonitor(load_profile(path))
    runner = threading.Thread(target=monitor.run)
    runner.start()

    def answers(rid: str) -> list[dict]:
        return [m.json() for m in sub.messages() if m.topic.endswith("/response") and m.json().get("request_id") == rid]

    def send(body: bytes, rid: str) -> dict:
        before = len(answers(rid))
        subprocess.run([pub, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", f"{DEVICE}/command",
                        "-s"], input=body, check=True, timeout=10)
        return wait_until(lambda: answers(rid)[before:], 20, f"the response to {rid}")[0]

    try:
        wait_until(lambda: monitor.sink.stats().connected, 20, "the monitor's connection")
        unsigned = send(b'{"command": "set_threshold", "args": {"threshold": 9.0}, "request_id": "plain"}', "plain")
        assert unsigned["status"] == "rejected" and "only signed commands" in unsigned["message"]
        signed = cli("sign-command", "--key", keys["ours_pub"].with_suffix(".key"), "--device", DEVICE,
                     "--request-id", "ok-1", "set_threshold", '{"threshold": 3.5}')
        assert signed.returncode == 0, signed.stderr
        envelope = signed.stdout.strip().encode()
        assert send(envelope, "ok-1")["status"] == "ok" and monitor.debounce.threshold == 3.5
        monitor.execute("set_threshold", {"threshold": 2.0}, "test")  # back, by a path that is refused too:
        assert monitor.debounce.threshold == 3.5
        again = send(envelope, "ok-1")  # the same bytes again: a replay
        assert again["status"] == "rejected" and "replayed" in again["message"]
        foreign = sign_command(keys["theirs"], "set_threshold", {"threshold": 9.0}, DEVICE, request_id="foreign")
        assert send(foreign, "foreign")["status"] == "rejected" and monitor.debounce.threshold == 3.5
        assert monitor.execute("set_threshold", {"threshold": 5.0}, "sparkplug DCMD").status == "rejected"
        assert monitor.execute("set_threshold", {"threshold": 5.0}, "operator page", authenticated=True).status == "ok"
        wait_until(lambda: any(m.json().get("commands_refused", 0) >= 3 for m in sub.messages()
                               if m.topic.endswith("/health")), 20, "health counting the refused commands")
    finally:
        monitor.stop()
        runner.join(timeout=30)
    assert not runner.is_alive() and monitor.failed is None


def test_profile_and_cli_errors_are_one_line(tmp_path, keys):
    b = tiny_bundle(tmp_path / "b")
    p = write_profile(tmp_path, b, "replay://x.npz", type("B", (), {"url": "mqtt://127.0.0.1:1"})())
    raw = yaml.safe_load(p.read_text())
    raw["commands"] = {"require": "signed"}
    p.write_text(yaml.safe_dump(raw))
    assert_one_line_error(cli("run", p, "--check"), "commands", "needs trusted_keys")
    raw["commands"] = {"require": "signed", "trusted_keys": [str(keys["ours_pub"].with_suffix(".key"))]}
    p.write_text(yaml.safe_dump(raw))
    assert_one_line_error(cli("run", p, "--check"), "commands.trusted_keys.0", "private key")
    key = keys["ours_pub"].with_suffix(".key")
    assert_one_line_error(cli("sign-command", "--key", key, "--device", DEVICE, "set_threshold", "{oops"),
                          "not JSON")
    assert_one_line_error(cli("sign-command", "--key", tmp_path / "none.key", "--device", DEVICE, "reload"),
                          "none.key", "does not exist")
    assert sys.executable  # the CLI runs in this interpreter's environment
