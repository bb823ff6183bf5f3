"""The README's main command, end to end, as a newcomer runs it (with short settings)."""
from tests.cli.test_cli import cli


def test_demo_trains_evaluates_and_streams_anomalies_over_mqtt(tmp_path):
    r = cli("demo", "--out", tmp_path / "demo", "--epochs", "40", "--live-seconds", "24", "--speed", "4", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "[3] bundle verified" in out and "false alarms" in out
    assert "plant subscriber> STATUS" in out and "online" in out
    assert "plant subscriber> ANOMALY raised" in out
    summary = out.strip().splitlines()[-1]
    assert "the subscriber received" in summary and "received 0" not in summary
    assert (tmp_path / "demo" / "evaluation" / "report.json").is_file()
    assert (tmp_path / "demo" / "learning_curve.png").is_file()
    assert (tmp_path / "demo" / "device.yaml").is_file()
