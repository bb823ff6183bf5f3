import textwrap

import pytest

from factoryedge.errors import ConfigError
from factoryedge.runtimes.profile import load_profile

GOOD = """
identity: {site: plant1, line: l2, machine: pump-07, device_id: jetson-07}
sensor:
  uri: serial:///dev/factoryedge-vib0?rate=25600&baud=921600&format=fe1&channels=3
model:
  bundle: bundles/pump.febundle
scoring:
  k: 3
  n: 5
  baseline: {mode: auto, duration_s: 300, state: state/baseline.json}
mqtt:
  uri: mqtt://broker.local:1883
  options: {qos: 1, username: jetson-07, password_env: FE_MQTT_PASSWORD}
  outbox: state/outbox.sqlite
"""


def write(tmp_path, text):
    p = tmp_path / "device.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_good_profile_resolves_paths_relative_to_the_file(tmp_path):
    prof = load_profile(write(tmp_path, GOOD))
    assert prof.identity.machine == "pump-07"
    assert prof.model.bundle == tmp_path / "bundles/pump.febundle"
    assert prof.scoring.baseline.state == tmp_path / "state/baseline.json"
    assert prof.scoring.k == 3 and prof.scoring.clear_windows == 10


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda t: t.replace("k: 3", "k: 9"), ["scoring", "k (9) must not exceed n (5)"]),
        (lambda t: t.replace("machine: pump-07", "machine: 'pump 07'"), ["identity.machine", "pattern"]),
        (lambda t: t.replace("  outbox: state/outbox.sqlite", "  outbx: x"), ["mqtt.outbx", "Extra inputs"]),
        (lambda t: t.replace("password_env: FE_MQTT_PASSWORD", "password: hunter2"), ["mqtt", "secret"]),
        (lambda t: t.replace("model:\n  bundle: bundles/pump.febundle\n", ""), ["model", "Field required"]),
        (lambda t: t.replace("username: jetson-07, ", ""), ["mqtt.uri", "a password is given without a user name"]),
        (lambda t: t.replace("qos: 1", "qos: 3"), ["mqtt.options.qos", "qos='3' is not valid"]),
        (lambda t: t.replace("&baud=921600", "&baud=fast"), ["sensor.uri", "baud='fast' must be an integer"]),
    ],
)
def test_bad_profiles_name_file_key_and_reason(tmp_path, edit, fragments):
    p = write(tmp_path, edit(GOOD))
    with pytest.raises(ConfigError) as err:
        load_profile(p)
    msg = str(err.value)
    assert msg.startswith(str(p))
    for f in fragments:
        assert f in msg


def test_not_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML at line 2"):
        load_profile(write(tmp_path, "identity: {site: a\nsensor: [\n"))
    with pytest.raises(ConfigError, match="a profile is a YAML mapping"):
        load_profile(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile(tmp_path / "none.yaml")
