"""``factoryedge doctor`` and ``build-engine`` as a user meets them: real subprocesses, no torch."""
import importlib.util
import json
import socket
import subprocess
import sys

import pytest

import factoryedge
from tests.support.tiny_bundle import tiny_bundle

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "factoryedge", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def without_torch(*args):
    """Run the CLI in a fresh interpreter where importing torch fails."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from factoryedge.cli import main\n"
            f"sys.exit(main({[str(a) for a in args]!r}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_doctor_json_reports_this_machine(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        r = cli("doctor", "--json", "--broker", f"mqtt://127.0.0.1:{port}", "--bundle", tiny_bundle(tmp_path / "b").path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["python"]["factoryedge"] == factoryedge.__version__
    assert rep["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert "CPUExecutionProvider" in rep["onnxruntime"]["providers"]
    assert rep["broker"] == {"checked": True, "uri": f"mqtt://127.0.0.1:{port}", "reachable": True,
                             "connect_ms": rep["broker"]["connect_ms"]}
    for section in ("cuda", "jetson", "opencv", "serial", "temperature"):
        assert section in rep and "Traceback" not in json.dumps(rep[section])
    if rep["opencv"].get("available"):
        assert isinstance(rep["opencv"]["gstreamer"], bool)
    assert rep["backend"]["checked"] and rep["backend"]["backend"] in ("onnxruntime", "tensorrt")
    if not HAVE_TENSORRT:
        assert rep["tensorrt"]["available"] is False
        assert "'tensorrt'" in rep["tensorrt"]["reason"] and "JetPack" in rep["tensorrt"]["reason"]
        assert rep["backend"]["backend"] == "onnxruntime" and "TensorRT not used" in rep["backend"]["reason"]


def test_doctor_reports_an_unreachable_broker_and_still_exits_0():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("doctor", "--json", "--broker", f"mqtt://127.0.0.1:{port}")
    assert r.returncode == 0
    broker = json.loads(r.stdout)["broker"]
    assert broker["checked"] and broker["reachable"] is False and f"127.0.0.1:{port}" in broker["reason"]
    bad = json.loads(cli("doctor", "--json", "--broker", "http://x").stdout)["broker"]
    assert bad["checked"] is False and "not a broker URI" in bad["reason"]


def test_doctor_text_runs_without_torch():
    r = without_torch("doctor")
    assert r.returncode == 0, r.stderr
    for label in ("python", "tensorrt", "cuda", "onnxruntime", "opencv", "serial", "broker", "temperature"):
        assert any(line.startswith(label) for line in r.stdout.splitlines()), r.stdout


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here: build-engine would build")
def test_build_engine_without_tensorrt_is_a_one_line_error(tmp_path):
    b = tiny_bundle(tmp_path / "b")
    r = without_torch("build-engine", b.path, "--precision", "fp16")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("factoryedge build-engine: error:")
    assert "'tensorrt'" in lines[0] and "JetPack" in lines[0] and "factoryedge[jetson]" in lines[0]


def test_build_engine_refuses_a_missing_bundle_in_one_line(tmp_path):
    r = cli("build-engine", tmp_path / "nope")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr
