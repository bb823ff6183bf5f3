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


def files_sha256(paths, root=None) -> str:
    """sha256 over image files: each file's path (relative to ``root``) and bytes, in sorted order.

    Renaming or editing any training image changes it, so a bundle names the exact image set.
    """
    from pathlib import Path

    h = hashlib.sha256()
    items = sorted((str(Path(p).relative_to(root)) if root else str(p), Path(p)) for p in paths)
    for name, path in items:
        h.update(name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()
