"""What each device program loads and runs: project modules, their lines, and the import time.

    python benchmarks/device_footprint.py

Two views, both programs side by side in one run:
- **loaded**: a fresh interpreter imports the program and the plugin modules a production
  profile opens (serial sensor or every camera kind + trigger, MQTT sink, ONNX Runtime
  backend); it reports the ``factoryedge`` modules loaded, their lines, and the import time
  (numpy, pydantic, onnxruntime and paho are in the time, not the counts).
- **followed** (condition monitoring): the files a reader opens to follow the program from
  its profile to an anomaly event in the outbox. A fresh interpreter traces (``sys.setprofile``,
  main thread) building the monitor from a profile and then its loop, while a simulated
  sensor node streams fe1 frames over a real pseudo-terminal and a local broker receives;
  the sensor node and broker (the far end of the wires) are left out.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = {
    "condition monitoring (serial -> outbox)": [
        "factoryedge.runtimes.monitoring.program", "factoryedge.runtimes.sources.serial_source",
        "factoryedge.runtimes.sinks.mqtt", "factoryedge.runtimes.backends.onnxruntime",
    ],
    "inspection (camera + trigger -> decision)": [
        "factoryedge.runtimes.inspection.station", "factoryedge.runtimes.triggers",
        "factoryedge.runtimes.sinks.mqtt", "factoryedge.runtimes.backends.onnxruntime",
        *(f"camera:{scheme}" for scheme in ("csi", "v4l2", "rtsp", "file", "dir")),
    ],
}

LOADED = textwrap.dedent("""
    import importlib, json, sys, time
    t = time.perf_counter()
    from factoryedge.runtimes import registry
    for name in sys.argv[1:]:
        if name.startswith("camera:"):
            registry.resolve("camera", name[7:] + "://x")
        else:
            importlib.import_module(name)
    elapsed = time.perf_counter() - t
    files = {}
    for name, mod in sys.modules.items():
        path = getattr(mod, "__file__", None)
        if name.startswith("factoryedge") and path and path.endswith(".py"):
            with open(path, encoding="utf-8") as f:
                files[name] = sum(1 for _ in f)
    print(json.dumps({"seconds": elapsed, "files": files}))
""")

FOLLOWED = textwrap.dedent("""
    import json, logging, sys, tempfile, threading, time
    from pathlib import Path
    import numpy as np, yaml
    root = Path(sys.argv[1])
    sys.path.insert(0, str(root))
    from tests.support.tiny_bundle import tiny_bundle
    from factoryedge.data.recording import Recording
    from factoryedge.runtimes.devkit.local_broker import LocalBroker
    from factoryedge.runtimes.devkit.sensor_node import PtyEndpoint, SensorStreamer
    from factoryedge.runtimes.monitoring.program import ConditionMonitor
    from factoryedge.runtimes.profile import load_profile
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp())
    bundle = tiny_bundle(tmp / "b")  # score = mean square of the features; the loud signal below exceeds it
    broker = LocalBroker().start()
    pty = PtyEndpoint(link=tmp / "vib0")
    profile = tmp / "device.yaml"
    profile.write_text(yaml.safe_dump({
        "identity": {"site": "s", "line": "l", "machine": "m", "device_id": "d"},
        "sensor": {"uri": f"serial://{tmp / 'vib0'}?rate=12000&format=fe1&channels=1&scale=0.00048828125"},
        "model": {"bundle": str(bundle.path), "backend": "onnxruntime"},
        "scoring": {"k": 1, "n": 1, "baseline": {"mode": "off"}},
        "mqtt": {"uri": broker.uri, "outbox": str(tmp / "o.sqlite"), "options": {"protocol": broker.protocol}},
    }))
    ours = tuple(str(root / d) for d in ("sdk", "runtimes", "exporters"))
    seen = {"setup": set(), "loop": set()}
    phase = "setup"
    def hook(frame, event, arg):
        f = frame.f_code.co_filename
        if event == "call" and f.startswith(ours) and "/devkit/" not in f:
            seen[phase].add(f)
    sys.setprofile(hook)
    monitor = ConditionMonitor(load_profile(profile))
    sys.setprofile(None)
    phase = "loop"
    def feed():
        while not monitor.source.is_open:  # the loop opens the port
            time.sleep(0.01)
        signal = np.random.default_rng(0).normal(0, 3.0, size=(48000, 1)).astype(np.float32)
        SensorStreamer(Recording(signal, 12000.0, ("ch0",), "loud", "fault"), pty, speed=1.0).run()
        monitor.stop()
    threading.Thread(target=feed, daemon=True).start()
    sys.setprofile(hook)
    try:
        monitor.serve()
    finally:
        sys.setprofile(None)
    monitor.close()
    broker.stop()
    lines = {f: sum(1 for _ in open(f)) for f in seen["setup"] | seen["loop"]}
    print(json.dumps({"events": monitor.counters.events, "lines": {str(Path(f).relative_to(root)): n for f, n in lines.items()},
                      "loop": sorted(str(Path(f).relative_to(root)) for f in seen["loop"])}))
""")


def run_probe(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"probe failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"{'loaded by':<44}{'modules':>8}{'lines':>8}{'import s':>10}  largest modules")
    for label, modules in PROGRAMS.items():
        r = run_probe(LOADED, *modules)
        files = r["files"]
        big = ", ".join(f"{n.removeprefix('factoryedge.')} {c}" for n, c in sorted(files.items(), key=lambda kv: -kv[1])[:3])
        print(f"{label:<44}{len(files):>8}{sum(files.values()):>8}{r['seconds']:>10.2f}  {big}")
    r = run_probe(FOLLOWED, str(ROOT))
    lines, loop = r["lines"], r["loop"]
    print(f"\nfollowed: condition monitoring, profile -> anomaly event in the outbox ({r['events']} event(s) raised)")
    print(f"  whole path: {len(lines)} files, {sum(lines.values())} lines; the loop alone (block -> outbox): "
          f"{len(loop)} files, {sum(lines[f] for f in loop)} lines")
    for f, n in sorted(lines.items(), key=lambda kv: -kv[1]):
        print(f"  {n:6d}  {f}{'' if f in loop else '  (set-up only)'}")


if __name__ == "__main__":
    main()
