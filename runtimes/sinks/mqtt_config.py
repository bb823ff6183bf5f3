"""Reading ``mqtt://`` and ``mqtts://`` sink URIs into checked settings.

``mqtt://HOST[:PORT]?site=S&line=L&machine=M&OPTION=VALUE...``; every option may also be
given as a keyword argument (keywords win), which is how device profiles pass them.
Credentials never appear in the URI itself: URIs end up in logs, profiles and bug reports.
A user name may be given plainly (``username=``), from an environment variable
(``username_env=``) or a file (``username_file=``); a password only from an environment
variable (``password_env=``) or a file (``password_file=``, trailing newline stripped), e.g.
a systemd credential or a root-only file under /etc/factoryedge.
"""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from factoryedge.errors import ConfigError
from factoryedge.runtimes.messages import Identity
from factoryedge.runtimes.options import OptionError, masked, query_options, read_secret

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
PROTOCOLS = {"5": "5", "5.0": "5", "3.1.1": "3.1.1", "311": "3.1.1"}
OPTIONS = (
    "site", "line", "machine", "device_id", "client_id", "outbox", "max_pending", "max_bytes", "keep_delivered",
    "qos", "protocol", "keepalive", "max_inflight", "reconnect_min", "reconnect_max", "topic_root",
    "status_expiry_s", "trigger_session_s",
    "ca", "cert", "key", "tls_insecure",
    "username", "username_env", "username_file", "password_env", "password_file",
)
_CREDENTIALS_HELP = ("give username=NAME (or username_env=VAR / username_file=PATH) and password_env=VAR "
                     "or password_file=PATH as options instead")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True)
class MqttConfig:
    """Everything needed to connect; ``password`` is kept out of repr so it never reaches a log."""

    host: str
    port: int
    client_id: str
    tls: bool = False
    qos: int = 1
    protocol: str = "5"
    keepalive: int = 30
    max_inflight: int = 20
    reconnect_min: float = 1.0
    reconnect_max: float = 30.0
    topic_root: str = "factoryedge"
    # seconds (MQTT expiry is whole seconds) after which a retained "online" means nothing; 0: never expires
    status_expiry_s: int = 60
    trigger_session_s: int = 30  # how long the broker holds triggers for a station that is away
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    tls_insecure: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SinkSettings:
    """A parsed sink URI: connection, machine identity and where the outbox lives."""

    mqtt: MqttConfig
    identity: Identity
    outbox: Path
    max_pending: int | None
    max_bytes: int | None = None  # a bounded outbox (bytes); None: only the disk bounds it
    keep_delivered: int = 0  # delivered events kept in the outbox for diagnosis


def parse_mqtt_uri(uri: str, *, identity: Identity | None = None, resolve_secrets: bool = True,
                   **options: Any) -> SinkSettings:
    """Parse and check a sink URI plus keyword options; raises ConfigError naming the problem.

    ``identity`` is the device's identity, converted once by the device program; without it
    the URI's ``site``/``line``/``machine``/``device_id`` options give it (tools, tests).
    ``resolve_secrets=False`` checks every option without reading secret files, environment
    variables or TLS files, as ``factoryedge run --check`` does on a machine that is not the
    device; they are read, and missing ones reported, when the sink is opened.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(f"{uri!r} is not an MQTT URI; use mqtt://HOST:1883?... or mqtts://HOST:8883?...")
    if parts.username is not None or parts.password is not None:
        shown = f"{parts.scheme}://{parts.username or ''}{':***' if parts.password is not None else ''}@{parts.hostname}"
        raise ConfigError(f"credentials in the URI ({shown!r}) are not allowed, because URIs are logged; "
                          + _CREDENTIALS_HELP)
    if not parts.hostname:
        raise ConfigError(f"{uri!r} names no broker host; write e.g. {scheme}://broker.local:{DEFAULT_PORTS[scheme]}")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ConfigError(f"{uri!r} has an invalid port; use a number from 1 to 65535") from None
    if parts.path not in ("", "/"):
        raise ConfigError(f"{uri!r}: an MQTT URI has no path ({parts.path!r}); put options after '?'")
    opts = query_options(uri, parts.query)
    opts.update({k: str(v) for k, v in options.items() if v is not None})
    unknown = sorted(set(opts) - set(OPTIONS))
    if "password" in unknown or "pass" in unknown:
        raise ConfigError(f"a password option in {masked(uri)!r} is not allowed; " + _CREDENTIALS_HELP)
    if unknown:
        raise OptionError(f"unknown MQTT sink options {unknown}; valid: {', '.join(OPTIONS)}", unknown[0])
    tls = scheme == "mqtts"
    for name in ("ca", "cert", "key", "tls_insecure"):
        if name in opts and not tls:
            raise OptionError(f"option {name}={opts[name]!r} needs TLS; use mqtts://{parts.hostname}:8883", name)
    for name in ("ca", "cert", "key"):
        if resolve_secrets and name in opts and not Path(opts[name]).is_file():
            raise OptionError(f"{name}={opts[name]!r}: no such file; give the path of a PEM file", name)
    if "key" in opts and "cert" not in opts:
        raise ConfigError(f"key={opts['key']!r} given without cert=; a client key needs its certificate")

    if identity is None:
        identity = _identity(opts)
    else:
        given = sorted({"site", "line", "machine", "device_id"} & set(opts))
        if given:
            raise OptionError(f"MQTT options {given} are set by the profile's identity section; remove them here",
                              given[0])
    client_id = opts.get("client_id", f"factoryedge-{identity.device_id}")
    if not _CLIENT_ID.fullmatch(client_id):
        raise ConfigError(f"client_id={client_id!r}: use 1-128 characters from A-Z a-z 0-9 . _ -")
    username = read_secret(opts, "username", ("username", "username_env", "username_file"), resolve_secrets)
    password = read_secret(opts, "password", ("password_env", "password_file"), resolve_secrets)
    if password is not None and username is None:
        raise ConfigError("a password is given without a user name; add username=NAME (or username_env/_file)")
    max_pending = opts.get("max_pending", "100000")
    mqtt = MqttConfig(
        host=parts.hostname, port=port, client_id=client_id, tls=tls,
        qos=_choice(opts, "qos", "1", {"1": 1, "2": 2}, "(events need at-least-once; telemetry is always QoS 0)"),
        protocol=_choice(opts, "protocol", "5", PROTOCOLS, ""),
        keepalive=int(_number(opts, "keepalive", 30, 5, 65535, int)),
        max_inflight=int(_number(opts, "max_inflight", 20, 1, 65535, int)),
        reconnect_min=_number(opts, "reconnect_min", 1.0, 0.01, 3600, float),
        reconnect_max=_number(opts, "reconnect_max", 30.0, 0.01, 3600, float),
        topic_root=opts.get("topic_root", "factoryedge"),
        status_expiry_s=int(_number(opts, "status_expiry_s", 60, 0, 86400, int)),
        trigger_session_s=int(_number(opts, "trigger_session_s", 30, 1, 86400, int)),
        ca=opts.get("ca"), cert=opts.get("cert"), key=opts.get("key"),
        tls_insecure=_choice(opts, "tls_insecure", "false", {"true": True, "false": False}, ""),
        username=username, password=password,
    )
    if 0 < mqtt.status_expiry_s < 3:
        raise OptionError(f"status_expiry_s={mqtt.status_expiry_s!r} is too short: the status is refreshed every "
                          "third of it; use 0 (never expires) or at least 3", "status_expiry_s")
    if mqtt.reconnect_max < mqtt.reconnect_min:
        raise ConfigError(f"reconnect_max={mqtt.reconnect_max!r} is below reconnect_min={mqtt.reconnect_min!r}")
    outbox = Path(opts["outbox"]) if "outbox" in opts else default_state_dir() / f"outbox-{client_id}.sqlite"
    return SinkSettings(mqtt=mqtt, identity=identity, outbox=outbox,
                        max_pending=None if max_pending.lower() == "none" else
                        int(_number(opts, "max_pending", 100000, 1, 10**12, int)),
                        max_bytes=None if opts.get("max_bytes", "none").lower() == "none" else
                        int(_number(opts, "max_bytes", 0, 64 * 1024, 10**15, int)),
                        keep_delivered=int(_number(opts, "keep_delivered", 0, 0, 10**7, int)))


def default_state_dir() -> Path:
    """systemd's ``$STATE_DIRECTORY`` (StateDirectory=), else ``~/.local/state/factoryedge``."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    return Path.home() / ".local" / "state" / "factoryedge"


def _identity(opts: dict[str, str]) -> Identity:
    missing = [k for k in ("site", "line", "machine") if not opts.get(k)]
    if missing:
        raise ConfigError(f"the MQTT sink needs {', '.join(missing)} for its topics; e.g. "
                          "mqtt://broker:1883?site=plant1&line=press3&machine=m7")
    device_id = opts.get("device_id") or socket.gethostname().split(".")[0]
    return Identity(site=opts["site"], line=opts["line"], machine=opts["machine"], device_id=device_id)


def _choice(opts: dict[str, str], name: str, default: str, valid: dict[str, Any], why: str) -> Any:
    value = opts.get(name, default).lower()
    if value not in valid:
        raise OptionError(f"{name}={opts[name]!r} is not valid; use one of {', '.join(valid)} {why}".rstrip(), name)
    return valid[value]


def _number(opts: dict[str, str], name: str, default: float, lo: float, hi: float, kind: type) -> float:
    if name not in opts:
        return default
    try:
        value = kind(opts[name])
    except ValueError:
        value = None
    if value is None or not (lo <= value <= hi):
        raise OptionError(f"{name}={opts[name]!r} is not valid; use a{'n integer' if kind is int else ' number'} "
                          f"from {lo} to {hi}", name)
    return value
