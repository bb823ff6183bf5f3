"""The measurements behind ``device_footprint.py --json``: installed size in fresh venvs, and resident memory.

Sizes are on-disk (allocated blocks, as ``du`` counts them) in MB of 10**6 bytes. Resident
memory is VmRSS / VmHWM from /proc/PID/status (MiB of 2**20 bytes, as the kernel counts kB),
sampled every 0.1 s while the process does its work.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints" / "ci.txt"
PIP_QUIET = ["--quiet", "--disable-pip-version-check"]

DEVICE_CHECK = """
import importlib, importlib.util, json, sys
for m in ("factoryedge.runtimes.monitoring.program", "factoryedge.runtimes.inspection.station",
          "factoryedge.runtimes.sources.serial_source", "factoryedge.runtimes.sinks.mqtt",
          "factoryedge.runtimes.backends.onnxruntime"):
    importlib.import_module(m)
print(json.dumps({"torch_installed": importlib.util.find_spec("torch") is not None,
                  "torch_imported": "torch" in sys.modules, "cv2_installed": importlib.util.find_spec("cv2") is not None}))
"""


# ---------------------------------------------------------------------------------------- install size

def disk_bytes(path: Path, skip_pycache: bool = False) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        if skip_pycache and "__pycache__" in dirnames:
            dirnames.remove("__pycache__")
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_blocks * 512
    return total


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _top_level(site: Path) -> dict[str, int]:
    """Bytes per top-level name, with ``numpy.libs`` counted under ``numpy``; dist-info folders left out."""
    sizes: dict[str, int] = {}
    for p in site.iterdir():
        if p.name.endswith(".dist-info") or p.name == "__pycache__":
            continue
        name = p.name.removesuffix(".libs").removesuffix(".py")
        sizes[name] = sizes.get(name, 0) + (disk_bytes(p) if p.is_dir() else p.lstat().st_blocks * 512)
    return sizes


def build_wheel(tmp: Path) -> Path:
    """The project's wheel, built from a copy of the working tree (tracked and untracked, not ignored files).

    Building from a copy keeps ``build/`` and ``*.egg-info`` out of the repository, and a stale
    ``build/`` there out of the wheel.
    """
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    src = tmp / "src"
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", *PIP_QUIET, "--no-deps", "-w", str(tmp / "wheels"), str(src)],
                   check=True, capture_output=True)
    return next((tmp / "wheels").glob("factoryedge-*.whl"))


class VenvInstall:
    """``pip install -c constraints/ci.txt WHEEL[extra]`` into a fresh venv, started in the background."""

    def __init__(self, tmp: Path, wheel: Path, extra: str):
        self.extra, self.venv = extra, tmp / f"venv-{extra}"
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
        self.site = site_packages(self.venv)
        self.bare = disk_bytes(self.site)
        self.bare_no_pyc = disk_bytes(self.site, skip_pycache=True)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([str(self.venv / "bin" / "python"), "-m", "pip", "install", *PIP_QUIET,
                                      "-c", str(CONSTRAINTS), f"{wheel}[{extra}]"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def result(self) -> dict:
        out, _ = self.proc.communicate()
        if self.proc.returncode:
            raise SystemExit(f"pip install .[{self.extra}] failed:\n{out[-3000:]}")
        seconds = time.perf_counter() - self.t0
        total = disk_bytes(self.site)
        bare = {"pip", "setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth"}
        top = sorted(((k, v) for k, v in _top_level(self.site).items() if k not in bare), key=lambda kv: -kv[1])
        return {"mb": (total - self.bare) / 1e6, "bare_venv_mb": self.bare / 1e6,
                "mb_without_pycache": (disk_bytes(self.site, skip_pycache=True) - self.bare_no_pyc) / 1e6,
                "install_s": round(seconds, 1),
                "largest_mb": {name: round(b / 1e6, 1) for name, b in top[:8]}}

    def check_device(self) -> dict:
        """No torch in the venv, and the device programs and their production plugins import."""
        r = subprocess.run([str(self.venv / "bin" / "python"), "-c", DEVICE_CHECK], capture_output=True, text=True,
                           cwd=self.venv)
        if r.returncode:
            return {"imports_ok": False, "error": r.stderr.strip().splitlines()[-1]}
        return {"imports_ok": True, **json.loads(r.stdout)}


# ---------------------------------------------------------------------------------------- resident memory

def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a live process in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024
    return out


def mapped_libraries(pid: int, *needles: str) -> list[str]:
    """Shared libraries mapped into ``pid`` whose path contains one of ``needles``."""
    libs = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if any(n in path for n in needles):
                libs.add(Path(path).name)
    return sorted(libs)


def sample_memory(pid: int, seconds: float, interval: float = 0.1) -> dict[str, float]:
    """Sample VmRSS for ``seconds``: peak (VmHWM at the end), steady (median of the second half), last."""
    rss = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rss.append(proc_status(pid)["VmRSS"])
        time.sleep(interval)
    hwm = proc_status(pid)["VmHWM"]
    half = sorted(rss[len(rss) // 2 :])
    return {"peak_mib": round(hwm, 1), "steady_mib": round(half[len(half) // 2], 1), "last_mib": round(rss[-1], 1),
            "samples": len(rss)}


class Subscriber:
    """One paho client in this process, counting what the device publishes under ``factoryedge/v1/#``.

    Only a subscriber lives here; the publisher is the device process (see DESIGN.md's trap).
    """

    def __init__(self, port: int, protocol: str):
        import paho.mqtt.client as mqtt

        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.windows = 0
        proto = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fe-footprint-{os.getpid()}",
                                  protocol=proto)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("factoryedge/v1/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _client, _userdata, msg):
        kind = msg.topic.split("/", 5)[-1]
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if kind == "telemetry/score":
                self.windows += int(json.loads(msg.payload).get("n_windows", 0))

    def count(self, kind: str) -> int:
        with self.lock:
            return self.counts.get(kind, 0)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise SystemExit(f"the process ended (exit {proc.returncode}) before {what}:\n{tail}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no {what} within {timeout:g} s")
        time.sleep(0.05)


def device_memory(profile: Path, sub: Subscriber, progress: str, seconds: float, tmp: Path) -> dict:
    """``factoryedge run PROFILE`` as a real process: memory while ``progress`` messages keep arriving."""
    log = tmp / f"{profile.stem}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "factoryedge", "run", str(profile)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp)
    try:
        wait_for(lambda: sub.count(progress) >= 1, 120, f"a {progress} message", proc, log)
        before, windows_before = sub.count(progress), sub.windows
        mem = sample_memory(proc.pid, seconds)
        mem["torch_libraries_mapped"] = mapped_libraries(proc.pid, "torch")
        mem[f"{progress}_messages_while_sampled"] = sub.count(progress) - before
        if progress == "telemetry/score":
            mem["windows_scored_while_sampled"] = sub.windows - windows_before
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return mem


BARE = """
import sys, numpy, onnxruntime as ort
opts = ort.SessionOptions()
opts.log_severity_level = 3
s = ort.InferenceSession(sys.argv[1], sess_options=opts, providers=["CPUExecutionProvider"])
shape = [int(n) for n in sys.argv[2].split(",")] if len(sys.argv) > 2 else [
    d if isinstance(d, int) else 1 for d in s.get_inputs()[0].shape]
for _ in range(3):
    s.run(None, {s.get_inputs()[0].name: numpy.zeros(shape, dtype=numpy.float32)})
print("ready", flush=True)
sys.stdin.read()
"""


def bare_memory(model: Path, shape: tuple[int, ...] | None = None, seconds: float = 1.0) -> dict:
    """A bare interpreter importing numpy and onnxruntime, holding one CPU session of ``model`` after three runs.

    ``shape``: the input's shape (default: the model's, with 1 for each symbolic dimension).
    """
    extra = [",".join(map(str, shape))] if shape else []
    proc = subprocess.Popen([sys.executable, "-c", BARE, str(model), *extra], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("the bare onnxruntime probe failed")
        return sample_memory(proc.pid, seconds)
    finally:
        proc.stdin.close()
        proc.wait(30)
