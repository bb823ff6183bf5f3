"""Commands a plant system sends a device, and the device's answers."""
from __future__ import annotations

import json
import re
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
# Checked on the raw bytes before any JSON parsing: a valid command is a few hundred bytes
# and three levels deep, and Python's json recurses once per level (100,000 "[" would end
# in a RecursionError on the command thread).
MAX_COMMAND_BYTES = 64 * 1024
MAX_COMMAND_DEPTH = 32
_STRUCTURE = re.compile(r'[\\"\[\]{}]')
# a request_id a refused payload may still carry, so the refusal can be matched to its request
_REQUEST_ID = re.compile(r'"request_id"\s*:\s*(?:"((?:[^"\\]|\\.){0,128})"|(-?\d{1,20})\b)')


class CommandRefused(ConfigError):
    """A command payload the device will not run; ``request_id`` is its id when one could be read."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


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
    signer: str | None = None  # the key fingerprint of a signed command (``command_auth``)


def parse_command(data: bytes | str) -> Command:
    """Parse a command message; raises CommandRefused (a ConfigError) saying what was wrong and what is valid.

    The payload is bounded before it is parsed: at most ``MAX_COMMAND_BYTES`` bytes of
    UTF-8 and ``MAX_COMMAND_DEPTH`` levels of nested arrays and objects.
    """
    text = bounded_command_text(data)
    try:
        obj = json_object(text, "command", COMMAND_EXAMPLE)
    except ConfigError as e:
        raise CommandRefused(str(e)) from None
    rid = None
    try:
        rid = request_id_of(obj)
        return _checked(obj, rid)
    except ConfigError as e:
        raise CommandRefused(str(e), rid) from None


def bounded_command_text(data: bytes | str) -> str:
    """The payload as text if it is within the size and nesting limits, else CommandRefused.

    One linear pass (a regex jumping between brackets, quotes and backslashes) counts the
    nesting depth outside JSON strings, so no parser ever sees a payload that could exhaust
    its recursion; brackets inside strings do not count.
    """
    if not isinstance(data, (bytes, bytearray, memoryview, str)):
        raise CommandRefused(f"a command is bytes or text, not {type(data).__name__}")
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_COMMAND_BYTES:
        raise CommandRefused(f"command of {len(raw)} bytes refused: at most {MAX_COMMAND_BYTES} bytes are accepted",
                             scan_request_id(raw[:MAX_COMMAND_BYTES]))
    if isinstance(data, str):
        text = data
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CommandRefused(f"command {raw[:200]!r} is not valid UTF-8 JSON ({e}); e.g. {COMMAND_EXAMPLE}") from None
    depth, in_string, escaped_at = 0, False, -1
    for m in _STRUCTURE.finditer(text):
        c, at = m.group(), m.start()
        if in_string:
            if at == escaped_at:
                continue
            if c == "\\":
                escaped_at = at + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > MAX_COMMAND_DEPTH:
                raise CommandRefused(f"command nested deeper than {MAX_COMMAND_DEPTH} levels of arrays and objects "
                                     f"refused; e.g. {COMMAND_EXAMPLE}", scan_request_id(raw))
        elif c in "]}":
            depth -= 1
            if depth < 0:
                break  # a closing bracket without an opening one: the parser stops (and fails) here
    return text


def scan_request_id(raw: bytes) -> str | None:
    """The request_id of a payload too large or deep to parse (or not yet trusted), if it names exactly one."""
    found = _REQUEST_ID.findall(raw.decode("utf-8", "replace"))
    if len(found) != 1:
        return None
    quoted, number = found[0]
    if number:
        return number
    try:
        return json.loads(f'"{quoted}"')  # a flat string literal: no recursion
    except ValueError:
        return None


def _checked(obj: dict[str, Any], request_id: str | None) -> Command:
    if not _encodable(json.dumps(obj, ensure_ascii=False)):  # depth is bounded: no deep recursion here
        raise ConfigError("command contains a lone UTF-16 surrogate escape (e.g. \"\\ud800\"), which is not text")
    schema = obj.pop("schema", COMMAND)
    if schema != COMMAND:
        raise ConfigError(f"command schema {schema!r} is not supported; this device speaks {COMMAND!r}")
    unknown = set(obj) - {"command", "args", "request_id"}
    if unknown:
        raise ConfigError(f"unknown command fields {sorted(unknown)}; valid: command, args, request_id, schema")
    name = obj.get("command")
    if name not in _ARGS:
        raise ConfigError(f"unknown command {name!r}; valid commands: {', '.join(COMMANDS)}; e.g. {COMMAND_EXAMPLE}")
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
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or len(str(rid)) > 128 or not _encodable(str(rid)):
        raise ConfigError(f"request_id {rid!r} must be a string or integer of at most 128 characters")
    return str(rid)


def _encodable(text: str) -> bool:
    """False for text with a lone surrogate (JSON allows "\\ud800"; UTF-8 cannot carry it back)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
