"""Every benchmark, one after the other: ``python benchmarks/run_all.py`` (or ``make bench``)."""
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).parent

for name in ("device_footprint.py", "feature_speed.py", "serial_parse.py", "runtime_throughput.py",
             "inspection_latency.py"):
    print(f"\n=== {name}", flush=True)
    sys.argv = [name]
    runpy.run_path(str(HERE / name), run_name="__main__")
