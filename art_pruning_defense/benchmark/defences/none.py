"""
"no defence": the BadNet B itself.
"""

from __future__ import annotations

import time

from art_pruning_defense.benchmark.defences import register
from art_pruning_defense.benchmark.defences._common import _row, _Run, _test_metrics
from art_pruning_defense.benchmark.report import UNDEFENDED


@register("none", "no defence: the BadNet B itself", lambda config: [UNDEFENDED])
def _no_defence(run: _Run) -> list[dict]:
    start = time.perf_counter()
    metrics = _test_metrics(run, run.bad_labels("test"), run.bad_labels("test_poisoned"))
    return [_row(UNDEFENDED, time.perf_counter() - start, **metrics)]
