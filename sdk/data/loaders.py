"""Reading vibration recordings from generic files: CSV, NPY, NPZ, WAV and CWRU .mat.

A recording is never loaded without its sample rate. Files that state one (NPZ, WAV, a CWRU
.mat with a labels.csv beside it or "12k"/"48k" in its file or folder name) use it, and an
explicit ``sample_rate`` that disagrees is an error rather than a silent override; the others
(CSV, NPY, any other .mat) require the argument.

``channels`` selects channels by name when the file names them (CSV header, NPZ, CWRU .mat);
for a file without names it names the channels, if the count matches, or selects among the
default names ``ch0``, ``ch1``, ...
"""
from __future__ import annotations

import json
import logging
import math
import os
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np

from factoryedge.data.recording import Recording
from factoryedge.errors import DataError

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".npy", ".npz", ".wav", ".mat")
TIME_COLUMNS = ("time", "t", "timestamp", "time_s")
_CSV_DELIMITERS = (",", ";", "\t")
_PCM_SCALE = {np.dtype("int16"): 2.0**15, np.dtype("int32"): 2.0**31, np.dtype("int64"): 2.0**63}


def load_recording(
    path: str | os.PathLike,
    sample_rate: float | None = None,
    channels: tuple[str, ...] | list[str] | None = None,
    label: str = "unknown",
) -> Recording:
    """Load one recording, choosing the reader by the file suffix (see ``SUFFIXES``).

    ``label`` "unknown" lets a file that records its own label (NPZ written by ``save_npz``,
    CWRU files named by fault) keep it; any other value overrides the file.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"recording file '{p}' does not exist; check the path (working directory: {Path.cwd()})")
    if not p.is_file():
        raise DataError(f"recording path '{p}' is not a file; pass a file ending in one of {', '.join(SUFFIXES)}")
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"'{p}': unsupported file type {p.suffix or '(no suffix)'!r}; supported: {', '.join(SUFFIXES)}")
    if sample_rate is not None:
        sample_rate = _check_rate(sample_rate, p)
    chans = tuple(channels) if channels is not None else None
    if suffix == ".mat":
        from factoryedge.data.cwru import cwru_sample_rate, load_cwru_file

        rate = cwru_sample_rate(p, sample_rate)
        return load_cwru_file(p, rate, chans or ("DE",), label=None if label == "unknown" else label)
    reader = {".csv": _read_csv, ".npy": _read_npy, ".npz": _read_npz, ".wav": _read_wav}[suffix]
    signal, rate, names, extra = reader(p, sample_rate)
    return _build(p, signal, rate, names, chans, label, extra)


def save_npz(recording: Recording, path: str | os.PathLike) -> Path:
    """Write a recording as .npz (signal, sample_rate, channels, label, onset, source, meta).

    ``load_recording`` reads it back with identical samples, so a replay or a data fingerprint
    sees exactly what was saved. The file is written under a temporary name and renamed, so a
    reader never sees half a file.
    """
    p = Path(path)
    if p.suffix.lower() != ".npz":
        raise DataError(f"save_npz: '{p}' must end in .npz (the suffix is how load_recording picks the reader)")
    onset = np.nan if recording.fault_onset_s is None else recording.fault_onset_s
    tmp = p.with_name(p.name + ".part")
    try:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                signal=recording.signal,
                sample_rate=np.float64(recording.sample_rate),
                channels=np.array(recording.channels, dtype=str),
                label=np.array(recording.label),
                fault_onset_s=np.float64(onset),
                source=np.array(recording.source),
                meta_json=np.array(json.dumps(recording.meta, default=str)),
            )
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write recording to '{p}': {e.strerror or e}") from e
    return p


def _check_rate(sample_rate: object, p: Path) -> float:
    try:
        rate = float(sample_rate)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise DataError(f"'{p}': sample rate {sample_rate!r} is not a positive number of Hz, e.g. 12000")
    return rate


def _require_rate(p: Path, sample_rate: float | None, kind: str) -> float:
    if sample_rate is None:
        raise DataError(
            f"'{p}': a {kind} file does not record its sample rate; pass it explicitly, "
            "e.g. load_recording(path, sample_rate=12000) or --sample-rate 12000 on the command line"
        )
    return sample_rate


def _agree(p: Path, in_file: float, given: float | None) -> float:
    if given is not None and not math.isclose(in_file, given, rel_tol=1e-6):
        raise DataError(
            f"'{p}': the file says its sample rate is {in_file:g} Hz but {given:g} Hz was passed; "
            f"drop the sample_rate argument or pass {in_file:g}"
        )
    return in_file


def _build(p, signal, rate, names, chans, label, extra) -> Recording:
    """The Recording, with channels named or selected as the module docstring says."""
    signal = np.asarray(signal)
    if signal.ndim == 1:
        signal = signal[:, None]
    if signal.shape[0] == 0:
        raise DataError(f"'{p}': the recording has no samples")
    if label == "unknown":
        label = extra.get("label", "unknown")
    if names is None:
        names = tuple(f"ch{i}" for i in range(signal.shape[1]))
        if chans is not None and len(chans) == signal.shape[1] and not set(chans) <= set(names):
            names, chans = chans, None
        elif chans is not None and not set(chans) <= set(names):
            raise DataError(
                f"'{p}' has {signal.shape[1]} unnamed channel(s) but channels {list(chans)} were asked for; "
                f"pass {signal.shape[1]} name(s) to name them, or select among {list(names)}"
            )
    rec = Recording(
        signal=signal,
        sample_rate=rate,
        channels=tuple(names),
        source=str(p),
        label=label,
        fault_onset_s=extra.get("fault_onset_s"),
        meta=extra.get("meta", {}),
    )
    return rec.select_channels(chans) if chans is not None else rec


def _read_csv(p: Path, sample_rate: float | None):
    rate = _require_rate(p, sample_rate, "CSV")
    try:
        text = p.read_text(encoding="utf-8-sig")  # utf-8-sig: spreadsheet exports start with a BOM
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read CSV '{p}': {e}") from e
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise DataError(f"CSV '{p}' is empty; expected numeric columns, one row per sample")
    delim = next((d for d in _CSV_DELIMITERS if d in lines[first]), None)
    head = _split(lines[first], delim)
    numeric = [_is_number(c.strip().strip('"')) for c in head]
    header = None
    if not any(numeric):
        header = [c.strip().strip('"').strip() for c in head]
        if len(set(header)) != len(header):
            raise DataError(f"CSV '{p}': header {header} repeats a column name; channel names must be unique")
    body = lines[first + (1 if header is not None else 0):]
    data = _parse_rows(p, body, delim, first + (2 if header is not None else 1), len(head), header)
    keep = list(range(data.shape[1]))
    if header is not None:
        keep = [i for i, name in enumerate(header) if name.lower() not in TIME_COLUMNS]
        if not keep:
            raise DataError(f"CSV '{p}' has only a time column {header}; expected at least one signal column")
    names = tuple(header[i] for i in keep) if header is not None else None
    return data[:, keep], rate, names, {}


def _split(line: str, delim: str | None) -> list[str]:
    return line.split(delim) if delim is not None else line.split()


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_rows(p: Path, body: list[str], delim: str | None, first_line: int, width: int, header) -> np.ndarray:
    """Numeric rows as float64; on the first bad cell, a DataError naming its line and column."""
    numbered = [(n, line) for n, line in enumerate(body, start=first_line) if line.strip()]
    if not numbered:
        raise DataError(f"CSV '{p}' has a header {header} but no data rows")
    data = None
    try:
        # The C parser handles the common, clean case fast; the scan below only explains failures.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            data = np.loadtxt([line for _, line in numbered], delimiter=delim, dtype=np.float64, ndmin=2,
                              comments=None, quotechar='"')
    except ValueError:
        pass
    if data is not None and data.shape[1] == width and np.all(np.isfinite(data)):
        return data
    for n, line in numbered:
        cells = _split(line, delim)
        if len(cells) != width:
            raise DataError(f"CSV '{p}' line {n}: {len(cells)} cell(s), expected {width} like the first row")
        for j, cell in enumerate(cells):
            if not _is_number(cell.strip().strip('"')) or not math.isfinite(float(cell.strip().strip('"'))):
                col = repr(header[j]) if header is not None else str(j + 1)
                raise DataError(f"CSV '{p}' line {n}, column {col}: {cell.strip()!r} is not a finite number")
    raise DataError(f"CSV '{p}': could not read the numeric rows")  # pragma: no cover - loadtxt agrees with the scan


def _read_npy(p: Path, sample_rate: float | None):
    rate = _require_rate(p, sample_rate, "NPY")
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read NPY '{p}': {e}; expected an array saved with numpy.save") from e
    return _check_array(p, arr, "the array"), rate, None, {}


def _check_array(p: Path, arr: np.ndarray, what: str) -> np.ndarray:
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"'{p}': {what} has dtype {arr.dtype}; expected real numbers (int or float)")
    if arr.ndim not in (1, 2):
        raise DataError(f"'{p}': {what} has shape {arr.shape}; expected (n_samples,) or (n_samples, n_channels)")
    if arr.ndim == 2 and arr.shape[1] > arr.shape[0]:
        raise DataError(
            f"'{p}': {what} has shape {arr.shape}, more channels than samples; expected (n_samples, n_channels) "
            "- save the transpose (arr.T)"
        )
    return arr.astype(np.float64)


def _read_npz(p: Path, sample_rate: float | None):
    try:
        with np.load(p, allow_pickle=False) as z:
            content = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read NPZ '{p}': {e}; expected a file written by numpy.savez or save_npz") from e
    missing = [k for k in ("signal", "sample_rate") if k not in content]
    if missing:
        raise DataError(
            f"NPZ '{p}' lacks key(s) {missing}; it has {sorted(content)}; required: 'signal', 'sample_rate'"
        )
    signal = _check_array(p, content["signal"], "'signal'")
    try:
        in_file = float(content["sample_rate"])
    except (TypeError, ValueError):
        raise DataError(f"NPZ '{p}': 'sample_rate' is {content['sample_rate']!r}; expected one number in Hz") from None
    rate = _agree(p, _check_rate(in_file, p), sample_rate)
    names = tuple(str(c) for c in np.atleast_1d(content["channels"])) if "channels" in content else None
    extra: dict = {}
    if "label" in content:
        extra["label"] = str(content["label"])
    if "fault_onset_s" in content and np.isfinite(content["fault_onset_s"]):
        extra["fault_onset_s"] = float(content["fault_onset_s"])
    if "meta_json" in content:
        try:
            extra["meta"] = json.loads(str(content["meta_json"]))
        except json.JSONDecodeError:
            log.warning("ignoring unreadable meta_json in %s", p)
    return signal, rate, names, extra


def _read_wav(p: Path, sample_rate: float | None):
    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)  # unknown chunks (e.g. LIST) are harmless
            rate, data = wavfile.read(p)
    except (OSError, ValueError, EOFError, struct.error) as e:  # struct.error: truncated header
        raise DataError(f"cannot read WAV '{p}': {e}; expected a PCM or float WAV file") from e
    rate = _agree(p, _check_rate(rate, p), sample_rate)
    if data.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        signal = (data.astype(np.float64) - 128.0) / 128.0
    elif data.dtype in _PCM_SCALE:
        # 24-bit PCM arrives left-justified in int32, so one scale serves both.
        signal = data.astype(np.float64) / _PCM_SCALE[data.dtype]
    else:
        signal = data.astype(np.float64)
    return signal, rate, None, {}
