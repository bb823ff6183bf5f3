"""What each device program loads: project modules, their lines, and the import time.

    python benchmarks/device_footprint.py

For each program, a fresh interpreter imports the program module and the plugin modules a
production profile opens (serial sensor or camera + trigger, MQTT sink, ONNX Runtime
backend), then reports the ``factoryedge`` modules loaded, the lines a reader opens to follow
that path (the sum of those files), and the wall time of the imports. Both programs are
measured side by side in one run. Third-party libraries (numpy, pydantic, onnxruntime, paho)
are imported by the same path and are included in the time, not in the counts.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROGRAMS = {
    "condition monitoring (serial -> outbox)": [
        "factoryedge.runtimes.monitoring.program", "factoryedge.runtimes.sources.serial_source",
        "factoryedge.runtimes.sinks.mqtt", "factoryedge.runtimes.backends.onnxruntime",
    ],
    "inspection (camera + trigger -> decision)": [
        "factoryedge.runtimes.inspection.station", "factoryedge.runtimes.cameras",
        "factoryedge.runtimes.inspection.triggers", "factoryedge.runtimes.sinks.mqtt",
        "factoryedge.runtimes.backends.onnxruntime",
    ],
}
# The camera package's plugin modules are loaded by scheme; take every one a profile may name.
CAMERA_SCHEMES = ("csi", "v4l2", "rtsp", "file", "dir")

PROBE = textwrap.dedent("""
    import importlib, json, sys, time
    t = time.perf_counter()
    for name in sys.argv[1:]:
        importlib.import_module(name)
    from factoryedge.runtimes import registry
    if "factoryedge.runtimes.cameras" in sys.argv[1:]:
        for scheme in {schemes!r}:
            registry.resolve("camera", scheme + "://x")
    elapsed = time.perf_counter() - t
    files = {{}}
    for name, mod in sys.modules.items():
        path = getattr(mod, "__file__", None)
        if name.startswith("factoryedge") and path and path.endswith(".py"):
            with open(path, encoding="utf-8") as f:
                files[name] = sum(1 for _ in f)
    print(json.dumps({{"seconds": elapsed, "files": files}}))
""").format(schemes=CAMERA_SCHEMES)


def measure(modules: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    print(f"{'program':<44}{'modules':>8}{'lines':>8}{'import s':>10}  largest modules")
    for label, modules in PROGRAMS.items():
        r = measure(modules)
        files = r["files"]
        big = ", ".join(f"{n.removeprefix('factoryedge.')} {c}" for n, c in sorted(files.items(), key=lambda kv: -kv[1])[:3])
        print(f"{label:<44}{len(files):>8}{sum(files.values()):>8}{r['seconds']:>10.2f}  {big}")


if __name__ == "__main__":
    main()
