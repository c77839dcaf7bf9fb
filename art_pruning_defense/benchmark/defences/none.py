"""
"no defence": the BadNet B itself.
"""

from __future__ import annotations

import time

from art_pruning_defense.benchmark.defences import register
from art_pruning_defense.benchmark.defences.base import Run, make_row, metrics_on_test_set
from art_pruning_defense.benchmark.report import UNDEFENDED


@register("none", "no defence: the BadNet B itself", lambda config: [UNDEFENDED])
def _no_defence(run: Run) -> list[dict]:
    start = time.perf_counter()
    metrics = metrics_on_test_set(run, run.bad_labels("test"), run.bad_labels("test_poisoned"))
    return [make_row(UNDEFENDED, time.perf_counter() - start, retune=run.retune(run.model), **metrics)]
