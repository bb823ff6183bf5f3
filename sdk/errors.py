"""The exceptions factoryedge raises for anything a user can cause or fix.

Every message quotes the bad value and says what would be valid. The CLI turns any
``FactoryEdgeError`` into one line on stderr and a non-zero exit; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations


class FactoryEdgeError(Exception):
    """Base class: a problem with the user's input, files, hardware or environment."""


class ConfigError(FactoryEdgeError):
    """A profile, option or parameter is malformed or out of range."""


class DataError(FactoryEdgeError):
    """A recording or data set is missing, unreadable, or not what the caller said it is."""


class BundleError(FactoryEdgeError):
    """A model bundle is missing, tampered with, of an unknown schema, or of the wrong kind."""


class ExportError(FactoryEdgeError):
    """Exporting a model failed, e.g. ONNX outputs differ from torch beyond tolerance."""


class SourceError(FactoryEdgeError):
    """A sensor or camera source cannot be opened or has failed."""


class SinkError(FactoryEdgeError):
    """A sink (MQTT, file) cannot be opened or has failed."""


class BackendUnavailableError(FactoryEdgeError):
    """An inference backend or hardware library is not installed or not usable here."""


def missing_dependency(module: str, extra: str, purpose: str) -> BackendUnavailableError:
    """The error for an optional library that is not installed, naming the extra to install."""
    return BackendUnavailableError(
        f"{purpose} needs the Python module '{module}', which is not installed; "
        f"install it with: pip install 'factoryedge[{extra}]'"
    )
