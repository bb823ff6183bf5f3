"""What every sensor source yields, and the URI option parsing the sources share.

Imports nothing heavier than numpy, so importing a source module never pulls in a
hardware library.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np

from factoryedge.errors import ConfigError


@dataclass(frozen=True, slots=True)
class SampleBlock:
    """Consecutive samples from a source, scaled to physical units, with host arrival times.

    ``t_monotonic`` / ``t_wall`` are ``time.monotonic()`` / ``time.time()`` taken when the
    bytes completing the block's last sample arrived (a replay: when the block was due).
    ``seq`` is the first fe1 frame's sequence number, the first CSV line's sample index, or the
    first replayed sample's index in the recording. ``gap`` is true when samples were lost or
    the stream restarted right before this block (dropped frames, malformed lines, a reconnect,
    a replay looping), so a consumer must not join it to earlier samples; ``dropped`` counts
    the frames (fe1) or lines (csv) known lost there, 0 when unknown. ``stats`` is a snapshot
    of the source's counters.
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


Converter = Callable[[str, Any], Any]


def split_uri(uri: str, scheme: str) -> tuple[str, dict[str, str]]:
    """(location, query options) of ``scheme://location?k=v&...``; duplicate keys are an error."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != scheme:
        raise ConfigError(f"{uri!r} is not a {scheme}:// URI")
    location = unquote(parts.netloc + parts.path)
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in options:
            raise ConfigError(f"option {key!r} is given twice in {uri!r}")
        options[key] = value
    return location, options


def parse_options(
    where: str, given: Mapping[str, Any], spec: Mapping[str, Converter]
) -> dict[str, Any]:
    """Convert options by ``spec``; unknown keys and bad values fail naming the valid ones."""
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ConfigError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for {where}; "
            f"valid: {', '.join(spec)}"
        )
    return {key: spec[key](key, value) for key, value in given.items()}


def as_int(lo: int, hi: int, example: int) -> Converter:
    def convert(key: str, value: Any) -> int:
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        except (TypeError, ValueError):
            out = None
        if out is None or not lo <= out <= hi:
            raise ConfigError(f"option {key}={value!r} must be an integer from {lo} to {hi}, e.g. {key}={example}")
        return out

    return convert


def as_float(lo: float, example: float, allow_zero: bool = False) -> Converter:
    def convert(key: str, value: Any) -> float:
        try:
            out = float(value)
        except (TypeError, ValueError):
            out = float("nan")
        ok = out >= lo if allow_zero else out > lo
        if not (ok and np.isfinite(out)):
            bound = f">= {lo}" if allow_zero else f"> {lo}"
            raise ConfigError(f"option {key}={value!r} must be a number {bound}, e.g. {key}={example}")
        return out

    return convert


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"option {key}={value!r} must be true or false (also 1/0, yes/no, on/off)")


def as_choice(*choices: str) -> Converter:
    def convert(key: str, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ConfigError(f"option {key}={value!r} must be one of: {', '.join(choices)}")
        return text

    return convert


def as_scale(key: str, value: Any) -> tuple[float, ...]:
    """One factor for all channels, or one per channel ("0.001,0.001,0.002" or a list)."""
    items = value if isinstance(value, (list, tuple, np.ndarray)) else str(value).split(",")
    try:
        out = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        out = ()
    if not out or not all(np.isfinite(v) and v != 0 for v in out):
        raise ConfigError(
            f"option {key}={value!r} must be a non-zero number (units per LSB, e.g. {key}=0.001) "
            f"or one per channel separated by commas (e.g. {key}=0.001,0.001,0.002)"
        )
    return out
