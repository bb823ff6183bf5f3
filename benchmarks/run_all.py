"""Every benchmark in one command: ``python benchmarks/run_all.py [--json PATH]`` (or ``make bench``).

Each benchmark runs in a fresh interpreter (so one's threads, caches and memory do not
colour the next), writes its entries in the format of ``report.py``, and this script
merges them, prints one table and writes the merged JSON. Ratios inside an entry are
measured side by side in that benchmark's own run. A benchmark that fails is reported by
name with the end of its output, and the command exits 1; the others still run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import table, write  # benchmarks/report.py: this folder is on sys.path when run as a script

HERE = Path(__file__).parent
# script -> the benchmark names it writes
SUITE = {
    "feature_speed.py": ["features_vs_fft_bound"],
    "runtime_throughput.py": ["runtime_vs_features_plus_ort"],
    "plant_outputs.py": ["plant_outputs_on_vs_off"],
    "image_runtime.py": ["image_runtime_vs_bare_ort"],
    "messaging.py": ["outbox_vs_paho_qos1", "sensor_to_subscriber_p99_ms"],
    "inspection_latency.py": ["trigger_to_decision_p99_ms"],
    "serial_parse.py": ["serial_fe1_x_realtime", "serial_csv_x_realtime"],
    "device_footprint.py": ["device_install_mb", "runtime_rss_mb"],
}


def machine() -> dict:
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()} {platform.machine()}"}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="write the merged results here")
    ap.add_argument("--only", nargs="*", help="run only these scripts (e.g. feature_speed.py)")
    args = ap.parse_args()
    results: dict[str, dict] = {}
    failed: list[str] = []
    t_all = time.perf_counter()
    for script, names in SUITE.items():
        if args.only and script not in args.only:
            continue
        print(f"\n=== {script}", flush=True)
        with tempfile.TemporaryDirectory(prefix="fe-bench-") as tmp:
            out = Path(tmp) / "result.json"
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, str(HERE / script), "--json", str(out)], cwd=HERE.parent,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            print(proc.stdout, end="", flush=True)
            got = json.loads(out.read_text()) if out.exists() else {}
        missing = [n for n in names if n not in got]
        if proc.returncode or missing:
            failed.append(script)
            print(f"!!! {script} failed (exit {proc.returncode}); missing {missing}", flush=True)
        for name, e in got.items():
            e.setdefault("context", {}).update(seconds=round(time.perf_counter() - t, 1), script=script,
                                               machine=machine())
            results[name] = e
    print(f"\n=== all benchmarks in {time.perf_counter() - t_all:.0f} s on {machine()['cpu']}, "
          f"{machine()['cores']} cores\n")
    print(table(results))
    write(args.json, results)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
