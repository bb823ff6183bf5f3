"""Sensor sources for the device runtime: serial sensors (fe1 frames or CSV lines) and replays.

Each source is opened from a URI through ``factoryedge.runtimes.registry`` and yields
``SampleBlock`` objects. The wire formats are documented in
``firmware-config/protocols/fe1.md``; parsing lives in ``wire`` and does no I/O.
"""
