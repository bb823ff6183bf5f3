"""Transport security against a real Mosquitto started from the shipped firmware-config/mosquitto
files: TLS with client certificates, a password per device and a per-device ACL.

A throw-away PKI is generated per test module (tests/support/tls.py). The plant's consumer is
``mosquitto_sub`` in a child process over the same TLS listener with its own account.
"""
from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path

import pytest

from factoryedge.runtimes import messages as msg
from factoryedge.runtimes.sinks.mqtt import MqttSink
from tests.support.broker import Mosquitto, free_port, require_binary, wait_until
from tests.support.tls import Pki

CONFIG = Path(__file__).resolve().parents[3] / "firmware-config" / "mosquitto"
DEVICE = msg.Identity(site="plant-1", line="line-3", machine="press-7", device_id="edge-07")
OTHER = msg.Identity(site="plant-1", line="line-3", machine="press-8", device_id="edge-07")
DEVICE_PW, PLANT_PW = "dev1ce-Pa55-7731", "pl4nt-Pa55-1029"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, mosquitto_binary):
    """Mosquitto from the shipped mosquitto.conf and factoryedge.acl (paths and port replaced)."""
    work = tmp_path_factory.mktemp("tls-broker")
    pki = Pki(work / "pki")
    server_crt, server_key = pki.server()
    passwd = work / "factoryedge.passwd"
    tool = require_binary("mosquitto_passwd")
    subprocess.run([tool, "-c", "-b", str(passwd), "edge-07", DEVICE_PW], check=True, timeout=10)
    subprocess.run([tool, "-b", str(passwd), "plant", PLANT_PW], check=True, timeout=10)
    acl = work / "factoryedge.acl"
    acl.write_text((CONFIG / "factoryedge.acl").read_text())  # the example device is this test's device
    port = free_port()
    conf = ((CONFIG / "mosquitto.conf").read_text()
            .replace("/etc/mosquitto/factoryedge.passwd", str(passwd))
            .replace("/etc/mosquitto/factoryedge.acl", str(acl))
            .replace("/etc/mosquitto/certs/ca.crt", str(pki.ca))
            .replace("/etc/mosquitto/certs/broker.crt", str(server_crt))
            .replace("/etc/mosquitto/certs/broker.key", str(server_key))
            .replace("listener 8883", f"listener {port} 127.0.0.1"))
    assert conf.count(str(work)) == 5, "the shipped mosquitto.conf no longer names the files this test replaces"
    conf += f"log_dest file {work / 'mosquitto.log'}\nlog_type all\n" + ("user root\n" if _root() else "")
    broker = Mosquitto(work / "run", port=port, binary=mosquitto_binary, config=conf)
    broker.log_path = work / "mosquitto.log"
    broker.start()
    broker.pki = pki
    yield broker
    broker.stop()


def _root() -> bool:
    import os

    return os.geteuid() == 0


def _device_sink(broker, tmp_path, identity=DEVICE, *, ca=None, password=DEVICE_PW, protocol="5",
                 name="dev") -> MqttSink:
    crt, key = broker.pki.client("edge-07")
    pw = tmp_path / f"{name}.pw"
    pw.write_text(password + "\n")
    uri = (f"mqtts://127.0.0.1:{broker.port}?site={identity.site}&line={identity.line}&machine={identity.machine}"
           f"&device_id={identity.device_id}&outbox={tmp_path / name}.sqlite&ca={ca or broker.pki.ca}&cert={crt}"
           f"&key={key}&username=edge-07&password_file={pw}&protocol={protocol}&reconnect_min=0.05"
           "&reconnect_max=0.3&client_id=" + name)
    return MqttSink.from_uri(uri)


class PlantSubscriber:
    """``mosquitto_sub`` as the plant's consumer, over TLS with its own certificate and account."""

    def __init__(self, broker, tmp_path: Path, topic: str = "factoryedge/#") -> None:
        crt, key = broker.pki.client("plant")
        self.out = tmp_path / "plant-sub.log"
        self.proc = subprocess.Popen(
            # line-buffered: mosquitto_sub's stdout is a file here, and the test reads it as it grows
            ["stdbuf", "-oL", require_binary("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(broker.port),
             "--cafile", str(broker.pki.ca),
             "--cert", str(crt), "--key", str(key), "-u", "plant", "-P", PLANT_PW, "-q", "1", "-v", "-d",
             "-i", "plant-sub", "-t", topic], stdout=self.out.open("w"), stderr=subprocess.STDOUT)
        wait_until(lambda: "SUBACK" in self.out.read_text(), 30, "the plant subscriber's SUBACK")

    def messages(self) -> list[tuple[str, dict]]:
        out = []
        for line in self.out.read_text().splitlines():
            topic, _, body = line.partition(" ")
            if topic.startswith("factoryedge/") and body.startswith("{"):
                out.append((topic, json.loads(body)))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _event(identity: msg.Identity) -> msg.AnomalyPayload:
    now = time.time()
    return msg.anomaly_payload(identity, severity="alarm", score=3.0, threshold=1.0, window_start=now - 1,
                               window_end=now, model_name="m", model_version="1")


def _secrets_absent(caplog, *files: Path) -> None:
    text = "\n".join(r.getMessage() for r in caplog.records) + "\n".join(caplog.text.splitlines())
    for secret in (DEVICE_PW, PLANT_PW):
        assert secret not in text
    for f in files:
        body = f.read_text().strip().splitlines()
        assert not any(line in text for line in body if len(line) > 20 and "CERTIFICATE" not in line)


def test_a_provisioned_device_delivers_over_tls_and_the_plant_reads_it(tls_broker, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    sub = PlantSubscriber(tls_broker, tmp_path)
    sink = _device_sink(tls_broker, tmp_path)
    try:
        assert sink.wait_connected(20)
        event = _event(DEVICE)
        sink.publish_anomaly(event)
        got = wait_until(lambda: [b for t, b in sub.messages() if t.endswith("/event/anomaly")], 20,
                         "the event at the plant subscriber")
        assert got[0]["event_id"] == event.event_id
        assert sink.flush(10) and sink.stats().rejected == 0
    finally:
        sink.close(5)
        sub.stop()
    _secrets_absent(caplog, *tls_broker.pki.dir.glob("*.key"))


def test_a_wrong_password_is_refused_logged_counted_and_retried_without_a_crash(tls_broker, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="factoryedge")
    sink = _device_sink(tls_broker, tmp_path, password="not-the-Password-99", name="wrongpw")
    try:
        wait_until(lambda: sink.stats().auth_failures >= 3, 30, "three refused logins (retried with back-off)")
        assert not sink.stats().connected
        refused = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
        assert refused and "user=edge-07" in refused[0]
        assert any(w in refused[0] for w in ("Bad user name or password", "Not authorized")), refused[0]
        assert "not-the-Password-99" not in caplog.text
    finally:
        sink.close(1)
    _secrets_absent(caplog)


def test_an_untrusted_broker_certificate_is_refused_with_the_reason(tls_broker, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="factoryedge")
    rogue = Pki(tmp_path / "rogue", "rogue")
    sink = _device_sink(tls_broker, tmp_path, ca=rogue.ca, name="rogue")
    try:
        wait_until(lambda: sink.stats().tls_failures >= 2, 30, "TLS failures counted")
        assert not sink.stats().connected and sink.stats().auth_failures == 0
        why = [r.getMessage() for r in caplog.records if "TLS connection" in r.getMessage()]
        assert why and "certificate is not trusted" in why[0] and str(rogue.ca) in why[0], why
    finally:
        sink.close(1)
    _secrets_absent(caplog)


def test_a_publish_outside_its_subtree_is_refused_under_mqtt5_and_kept(tls_broker, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="factoryedge")
    sub = PlantSubscriber(tls_broker, tmp_path)
    sink = _device_sink(tls_broker, tmp_path, identity=OTHER, name="other")  # press-8 is not edge-07's machine
    try:
        assert sink.wait_connected(20)
        sink.publish_anomaly(_event(OTHER))
        wait_until(lambda: sink.stats().rejected >= 1, 20, "the broker's 'Not authorized' PUBACK")
        assert sink.stats().outbox_depth >= 1  # kept: it goes out once the ACL is fixed
        assert any("Not authorized" in r.getMessage() for r in caplog.records)
    finally:
        sink.close(1)
        sub.stop()
    assert not [t for t, _ in sub.messages() if "/press-8/" in t]


def test_under_mqtt311_the_same_publish_is_silently_dropped_as_documented(tls_broker, tmp_path):
    sub = PlantSubscriber(tls_broker, tmp_path)
    sink = _device_sink(tls_broker, tmp_path, identity=OTHER, protocol="3.1.1", name="other311")
    try:
        assert sink.wait_connected(20)
        sink.publish_anomaly(_event(OTHER))
        assert sink.flush(10)  # acknowledged: the device believes it delivered (what the README warns of)
        assert sink.stats().rejected == 0
        marker = _device_sink(tls_broker, tmp_path, name="marker")  # a later, allowed event proves the order
        try:
            assert marker.wait_connected(20)
            marker.publish_anomaly(_event(DEVICE))
            wait_until(lambda: [t for t, _ in sub.messages() if "/press-7/event/anomaly" in t], 20,
                       "the allowed event")
        finally:
            marker.close(5)
    finally:
        sink.close(1)
        sub.stop()
    assert not [t for t, _ in sub.messages() if "/press-8/" in t]
