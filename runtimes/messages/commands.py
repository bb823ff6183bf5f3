"""Commands a plant system sends a device, and the device's answers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factoryedge.errors import ConfigError
from factoryedge.runtimes.messages.base import Payload, build, common, first_error, json_object
from factoryedge.runtimes.messages.identity import Identity

COMMAND = "factoryedge.command/1"
COMMAND_RESPONSE = "factoryedge.command_response/1"
COMMANDS = ("recalibrate", "reload", "set_threshold")
COMMAND_EXAMPLE = '{"command": "set_threshold", "args": {"threshold": 4.2}, "request_id": "r-17"}'


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SetThresholdArgs(_Args):
    threshold: float = Field(gt=0)


class RecalibrateArgs(_Args):
    duration_s: float | None = Field(None, gt=0)


class ReloadArgs(_Args):
    bundle: str | None = None


_ARGS: dict[str, type[_Args]] = {"set_threshold": SetThresholdArgs, "recalibrate": RecalibrateArgs,
                                 "reload": ReloadArgs}


@dataclass(frozen=True)
class Command:
    """A validated command; ``args`` holds the checked arguments (defaults filled in)."""

    command: str
    args: dict[str, Any]
    request_id: str | None = None


def parse_command(data: bytes | str) -> Command:
    """Parse a command message; raises ConfigError saying what was wrong and what is valid."""
    obj = json_object(data, "command", COMMAND_EXAMPLE)
    schema = obj.pop("schema", COMMAND)
    if schema != COMMAND:
        raise ConfigError(f"command schema {schema!r} is not supported; this device speaks {COMMAND!r}")
    unknown = set(obj) - {"command", "args", "request_id"}
    if unknown:
        raise ConfigError(f"unknown command fields {sorted(unknown)}; valid: command, args, request_id, schema")
    name = obj.get("command")
    if name not in _ARGS:
        raise ConfigError(f"unknown command {name!r}; valid commands: {', '.join(COMMANDS)}; e.g. {COMMAND_EXAMPLE}")
    request_id = request_id_of(obj)
    args = obj.get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(f"command {name!r}: args must be a JSON object, got {args!r}")
    try:
        checked = _ARGS[name].model_validate(args)
    except ValidationError as e:
        raise ConfigError(f"command {name!r}: invalid args {args!r}: {first_error(e)}") from None
    return Command(command=name, args=checked.model_dump(), request_id=request_id)


def request_id_of(obj: Any) -> str | None:
    """The request id of a (possibly malformed) command, so a rejection can still be matched."""
    if not isinstance(obj, dict):
        return None
    rid = obj.get("request_id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or len(str(rid)) > 128:
        raise ConfigError(f"request_id {rid!r} must be a string or integer of at most 128 characters")
    return str(rid)


@dataclass(frozen=True)
class CommandReply:
    """What a command handler answers: "ok", "accepted" (work goes on), "error" or "rejected"."""

    status: Literal["ok", "accepted", "error", "rejected"] = "ok"
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)


class CommandResponse(Payload):
    """The answer to one command, matched to it by ``request_id``."""

    schema_: Literal[COMMAND_RESPONSE] = Field(COMMAND_RESPONSE, alias="schema")
    request_id: str | None
    command: str | None
    status: Literal["ok", "accepted", "error", "rejected"]
    message: str = ""
    result: dict[str, Any] = Field(default_factory=dict)


def command_response(identity: Identity, *, request_id: str | None, command: str | None, status: str,
                     message: str = "", result: dict[str, Any] | None = None,
                     now: float | None = None) -> CommandResponse:
    return build(CommandResponse, **common(COMMAND_RESPONSE, identity, now), request_id=request_id,
                  command=command, status=status, message=message, result=result or {})
