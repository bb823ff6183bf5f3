"""How many examples a parser's property test tries: a modest number in the suite, and
``FACTORYEDGE_FUZZ_EXAMPLES`` of them under ``make fuzz``."""
from __future__ import annotations

import os


def examples(default: int) -> int:
    n = os.environ.get("FACTORYEDGE_FUZZ_EXAMPLES")
    return int(n) if n else default
