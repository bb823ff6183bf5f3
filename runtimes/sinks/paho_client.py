"""The paho-mqtt side of the MQTT sink: importing paho, building a configured client, socket options.

Kept apart from ``mqtt`` so the sink reads as store-and-forward logic; paho is imported only
when a sink is opened.
"""
from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

from factoryedge.errors import SinkError, missing_dependency

from .mqtt_config import MqttConfig

log = logging.getLogger("factoryedge.runtimes.sinks.mqtt")


def import_paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise missing_dependency("paho.mqtt", "device", "publishing over MQTT") from None
    return mqtt


def make_client(mqtt: Any, cfg: MqttConfig, status_topic: str, will: bytes) -> Any:
    """A paho client for ``cfg``: protocol, credentials, TLS, the Last Will, reconnect backoff, in-flight window.

    Callbacks are the caller's to set; nothing connects yet.
    """
    # Clean session: commands are only meant for a device that is online to answer them;
    # a stale set_threshold queued for hours should not apply itself. Events need no
    # broker session because the outbox re-sends them; and since the broker keeps nothing
    # of a clean session, the drainer drops paho's own re-sends of outbox rows on reconnect
    # (drainer.take_over_resends), which leaves the outbox as the one re-send path.
    protocol = mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
                         protocol=protocol, clean_session=None if cfg.protocol == "5" else True)
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.password)
    if cfg.tls:
        try:
            client.tls_set(ca_certs=cfg.ca, certfile=cfg.cert, keyfile=cfg.key)
        except (OSError, ValueError) as e:
            raise SinkError(f"TLS setup failed for ca={cfg.ca!r} cert={cfg.cert!r} key={cfg.key!r}: {e}") from e
        if cfg.tls_insecure:
            log.warning("mqtt TLS host name checking is off (tls_insecure=true); use only on a lab network")
            client.tls_insecure_set(True)
    client.will_set(status_topic, will, qos=1, retain=True)
    client.reconnect_delay_set(cfg.reconnect_min, cfg.reconnect_max)
    client.max_inflight_messages_set(cfg.max_inflight)
    client.enable_logger(logging.getLogger("factoryedge.runtimes.sinks.mqtt.paho"))  # paho's own errors
    return client


def no_delay(client: Any) -> None:
    """Turn Nagle's algorithm off: a decision or trigger is one small packet that must go now.

    With it on, a small PUBLISH waiting behind an un-acknowledged one meets the peer's
    delayed ACK and arrives about 40 ms late on Linux.
    """
    sock = client.socket()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError) as e:  # not a TCP socket (e.g. a websocket wrapper)
        log.debug("mqtt could not set TCP_NODELAY: %s", e)


def diagnose_tls(cfg: MqttConfig, timeout: float = 5.0) -> str | None:
    """Why a TLS connection to the broker fails, in words (None when the handshake succeeds or TLS is off).

    paho reports a failed TLS connect only as "connection failed"; a commissioning engineer
    needs to know whether the broker's certificate is not trusted (the ``ca`` option), the
    name does not match, or the broker refused this device's certificate. One handshake
    with the same files says which; nothing is sent after it.
    """
    if not cfg.tls:
        return None
    try:
        ctx = ssl.create_default_context(cafile=cfg.ca)
        if cfg.cert:
            ctx.load_cert_chain(cfg.cert, cfg.key)
        if cfg.tls_insecure:
            ctx.check_hostname = False
        with socket.create_connection((cfg.host, cfg.port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=cfg.host) as tls:
            tls.recv(0)  # with TLS 1.3 a refused client certificate shows only on the first read
    except ssl.SSLCertVerificationError as e:
        return (f"the broker's certificate is not trusted ({e.verify_message}); the ca option ({cfg.ca}) must hold "
                "the CA that signed it, and the broker's name or address must be in it")
    except ssl.SSLError as e:
        reason = e.reason or str(e)
        if "CERTIFICATE" in str(reason).upper() or "ALERT" in str(reason).upper():
            return f"the broker refused this device's TLS certificate ({reason}); check the cert and key options"
        return f"the TLS handshake failed ({reason})"
    except TimeoutError:
        return None  # unreachable, not a TLS problem: the plain "cannot reach" message says it
    except OSError as e:
        if isinstance(e, ConnectionResetError):
            return "the broker closed the TLS handshake (it may require a client certificate this device lacks)"
        return None
    return None
