"""Condition monitoring on the device: the twin of ``inspection``.

- ``program``: ``ConditionMonitor``, the device program (source -> windows -> model -> debounce -> sink).
- ``vibration_model``: ``VibrationModel``, a vibration bundle's preprocessing and backend, as
  ``inspection.image_model.ImageModel`` is for images; live and offline scoring both use it.
- ``baselining``: per-machine thresholds learned from the first minutes of normal running.
- ``recordings``: scoring whole recordings with a bundle (``factoryedge evaluate``).
"""
