"""The contract every inference backend meets: named float inputs in, named outputs out.

The base class checks input names, ranks, fixed dimensions and dtypes against the bundle's
manifest before the backend-specific part runs, so a wrong input fails the same way on ONNX
Runtime and TensorRT, with a message that names the tensor.
"""
from __future__ import annotations

import abc

import numpy as np

from factoryedge.errors import ConfigError
from factoryedge.manifest import TensorSpec


class Backend(abc.ABC):
    """Runs one model. Subclasses implement ``_run`` and set ``name``."""

    name: str = "abstract"

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec]):
        self.inputs = inputs
        self.outputs = outputs
        self.output_names = [o.name for o in outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a batch; returns every output by name."""
        self._check(feeds)
        return self._run({k: np.ascontiguousarray(v) for k, v in feeds.items()})

    def run_single(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Shortcut for the common one-input model."""
        if len(self.inputs) != 1:
            raise ConfigError(f"model has {len(self.inputs)} inputs {[i.name for i in self.inputs]}; use run()")
        return self.run({self.inputs[0].name: x})

    def _check(self, feeds: dict[str, np.ndarray]) -> None:
        expected = {i.name: i for i in self.inputs}
        if set(feeds) != set(expected):
            raise ConfigError(f"model inputs are {sorted(expected)}, got {sorted(feeds)}")
        for name, arr in feeds.items():
            spec = expected[name]
            if arr.dtype != np.dtype(spec.dtype):
                raise ConfigError(f"input {name!r} must be {spec.dtype}, got {arr.dtype}")
            if arr.ndim != len(spec.shape):
                raise ConfigError(f"input {name!r} must have shape {spec.shape}, got {list(arr.shape)}")
            for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
                if isinstance(want, int) and want != got:
                    raise ConfigError(
                        f"input {name!r} must have shape {spec.shape}, got {list(arr.shape)} (axis {axis})"
                    )

    @abc.abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Backend-specific inference on checked, contiguous inputs."""

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to release
        """Release device resources; the base has none."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
