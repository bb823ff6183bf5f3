"""The shipped device files stay valid: the example profile loads, the unit runs our command."""
import re

from factoryedge.firmware_config import ROOT
from factoryedge.runtimes.profile import load_profile


def test_example_profile_validates():
    prof = load_profile(ROOT / "profiles" / "condition-monitoring.yaml")
    assert prof.identity.machine == "pump-07"
    assert prof.sensor.uri.startswith("serial:///dev/factoryedge-vib0")
    assert prof.mqtt.options["password_file"].startswith("/etc/")
    assert prof.logging.format == "json"


def test_systemd_unit_and_udev_rule_agree_on_names():
    unit = (ROOT / "systemd" / "factoryedge.service").read_text()
    rule = (ROOT / "udev" / "99-factoryedge-sensor.rules").read_text()
    assert re.search(r"^ExecStart=\S+/factoryedge run /etc/factoryedge/device.yaml$", unit, re.M)
    assert "KillSignal=SIGTERM" in unit and "StateDirectory=factoryedge" in unit
    assert 'SYMLINK+="factoryedge-vib0"' in rule
    profile = (ROOT / "profiles" / "condition-monitoring.yaml").read_text()
    assert "/dev/factoryedge-vib0" in profile


def test_example_inspection_profile_validates():
    prof = load_profile(ROOT / "profiles" / "inspection.yaml")
    assert prof.kind == "inspection"
    assert prof.inspection.camera.startswith("csi://0") and prof.inspection.trigger == "mqtt"
    assert prof.inspection.fail_safe == "reject" and prof.inspection.frame_max_wait_ms < prof.inspection.deadline_ms
    assert str(prof.inspection.archive.dir) == "/var/lib/factoryedge/rejects"
