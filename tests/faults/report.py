"""The one line every fault scenario prints, so a CI log reads as a table of scenarios."""
from __future__ import annotations

from collections.abc import Iterable


def report(name: str, produced: int | Iterable[str], received: Iterable[str], extra: str = "") -> int:
    """Print ``NAME: produced N / delivered N / duplicated N``; returns the duplicate count.

    ``produced`` is a count or the ids produced; ``received`` holds one id per copy received.
    Delivered counts distinct ids (of those produced, when ids are given); duplicated counts
    the copies beyond the first.
    """
    received = list(received)
    distinct = set(received)
    if isinstance(produced, int):
        n_produced, delivered = produced, len(distinct)
    else:
        ids = set(produced)
        n_produced, delivered = len(ids), len(ids & distinct)
    duplicated = len(received) - len(distinct)
    tail = f" ({extra})" if extra else ""
    print(f"\n{name}: produced {n_produced} / delivered {delivered} / duplicated {duplicated}{tail}")
    return duplicated
