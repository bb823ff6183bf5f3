"""Plugins by URI: a scheme names a ``"module:Class"`` string, imported only when used.

Four kinds, each with the contract of ``contracts``: ``source`` (sample sources), ``camera``,
``trigger`` and ``sink``. Importing this module imports no hardware library. Third parties
add schemes through the entry-point groups ``factoryedge.sources``, ``factoryedge.cameras``,
``factoryedge.triggers`` and ``factoryedge.sinks`` (name = scheme, value =
``"package.module:Class"``); a plugin class provides ``from_uri(uri, **options)`` and
``validate(uri, **options)``. Unknown schemes fail with the list of known ones.

A trigger may be written as a bare scheme (``mqtt``: the sink's broker, on a persistent trigger session of its own).
"""
from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

from factoryedge.errors import ConfigError
from factoryedge.runtimes.options import OptionError

log = logging.getLogger(__name__)

_CAMERAS = "factoryedge.runtimes.cameras"
_TRIGGERS = "factoryedge.runtimes.triggers"
BUILTIN: dict[str, dict[str, str]] = {
    "source": {
        "serial": "factoryedge.runtimes.sources.serial_source:SerialSource",
        "replay": "factoryedge.runtimes.sources.replay:ReplaySource",
    },
    "camera": {
        "csi": f"{_CAMERAS}.csi:CsiCamera",
        "v4l2": f"{_CAMERAS}.v4l2:V4l2Camera",
        "rtsp": f"{_CAMERAS}.rtsp:RtspCamera",
        "file": f"{_CAMERAS}.video_file:VideoFileCamera",
        "dir": f"{_CAMERAS}.image_folder:ImageFolderCamera",
    },
    "trigger": {
        "mqtt": f"{_TRIGGERS}:MqttTrigger",
        "serial": f"{_TRIGGERS}:SerialTrigger",
        "periodic": f"{_TRIGGERS}:PeriodicTrigger",
    },
    "sink": {
        "mqtt": "factoryedge.runtimes.sinks.mqtt:MqttSink",
        "mqtts": "factoryedge.runtimes.sinks.mqtt:MqttSink",
    },
}
_GROUPS = {kind: f"factoryedge.{kind}s" for kind in BUILTIN}
_EXAMPLES = {
    "source": "serial:///dev/ttyUSB0?rate=25600 or replay://run.npz",
    "camera": "csi://0, v4l2:///dev/video0, file://parts.mp4 or dir://shots",
    "trigger": "mqtt, serial:///dev/ttyUSB1?baud=115200 or periodic://?period_ms=200",
    "sink": "mqtt://broker:1883 or mqtts://broker:8883",
}


def scheme_of(uri: str, kind: str = "source") -> str:
    """The URI's scheme, lower-cased; ConfigError with an example when there is none."""
    text = str(uri or "").strip()
    if kind == "trigger" and "://" not in text and text.isidentifier():
        return text.lower()
    scheme = urlsplit(text).scheme.lower()
    if not scheme:
        raise ConfigError(f"{uri!r} is not a URI; write SCHEME://..., e.g. {_EXAMPLES.get(kind, _EXAMPLES['source'])}")
    return scheme


def known(kind: str) -> dict[str, str]:
    """Built-in schemes plus those registered by installed plugins."""
    if kind not in BUILTIN:
        raise ConfigError(f"unknown plugin kind {kind!r}; known: {', '.join(BUILTIN)}")
    table = dict(BUILTIN[kind])
    for name, value in _installed(_GROUPS[kind]):
        table.setdefault(name, value)
    return table


@functools.cache
def _installed(group: str) -> tuple[tuple[str, str], ...]:
    """(scheme, target) of the installed plugins' entry points, read once per process.

    Scanning the installed distributions took ~9 ms per call, four calls per profile load;
    a plugin installed while a device runs is seen at its next start, as its code would be.
    """
    return tuple((ep.name, ep.value) for ep in entry_points(group=group))


def resolve(kind: str, uri: str) -> type:
    """The plugin class for a URI; unknown schemes fail with the list of known ones."""
    scheme = scheme_of(uri, kind)
    table = known(kind)
    target = table.get(scheme)
    if target is None:
        raise ConfigError(f"unknown {kind} scheme {scheme!r} in {uri!r}; known: {', '.join(sorted(table))} "
                          f"(e.g. {_EXAMPLES[kind]})")
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def known_uri(kind: str, uri: str) -> str:
    """The URI itself if its scheme names a plugin of ``kind``; a pydantic field validator for profiles.

    Raises ValueError (pydantic then reports the key path); the options are checked later,
    with the whole section at hand, by ``check``.
    """
    try:
        resolve(kind, uri)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return uri


def check(kind: str, uri: str, options: Mapping[str, Any] | None = None, *, at: str = "",
          options_at: str = "") -> None:
    """Validate a plugin's URI and options without opening anything; ConfigError if bad.

    ``at`` and ``options_at`` are the key paths of the URI and of its options mapping in a
    profile (e.g. ``sensor.uri`` and ``sensor.options``); the error then starts with the
    path of the bad key: ``sensor.options.baud: option baud='fast' must be an integer ...``.
    """
    options = dict(options or {})
    try:
        resolve(kind, uri).validate(uri, **options)
    except OptionError as e:
        path = f"{options_at}.{e.key}" if options_at and e.key in options else at
        if not path:
            raise
        raise ConfigError(f"{path}: {e}") from None
    except ConfigError as e:
        if not at:
            raise
        raise ConfigError(f"{at}: {e}") from None


def open_source(uri: str, **options):
    return resolve("source", uri).from_uri(uri, **options)


def open_sink(uri: str, **options):
    return resolve("sink", uri).from_uri(uri, **options)


def open_camera(uri: str, **options):
    return resolve("camera", uri).from_uri(uri, **options)


def open_trigger(uri: str, sink: Any = None, **options):
    """A trigger source; ``sink`` is the runtime's sink, which the ``mqtt`` trigger rides on."""
    return resolve("trigger", uri).from_uri(uri, sink=sink, **options)
