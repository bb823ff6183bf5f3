"""Turning the command line's data arguments into labelled recordings.

A data argument is either a named data set (``cwru-48k``, ``cwru-12k``) or a file spec
``[LABEL=]PATH[#START:STOP]``: LABEL defaults to what the file says (CWRU files) or
"unknown"; START:STOP are fractions of the duration (e.g. ``#0.8:1`` for the last fifth).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from factoryedge.data.recording import Recording
from factoryedge.errors import DataError

DATASETS = {
    "cwru-48k": "CWRU drive end, 48 kHz: normal baseline (part), ball and inner-race faults",
    "cwru-12k": "CWRU drive end, 12 kHz: inner-race, ball and outer-race faults; normal = 48 kHz normal decimated by 4",
}

# A model for data that went through CWRU's 12 kHz path or a decimation to it must not
# look above the anti-alias cut-off (README of cwru-12k-de): keep features below 4.5 kHz.
DATASET_MAX_FREQUENCY = {"cwru-48k": None, "cwru-12k": 4500.0}

_SPEC = re.compile(r"^(?:(?P<label>[A-Za-z0-9_.-]+)=)?(?P<path>[^#]+)(?:#(?P<a>[0-9.]*):(?P<b>[0-9.]*))?$")


@dataclass
class DataSelection:
    normal: list[Recording]
    faults: list[Recording]
    dataset: str | None = None


def dataset(name: str, channels: tuple[str, ...] = ("DE",)) -> DataSelection:
    """A named data set, whole (normal recordings unsplit)."""
    from factoryedge.data import cwru

    if name == "cwru-48k":
        recs = cwru.cwru_48k(channels=channels)
        return DataSelection([r for r in recs if r.label == "normal"], [r for r in recs if r.label != "normal"], name)
    if name == "cwru-12k":
        return DataSelection([cwru.cwru_12k_normal(channels=channels)], cwru.cwru_12k(channels=channels), name)
    raise DataError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")


def parse_file_spec(spec: str, sample_rate: float | None, channels: tuple[str, ...] | None) -> Recording:
    """Load one ``[LABEL=]PATH[#START:STOP]`` argument."""
    from factoryedge.data.loaders import load_recording

    m = _SPEC.match(spec)
    if not m:
        raise DataError(f"cannot read data argument {spec!r}; write [LABEL=]PATH[#START:STOP], e.g. normal=run1.wav#0:0.6")
    label = m.group("label")
    rec = load_recording(m.group("path"), sample_rate=sample_rate, channels=channels, label=label or "unknown")
    if m.group("a") is not None:
        try:
            a = float(m.group("a") or 0.0)
            b = float(m.group("b") or 1.0)
        except ValueError:
            raise DataError(f"{spec!r}: START:STOP must be fractions like 0.8:1") from None
        rec = rec.slice_fraction(a, b)
    return rec


def resolve(args: list[str], sample_rate: float | None = None, channels: tuple[str, ...] | None = None) -> DataSelection:
    """All data arguments together, split into normal and fault recordings."""
    normal, faults, names = [], [], []
    for arg in args:
        if arg in DATASETS:
            sel = dataset(arg, channels or ("DE",))
            normal += sel.normal
            faults += sel.faults
            names.append(arg)
        elif re.fullmatch(r"[A-Za-z0-9_-]+", arg) and not Path(arg).exists():
            raise DataError(f"{arg!r} is neither a known data set ({', '.join(DATASETS)}) nor an existing file")
        else:
            rec = parse_file_spec(arg, sample_rate, channels)
            (normal if rec.label == "normal" else faults).append(rec)
    return DataSelection(normal, faults, names[0] if len(names) == 1 else None)
