"""The Case Western Reserve University (CWRU) bearing data: drive-end recordings at 48 and 12 kHz.

Files are MATLAB v5 with column vectors ``X<nnn>_DE_time``, ``X<nnn>_FE_time`` (and at 12 kHz
``X<nnn>_BA_time``) in g plus a scalar ``X<nnn>RPM``. ``<nnn>`` is CWRU's file number and does
not always match the file name, so variables are found by suffix. The data is third-party
test data (cite the CWRU Bearing Data Center) and lives outside the repository, under
``shared_data_dir()``; see the README.md in each folder there.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from factoryedge.data.recording import Recording
from factoryedge.errors import DataError

log = logging.getLogger(__name__)

FOLDER_48K = "cwru-48k-de"
FOLDER_12K = "cwru-12k-de"
NORMAL_48K = "Normal_0_a.mat"
# The 48 kHz subset as its README lists it: (file, label, fault size in inches).
FILES_48K = (
    (NORMAL_48K, "normal", None),
    ("B007_0.mat", "ball", 0.007),
    ("B014_0.mat", "ball", 0.014),
    ("IR007_0.mat", "inner_race", 0.007),
    ("IR021_0.mat", "inner_race", 0.021),
)
NORMAL_12K_CAVEAT = (
    "CWRU has no 12 kHz normal recording; this is the 48 kHz normal baseline decimated by 4. It went "
    "through a different acquisition and anti-alias path than the 12 kHz fault files, so a model can "
    "learn that difference instead of the fault: use features band-limited well below 6 kHz and check "
    "that a detector does not flag decimated normal windows it never saw."
)
_FAULT_CODES = {"IR": "inner_race", "OR": "outer_race", "B": "ball"}
_NAME_FAULT = re.compile(r"(?:^|_)(IR|OR|B)(\d{3})(?:@(\d+))?(?:_|$)")
_NAME_RATE = re.compile(r"(?:^|[^0-9])(12|48)k(?:[^a-z]|$)", re.IGNORECASE)


def shared_data_dir() -> Path:
    """The folder of shared test data: ``$FACTORYEDGE_DATA``, else ``<repo>/../shared/data``."""
    env = os.environ.get("FACTORYEDGE_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not path.is_dir():
        how = "FACTORYEDGE_DATA points to it" if env else "FACTORYEDGE_DATA is not set; default next to the repository"
        raise DataError(
            f"shared data folder '{path}' does not exist ({how}); set FACTORYEDGE_DATA to the folder "
            f"that holds {FOLDER_48K}/ and {FOLDER_12K}/"
        )
    return path


def load_cwru_file(
    path: str | os.PathLike,
    sample_rate: float,
    channels: tuple[str, ...] | list[str] = ("DE",),
    label: str | None = None,
) -> Recording:
    """One CWRU .mat file as a Recording; ``channels`` are "DE", "FE" or "BA".

    The sample rate must be given (the files do not record it). ``label`` None reads it from
    the CWRU file name ("Normal..." -> "normal", "IR007" -> "inner_race", "B014" -> "ball",
    "OR021@6" -> "outer_race", else "unknown"). ``meta`` holds rpm (as stored in the file, None
    if absent), cwru_file, cwru_number, fault_size_in and, for outer-race files, or_position.
    """
    p = Path(path)
    try:
        rate = float(sample_rate)
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise DataError(f"'{p}': sample rate {sample_rate!r} is not a positive number of Hz; CWRU uses 12000 or 48000")
    if not channels:
        raise DataError(f"'{p}': no channels asked for; pass e.g. channels=('DE',) or ('DE', 'FE')")
    variables = _loadmat(p)
    columns, numbers = [], set()
    for ch in channels:
        key = _find_key(p, variables, f"_{ch}_time", ch)
        numbers.add(key[: -len(f"_{ch}_time")])
        columns.append(np.asarray(variables[key], dtype=np.float64).ravel())
    lengths = {c.size for c in columns}
    if len(lengths) != 1:
        raise DataError(
            f"'{p}': channels {list(channels)} have different lengths {sorted(lengths)}; load them separately"
        )
    rpm_keys = [k for k in variables if k.endswith("RPM")]
    rpm = float(np.asarray(variables[rpm_keys[0]]).ravel()[0]) if rpm_keys else None
    if rpm is None:
        log.info("CWRU file %s stores no shaft speed (no *RPM variable)", p.name)
    found_label, size, position = _parse_name(p.stem)
    return Recording(
        signal=np.stack(columns, axis=1),
        sample_rate=rate,
        channels=tuple(channels),
        source=str(p),
        label=found_label if label is None else label,
        meta={
            "rpm": rpm,
            "cwru_file": p.name,
            "cwru_number": sorted(numbers)[0].lstrip("X") if len(numbers) == 1 else sorted(numbers),
            "fault_size_in": size,
            **({"or_position": position} if position else {}),
        },
    )


def cwru_sample_rate(path: str | os.PathLike, given: float | None = None) -> float:
    """The sample rate of a CWRU file: from a labels.csv beside it, else a "12k"/"48k" in its
    file or folder name; ``given`` wins when nothing says otherwise and must agree when something does."""
    p = Path(path)
    stated, why = None, ""
    labels = p.parent / "labels.csv"
    if labels.is_file():
        row = next((r for r in _read_labels(labels) if r.get("file") == p.name), None)
        if row is not None and row.get("sample_rate_hz"):
            stated, why = _float(row["sample_rate_hz"], labels, "sample_rate_hz"), f"{labels} says"
    if stated is None:
        for name in (p.stem, p.parent.name):
            m = _NAME_RATE.search(name)
            if m:
                stated, why = float(m.group(1)) * 1000, f"the name {name!r} says"
                break
    if stated is None:
        if given is None:
            raise DataError(
                f"'{p}': CWRU .mat files do not record their sample rate and nothing beside it says; "
                "pass it, e.g. sample_rate=12000 (or --sample-rate 12000); CWRU uses 12000 or 48000"
            )
        return float(given)
    if given is not None and not math.isclose(given, stated, rel_tol=1e-6):
        raise DataError(f"'{p}': {why} {stated:g} Hz but {given:g} Hz was passed; drop the argument or pass {stated:g}")
    return stated


def cwru_48k(root: str | os.PathLike | None = None, channels: tuple[str, ...] = ("DE",)) -> list[Recording]:
    """The 48 kHz drive-end subset at 0 HP: one normal, two ball and two inner-race recordings.

    ``root`` is the shared data folder (default ``shared_data_dir()``) or the 48 kHz folder itself.
    """
    folder = _folder(root, FOLDER_48K, NORMAL_48K)
    recs = []
    for name, label, size in FILES_48K:
        rec = load_cwru_file(_need(folder / name), 48000.0, channels, label)
        recs.append(replace(rec, meta={**rec.meta, "fault_size_in": size}))
    return recs


def cwru_12k(root: str | os.PathLike | None = None, channels: tuple[str, ...] = ("DE",)) -> list[Recording]:
    """The six 12 kHz drive-end fault recordings (inner race, ball, outer race @6:00; 0 HP).

    Files, labels, fault sizes and sample rates come from the folder's labels.csv, and each
    file's sha256 is checked against it. There is no normal here; see ``cwru_12k_normal``.
    """
    folder = _folder(root, FOLDER_12K, "labels.csv")
    labels = folder / "labels.csv"
    rows = _read_labels(labels)
    required = ("file", "fault_type", "fault_size_in", "sample_rate_hz", "sha256")
    missing = [c for c in required if c not in rows[0]] if rows else list(required)
    if missing:
        raise DataError(f"'{labels}' lacks column(s) {missing} (or has no rows); expected columns {list(required)}")
    recs = []
    for row in rows:
        path = _need(folder / row["file"])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != row["sha256"].strip().lower():
            raise DataError(
                f"'{path}' has sha256 {digest}, but {labels.name} records {row['sha256']}; the file is "
                "corrupted or was replaced: restore the original CWRU file"
            )
        rec = load_cwru_file(path, _float(row["sample_rate_hz"], labels, "sample_rate_hz"), channels, row["fault_type"])
        meta = {**rec.meta, "fault_size_in": _float(row["fault_size_in"], labels, "fault_size_in"), "sha256": digest}
        for key in ("or_position", "load_hp", "nominal_rpm"):
            if row.get(key):
                meta[key] = row[key]
        recs.append(replace(rec, meta=meta))
    return recs


def cwru_12k_normal(root: str | os.PathLike | None = None, channels: tuple[str, ...] = ("DE",)) -> Recording:
    """The normal reference for the 12 kHz faults: the 48 kHz normal decimated by 4 (see meta "caveat").

    Decimation uses an FIR anti-alias filter with zero phase, so the result has ceil(n / 4) samples.
    """
    from scipy.signal import decimate

    folder = _folder(root, FOLDER_48K, NORMAL_48K)
    src = load_cwru_file(_need(folder / NORMAL_48K), 48000.0, channels, "normal")
    signal = decimate(src.signal, 4, ftype="fir", zero_phase=True, axis=0)
    return Recording(
        signal=signal,
        sample_rate=12000.0,
        channels=src.channels,
        source=f"{src.source}[decimated x4]",
        label="normal",
        meta={**src.meta, "derived_from": src.source, "decimation": 4, "caveat": NORMAL_12K_CAVEAT},
    )


def _loadmat(p: Path) -> dict:
    import scipy.io

    if not p.is_file():
        raise DataError(f"CWRU file '{p}' does not exist; check the path or set FACTORYEDGE_DATA")
    try:
        m = scipy.io.loadmat(p)
    except NotImplementedError as e:  # scipy's answer to MATLAB v7.3 (HDF5) files
        raise DataError(f"'{p}' is a MATLAB v7.3 file; CWRU files are v5: re-save with save(..., '-v7')") from e
    except (OSError, ValueError, TypeError, scipy.io.matlab.MatReadError) as e:
        raise DataError(f"cannot read '{p}' as a MATLAB .mat file: {e}") from e
    return {k: v for k, v in m.items() if not k.startswith("__")}


def _find_key(p: Path, variables: dict, suffix: str, channel: str) -> str:
    keys = [k for k in variables if k.endswith(suffix)]
    if len(keys) > 1:
        # Some CWRU files carry a second, stray recording; the RPM variable names the real one.
        rpm_prefix = {k[: -len("RPM")] for k in variables if k.endswith("RPM")}
        keys = [k for k in keys if k[: -len(suffix)] in rpm_prefix] or keys
    if len(keys) != 1:
        have = sorted({k.rsplit("_", 2)[-2] for k in variables if k.endswith("_time") and k.count("_") >= 2})
        what = f"several variables {keys}" if keys else f"no variable ending in {suffix!r}"
        raise DataError(
            f"'{p}' has {what} for channel {channel!r}; channels in the file: {have}; variables: {sorted(variables)}"
        )
    return keys[0]


def _parse_name(stem: str) -> tuple[str, float | None, str | None]:
    if stem.lower().startswith("normal") or "_normal" in stem.lower():
        return "normal", None, None
    m = _NAME_FAULT.search(stem)
    if not m:
        return "unknown", None, None
    position = f"{m.group(3)}:00" if m.group(3) else None
    return _FAULT_CODES[m.group(1)], int(m.group(2)) / 1000, position


def _folder(root, name: str, marker: str) -> Path:
    base = shared_data_dir() if root is None else Path(root)
    for candidate in (base / name, base):
        if (candidate / marker).is_file():
            return candidate
    raise DataError(
        f"no CWRU folder with {marker} at '{base / name}' or '{base}'; "
        f"point root (or FACTORYEDGE_DATA) at the folder holding {name}/"
    )


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"CWRU file '{path}' is missing from its data set folder; restore it (see README.md there)")
    return path


def _read_labels(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read '{path}': {e}") from e


def _float(value: str, where: Path, column: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(f"'{where}': column {column!r} holds {value!r}; expected a number") from None
