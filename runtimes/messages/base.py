"""What every payload shares, and the strict building / lenient parsing of JSON payloads.

Every payload carries ``"schema": "factoryedge.<kind>/<major>"``. Within one major version
fields are only ever added, so consumers must ignore fields they do not know (``parse``
does exactly that). Builders refuse unknown fields (a typo is a bug) and non-finite numbers
(JSON has no NaN). Times are given twice: ISO-8601 UTC for people and epoch seconds for
programs. The wall clock behind them is ``factoryedge.runtimes.clock``'s, and it can jump:
payloads that consumers must order also carry the device's own ``seq`` and ``time_mono``.
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factoryedge.errors import ConfigError
from factoryedge.runtimes import clock
from factoryedge.runtimes.messages.identity import Identity, iso_utc


class Payload(BaseModel):
    """Common to every payload: schema tag, machine identity, and when it was made."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              populate_by_name=True, protected_namespaces=())

    # "schema" would shadow a (deprecated) BaseModel attribute, hence the alias.
    schema_: str = Field(alias="schema")
    device_id: str
    site: str
    line: str
    machine: str
    time_utc: str
    time_epoch: float

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON, as published."""
        return self.model_dump_json(by_alias=True).encode()


def common(schema: str, identity: Identity, now: float | None) -> dict[str, Any]:
    """The shared fields of a payload made now (or at ``now``)."""
    now = clock.wall() if now is None else now
    return {"schema": schema, **identity.fields(), "time_utc": iso_utc(now), "time_epoch": now}


def build(cls: type[Payload], **fields: Any):
    """A payload from its fields; ConfigError naming the first invalid one."""
    try:
        return cls.model_validate(fields)
    except ValidationError as e:
        raise ConfigError(f"invalid {fields.get('schema')} payload: {first_error(e)}") from None


def parse_as(cls: type[Payload], obj: dict[str, Any]):
    """A payload as a consumer reads it: fields this version does not know are ignored."""
    known = {f.alias or name for name, f in cls.model_fields.items()}
    return build(cls, **{k: v for k, v in obj.items() if k in known})


def json_object(data: bytes | str, what: str, example: str) -> dict[str, Any]:
    """The JSON object in ``data``, or a ConfigError that shows an example of a valid one."""
    shown = data[:200]
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{what} {shown!r} is not valid UTF-8 JSON ({e}); e.g. {example}") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{what} {shown!r} must be a JSON object; e.g. {example}")
    return obj


def first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"
