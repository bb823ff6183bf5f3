"""Our declared Sparkplug B schema against Eclipse Tahu's generated one: same numbers, types, labels."""
from __future__ import annotations

from google.protobuf import descriptor_pool
from sparkplub_b_packets.core import sparkplug_b_pb2

from factoryedge.runtimes.plant import sparkplug_schema as schema


def repeated(f) -> bool:
    return f.is_repeated if hasattr(f, "is_repeated") else f.label == f.LABEL_REPEATED  # protobuf < 6 has label


def fields(descriptor) -> dict[str, tuple]:
    return {f.name: (f.number, f.type, repeated(f), f.message_type.name if f.message_type else None,
                     f.containing_oneof.name if f.containing_oneof else None) for f in descriptor.fields}


def test_every_declared_field_matches_tahus_schema():
    ours, tahu = schema.payload_class().DESCRIPTOR, sparkplug_b_pb2.Payload.DESCRIPTOR
    assert fields(ours).items() <= fields(tahu).items()
    for name in ("Metric", "PropertySet", "PropertyValue"):
        mine, theirs = fields(ours.nested_types_by_name[name]), fields(tahu.nested_types_by_name[name])
        assert mine and mine.items() <= theirs.items(), name


def test_the_classes_stay_out_of_the_default_pool():
    schema.payload_class()
    names = {f.name for f in schema.payload_class().DESCRIPTOR.file.pool.FindFileByName(
        "factoryedge/sparkplug_b.proto").message_types_by_name.values()}
    assert names == {"Payload"}
    pool = descriptor_pool.Default()
    try:
        pool.FindMessageTypeByName("factoryedge.sparkplug_b.Payload")
    except KeyError:
        pass
    else:
        raise AssertionError("our schema is in the default descriptor pool")


def test_signed_values_round_trip_through_the_unsigned_wire_fields():
    p = schema.new_payload()
    for datatype, value in ((schema.INT64, -3), (schema.INT32, -7), (schema.UINT64, 2**63), (schema.DOUBLE, 1.5),
                            (schema.BOOLEAN, False), (schema.STRING, "x"), (schema.STRING, None)):
        schema.set_value(p.metrics.add(datatype=datatype), datatype, value)
    decoded = schema.decode(p.SerializeToString())
    assert [schema.get_value(m) for m in decoded.metrics] == [-3, -7, 2**63, 1.5, False, "x", None]
    tahu = sparkplug_b_pb2.Payload.FromString(p.SerializeToString())
    assert tahu.metrics[0].long_value == 2**64 - 3 and tahu.metrics[6].is_null
