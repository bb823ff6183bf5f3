"""Trigger sources: parsing, a real pty for serial, the periodic clock, MQTT on the sink's client."""
from __future__ import annotations

import subprocess
import threading
import time

import pytest

from factoryedge.errors import ConfigError
from factoryedge.runtimes.messages import parse_trigger
from factoryedge.runtimes.registry import check, open_trigger
from factoryedge.runtimes.sinks.mqtt import MqttSink
from factoryedge.runtimes.triggers import MqttTrigger, PeriodicTrigger, SerialTrigger
from tests.runtimes.sources.ptys import Pty
from tests.support.broker import find_binary, wait_until


def collect(source, n, timeout=5.0):
    out, done = [], threading.Event()

    def run():
        for t in source:
            out.append(t)
            if len(out) >= n:
                break
        done.set()

    threading.Thread(target=run, daemon=True).start()
    done.wait(timeout)
    return out


@pytest.mark.parametrize("raw, want", [
    (b"A-000123", ("A-000123", None)), (b"  B7\r\n", ("B7", None)),
    (b'{"part_id": "C-9", "t": 1712000000.25}', ("C-9", 1712000000.25)), (b'{"part_id": "D"}', ("D", None)),
])
def test_trigger_payloads(raw, want):
    assert parse_trigger(raw) == want


@pytest.mark.parametrize("raw, says", [
    (b"", "part id ''"), (b"\xff\xfe", "not UTF-8"), (b'{"part_id": 5}', "part id '5'"),
    (b'{"part": "x"}', "unknown fields ['part']"), (b'{"part_id": "x", "t": "now"}', "epoch seconds"),
    (b"{broken", "not valid JSON"), (b"x" * 200, "1-128 printable"), (b"a\tb", "printable"),
])
def test_malformed_trigger_payloads_say_what_is_valid(raw, says):
    with pytest.raises(ConfigError) as e:
        parse_trigger(raw)
    assert says in str(e.value)


@pytest.mark.parametrize("uri, says", [
    ("kafka://x", "unknown trigger scheme 'kafka' in 'kafka://x'; known: mqtt, periodic, serial"),
    ("mqtt://broker", "write just 'mqtt'"),
    ("serial://", "names no port"), ("serial:///dev/ttyS0?baud=fast", "baud='fast' must be an integer"),
    ("periodic://?period_ms=0", "period_ms='0' must be a number > 0"), ("periodic://?rate=5", "valid: period_ms"),
])
def test_bad_trigger_uris(uri, says):
    with pytest.raises(ConfigError) as e:
        check("trigger", uri)
    assert says in str(e.value)


def test_periodic_trigger_counts_and_stops():
    source = open_trigger("periodic://?period_ms=20&prefix=auto-&count=5")
    got = collect(source, 5)
    assert [t.part_id for t in got] == [f"auto-{i:06d}" for i in range(5)]
    assert all(b.t_mono > a.t_mono for a, b in zip(got, got[1:])) and got[0].source == "periodic"
    assert list(source) == []  # ended after count
    assert isinstance(source, PeriodicTrigger)


def test_serial_trigger_over_a_real_pty_reports_bad_lines():
    pty = Pty()
    source = open_trigger(f"serial://{pty.path}?baud=115200")
    assert isinstance(source, SerialTrigger)
    errors = []
    source.on_error = lambda reason, raw: errors.append((reason, raw))
    try:
        source.start()
        pty.write(b"A-1\nB-2\r\n\xff\xfe\x00\n\nC-3\n" + b"x" * 130 + b"\n")
        got = collect(source, 3)
        wait_until(lambda: len(errors) == 2, 5, "both bad lines reported")
    finally:
        source.close()
        pty.close()
    assert [t.part_id for t in got] == ["A-1", "B-2", "C-3"] and got[0].source == "serial"
    assert source.stats["malformed"] == 2 and "not ASCII" in errors[0][0] and "1-128" in errors[1][0]


def test_serial_trigger_on_a_missing_port_says_so():
    with pytest.raises(Exception, match="cannot open serial trigger port '/dev/ttyNOPE9'"):
        open_trigger("serial:///dev/ttyNOPE9").start()


def test_mqtt_trigger_rides_on_the_sink_connection(broker, tmp_path):
    pub = find_binary("mosquitto_pub")
    if pub is None:
        pytest.skip("mosquitto_pub is not installed")
    sink = MqttSink.from_uri(f"{broker.url}?site=s&line=l&machine=m&device_id=d&outbox={tmp_path / 'o.sqlite'}"
                             "&reconnect_min=0.05&reconnect_max=0.2")
    source = open_trigger("mqtt", sink)
    assert isinstance(source, MqttTrigger) and source.topic == "factoryedge/v1/s/l/m/trigger"
    errors = []
    source.on_error = lambda reason, raw: errors.append(raw)
    try:
        assert sink.wait_connected(5)
        source.start()
        time.sleep(0.2)  # let the SUBSCRIBE reach the broker before the first publisher connects
        got, done = [], threading.Event()

        def run():
            for t in source:
                got.append(t)
                if len(got) == 2:
                    done.set()
                    return

        threading.Thread(target=run, daemon=True).start()
        for body in ("P-1", "{not json", '{"part_id": "P-2", "t": 12.5}'):
            # a separate process, as a PLC would be
            subprocess.run([pub, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", source.topic,
                            "-m", body], check=True, timeout=10)
        assert done.wait(5), f"triggers received: {got}"
    finally:
        source.close()
        sink.close(2)
    assert [(t.part_id, t.t_plc, t.source) for t in got] == [("P-1", None, "mqtt"), ("P-2", 12.5, "mqtt")]
    assert errors == [b"{not json"] and source.stats == {"triggers": 2, "malformed": 1, "sessions_lost": 0}


def test_serial_trigger_reconnect_options_and_the_old_fixed_period():
    backoff = SerialTrigger.from_uri("serial:///dev/ttyS9?reconnect_min=0.2&reconnect_max=2")
    assert (backoff._port.reconnect_min, backoff._port.reconnect_max) == (0.2, 2.0)
    fixed = open_trigger("serial:///dev/ttyS9", reconnect_s=0.5)  # profiles written before the backoff
    assert (fixed._port.reconnect_min, fixed._port.reconnect_max) == (0.5, 0.5)
    with pytest.raises(ConfigError, match="give reconnect_s .* not both"):
        check("trigger", "serial:///dev/ttyS9?reconnect_s=1&reconnect_max=2")
    with pytest.raises(ConfigError, match="reconnect_min=3.0 exceeds reconnect_max=1.0"):
        check("trigger", "serial:///dev/ttyS9?reconnect_min=3")


def test_serial_trigger_survives_an_unplugged_adapter(tmp_path):
    link = tmp_path / "ttyPLC"  # a udev symlink in the field
    first, second = Pty(), Pty()
    link.symlink_to(first.path)
    source = open_trigger(f"serial://{link}?reconnect_min=0.01&reconnect_max=0.05")
    try:
        source.start()
        first.write(b"A-1\n")
        got = collect(source, 1)
        first.close()  # unplug
        link.unlink()
        wait_until(lambda: source.stats["disconnects"] == 1, 5, "the loss noticed")
        link.symlink_to(second.path)
        wait_until(lambda: source.stats["reconnects"] == 1, 5, "the port reopened")
        second.write(b"B-2\n")
        got += collect(source, 1)
    finally:
        source.close()
        first.close()
        second.close()
    assert [t.part_id for t in got] == ["A-1", "B-2"]
