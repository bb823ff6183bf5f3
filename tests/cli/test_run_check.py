"""``factoryedge run --check`` validates every plugin's options, naming the key path, without hardware."""
from __future__ import annotations

import pytest

from tests.cli.test_cli import assert_one_line_error, cli
from tests.cli.test_run_errors import profile
from tests.cli.test_run_inspection import write_profile
from tests.support.image_bundle import make_image_bundle
from tests.support.tiny_bundle import tiny_bundle


@pytest.fixture(scope="module")
def vib_bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("vib") / "b")  # trained at 12 kHz


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory):
    return make_image_bundle(tmp_path_factory.mktemp("img") / "b")


def test_bad_serial_option_names_the_uri_and_the_value(tmp_path, vib_bundle):
    p = profile(tmp_path, vib_bundle.path, sensor="serial:///dev/ttyUSB0?rate=12000&baud=fast")
    assert_one_line_error(cli("run", p, "--check"), "device.yaml", "sensor.uri", "baud='fast' must be an integer")


def test_bad_sensor_option_in_the_options_mapping_names_its_key(tmp_path, vib_bundle):
    p = profile(tmp_path, vib_bundle.path)
    p.write_text(p.read_text().replace("sensor:\n", "sensor:\n  options: {format: json}\n"))
    assert_one_line_error(cli("run", p, "--check"), "sensor.options.format", "format='json' must be one of: fe1, csv")


def test_bad_mqtt_qos_names_the_options_key(tmp_path, vib_bundle):
    p = profile(tmp_path, vib_bundle.path)
    p.write_text(p.read_text().replace("mqtt:\n", "mqtt:\n  options: {qos: 3}\n"))
    assert_one_line_error(cli("run", p, "--check"), "mqtt.options.qos", "qos='3' is not valid; use one of 1, 2")


@pytest.mark.parametrize("camera, camera_options, says", [
    ("file:///parts.mp4?fps=-1", {}, ["inspection.camera", "unknown option 'fps' for file camera", "valid: loop"]),
    ("dir:///shots?fps=-1", {}, ["inspection.camera", "fps='-1' must be a number > 0"]),
    ("dir:///shots", {"fps": 0}, ["inspection.camera_options.fps", "fps=0 must be a number > 0"]),
])
def test_bad_camera_option_names_the_key(tmp_path, image_bundle, camera, camera_options, says):
    p = write_profile(tmp_path, image_bundle.path, camera, camera_options=camera_options)
    assert_one_line_error(cli("run", p, "--check"), "station.yaml", *says)


def test_bad_trigger_option_names_the_key(tmp_path, image_bundle):
    p = write_profile(tmp_path, image_bundle.path, "file:///parts.mp4", trigger="periodic://?period_ms=0")
    assert_one_line_error(cli("run", p, "--check"), "inspection.trigger", "period_ms='0' must be a number > 0")


def test_sensor_at_another_rate_is_refused_by_check_and_at_start(tmp_path, vib_bundle):
    p = profile(tmp_path, vib_bundle.path, sensor="serial:///dev/ttyFE_NOPE?rate=25600&format=fe1&channels=1")
    says = ("sensor serial:///dev/ttyFE_NOPE", "delivers 25600 Hz but bundle tiny expects 12000 Hz")
    assert_one_line_error(cli("run", p, "--check"), *says)
    started = cli("run", p, timeout=60)  # refused before the port is even opened: it does not exist here
    last = started.stderr.strip().splitlines()[-1]
    assert started.returncode == 2 and last.startswith("factoryedge run: error:") and "Traceback" not in started.stderr
    assert all(s in last for s in says) and "does not exist" not in started.stderr


def test_serial_sensor_must_declare_its_rate(tmp_path, vib_bundle):
    p = profile(tmp_path, vib_bundle.path, sensor="serial:///dev/ttyFE_NOPE?format=fe1&channels=1")
    assert_one_line_error(cli("run", p, "--check"), "declares no sample rate", "add rate=12000 to its URI")


def test_check_reports_the_declared_rate(tmp_path, vib_bundle):
    r = cli("run", profile(tmp_path, vib_bundle.path), "--check")
    assert r.returncode == 0, r.stderr
    assert "sample rate 12000 Hz as the sensor declares" in r.stdout


@pytest.mark.parametrize("skip, says", [
    ("-5", "Input should be greater than or equal to 0"),
    ("soon", "Input should be a valid number"),
    (".nan", "Input should be a finite number"),
])
def test_bad_baseline_skip_names_the_key(tmp_path, vib_bundle, skip, says):
    p = profile(tmp_path, vib_bundle.path)
    p.write_text(p.read_text().replace("mode: 'off'", f"{{mode: auto, skip_s: {skip}}}"))
    assert_one_line_error(cli("run", p, "--check"), "device.yaml", "scoring.baseline.skip_s", says)


def _with_plant(path, **sections):
    import yaml

    raw = yaml.safe_load(path.read_text())
    raw.update(sections)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_check_reports_and_checks_the_plant_outputs(tmp_path, vib_bundle):
    token = tmp_path / "operator.token"
    token.write_text("0123456789abcdef0123\n")
    p = _with_plant(profile(tmp_path, vib_bundle.path),
                    sparkplug={"group_id": "plant-1", "edge_node_id": "edge-7", "primary_host_id": "scada"},
                    web={"port": 8099, "operator_token_file": "operator.token"})  # relative to the profile
    r = cli("run", p, "--check")
    assert r.returncode == 0, r.stderr
    assert "Sparkplug B edge node plant-1/edge-7, BIRTHs while host scada is online" in r.stdout
    assert "operator page and /metrics on http://127.0.0.1:8099/ (threshold changes with the operator token)" \
        in r.stdout
    assert "0123456789abcdef" not in r.stdout + r.stderr  # the token itself is never shown


@pytest.mark.parametrize("sections, says", [
    ({"web": {"operator_token_file": "missing.token"}}, ("web.operator_token_file", "missing.token", "read-only")),
    ({"web": {"operator_token_file": "short.token"}}, ("web.operator_token_file", "at least 16 characters")),
    ({"web": {"port": 70000}}, ("web.port", "less than or equal to 65535")),
    ({"web": {"colour": "red"}}, ("web.colour", "Extra inputs are not permitted")),
    ({"sparkplug": {"group_id": "plant/1", "edge_node_id": "e"}}, ("sparkplug.group_id", "not a valid Sparkplug id")),
    ({"sparkplug": {"group_id": "g"}}, ("sparkplug.edge_node_id", "Field required")),
    ({"sparkplug": {"group_id": "g", "edge_node_id": "e", "options": {"password": "x"}}},
     ("sparkplug.options", "password_file")),
])
def test_bad_plant_sections_are_one_line(tmp_path, vib_bundle, sections, says):
    (tmp_path / "short.token").write_text("abc")
    assert_one_line_error(cli("run", _with_plant(profile(tmp_path, vib_bundle.path), **sections), "--check"), *says)
