"""The device profile: one YAML file that says what this device reads, runs and publishes.

Validated into typed objects at load, plugin options included (each plugin checks its URI
and options without opening hardware); any error names the file, the key path and the
reason. Secrets never live in the YAML: MQTT passwords and TLS keys are referenced by
environment variable or file path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from factoryedge.bundle import format_validation_error
from factoryedge.debounce import DebounceConfig
from factoryedge.errors import ConfigError
from factoryedge.runtimes import registry
from factoryedge.runtimes.inspection.config import InspectionConfig
from factoryedge.runtimes.messages import Identity
from factoryedge.runtimes.plant.config import SparkplugConfig, WebConfig
from factoryedge.signing import PublicKey, load_public_keys


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SensorConfig(_Section):
    """Where the samples come from: a source URI plus options for its plugin."""

    uri: str = Field(description="source URI, e.g. serial:///dev/factoryedge-vib0?rate=25600&baud=921600&format=fe1")
    options: dict = Field(default_factory=dict, description="extra options for the source plugin")

    @field_validator("uri")
    @classmethod
    def _scheme(cls, v: str) -> str:
        return registry.known_uri("source", v)


class ModelConfig(_Section):
    """Which bundle to run, on which backend, in batches of how many inputs, signed by whom."""

    bundle: Path
    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    batch: int = Field(8, ge=1, le=1024, description="windows per inference call")
    trusted_keys: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (.pub from 'factoryedge keygen'); when given, a bundle runs only if "
        "signed by one of them and unchanged since (at start, --check and reload)",
    )

    def trusted(self) -> list[PublicKey]:
        """The trusted keys, read afresh (a reload honours a key file replaced meanwhile)."""
        return load_public_keys(self.trusted_keys)


class BaselineConfig(_Section):
    """Per-machine baselining: learn this machine's normal scores, then set its threshold from them."""

    mode: Literal["off", "auto", "calibrate"] = Field(
        "auto", description="auto: use a persisted baseline or calibrate once; calibrate: always re-learn at start"
    )
    skip_s: float = Field(
        0.0, ge=0, allow_inf_nan=False,
        description="seconds of run-in to skip before learning (scored, but neither learned from nor raising events)",
    )
    duration_s: float = Field(
        600.0, gt=0, allow_inf_nan=False,
        description="seconds of normal running to learn from, after the skip. Seconds of the stream, measured by the "
        "windows' end times or by the samples windowed (windows x hop), whichever says more: for periodic snapshots "
        "the end times span the gaps between bursts (900 s of 0.1 s snapshots every 10 s is ~90 bursts)",
    )
    state: Path = Path("/var/lib/factoryedge/baseline.json")

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        # YAML 1.1 reads a bare `off` as false; that is what the user wrote.
        return "off" if v is False else v


class ScoringConfig(DebounceConfig):
    """The debounce (k of n windows, hysteresis, severities) plus per-machine baselining."""

    baseline: BaselineConfig = Field(default_factory=BaselineConfig)


class MqttSection(_Section):
    """The plant broker: URI, sink options (TLS, credentials by file or environment), outbox, report clocks."""

    uri: str = Field(description="mqtt://host:1883 or mqtts://host:8883 (no credentials in the URI)")
    options: dict = Field(default_factory=dict, description="MqttSink options: client_id, qos, protocol, tls and secret files")
    outbox: Path = Path("/var/lib/factoryedge/outbox.sqlite")
    telemetry_interval_s: float = Field(10.0, gt=0)
    health_interval_s: float = Field(30.0, gt=0)

    @field_validator("uri")
    @classmethod
    def _scheme(cls, v: str) -> str:
        return registry.known_uri("sink", v)

    @field_validator("options")
    @classmethod
    def _no_inline_secrets(cls, v: dict) -> dict:
        for key in v:
            # "key" is the TLS key *file path*; these would be the secret itself.
            if key.lower() in ("password", "secret", "token", "passwd"):
                raise ValueError(
                    f"option {key!r} would put a secret in the profile; use password_env / password_file instead"
                )
        return v


class CommandsConfig(_Section):
    """Who may change this device's behaviour over MQTT (set_threshold, recalibrate, reload)."""

    require: Literal["any", "signed"] = Field(
        "any", description="signed: run only commands in an Ed25519-signed envelope from a trusted key, fresh "
        "and not replayed ('factoryedge sign-command'); anything else is refused and counted")
    trusted_keys: list[Path] = Field(default_factory=list, description="public keys (.pub) of who may sign commands")
    max_age_s: float = Field(60.0, gt=0, le=86400, allow_inf_nan=False,
                             description="how far a command's signing time may be from this device's clock")

    @model_validator(mode="after")
    def _keys_when_signed(self):
        if self.require == "signed" and not self.trusted_keys:
            raise ValueError("require: signed needs trusted_keys (the .pub files of who may sign commands)")
        return self


class LoggingConfig(_Section):
    """Log level, and text or one JSON object per line (for journald and log shippers)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class DeviceProfile(_Section):
    """Condition monitoring: a vibration sensor, a vibration bundle, anomalies over MQTT."""

    kind: Literal["condition_monitoring"] = "condition_monitoring"
    identity: Identity
    sensor: SensorConfig
    model: ModelConfig
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    mqtt: MqttSection
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    sparkplug: SparkplugConfig | None = None
    web: WebConfig | None = None
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    def check_plugins(self) -> None:
        """Validate the sensor's and the sink's URI and options without opening them."""
        registry.check("source", self.sensor.uri, self.sensor.options, at="sensor.uri", options_at="sensor.options")
        _check_sink(self)


class InspectionProfile(_Section):
    """Visual inspection and sorting: a camera, an image bundle, a pass/reject decision per part over MQTT."""

    kind: Literal["inspection"]
    identity: Identity
    inspection: InspectionConfig
    model: ModelConfig
    mqtt: MqttSection
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    sparkplug: SparkplugConfig | None = None
    web: WebConfig | None = None
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    def check_plugins(self) -> None:
        """Validate the camera's, the trigger's and the sink's URI and options without opening them."""
        self.inspection.check_plugins("inspection")
        _check_sink(self)


def _check_sink(profile: DeviceProfile | InspectionProfile) -> None:
    registry.check("sink", profile.mqtt.uri, {**profile.mqtt.options, "identity": profile.identity},
                   at="mqtt.uri", options_at="mqtt.options")
    sp = profile.sparkplug
    if sp is not None and (sp.uri is not None or sp.options is not None):
        options = profile.mqtt.options if sp.options is None else sp.options
        registry.check("sink", sp.uri or profile.mqtt.uri, {**options, "identity": profile.identity},
                       at="sparkplug.uri", options_at="sparkplug.options")


# libyaml's safe loader where PyYAML was built with it (its wheels are): the same safe types,
# about ten times faster to parse than the pure-Python one on a device's start.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_profile(path: str | Path) -> DeviceProfile | InspectionProfile:
    """Read and validate a profile; relative paths inside it are relative to the file.

    ``kind: inspection`` selects the inspection profile; anything else (or no kind) is
    condition monitoring.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"device profile {p} does not exist")
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"{p}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a profile is a YAML mapping with sections identity, sensor, model, mqtt")
    cls = InspectionProfile if raw.get("kind") == "inspection" else DeviceProfile
    try:
        profile = cls.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{p}: {format_validation_error(e)}") from None
    try:
        profile.check_plugins()
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    base = p.resolve().parent
    profile.model.bundle = _relative_to(base, profile.model.bundle)
    profile.model.trusted_keys = [_relative_to(base, k) for k in profile.model.trusted_keys]
    profile.commands.trusted_keys = [_relative_to(base, k) for k in profile.commands.trusted_keys]
    for where, keys in (("model", profile.model.trusted_keys), ("commands", profile.commands.trusted_keys)):
        for i, key in enumerate(keys):
            try:
                load_public_keys([key])
            except ConfigError as e:
                raise ConfigError(f"{p}: {where}.trusted_keys.{i}: {e}") from None
    profile.mqtt.outbox = _relative_to(base, profile.mqtt.outbox)
    if profile.web is not None and profile.web.operator_token_file is not None:
        profile.web.operator_token_file = _relative_to(base, profile.web.operator_token_file)
    if isinstance(profile, InspectionProfile):
        archive = profile.inspection.archive
        if archive.dir is not None:
            archive = archive.model_copy(update={"dir": _relative_to(base, archive.dir)})
            profile.inspection = profile.inspection.model_copy(update={"archive": archive})
    else:
        profile.scoring.baseline.state = _relative_to(base, profile.scoring.baseline.state)
    return profile


def _relative_to(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path
