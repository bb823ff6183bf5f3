"""A loopback TCP proxy between a device and a broker that a test can turn into a bad network.

Modes, switched at any time with ``set_mode`` (once it returns, no byte passes the old way):

- ``forward``: every byte goes through.
- ``drop_puback``: as forward, but MQTT PUBACK packets from the broker to the client are
  swallowed (the broker got the message, the device never hears so).
- ``stall``: nothing is forwarded either way and nothing is closed: a half-open link, as a
  dead switch or a cable pulled two hops away looks to both ends. New connections are
  accepted but stall too. Bytes sent meanwhile wait in the sockets and flow once forwarding
  resumes (more hostile than a real path, which drops them and lets TCP re-send).

``cut()`` closes every open connection on both sides at once (a reset link); new connections
are accepted afterwards in the current mode. Both directions are framed by MQTT packet (fixed
header + remaining length), so switching modes never cuts a packet in half, and ``stats()``
counts the PUBLISH packets the client sent with the DUP flag: its MQTT library's own re-sends,
as opposed to a fresh publish of the same event. Standard library only.
"""
from __future__ import annotations

import select
import socket
import threading

HOST = "127.0.0.1"
PUBLISH, PUBACK = 3, 4
DUP = 0x08  # the PUBLISH flag a client sets when it sends a packet again
MODES = ("forward", "drop_puback", "stall")
_POLL_S = 0.05  # how often an idle pump looks at the mode and the closed flag


def split_packets(buffer: bytearray) -> list[bytes]:
    """Remove and return the complete MQTT packets at the start of ``buffer``; a partial one stays.

    A packet is a type/flags byte, the remaining length as a varint of 1-4 bytes (7 bits each,
    least significant first, the top bit meaning "more"), then that many bytes.
    """
    packets = []
    while len(buffer) >= 2:
        length, multiplier, pos = 0, 1, 1
        while True:
            if pos >= len(buffer):
                return packets  # the length itself is not complete yet
            byte = buffer[pos]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            pos += 1
            if not byte & 0x80:
                break
            if pos > 4:
                raise ValueError(f"malformed MQTT remaining length in {bytes(buffer[:8])!r}")
        end = pos + length
        if len(buffer) < end:
            return packets
        packets.append(bytes(buffer[:end]))
        del buffer[:end]
    return packets


class _Link:
    """One client connection and its connection to the broker, with a pump per direction."""

    def __init__(self, proxy: FaultyProxy, client: socket.socket):
        self.proxy = proxy
        self.client = client
        self.upstream = socket.create_connection(proxy.target)
        for s in (client, self.upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = threading.Event()
        self.threads = [threading.Thread(target=self._pump, args=(client, self.upstream, False), daemon=True),
                        threading.Thread(target=self._pump, args=(self.upstream, client, True), daemon=True)]
        for t in self.threads:
            t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_broker: bool) -> None:
        pending = bytearray()
        try:
            while not self.closed.is_set():
                if self.proxy.mode == "stall":
                    self.proxy._flowing.wait(_POLL_S)
                    continue
                ready, _, _ = select.select([src], [], [], _POLL_S)
                if not ready:
                    continue
                with self.proxy._forwarding:  # so that once set_mode returns, no byte passes the old way
                    if self.proxy.mode == "stall":
                        continue
                    data = src.recv(65536)
                    if not data:
                        break
                    pending += data
                    out = bytearray()
                    for packet in split_packets(pending):
                        if not from_broker:
                            if packet[0] >> 4 == PUBLISH and packet[0] & DUP:
                                self.proxy._bump("dup_publishes")  # a client's own re-send of a PUBLISH
                        elif packet[0] >> 4 == PUBACK and self.proxy.mode == "drop_puback":
                            self.proxy._bump("pubacks_dropped")
                            continue
                        out += packet
                    if out:
                        dst.sendall(out)
        except (OSError, ValueError):
            pass  # a cut, or the peer went: the link is over either way
        self.close()

    def close(self) -> None:
        self.closed.set()
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class FaultyProxy:
    """Listens on a free loopback port (``port``) and forwards to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.mode = "forward"
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._forwarding = threading.Lock()  # held while a chunk is forwarded; set_mode waits for it
        self._links: list[_Link] = []
        self._counts: dict[str, int] = {"accepted": 0, "cuts": 0, "pubacks_dropped": 0, "dup_publishes": 0}
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(16)
        self._listener.settimeout(_POLL_S)  # so stop() is seen: close() does not wake a blocked accept
        self.host, self.port = self._listener.getsockname()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="test-proxy-accept", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; use one of {MODES}")
        with self._forwarding:
            self.mode = mode
        if mode == "stall":
            self._flowing.clear()
        else:
            self._flowing.set()

    def cut(self) -> None:
        """Close every open connection, both sides."""
        with self._lock:
            links, self._links = self._links, []
            self._counts["cuts"] += 1
        for link in links:
            link.close()

    def _bump(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts, open=sum(not link.closed.is_set() for link in self._links))

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            try:
                link = _Link(self, client)
            except OSError:
                client.close()  # the broker is down: the device sees a refused connection
                continue
            with self._lock:
                self._links = [k for k in self._links if not k.closed.is_set()] + [link]
                self._counts["accepted"] += 1

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        self.cut()
        self._flowing.set()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
