"""The README's main command, end to end, as a newcomer runs it (with short settings)."""
import json
import re

from tests.cli.test_cli import cli


def test_demo_monitors_a_machine_and_sorts_parts_over_mqtt(tmp_path):
    r = cli("demo", "--out", tmp_path / "demo", "--epochs", "40", "--live-seconds", "24", "--speed", "4", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    # condition monitoring
    assert "[3] bundle verified" in out and "false alarms" in out
    assert "plant subscriber> STATUS" in out and "online" in out
    assert "plant subscriber> ANOMALY raised" in out
    monitored = next(line for line in out.splitlines() if "the subscriber received" in line)
    assert "received 0" not in monitored
    assert (tmp_path / "demo" / "evaluation" / "report.json").is_file()
    assert (tmp_path / "demo" / "learning_curve.png").is_file()
    assert (tmp_path / "demo" / "device.yaml").is_file()
    # visual inspection: evaluation of the exported bundle, then the line sorted live
    metrics = json.loads((tmp_path / "demo" / "inspection-evaluation" / "metrics.json").read_text())
    assert metrics["image"]["overall"]["auroc"] > 0.9
    assert (tmp_path / "demo" / "inspection-evaluation" / "contact_sheet.png").stat().st_size > 0
    decisions = [line for line in out.splitlines() if "PLC receives> DECISION" in line]
    assert len(decisions) == 16 and any("REJECT" in d for d in decisions) and any("PASS" in d for d in decisions)
    summary = out.strip().splitlines()[-1]
    m = re.search(r"(\d+) decisions for (\d+) triggered parts: (\d+) verdicts match", summary)
    assert m, summary
    n, parts, right = map(int, m.groups())
    assert n == parts == 16 and right >= 12, summary
    assert (tmp_path / "demo" / "station.yaml").is_file()
