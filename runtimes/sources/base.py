"""What every sensor source yields: blocks of consecutive samples with their arrival times."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class SampleBlock:
    """Consecutive samples from a source, scaled to physical units, with host arrival times.

    ``t_monotonic`` / ``t_wall`` are ``time.monotonic()`` / ``factoryedge.runtimes.clock.wall()`` taken when the
    bytes completing the block's last sample arrived (a replay: when the block was due).
    ``seq`` is the first fe1 frame's sequence number, the first CSV line's sample index, or the
    first replayed sample's index in the recording. ``gap`` is true when samples were lost or
    the stream restarted right before this block (dropped frames, malformed lines, a reconnect,
    a replay looping, a new burst of a periodic-snapshot sensor), so a consumer must not join
    it to earlier samples; ``dropped`` counts the frames (fe1) or lines (csv) known lost
    there, 0 when unknown. ``stats`` is a snapshot of the source's counters.
    """

    samples: np.ndarray
    t_monotonic: float
    t_wall: float
    seq: int
    gap: bool = False
    dropped: int = 0
    device_timestamp_us: int | None = None
    stats: Mapping[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.samples.shape[0])
