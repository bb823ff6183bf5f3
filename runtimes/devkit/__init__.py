"""The software far end of every wire, as pyserial's ``loop://`` is for a serial port.

Each module plays the device's counterpart on a desk, so the demo, the tests and the
benchmarks drive the real device code through real links (a pseudo-terminal, a loopback
MQTT broker) instead of mocks:

- ``sensor_node``: a vibration sensor node streaming samples in the fe1 or CSV wire format
  to a pseudo-terminal or a real serial port, at the true rate, optionally corrupted. Used by
  ``factoryedge simulate-sensor``, the demo's condition-monitoring half and the monitor's
  end-to-end test.
- ``local_broker``: a throw-away MQTT broker on loopback (mosquitto, else embedded amqtt).
  Used by the demo, the benchmarks and its own test; the other tests start Mosquitto
  through ``tests/support/broker.py`` for restarts and persistence.
- ``plc``: the PLC of a sorting line, run as its own process (``python -m
  factoryedge.runtimes.devkit.plc``): paced part triggers over MQTT, the decisions
  collected with their round-trip times. Used by the demo's inspection half, the
  inspection end-to-end test and the trigger-to-decision latency benchmark.

Torch-free like the rest of ``runtimes``; hardware and MQTT libraries load only when used.
Never for production: a plant has its own sensors, broker and PLC.
"""
