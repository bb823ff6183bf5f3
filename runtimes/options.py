"""The one options layer: URIs, plugin options, and secrets read from files or environment.

Every plugin (sample source, camera, trigger, sink) declares its options as a mapping of
name -> converter, and validates a URI plus profile options through ``parse_options``
without opening any hardware, which is what ``factoryedge run --check`` relies on. A bad
option raises ``OptionError`` carrying the option's name, so a profile loader can say
whether it came from the URI or from the profile's ``options`` mapping.

Secrets (MQTT and RTSP passwords) are never options themselves: ``read_secret`` takes them
from an environment variable (``*_env``) or a file (``*_file``, trailing newline stripped),
in this one place.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np

from factoryedge.errors import ConfigError


class OptionError(ConfigError):
    """A plugin option that is unknown or out of range; ``key`` names it (None: the URI itself)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


Converter = Callable[[str, Any], Any]
OptionSpec = Mapping[str, Converter]


def split_uri(uri: str, scheme: str) -> tuple[str, dict[str, str]]:
    """(location, query options) of ``scheme://location?k=v&...``; duplicate keys are an error."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != scheme:
        raise ConfigError(f"{masked(uri)!r} is not a {scheme}:// URI")
    location = unquote(parts.netloc + parts.path)
    return location, query_options(uri, parts.query)


def query_options(uri: str, query: str) -> dict[str, str]:
    """The ``k=v&...`` options of a URI's query; a key given twice is an error."""
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in options:
            raise OptionError(f"option {key!r} is given twice in {masked(uri)!r}", key)
        options[key] = value
    return options


def masked(uri: str) -> str:
    """The URI with any password-like query value hidden, for messages and logs."""
    return re.sub(r"(password|pass|passwd|pwd)=[^&]*", r"\1=***", uri)


def parse_options(
    where: str, given: Mapping[str, Any], spec: Mapping[str, Converter]
) -> dict[str, Any]:
    """Convert options by ``spec``; unknown keys and bad values fail naming the valid ones."""
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise OptionError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for {where}; "
            f"valid: {', '.join(spec)}",
            unknown[0],
        )
    out = {}
    for key, value in given.items():
        try:
            out[key] = spec[key](key, value)
        except OptionError:
            raise
        except ConfigError as e:
            raise OptionError(str(e), key) from None
    return out


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


def as_text(key: str, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ConfigError(f"option {key}= must not be empty")
    return text


def read_secret(opts: Mapping[str, Any], what: str, names: tuple[str, ...], resolve: bool = True) -> str | None:
    """The secret named by exactly one of ``names`` (``X``, ``X_env`` or ``X_file``), or None.

    A plain name (a user name) is taken as given; ``*_env`` reads an environment variable
    and ``*_file`` a file. Messages name the option and the variable or path, never the value.
    ``resolve=False`` only checks it is given one way and reads nothing (a placeholder is
    returned), for validating a profile off the device.
    """
    given = [n for n in names if n in opts]
    if len(given) > 1:
        raise OptionError(f"give the {what} one way only, not {' and '.join(given)}", given[1])
    if not given:
        return None
    name, ref = given[0], str(opts[given[0]])
    if not resolve:
        return f"<{name}>"
    if name.endswith("_env"):
        value = os.environ.get(ref)
        if not value:
            raise OptionError(f"{name}={ref!r}: that environment variable is not set or empty", name)
        return value
    if name.endswith("_file"):
        try:
            value = Path(ref).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise OptionError(f"{name}={ref!r}: cannot read the {what} from it ({e.__class__.__name__})", name) from None
        if not value:
            raise OptionError(f"{name}={ref!r}: the file is empty", name)
        return value
    return ref
