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

With ``--json PATH`` (``python benchmarks/device_footprint.py --json out.json [--quick]``) it
also measures, in the result format of ``report.py``:
- ``device_install_mb``: the size on disk of what ``pip install .[device]`` puts into a fresh
  venv's site-packages (a wheel built once from a copy of the working tree, ``-c
  constraints/ci.txt``, the local pip cache, pip's default byte-compiling), minus the bare
  venv's own site-packages (pip, setuptools); against ``.[train]`` installed the same way
  (skipped by ``--quick``). The device venv is checked: no torch, and the device programs import.
- ``runtime_rss_mb``: resident memory of ``factoryedge run PROFILE`` as a real process, read
  from /proc/PID/status while it scores (value: VmHWM, the peak; run by this interpreter, whose
  extra packages the program never imports: /proc/PID/maps shows no torch library): a 3-axis
  25.6 kHz vibration stream replayed in real time (``replay://``) to a local broker; against
  a bare interpreter that imports numpy and onnxruntime and holds a session of the same model.
  An inspection station (``file://`` video, periodic trigger, the image bundle of
  ``bench_bundles.py``, with a bare session of its model at its input size) and the import
  times go in its context.
Goals (300 MB installed, 250 MB resident) are absolute, so each entry's ``goal`` is the
goal in MB divided by its reference (``goal_met`` compares the ratio), or the MB figure
itself when there is no reference.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import footprint_probes as probes  # benchmarks/: this folder is on sys.path when run as a script
from report import entry, table, write

ROOT = Path(__file__).resolve().parents[1]
INSTALL_GOAL_MB, RSS_GOAL_MIB = 300.0, 250.0
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


def loaded_and_followed() -> dict[str, float]:
    """The original report (modules, lines, import time); returns each program's import time in seconds."""
    seconds = {}
    print(f"{'loaded by':<44}{'modules':>8}{'lines':>8}{'import s':>10}  largest modules")
    for label, modules in PROGRAMS.items():
        r = run_probe(LOADED, *modules)
        files = r["files"]
        seconds[label] = round(r["seconds"], 3)
        big = ", ".join(f"{n.removeprefix('factoryedge.')} {c}" for n, c in sorted(files.items(), key=lambda kv: -kv[1])[:3])
        print(f"{label:<44}{len(files):>8}{sum(files.values()):>8}{r['seconds']:>10.2f}  {big}")
    r = run_probe(FOLLOWED, str(ROOT))
    lines, loop = r["lines"], r["loop"]
    print(f"\nfollowed: condition monitoring, profile -> anomaly event in the outbox ({r['events']} event(s) raised)")
    print(f"  whole path: {len(lines)} files, {sum(lines.values())} lines; the loop alone (block -> outbox): "
          f"{len(loop)} files, {sum(lines[f] for f in loop)} lines")
    for f, n in sorted(lines.items(), key=lambda kv: -kv[1]):
        print(f"  {n:6d}  {f}{'' if f in loop else '  (set-up only)'}")
    return seconds


def start_installs(tmp: Path, quick: bool) -> tuple:
    """The device and (unless ``quick``) train installs, side by side in two fresh venvs, in the background."""
    wheel = probes.build_wheel(tmp)
    return probes.VenvInstall(tmp, wheel, "device"), None if quick else probes.VenvInstall(tmp, wheel, "train")


def install_sizes(device, train) -> dict:
    d = device.result()
    d["check"] = device.check_device()
    t = train.result() if train else None
    print(f"\ninstalled site-packages (MB, minus the bare venv's {d['bare_venv_mb']:.1f} MB of pip/setuptools):")
    for label, r in (("pip install .[device]", d), ("pip install .[train]", t)):
        if r:
            print(f"  {label:<24}{r['mb']:8.1f} MB ({r['mb_without_pycache']:.1f} without __pycache__) in "
                  f"{r['install_s']:.0f} s; largest: " + ", ".join(f"{k} {v:g}" for k, v in r["largest_mb"].items()))
    print(f"  device venv check: {d['check']}")
    ref = t["mb"] if t else None
    return entry(d["mb"], "MB", "pip install .[train] (torch 2.13.0 CPU) the same way" if t else
                 "none (--quick skips the train install)", ref, d["mb"] / ref if ref else None,
                 higher_is_better=False, goal=INSTALL_GOAL_MB, goal_on="value", device=d, train=t,
                 measured="allocated blocks of site-packages after the install minus those of the bare venv "
                          "(its pip and setuptools); pip's default byte-compiling included")


def vibration_profile(tmp: Path, broker) -> tuple[Path, Path]:
    """A 3-axis 25.6 kHz bundle and a replayed recording, as a production vibration profile scores them."""
    import numpy as np
    import yaml

    sys.path.insert(0, str(ROOT))
    from factoryedge.data.loaders import save_npz
    from factoryedge.data.recording import Recording
    from factoryedge.data.simulator import simulate_bearing
    from tests.support.tiny_bundle import tiny_bundle

    fs = 25600.0
    bundle = tiny_bundle(tmp / "vib-bundle", sample_rate=fs, threshold=1e9, channels=("x", "y", "z"))
    rec = simulate_bearing(10.0, sample_rate=fs, rpm=1797.0, seed=3)
    signal = np.repeat(rec.signal, 3, axis=1) * np.array([1.0, 0.8, 0.6])
    npz = save_npz(Recording(signal, fs, ("x", "y", "z"), "footprint", "normal"), tmp / "run.npz")
    profile = tmp / "vibration.yaml"
    profile.write_text(yaml.safe_dump({
        "identity": {"site": "s", "line": "l", "machine": "pump", "device_id": "d"},
        "sensor": {"uri": f"replay://{npz}?speed=1.0&loop=true&block=512"},
        "model": {"bundle": str(bundle.path), "backend": "onnxruntime"},
        "scoring": {"baseline": {"mode": "off"}},
        "mqtt": {"uri": broker.uri, "outbox": str(tmp / "vib-outbox.sqlite"), "options": {"protocol": broker.protocol},
                 "telemetry_interval_s": 1, "health_interval_s": 5},
    }))
    return profile, bundle.path / "model.onnx"


def inspection_profile(tmp: Path, broker) -> tuple[Path, str, Path, tuple[int, ...]]:
    """An inspection station: the image bundle of bench_bundles.py, a file:// video, a periodic trigger."""
    import cv2
    import yaml
    from bench_bundles import image_bundle, magnetic_tile_images

    bundle, what = image_bundle(tmp / "img-bundle", train=False)
    video = tmp / "parts.avi"
    files = magnetic_tile_images()[::8]
    if "PatchCore" in what and files:
        size = (448, 320)  # (w, h): the tiles vary in size; a video needs one
        frames = [cv2.resize(cv2.imread(str(f)), size, interpolation=cv2.INTER_AREA) for f in files]
    else:
        from tests.support.image_bundle import uniform_part

        size, frames = (128, 96), [uniform_part(seed=i, defect=i % 7 == 3) for i in range(30)]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, size)
    for f in frames:
        writer.write(f)
    writer.release()
    profile = tmp / "inspection.yaml"
    profile.write_text(yaml.safe_dump({
        "kind": "inspection",
        "identity": {"site": "s", "line": "l", "machine": "sorter", "device_id": "d"},
        "inspection": {"camera": f"file://{video}?realtime=true&loop=true",
                       "trigger": "periodic://?period_ms=250&prefix=p-&count=1000000", "deadline_ms": 2000,
                       "frame_max_wait_ms": 500, "archive": {"dir": str(tmp / "rejects"), "max_items": 20}},
        "model": {"bundle": str(bundle), "backend": "onnxruntime"},
        "mqtt": {"uri": broker.uri, "outbox": str(tmp / "img-outbox.sqlite"), "options": {"protocol": broker.protocol},
                 "health_interval_s": 5},
    }))
    from factoryedge.bundle import load_bundle
    from factoryedge.features.image import ImagePreprocessor

    x = ImagePreprocessor(load_bundle(bundle).manifest.preprocessing)(frames[0][..., 0])  # the input each frame makes
    what = f"{what}; {len(frames)} frames of {size[0]}x{size[1]} in a looped FFV1 video, a trigger every 250 ms"
    return profile, what, bundle / "model.onnx", x.shape


def memory(tmp: Path, seconds: float, import_s: dict) -> dict:
    from factoryedge.runtimes.devkit.local_broker import LocalBroker

    broker = LocalBroker().start()
    try:
        sub = probes.Subscriber(broker.port, broker.protocol)
        vib_profile, vib_model = vibration_profile(tmp, broker)
        img_profile, img_what, img_model, img_shape = inspection_profile(tmp, broker)
        bare = probes.bare_memory(vib_model)
        bare_img = {**probes.bare_memory(img_model, img_shape), "input_shape": list(img_shape)}
        vib = probes.device_memory(vib_profile, sub, "telemetry/score", seconds, tmp)
        img = probes.device_memory(img_profile, sub, "decision", seconds, tmp)
        sub.close()
    finally:
        broker.stop()
    print(f"\nresident memory (MiB) over {seconds:g} s of work; peak = VmHWM, steady = median VmRSS of the second half:")
    for label, r in (("factoryedge run (vibration, replay 3x25.6 kHz)", vib), ("factoryedge run (inspection)", img),
                     ("bare python: numpy + onnxruntime session (vibration model)", bare),
                     (f"bare python: numpy + onnxruntime session (image model, {img_shape})", bare_img)):
        print(f"  {label:<66} peak {r['peak_mib']:7.1f}  steady {r['steady_mib']:7.1f}")
    print(f"  inspection: {img_what}")
    value, ref = vib["peak_mib"], bare["peak_mib"]
    return entry(value, "MiB", "bare python importing numpy + onnxruntime, holding a CPU session of the same model",
                 ref, value / ref, higher_is_better=False, goal=RSS_GOAL_MIB, goal_on="value",
                 measured="VmHWM of the vibration `factoryedge run` process (real subprocess, tiny 3-axis bundle, "
                          "replay:// at real time, local broker) after sampling VmRSS while it scores",
                 vibration=vib, inspection={**img, "setup": img_what, "bare_reference": bare_img}, bare_reference=bare,
                 import_s=import_s, interpreter=sys.executable)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="also measure install size and resident memory; write them here")
    ap.add_argument("--quick", action="store_true", help="skip the .[train] reference install (~2 min)")
    ap.add_argument("--seconds", type=float, default=8.0, help="sampling time per memory measurement")
    args = ap.parse_args()
    import_s = loaded_and_followed()
    if not args.json:
        return
    with tempfile.TemporaryDirectory(prefix="fe-footprint-") as tmp:
        # The installs run while memory is measured: resident memory does not depend on a busy CPU
        # the way the import times above (measured first, alone) do.
        installs = start_installs(Path(tmp), args.quick)
        rss = memory(Path(tmp), args.seconds, import_s)
        results = {"device_install_mb": install_sizes(*installs), "runtime_rss_mb": rss}
    print()
    print(table(results))
    write(args.json, results)


if __name__ == "__main__":
    main()
