"""One tolerance table and one output comparison for every parity check.

Two checks use them: at export, ONNX Runtime against the torch module it was exported from
(``factoryedge.exporters``); on the device, a TensorRT engine against the bundle's golden
ONNX Runtime outputs (``factoryedge.runtimes.backends.tensorrt_build``). Both ask the same
questions: is every output value within the tolerance, and does any normal/anomalous
decision change under the model's score rule? numpy only, so the device can run it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from factoryedge.errors import ConfigError, DataError
from factoryedge.scoring import ScoreRule

ENGINE_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Tolerance:
    """A value passes where ``|actual - reference| <= atol + rtol * |reference|``; NaN never passes."""

    atol: float
    rtol: float = 0.0

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"tolerance {name} must be a finite number >= 0, got {v!r}")

    def within(self, reference: np.ndarray, actual: np.ndarray) -> np.ndarray:
        """Boolean array: which values of ``actual`` pass (NaN compares False, so it fails)."""
        r = np.asarray(reference, dtype=np.float64)
        return np.abs(np.asarray(actual, dtype=np.float64) - r) <= self.atol + self.rtol * np.abs(r)


TOLERANCES: dict[str, Tolerance] = {
    # Export, torch against ONNX Runtime on the CPU, both fp32: the same arithmetic summed in
    # another order and with other fused kernels, a few ulp per layer. Absolute only, because
    # the manifest's parity record keeps one absolute figure.
    # - export: the dense models (autoencoders, LSTM, the defect classifier, tile models).
    #   1e-4 is far above reordering noise on outputs of order one and far below any gap
    #   between a good and a defective score, so it catches a wrongly exported operator.
    "export": Tolerance(atol=1e-4),
    # - export_memory_bank: PatchCore. float32 distances to the bank go through
    #   ||a||^2 - 2a.b + ||b||^2 with terms of several hundred that cancel, and ONNX Runtime
    #   sums the convolutions in another order than torch. Measured on the magnetic tiles:
    #   2.3e-5 on the z-score heatmap, against good/defect score gaps of several units.
    "export_memory_bank": Tolerance(atol=1e-3),
    # Engines, TensorRT against the golden ONNX Runtime CPU fp32 outputs recorded at export.
    # - fp32: TensorRT only reorders fp32 sums (TF32 is switched off for fp32 builds), which
    #   moves results by a few ulp (~1e-7 relative) per layer; 1e-4 leaves room for deep or
    #   recurrent models while still catching a wrong layer.
    "fp32": Tolerance(atol=1e-5, rtol=1e-4),
    # - fp16: 11-bit mantissa, unit roundoff 4.9e-4; a few layers of accumulation and the
    #   subtraction in a reconstruction residual (score = mean((x - x_hat)^2)) give ~0.5% on
    #   scores of normal windows, so 1e-2 relative; atol 1e-3 covers near-zero residual details.
    "fp16": Tolerance(atol=1e-3, rtol=1e-2),
    # - int8: one quantisation step is ~0.8% of a tensor's calibrated range and compounds over
    #   layers; 5e-2 relative, 1e-2 absolute. Decisions must still not change.
    "int8": Tolerance(atol=1e-2, rtol=5e-2),
}


def tolerance(name: str) -> Tolerance:
    """The table's entry: an engine precision ("fp32", "fp16", "int8") or an export kind ("export", ...)."""
    try:
        return TOLERANCES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"no parity tolerance {name!r}; known: {', '.join(TOLERANCES)}") from None


@dataclass(frozen=True)
class Comparison:
    """What ``compare_outputs`` found: the worst difference per output and every reason to refuse.

    ``max_abs_diff`` is infinite for an output holding NaN or infinity; ``failures`` is empty
    when the outputs pass.
    """

    n_inputs: int
    max_abs_diff: dict[str, float]
    decisions_changed: int
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def worst(self) -> float:
        """The largest ``max_abs_diff`` over the outputs compared (0 when none could be)."""
        return max(self.max_abs_diff.values(), default=0.0)


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    tolerance: Tolerance,
    rule: ScoreRule | None = None,
    score_output: str = "score",
) -> Comparison:
    """Every reference output against ``actual``: present, same shape, within ``tolerance``.

    With a ``rule``, the ``score_output`` decides each input normal or anomalous on both
    sides, and any decision that changes is a failure even inside the tolerance: a score
    that crosses the threshold is the one difference a line would notice. Outputs in
    ``actual`` without a reference are ignored.
    """
    if not reference:
        raise DataError("nothing to compare: the reference holds no outputs (a golden set stores them as output_<name>)")
    failures: list[str] = []
    diffs: dict[str, float] = {}
    for name, ref in sorted(reference.items()):
        if name not in actual:
            failures.append(f"output {name!r} is missing from the outputs compared {sorted(actual)}")
            continue
        r = np.asarray(ref, dtype=np.float64)
        a = np.asarray(actual[name], dtype=np.float64)
        if r.shape != a.shape:
            failures.append(f"output {name!r} has shape {list(a.shape)}, reference {list(r.shape)}")
            continue
        diff = np.abs(a - r)
        if not diff.size:
            diffs[name] = 0.0
        else:
            diffs[name] = float(np.max(diff)) if np.all(np.isfinite(diff)) else math.inf
        within = tolerance.within(r, a)
        if not np.all(within):
            failures.append(f"output {name!r}: {int(np.sum(~within))} of {within.size} values beyond "
                            f"atol {tolerance.atol:g} + rtol {tolerance.rtol:g} (max abs diff {diffs[name]:.3g})")
    changed = 0
    if rule is not None and score_output in diffs:
        changed = int(np.sum(rule.is_anomalous(np.ravel(reference[score_output]))
                             != rule.is_anomalous(np.ravel(actual[score_output]))))
        if changed:
            side = "at or above" if rule.higher_is_anomalous else "at or below"
            failures.append(f"{changed} golden decision(s) changed (anomalous {side} the threshold {rule.threshold:.6g})")
    first = np.asarray(next(iter(reference.values())))
    n = int(first.shape[0]) if first.ndim else 1
    return Comparison(n_inputs=n, max_abs_diff=diffs, decisions_changed=changed, failures=tuple(failures))


def golden_reference(golden: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference outputs in a bundle's golden set (its ``output_<name>`` arrays), by output name.

    Only the first golden group: further sizes (``group<i>_output_<name>``) are not included.
    """
    return {k[len("output_"):]: v for k, v in golden.items() if k.startswith("output_")}
