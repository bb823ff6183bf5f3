"""Reading and writing Sparkplug B in tests with Eclipse Tahu's schema (sparkplug-b-packets),
an independent decoder from the one the edge node encodes with."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass

from sparkplub_b_packets.core import sparkplug_b_pb2  # sic: the package's own spelling

from tests.support.broker import Mosquitto, Received

BOOLEAN, DOUBLE, INT64, STRING, UINT64 = 11, 10, 4, 12, 8


@dataclass
class Spb:
    """One received Sparkplug message: its type, device (or None), seq, and metrics by name."""

    kind: str
    device: str | None
    payload: object
    retain: bool
    qos: int

    @property
    def seq(self) -> int | None:
        return self.payload.seq if self.payload.HasField("seq") else None

    @property
    def metrics(self) -> dict:
        return {m.name: m for m in self.payload.metrics}

    def value(self, name: str):
        m = self.metrics[name]
        if m.is_null:
            return None
        return getattr(m, m.WhichOneof("value"))

    @property
    def bdseq(self) -> int:
        return self.value("bdSeq")


def decode(received: list[Received], node: str = "edge-7") -> list[Spb]:
    """The edge node's messages (not STATE, not commands) in arrival order, decoded with Tahu's schema."""
    out = []
    for r in received:
        parts = r.topic.split("/")
        if parts[1] == "STATE" or parts[3] != node or parts[2] in ("NCMD", "DCMD"):
            continue
        out.append(Spb(parts[2], parts[4] if len(parts) > 4 else None,
                       sparkplug_b_pb2.Payload.FromString(r.payload), r.retain, r.qos))
    return out


def of(messages: list[Spb], kind: str) -> list[Spb]:
    return [m for m in messages if m.kind == kind]


def command(metrics: list[tuple[str, int, object]]) -> bytes:
    """An NCMD/DCMD payload: (name, datatype, value) per metric."""
    import time

    p = sparkplug_b_pb2.Payload(timestamp=int(time.time() * 1000))
    for name, datatype, value in metrics:
        m = p.metrics.add(name=name, datatype=datatype)
        field = {BOOLEAN: "boolean_value", DOUBLE: "double_value", STRING: "string_value",
                 UINT64: "long_value", INT64: "long_value"}[datatype]
        setattr(m, field, value)
    return p.SerializeToString()


def publish(broker: Mosquitto, topic: str, payload: bytes, tmp_path, *, retain: bool = False, qos: int = 1) -> None:
    """Publish raw bytes with mosquitto_pub (from a file, so any byte goes through)."""
    path = tmp_path / "publish.bin"
    path.write_bytes(payload)
    cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", str(qos), "-t", topic, "-f", str(path)]
    subprocess.run(cmd + (["-r"] if retain else []), check=True, timeout=10)
