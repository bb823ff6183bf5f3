"""What each kind of plugin must provide: sample sources, cameras, trigger sources and sinks.

The device programs talk to plugins only through these contracts, so a third-party plugin
(registered by entry point, see ``registry``) slots in without touching them. Every plugin
class also declares ``OPTIONS`` (name -> converter, see ``options``) and a ``validate``
classmethod that checks a URI plus options *without opening hardware*; ``factoryedge run
--check`` calls it for every plugin in a profile. ``UriPlugin`` gives plugins whose
constructor touches no hardware that ``validate`` for free.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from factoryedge.runtimes.options import OptionSpec


class UriPlugin:
    """Mixin: ``validate`` builds the plugin from its URI and drops it (the constructor opens nothing)."""

    OPTIONS: ClassVar[OptionSpec] = {}

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> Any:  # pragma: no cover - each plugin defines it
        raise NotImplementedError

    @classmethod
    def validate(cls, uri: str, **options: Any) -> None:
        """Raise ConfigError (an ``OptionError`` naming the key) if the URI or an option is bad."""
        cls.from_uri(uri, **options)


@runtime_checkable
class SampleSource(Protocol):
    """A sensor stream: ``blocks()`` yields ``SampleBlock`` until ``close()`` (from any thread).

    ``sample_rate`` is the rate the source declares (from its URI, or from its data once
    opened), None while unknown; ``channels`` likewise. A device program refuses a bundle
    trained at another rate, because a rate mismatch alone makes every window look anomalous.
    ``RATE_BEFORE_OPEN`` says whether ``sample_rate`` is final before ``open()`` (a serial
    sensor: its URI declares it), so ``--check`` can compare it without opening anything.
    """

    RATE_BEFORE_OPEN: ClassVar[bool]
    sample_rate: float | None

    @property
    def channels(self) -> int | None: ...

    @property
    def stats(self) -> Mapping[str, int]: ...

    def open(self) -> SampleSource: ...

    def close(self) -> None: ...

    def blocks(self) -> Iterator[Any]: ...

    def __enter__(self) -> SampleSource: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Camera(Protocol):
    """Frames from one camera: ``frames()`` yields ``cameras.frames.Frame`` until ``close()``.

    ``is_open`` is False while the camera reconnects; ``stats`` counts frames, skips,
    corrupt images and reconnects.
    """

    uri: str

    @property
    def is_open(self) -> bool: ...

    @property
    def stats(self) -> Mapping[str, int]: ...

    def open(self) -> Camera: ...

    def close(self) -> None: ...

    def frames(self) -> Iterator[Any]: ...


@runtime_checkable
class TriggerSource(Protocol):
    """Part triggers: ``iter()`` yields ``Trigger`` until ``close()``; malformed ones go to ``on_error``."""

    name: str
    on_error: Callable[[str, bytes], None]

    @property
    def stats(self) -> Mapping[str, int]: ...

    def start(self) -> TriggerSource: ...

    def close(self) -> None: ...

    def __iter__(self) -> Iterator[Any]: ...


@runtime_checkable
class Sink(Protocol):
    """Where messages go: events are stored and forwarded (at least once), telemetry is best effort.

    ``identity`` and ``topics`` are the ``messages`` contract's; ``subscribe`` receives raw
    payloads on a topic (triggers), ``subscribe_commands`` parsed commands.
    """

    identity: Any
    topics: Any

    def publish_event(self, topic: str, payload: Any, retain: bool = False, wait: bool = True) -> Any:
        """Store (durably) and forward; the row id, or with ``wait=False`` a receipt without waiting for the disk.

        None where the outbox could not store it (a full disk) but it was sent directly (at most once).
        """

    def publish_telemetry(self, topic: str, payload: Any) -> bool: ...

    def subscribe(self, topic: str, callback: Callable[[bytes], None], qos: int = 1) -> None: ...

    def subscribe_commands(self, callback: Callable[[Any], Any]) -> None: ...

    def stats(self) -> Any: ...

    def close(self, timeout: float = 10.0) -> bool: ...
