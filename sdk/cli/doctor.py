"""``factoryedge doctor``: what this machine offers the device runtime, and what is missing.

Reports Python and factoryedge, TensorRT, CUDA through pycuda (GPU, compute capability, DLA
cores), the Jetson model and L4T release, ONNX Runtime providers, OpenCV and whether it was
built with GStreamer (needed for CSI cameras), serial ports, broker reachability and
temperatures. Every probe is guarded: a broken library shows up as a reason, never as a crash,
and the exit code is 0. Imports no torch.
"""
from __future__ import annotations

import argparse
import glob
import json
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default=None, help="check that this MQTT broker accepts TCP connections: mqtt://host:port")
    p.add_argument("--bundle", type=Path, default=None, help="also say which backend 'auto' would pick for this bundle")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _guarded(probe, *args) -> dict:
    try:
        return probe(*args)
    except Exception as e:  # a diagnostic must survive any broken or half-installed library
        return {"available": False, "reason": f"{type(e).__name__}: {e}"}


def _python() -> dict:
    import factoryedge

    return {"version": platform.python_version(), "executable": sys.executable, "machine": platform.machine(),
            "factoryedge": factoryedge.__version__}


def _tensorrt() -> dict:
    from factoryedge.errors import BackendUnavailableError
    from factoryedge.runtimes.backends.tensorrt import import_tensorrt

    try:
        trt = import_tensorrt("the TensorRT backend")
    except BackendUnavailableError as e:
        return {"available": False, "reason": str(e)}
    return {"available": True, "version": trt.__version__, "module": getattr(trt, "__file__", None)}


def _cuda(with_builder: bool) -> dict:
    from factoryedge.errors import BackendUnavailableError
    from factoryedge.runtimes.backends.tensorrt import import_pycuda, import_tensorrt, primary_context, trt_logger

    try:
        cuda = import_pycuda("the TensorRT backend")
    except BackendUnavailableError as e:
        return {"available": False, "reason": str(e)}
    import pycuda

    out = {"pycuda": getattr(pycuda, "VERSION_TEXT", "?")}
    try:
        cuda.init()
        driver = cuda.get_driver_version()
        out["driver_cuda"] = f"{driver // 1000}.{driver % 1000 // 10}"
        out["pycuda_built_for_cuda"] = ".".join(str(v) for v in cuda.get_version())
        count = cuda.Device.count()
    except cuda.Error as e:
        return {**out, "available": False, "reason": f"CUDA is not usable: {e}"}
    gpus = []
    for i in range(count):
        dev = cuda.Device(i)
        major, minor = dev.compute_capability()
        gpu = {"name": dev.name(), "compute_capability": f"{major}.{minor}", "memory_mb": dev.total_memory() >> 20,
               "integrated": bool(dev.get_attribute(cuda.device_attribute.INTEGRATED))}
        if with_builder and i == 0:
            # DLA cores are only visible through a TensorRT builder, which needs a context.
            trt = import_tensorrt()
            with primary_context(cuda, dev):
                builder = trt.Builder(trt_logger(trt))
                gpu["dla_cores"] = int(builder.num_DLA_cores)
                gpu["fast_fp16"] = bool(builder.platform_has_fast_fp16)  # deprecated from TensorRT 10.5
                del builder
        gpus.append(gpu)
    return {**out, "available": count > 0, "gpus": gpus, **({} if count else {"reason": "no CUDA GPU visible"})}


def _jetson() -> dict:
    model = Path("/proc/device-tree/model")
    release = Path("/etc/nv_tegra_release")
    if not model.is_file() and not release.is_file():
        return {"is_jetson": False}
    out = {"is_jetson": True}
    if model.is_file():
        out["model"] = model.read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
    if release.is_file():
        first = release.read_text(errors="replace").splitlines()[0]  # "# R36 (release), REVISION: 4.0, ..."
        parts = first.replace("#", "").split(",")
        major = parts[0].split()[0] if parts and parts[0].split() else "?"
        rev = parts[1].split(":")[-1].strip() if len(parts) > 1 else "?"
        out["l4t"] = f"{major}.{rev}"
    if shutil.which("nvpmodel"):
        q = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5)
        lines = [ln for ln in q.stdout.splitlines() if ln.strip()]
        out["power_mode"] = lines[0].split(":", 1)[-1].strip() if lines else q.stderr.strip()[:200]
    return out


def _onnxruntime() -> dict:
    import onnxruntime

    return {"available": True, "version": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}


def _opencv() -> dict:
    try:
        import cv2
    except ImportError as e:
        return {"available": False, "reason": f"{e} (install factoryedge[camera]; on a Jetson use JetPack's OpenCV)"}
    lines = [ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith("GStreamer:")]
    return {"available": True, "version": cv2.__version__,
            "gstreamer": bool(lines) and "YES" in lines[0].upper(),
            "gstreamer_line": lines[0].strip() if lines else "GStreamer: not listed in cv2.getBuildInformation()"}


def _serial() -> dict:
    try:
        from serial.tools import list_ports
    except ImportError as e:
        return {"available": False, "reason": f"{e} (install factoryedge[device])"}
    ports = [{"device": p.device, "description": p.description, "hwid": p.hwid} for p in list_ports.comports()]
    return {"available": True, "ports": ports}


def _broker(uri: str | None) -> dict:
    if not uri:
        return {"checked": False, "reason": "not checked; give --broker mqtt://host:port"}
    parts = urlsplit(uri)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return {"checked": False, "uri": uri,
                "reason": f"{uri!r} is not a broker URI like mqtt://host:1883 or mqtts://host:8883"}
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    started = time.monotonic()
    try:
        with socket.create_connection((parts.hostname, port), timeout=3.0):
            pass
    except OSError as e:
        return {"checked": True, "uri": uri, "reachable": False, "reason": f"TCP {parts.hostname}:{port}: {e}"}
    return {"checked": True, "uri": uri, "reachable": True, "connect_ms": round((time.monotonic() - started) * 1000, 1)}


def _temperatures() -> dict:
    zones = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        try:
            kind = Path(zone, "type").read_text().strip()
            zones[kind] = int(Path(zone, "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue  # some zones (e.g. disabled sensors) refuse reads
    cpu = next((v for k, v in zones.items() if "cpu" in k.lower() or k.startswith("x86_pkg")), None)
    return {"cpu_c": cpu, "zones": zones}


def _backend(bundle_path: Path | None) -> dict:
    if bundle_path is None:
        return {"checked": False, "reason": "give --bundle PATH to see which backend 'auto' picks"}
    from factoryedge.bundle import load_bundle
    from factoryedge.runtimes.backends.select import describe_choice

    name, reason = describe_choice(load_bundle(bundle_path), "auto")
    return {"checked": True, "backend": name, "reason": reason}


def collect(broker: str | None = None, bundle: Path | None = None) -> dict:
    """The whole report as a dict; never raises."""
    report = {"python": _guarded(_python), "tensorrt": _guarded(_tensorrt)}
    report["cuda"] = _guarded(_cuda, report["tensorrt"].get("available", False))
    report.update(jetson=_guarded(_jetson), onnxruntime=_guarded(_onnxruntime), opencv=_guarded(_opencv),
                  serial=_guarded(_serial), broker=_guarded(_broker, broker), temperature=_guarded(_temperatures),
                  backend=_guarded(_backend, bundle))
    return report


def _text(r: dict) -> str:
    def why(section: dict) -> str:
        return section.get("reason", "unavailable")

    lines = [f"python       {r['python'].get('version', '?')} ({r['python'].get('executable', '?')}), "
             f"factoryedge {r['python'].get('factoryedge', '?')}"]
    t = r["tensorrt"]
    lines.append(f"tensorrt     {t['version'] if t.get('available') else 'NO: ' + why(t)}")
    c = r["cuda"]
    if c.get("available"):
        lines.append(f"cuda         driver {c.get('driver_cuda')}, pycuda {c.get('pycuda')}")
        for g in c.get("gpus", []):
            extra = f", DLA cores {g['dla_cores']}" if "dla_cores" in g else ""
            lines.append(f"gpu          {g['name']} (compute capability {g['compute_capability']}, {g['memory_mb']} MB"
                         f"{', integrated' if g['integrated'] else ''}{extra})")
    else:
        lines.append(f"cuda         NO: {why(c)}")
    j = r["jetson"]
    lines.append(f"jetson       {j.get('model', '?')}, L4T {j.get('l4t', '?')}, power mode {j.get('power_mode', '?')}"
                 if j.get("is_jetson") else f"jetson       no{'' if 'reason' not in j else ': ' + why(j)}")
    o = r["onnxruntime"]
    lines.append(f"onnxruntime  {o['version']} {o['providers']}" if o.get("available") else f"onnxruntime  NO: {why(o)}")
    cv = r["opencv"]
    lines.append(f"opencv       {cv['version']}, GStreamer {'yes' if cv['gstreamer'] else 'NO'}"
                 if cv.get("available") else f"opencv       NO: {why(cv)}")
    s = r["serial"]
    ports = ", ".join(f"{p['device']} ({p['description']})" for p in s.get("ports", [])) or "none"
    lines.append(f"serial       {ports}" if s.get("available") else f"serial       NO: {why(s)}")
    b = r["broker"]
    lines.append(f"broker       {b.get('uri')} reachable in {b['connect_ms']} ms" if b.get("reachable")
                 else f"broker       {'UNREACHABLE: ' if b.get('checked') else ''}{why(b)}")
    temp = r["temperature"]
    lines.append(f"temperature  CPU {temp['cpu_c']:.1f} C" if temp.get("cpu_c") is not None
                 else f"temperature  {temp.get('reason', 'no CPU thermal zone found')}")
    be = r["backend"]
    lines.append(f"backend      auto -> {be['backend']} ({be['reason']})" if be.get("checked") else f"backend      {why(be)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = collect(args.broker, args.bundle)
    if not args.json:
        try:
            print(_text(report))
            return 0
        except (KeyError, TypeError, ValueError):  # an odd probe result: the JSON still says everything
            pass
    print(json.dumps(report, indent=2, default=str))
    return 0
