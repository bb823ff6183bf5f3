"""The profile sections that switch on the plant-facing outputs: ``sparkplug`` and ``web``.

Both are off unless their section is present. Neither carries a secret: the Sparkplug
session reuses the ``mqtt`` section's broker options (credentials by file or environment)
unless it names its own, and the operator's token is a file path.
"""
from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Sparkplug B 3.0: group, edge node and host ids are UTF-8 strings without MQTT's
# reserved characters; we also keep them to what a SCADA tag path carries safely.
_SPARKPLUG_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SparkplugConfig(_Section):
    """A Sparkplug B 3.0 edge node beside the JSON topics (its own MQTT session, same broker by default)."""

    group_id: str = Field(description="Sparkplug group id, e.g. the plant area")
    edge_node_id: str = Field(description="Sparkplug edge node id: this device")
    primary_host_id: str | None = Field(
        None, description="wait for spBv1.0/STATE/<id> to say online before publishing BIRTHs, re-birth when it "
        "comes back")
    uri: str | None = Field(None, description="broker URI; default: the mqtt section's")
    options: dict | None = Field(None, description="MQTT client options (tls, username, password_file ...); default: "
                                 "the mqtt section's")
    report_interval_s: float = Field(1.0, gt=0, le=3600, allow_inf_nan=False,
                                     description="how often metrics are compared and changed ones sent as DDATA")

    @field_validator("group_id", "edge_node_id", "primary_host_id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        if v is not None and not _SPARKPLUG_ID.match(v):
            raise ValueError(f"{v!r} is not a valid Sparkplug id; use 1-64 of A-Z a-z 0-9 _ . : - (no / + #)")
        return v

    @field_validator("options")
    @classmethod
    def _no_inline_secrets(cls, v: dict | None) -> dict | None:
        for key in v or {}:
            if key.lower() in ("password", "secret", "token", "passwd"):
                raise ValueError(f"option {key!r} would put a secret in the profile; use password_env / "
                                 "password_file instead")
        return v


class WebConfig(_Section):
    """The device's small HTTP server: the operator page and Prometheus ``/metrics``."""

    host: str = Field("127.0.0.1", description="address to bind; localhost unless the plant network must reach it")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port, logged at start)")
    page: bool = Field(True, description="serve the operator page at /")
    metrics: bool = Field(True, description="serve Prometheus metrics at /metrics")
    operator_token_file: Path | None = Field(
        None, description="file holding the operator's token; without it the page is read-only")
    history_s: float = Field(600.0, gt=0, le=86400, allow_inf_nan=False,
                             description="how far back the score timeline reaches")


def read_operator_token(path: Path) -> str:
    """The operator's token from its file (surrounding whitespace ignored); ConfigError naming the file if unusable."""
    from factoryedge.errors import ConfigError

    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"web.operator_token_file {path}: cannot read it ({type(e).__name__}); give a readable "
                          "file holding the operator's token, or remove the key for a read-only page") from None
    if len(token) < 16:
        raise ConfigError(f"web.operator_token_file {path}: the token must be at least 16 characters (it has "
                          f"{len(token)}); e.g. the output of `openssl rand -hex 16`")
    return token


def check_plant_outputs(profile) -> str:
    """What ``run --check`` says about the plant outputs, after checking what they need without opening them.

    Raises ConfigError (an unreadable token file) or the missing-dependency error naming the
    extra to install, so a device is not found short of a package only when it starts.
    """
    from factoryedge.errors import missing_dependency

    said = []
    sp = profile.sparkplug
    if sp is not None:
        try:
            import google.protobuf  # noqa: F401
        except ImportError:
            raise missing_dependency("google.protobuf", "sparkplug", "the Sparkplug B edge node") from None
        host = f", BIRTHs while host {sp.primary_host_id} is online" if sp.primary_host_id else ""
        said.append(f"Sparkplug B edge node {sp.group_id}/{sp.edge_node_id}{host}")
    web = profile.web
    if web is not None:
        if web.metrics:
            try:
                import prometheus_client  # noqa: F401
            except ImportError:
                raise missing_dependency("prometheus_client", "ui", "the /metrics endpoint") from None
        if web.operator_token_file is not None:
            read_operator_token(web.operator_token_file)
        served = " and ".join(n for n, on in (("operator page", web.page), ("/metrics", web.metrics)) if on)
        access = "threshold changes with the operator token" if web.operator_token_file else "read-only"
        said.append(f"{served or 'nothing'} on http://{web.host}:{web.port}/ ({access})")
    return "; ".join(said)
