"""Sources and sinks by URI: a scheme names a ``"module:Class"`` string, imported on open.

Importing this module imports no hardware library. Third parties add schemes through the
entry-point groups ``factoryedge.sources``, ``factoryedge.sinks`` and ``factoryedge.cameras`` (name = scheme, value =
``"package.module:Class"``); a plugin class provides ``from_uri(uri, **options)``.
"""
from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from factoryedge.errors import ConfigError

log = logging.getLogger(__name__)

SOURCES: dict[str, str] = {
    "serial": "factoryedge.runtimes.sources.serial_source:SerialSource",
    "replay": "factoryedge.runtimes.sources.replay:ReplaySource",
}
SINKS: dict[str, str] = {
    "mqtt": "factoryedge.runtimes.sinks.mqtt:MqttSink",
    "mqtts": "factoryedge.runtimes.sinks.mqtt:MqttSink",
}
CAMERAS: dict[str, str] = {
    scheme: "factoryedge.runtimes.cameras.opencv_source:CameraSource" for scheme in ("csi", "v4l2", "rtsp", "file", "dir")
}
_GROUPS = {
    "source": ("factoryedge.sources", SOURCES),
    "sink": ("factoryedge.sinks", SINKS),
    "camera": ("factoryedge.cameras", CAMERAS),
}


def scheme_of(uri: str) -> str:
    scheme = urlsplit(uri).scheme.lower()
    if not scheme:
        raise ConfigError(f"{uri!r} is not a URI; write SCHEME://..., e.g. serial:///dev/ttyUSB0 or replay://run.npz")
    return scheme


def known(kind: str) -> dict[str, str]:
    """Built-in schemes plus those registered by installed plugins."""
    group, builtin = _GROUPS[kind]
    table = dict(builtin)
    for ep in entry_points(group=group):
        table.setdefault(ep.name, ep.value)
    return table


def resolve(kind: str, uri: str) -> type:
    """The plugin class for a URI; unknown schemes fail with the list of known ones."""
    scheme = scheme_of(uri)
    table = known(kind)
    target = table.get(scheme)
    if target is None:
        raise ConfigError(f"unknown {kind} scheme {scheme!r} in {uri!r}; known: {', '.join(sorted(table))}")
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def open_source(uri: str, **options):
    return resolve("source", uri).from_uri(uri, **options)


def open_sink(uri: str, **options):
    return resolve("sink", uri).from_uri(uri, **options)


def open_camera(uri: str, **options):
    return resolve("camera", uri).from_uri(uri, **options)
