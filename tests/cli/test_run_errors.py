"""``factoryedge run`` refuses bad set-ups with one clear line, before touching the plant."""
import yaml

from tests.cli.test_cli import assert_one_line_error, cli
from tests.support.tiny_bundle import tiny_bundle


def profile(tmp_path, bundle_path, sensor="serial:///dev/ttyFE_NOPE?rate=12000&format=fe1&channels=1", mqtt="mqtt://127.0.0.1:1"):
    p = tmp_path / "device.yaml"
    p.write_text(yaml.safe_dump({
        "identity": {"site": "s", "line": "l", "machine": "m", "device_id": "d"},
        "sensor": {"uri": sensor},
        "model": {"bundle": str(bundle_path)},
        "scoring": {"baseline": {"mode": "off"}},
        "mqtt": {"uri": mqtt, "outbox": str(tmp_path / "outbox.sqlite")},
    }))
    return p


def test_malformed_profile(tmp_path):
    p = tmp_path / "device.yaml"
    p.write_text("identity: {site: s, line: l, machine: m, device_id: d}\nsensor: {uri: 5}\nmodel: {}\nmqtt: {uri: x}\n")
    assert_one_line_error(cli("run", p), "device.yaml", "model.bundle", "Field required")


def test_unknown_uri_scheme(tmp_path):
    b = tiny_bundle(tmp_path / "b")
    assert_one_line_error(cli("run", profile(tmp_path, b.path, sensor="modbus://plc:502")),
                          "sensor.uri", "unknown source scheme 'modbus'", "serial", "replay")


def test_missing_serial_device(tmp_path):
    b = tiny_bundle(tmp_path / "b")
    r = cli("run", profile(tmp_path, b.path), timeout=60)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("factoryedge run: error:") and "/dev/ttyFE_NOPE" in last and "does not exist" in last
    assert "Traceback" not in r.stderr


def test_wrong_bundle_kind_and_tampered_bundle(tmp_path):
    image = tiny_bundle(tmp_path / "img", kind="image")
    assert_one_line_error(cli("run", profile(tmp_path, image.path), "--check"),
                          "holds a 'image' model", "needs a 'vibration' bundle")
    vib = tiny_bundle(tmp_path / "vib")
    (vib.path / "model.onnx").write_bytes(b"junk")
    assert_one_line_error(cli("run", profile(tmp_path, vib.path), "--check"), "model.onnx has been modified")


def test_check_accepts_a_good_profile(tmp_path):
    b = tiny_bundle(tmp_path / "b")
    r = cli("run", profile(tmp_path, b.path), "--check")
    assert r.returncode == 0 and "bundle tiny 0.0.1 verified" in r.stdout
