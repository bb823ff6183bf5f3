"""A small synthetic bearing degradation as a snapshot recording, made with the bearing simulator."""
from __future__ import annotations

import numpy as np

from factoryedge.data.simulator import simulate_bearing
from factoryedge.data.snapshots import SnapshotRecording

RATE = 25600.0
BURST = 2560


def degrading_run(n_bursts: int = 200, fault_from: int = 150, period_s: float = 10.0, seed: int = 0) -> SnapshotRecording:
    """Healthy bursts, then an outer-race fault whose severity grows to the end of life.

    Burst ``i`` is a 0.1 s snapshot taken at ``i * period_s``; the fault's strike amplitude
    rises linearly from 0 at burst ``fault_from`` to 3 at the last burst.
    """
    bursts = []
    for i in range(n_bursts):
        sev = 3.0 * (i - fault_from + 1) / (n_bursts - fault_from) if i >= fault_from else 0.0
        rec = simulate_bearing(BURST / RATE, sample_rate=RATE, rpm=1800, fault="outer_race" if sev > 0 else None,
                               severity=max(sev, 1e-3), n_channels=1, seed=seed * 100_000 + i)
        bursts.append(rec.signal[:BURST])
    return SnapshotRecording(np.stack(bursts), np.arange(n_bursts) * period_s, RATE, ("x",), "simulated-degradation",
                             "sim")
