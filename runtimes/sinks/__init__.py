"""Sinks: where a device's anomaly events, telemetry and health go.

- The payloads and topics themselves are the message contract, ``factoryedge.runtimes.messages``.
- ``outbox``: a SQLite store-and-forward queue, so an event survives a broker outage, a
  crash or a power cut between being raised and being acknowledged.
- ``mqtt``: ``MqttSink`` (``mqtt://`` and ``mqtts://``), built on paho-mqtt, which is
  imported only when a sink is opened.
"""
