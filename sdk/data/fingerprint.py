"""Content hashes of recordings, so a bundle can say exactly which data it learned from."""
from __future__ import annotations

import hashlib

import numpy as np

from factoryedge.data.recording import Recording


def recording_sha256(rec: Recording) -> str:
    """sha256 of the samples (float64, as loaded) and the sample rate."""
    h = hashlib.sha256(np.ascontiguousarray(rec.signal).tobytes())
    h.update(repr(rec.sample_rate).encode())
    return h.hexdigest()
