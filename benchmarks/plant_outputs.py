"""Scoring throughput with the plant outputs on (operator page, /metrics, Sparkplug B) against off, side by side.

Run: ``python benchmarks/plant_outputs.py [--bundle DIR] [--batch 8] [--rounds 5] [--json PATH]``.
Without ``--bundle`` it trains the small dense 3-axis 25.6 kHz model of
``runtime_throughput.py`` first (about a minute). Two ConditionMonitors on the same bundle
score the same recording through ``process`` (the serial source's busy-time blocks), taking
turns round after round (best round each):
  - off: a profile without ``web`` or ``sparkplug`` (the programs feed no live state);
  - on: ``web`` (page and metrics) and ``sparkplug`` on: the live state is fed per batch, the
    web server answers, and for the whole timed round another process polls ``/api/state``
    (what the open page does) and scrapes ``/metrics`` every 0.25 s, four times as often
    as the page and far more often than Prometheus; the Sparkplug node sends DDATA on
    change every 0.25 s to a local broker.
``plant_outputs_on_vs_off`` is (windows/s on) / (windows/s off); the goal is >= 0.95.
On a 2-core machine the poller process competes for the same cores as the device, as a
browser on the device itself would. Prints rates and the ratio; asserts nothing.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from report import entry, write  # benchmarks/: this folder is on sys.path when run as a script
from runtime_throughput import _NoSource, feed, train_bundle

from factoryedge.bundle import load_bundle

POLL_S = 0.25
POLLER = r"""
import sys, time, urllib.request
base, period = sys.argv[1], float(sys.argv[2])
n = 0
while True:
    for path in ("api/state", "metrics"):
        with urllib.request.urlopen(base + path, timeout=10) as r:
            r.read()
    n += 1
    if n == 1:
        print("polling", flush=True)
    time.sleep(period)
"""


def make_monitor(bundle, batch: int, broker, tmp: Path, plant: bool):
    from factoryedge.runtimes.monitoring.program import ConditionMonitor
    from factoryedge.runtimes.profile import DeviceProfile

    name = "on" if plant else "off"
    raw = {
        "identity": {"site": "b", "line": "b", "machine": f"m-{name}", "device_id": f"bench-{name}"},
        "sensor": {"uri": "replay://unused.npz"},
        "model": {"bundle": str(bundle.path), "batch": batch},
        "scoring": {"baseline": {"mode": "off"}},
        "mqtt": {"uri": broker.uri, "outbox": str(tmp / f"outbox-{name}.sqlite"),
                 "options": {"protocol": broker.protocol, "client_id": f"bench-{name}"}},
    }
    if plant:
        raw["web"] = {"port": 0}
        raw["sparkplug"] = {"group_id": "bench", "edge_node_id": "bench-on", "report_interval_s": POLL_S}
    return ConditionMonitor(DeviceProfile.model_validate(raw), source=_NoSource())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="write the result here (benchmarks/report.py format)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="fe-bench-"))
    bundle = load_bundle(args.bundle) if args.bundle else train_bundle(tmp)
    spec = bundle.manifest.preprocessing
    from factoryedge.data.simulator import simulate_bearing
    from factoryedge.runtimes.devkit.local_broker import LocalBroker

    signal = simulate_bearing(20.0, sample_rate=spec.sample_rate, n_channels=len(spec.channels), seed=2).signal
    signal = signal.astype(np.float32)
    block = args.batch * spec.hop
    broker = LocalBroker().start()
    off = on = poller = None
    try:
        off = make_monitor(bundle, args.batch, broker, tmp, plant=False)
        on = make_monitor(bundle, args.batch, broker, tmp, plant=True)
        on.start_plant_outputs()
        poller = subprocess.Popen([sys.executable, "-c", POLLER, on.web.url, str(POLL_S)], stdout=subprocess.PIPE,
                                  text=True)
        if poller.stdout.readline().strip() != "polling":
            raise SystemExit(f"the poller could not read {on.web.url}")
        best = {"off": float("inf"), "on": float("inf")}
        for monitor in (off, on):  # warm-up
            feed(monitor, signal, block, spec.sample_rate)
        for _ in range(args.rounds):
            for name, monitor in (("off", off), ("on", on)):
                t = time.perf_counter()
                feed(monitor, signal, block, spec.sample_rate)
                best[name] = min(best[name], time.perf_counter() - t)
        scrape = urllib.request.urlopen(on.web.url + "metrics", timeout=10).read().decode()
    finally:
        if poller is not None:
            poller.kill()
            poller.wait()
        for monitor in (on, off):
            if monitor is not None:
                monitor.close()
        broker.stop()
    n = on.counters.windows // (args.rounds + 1)
    rate_off, rate_on = n / best["off"], n / best["on"]
    moved = [line for line in scrape.splitlines() if line.startswith("factoryedge_windows_scored_total")]
    print(f"bundle {bundle.manifest.name}: {n} windows per round, batch {args.batch}, best of {args.rounds} rounds")
    print(f"plant outputs off: {rate_off:,.0f} windows/s")
    print(f"plant outputs on:  {rate_on:,.0f} windows/s (page polled and /metrics scraped every {POLL_S} s, "
          f"Sparkplug DDATA every {POLL_S} s)")
    print(f"on / off: {rate_on / rate_off:.3f}; last scrape: {moved[0] if moved else 'no windows counter'}")
    write(args.json, {"plant_outputs_on_vs_off": entry(
        rate_on, "windows/s", "the same monitor with no plant outputs, same windows", rate_off, rate_on / rate_off,
        goal=0.95, windows=n, batch=args.batch, poll_s=POLL_S)})


if __name__ == "__main__":
    main()
