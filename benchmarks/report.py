"""The one result format every benchmark writes, and the table ``run_all.py`` prints.

Each benchmark script accepts ``--json PATH`` and writes there an object keyed by benchmark
name; each entry says what was measured (``value`` in ``unit``), what it was measured
against in the same run (``reference``, ``reference_value``), and ``ratio``, oriented so
that larger is better for rates and smaller is better for sizes and latencies, as the
entry's ``higher_is_better`` says. Benchmarks print and write; they assert nothing.
"""
from __future__ import annotations

import json
import math
from pathlib import Path


def entry(value: float, unit: str, reference: str, reference_value: float | None, ratio: float | None,
          higher_is_better: bool = True, goal: float | None = None, goal_on: str = "ratio", **context) -> dict:
    """One benchmark's result. ``goal`` is the target of the ``ratio``, or of the ``value`` with ``goal_on="value"``."""
    def clean(x):
        return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)

    out = {"value": clean(value), "unit": unit, "reference": reference, "reference_value": clean(reference_value),
           "ratio": clean(ratio), "higher_is_better": bool(higher_is_better)}
    if goal is not None:
        out["goal"] = float(goal)
        out["goal_on"] = goal_on
    if context:
        out["context"] = context
    return out


def write(path: str | Path | None, results: dict[str, dict]) -> None:
    """Write ``results`` as JSON to ``path`` (nothing when ``path`` is None)."""
    if path:
        Path(path).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def goal_met(e: dict) -> bool | None:
    """Whether an entry meets its goal; None when it has none or no value."""
    goal = e.get("goal")
    measured = e.get("value") if e.get("goal_on") == "value" or e.get("ratio") is None else e.get("ratio")
    if goal is None or measured is None:
        return None
    return measured >= goal if e.get("higher_is_better", True) else measured <= goal


def table(results: dict[str, dict]) -> str:
    """A plain-text table of every entry, one line each."""
    rows = [f"{'benchmark':<30}{'value':>12} {'unit':<12}{'reference':>12}  {'ratio':>7}  {'goal':>12}  met"]
    for name, e in results.items():
        ref = e.get("reference_value")
        ratio, goal, met = e.get("ratio"), e.get("goal"), goal_met(e)
        sign = "" if goal is None else (">= " if e.get("higher_is_better", True) else "<= ")
        target = "-" if goal is None else sign + _num(goal) + (" (value)" if e.get("goal_on") == "value" else "")
        rows.append(f"{name:<30}{_num(e.get('value')):>12} {e.get('unit', ''):<12}{_num(ref):>12}  "
                    f"{_num(ratio):>7}  {target:>12}  {'' if met is None else ('yes' if met else 'NO')}")
    for name, e in results.items():
        rows.append(f"  {name}: against {e.get('reference')}")
    return "\n".join(rows)


def _num(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
