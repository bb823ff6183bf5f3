"""Sink URIs: defaults, options, TLS files, and secrets that must never sit in a URI."""
from __future__ import annotations

import pytest

from factoryedge.errors import ConfigError
from factoryedge.runtimes import registry
from factoryedge.runtimes.sinks.mqtt_config import parse_mqtt_uri

BASE = "site=plant1&line=press3&machine=m7"


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    s = parse_mqtt_uri(f"mqtt://broker.local?{BASE}&device_id=edge-07")
    m = s.mqtt
    assert (m.host, m.port, m.tls, m.qos, m.protocol, m.keepalive, m.max_inflight) == (
        "broker.local", 1883, False, 1, "5", 30, 20)
    assert m.client_id == "factoryedge-edge-07" and m.username is None and m.password is None
    assert (s.identity.site, s.identity.line, s.identity.machine, s.identity.device_id) == (
        "plant1", "press3", "m7", "edge-07")
    assert s.outbox == tmp_path / "outbox-factoryedge-edge-07.sqlite"
    assert s.max_pending == 100_000


def test_options_from_the_query_and_keywords(tmp_path):
    s = parse_mqtt_uri(f"mqtt://10.0.0.5:1884?{BASE}&client_id=c1&qos=2&protocol=3.1.1&keepalive=60"
                       f"&max_inflight=5&reconnect_min=0.5&reconnect_max=10&topic_root=acme/edge&max_pending=none",
                       outbox=tmp_path / "o.sqlite", machine="m8")
    m = s.mqtt
    assert (m.port, m.client_id, m.qos, m.protocol, m.keepalive, m.max_inflight) == (1884, "c1", 2, "3.1.1", 60, 5)
    assert (m.reconnect_min, m.reconnect_max, m.topic_root) == (0.5, 10.0, "acme/edge")
    assert s.identity.machine == "m8"  # keywords win over the query
    assert s.outbox == tmp_path / "o.sqlite" and s.max_pending is None


@pytest.mark.parametrize("uri", [
    "mqtt://edge:s3cret-pw@broker:1883?site=a&line=b&machine=c",
    "mqtts://edge:s3cret-pw@broker?site=a&line=b&machine=c",
    "mqtt://:s3cret-pw@broker?site=a&line=b&machine=c",
])
def test_credentials_in_the_uri_are_rejected_without_echoing_the_password(uri):
    with pytest.raises(ConfigError) as err:
        parse_mqtt_uri(uri)
    msg = str(err.value)
    assert "s3cret-pw" not in msg
    assert "not allowed" in msg and "password_env" in msg and "password_file" in msg


def test_user_only_in_the_uri_is_rejected_too():
    with pytest.raises(ConfigError, match="username=NAME"):
        parse_mqtt_uri(f"mqtt://edge@broker?{BASE}")


def test_password_option_is_rejected_without_echoing_it():
    with pytest.raises(ConfigError) as err:
        parse_mqtt_uri(f"mqtt://broker?{BASE}&username=edge&password=s3cret-pw")
    assert "s3cret-pw" not in str(err.value) and "password_file" in str(err.value)


def test_credentials_from_environment_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FE_TEST_PW", "from-env")
    s = parse_mqtt_uri(f"mqtt://broker?{BASE}&username=edge&password_env=FE_TEST_PW")
    assert (s.mqtt.username, s.mqtt.password) == ("edge", "from-env")
    assert "from-env" not in repr(s)  # never in a log line
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    user = tmp_path / "user"
    user.write_text("edge7")
    s = parse_mqtt_uri(f"mqtt://broker?{BASE}&username_file={user}&password_file={pw}")
    assert (s.mqtt.username, s.mqtt.password) == ("edge7", "from-file")


@pytest.mark.parametrize("query, match", [
    ("username=edge&password_env=FE_TEST_UNSET_VAR", "FE_TEST_UNSET_VAR.*not set"),
    ("username=edge&password_file=/nonexistent/pw", "/nonexistent/pw"),
    ("password_env=HOME", "without a user name"),
    ("username=edge&username_env=USER", "one way only"),
    ("qos=0", "qos='0'.*1, 2"),
    ("protocol=4", "protocol='4'"),
    ("keepalive=1", "keepalive='1'"),
    ("max_inflight=many", "max_inflight='many'"),
    ("reconnect_min=5&reconnect_max=1", "reconnect_max"),
    ("color=blue", "unknown MQTT sink options \\['color'\\]"),
    ("ca=/etc/ca.pem", "needs TLS; use mqtts://"),
    ("client_id=has space", "client_id='has space'"),
    ("site=a&site=b", "given twice"),
    ("device_id=bad/id", "device_id='bad/id'"),
])
def test_invalid_options_name_the_value_and_what_is_valid(query, match, monkeypatch):
    monkeypatch.delenv("FE_TEST_UNSET_VAR", raising=False)
    uri = f"mqtt://broker?{query}&{BASE}" if "site=" not in query else f"mqtt://broker?{query}&line=b&machine=c"
    with pytest.raises(ConfigError, match=match):
        parse_mqtt_uri(uri)


def test_missing_identity_and_bad_uris():
    with pytest.raises(ConfigError, match="needs line, machine"):
        parse_mqtt_uri("mqtt://broker?site=plant1")
    with pytest.raises(ConfigError, match="names no broker host"):
        parse_mqtt_uri(f"mqtt://?{BASE}")
    with pytest.raises(ConfigError, match="invalid port"):
        parse_mqtt_uri(f"mqtt://broker:99999?{BASE}")
    with pytest.raises(ConfigError, match="no path"):
        parse_mqtt_uri(f"mqtt://broker/topic?{BASE}")


def test_tls_options(tmp_path):
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "edge.pem", "edge.key"))
    for f in (ca, cert, key):
        f.write_text("-----BEGIN-----\n")
    s = parse_mqtt_uri(f"mqtts://broker?{BASE}&ca={ca}&cert={cert}&key={key}")
    assert (s.mqtt.tls, s.mqtt.port, s.mqtt.ca, s.mqtt.cert, s.mqtt.key) == (True, 8883, str(ca), str(cert), str(key))
    with pytest.raises(ConfigError, match="missing.pem.*no such file"):
        parse_mqtt_uri(f"mqtts://broker?{BASE}&ca={tmp_path}/missing.pem")
    with pytest.raises(ConfigError, match="without cert"):
        parse_mqtt_uri(f"mqtts://broker?{BASE}&key={key}")


def test_registry_resolves_both_schemes_to_the_sink():
    from factoryedge.runtimes.sinks.mqtt import MqttSink

    assert registry.resolve("sink", "mqtt://broker") is MqttSink
    assert registry.resolve("sink", "mqtts://broker") is MqttSink
