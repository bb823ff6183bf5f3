"""The ``inspection`` section of a device profile: camera, trigger, deadline and reject archive.

``InspectionConfig.parse(mapping, where="profile.yaml")`` validates it and raises one
ConfigError naming the key path, the bad value and what is valid. The URIs are checked for
scheme and options here, without opening anything (no camera or serial port is touched).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from factoryedge.errors import ConfigError
from factoryedge.runtimes import registry


class ArchiveConfig(BaseModel):
    """Where rejected parts' images go, and how much of the disk they may take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path | None = None
    max_items: int = Field(1000, ge=1, le=10_000_000)
    max_mb: float = Field(500.0, gt=0, le=10_000_000)
    heatmap: bool = True
    queue: int = Field(64, ge=1, le=10_000)


class InspectionConfig(BaseModel):
    """On-line sorting settings; times in milliseconds from the trigger's arrival on this host.

    ``frame_max_wait_ms``: how long to wait for the first frame captured at or after the
    trigger (minus ``frame_max_age_ms``, for a camera whose frames arrive slightly before
    the trigger does) before deciding fail-safe with reason ``no_frame``; it must be shorter
    than the deadline. ``publish_margin_ms``: the fail-safe ``deadline`` decision is made this
    long before the deadline, so its publish completes in time. ``fail_safe``: the verdict
    for a part that could not be judged (``reject`` unless the line prefers to let parts
    through and re-inspect them later).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    camera: str
    camera_options: dict[str, Any] = Field(default_factory=dict)
    trigger: str = "mqtt"
    deadline_ms: float = Field(100.0, gt=0, le=60_000)
    fail_safe: Literal["reject", "pass"] = "reject"
    frame_max_wait_ms: float = Field(50.0, gt=0, le=60_000)
    frame_max_age_ms: float = Field(0.0, ge=0, le=10_000)
    publish_margin_ms: float = Field(2.0, ge=0, le=1000)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)

    @field_validator("camera")
    @classmethod
    def _camera_scheme(cls, v: str) -> str:
        return registry.known_uri("camera", v)

    @field_validator("trigger")
    @classmethod
    def _trigger_scheme(cls, v: str) -> str:
        return registry.known_uri("trigger", v)

    @model_validator(mode="after")
    def _times(self) -> InspectionConfig:
        if self.frame_max_wait_ms >= self.deadline_ms:
            raise ValueError(f"frame_max_wait_ms={self.frame_max_wait_ms:g} must be below deadline_ms="
                             f"{self.deadline_ms:g}; the part also needs time to be scored")
        if self.publish_margin_ms >= self.deadline_ms:
            raise ValueError(f"publish_margin_ms={self.publish_margin_ms:g} must be below deadline_ms={self.deadline_ms:g}")
        return self

    def check_plugins(self, where: str = "inspection") -> None:
        """Validate the camera's and the trigger's options without opening either."""
        registry.check("camera", self.camera, self.camera_options, at=f"{where}.camera",
                       options_at=f"{where}.camera_options")
        registry.check("trigger", self.trigger, at=f"{where}.trigger")

    @classmethod
    def parse(cls, data: Any, where: str = "inspection") -> InspectionConfig:
        """Validate a mapping (e.g. the YAML section), plugin options included.

        ConfigError '<where>: <key.path>: <reason> (got ...)' or '<where>.<key.path>: <reason>'.
        """
        try:
            config = cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            path = ".".join(str(p) for p in err["loc"]) or "(section)"
            msg = err["msg"].removeprefix("Value error, ")
            got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
            raise ConfigError(f"{where}: {path}: {msg}{got}") from None
        config.check_plugins(where)
        return config
