"""
Pruning: B'(X) of :class:`~art_pruning_defense.FinePruning` for each accuracy drop X, and GoodNet at one X.

The detection rates of B'(X) are those of ``FinePruningDetector(..., accuracy_drop=X, fine_tune_epochs=0)``: a
training sample is flagged where B and B'(X) disagree; they are computed from the same fitted ``FinePruning``
rather than fitting it once more.
"""

from __future__ import annotations

import time

from art_pruning_defense.benchmark.config import BenchmarkConfig
from art_pruning_defense.benchmark.defences import register
from art_pruning_defense.benchmark.defences.base import (
    Run,
    guarded,
    make_row,
    without_flags,
)


def _pruning_rows(config: BenchmarkConfig) -> list[str]:
    return [f"pruning X={x:g}" for x in config.accuracy_drops] + [f"GoodNet X={config.goodnet_drop:g}"]


@register("pruning", "pruning B'(X) of FinePruning for each X, and GoodNet at goodnet_drop", _pruning_rows)
def _pruning(run: Run) -> list[dict]:
    config, data = run.config, run.data
    start = time.perf_counter()
    defence = run.fine_pruning(fine_tune_epochs=0)
    defence.fit(data.x_valid, data.y_valid)
    fitted = time.perf_counter() - start
    point = defence.prune_point
    rows: list[dict] = []
    goodnet_row: dict | None = None
    for drop in defence.accuracy_drops:
        name = f"pruning X={drop:g}"
        begin = time.perf_counter()

        def measure(drop: float = drop, name: str = name, begin: float = begin) -> dict:
            nonlocal goodnet_row
            goodnet = defence(run.classifier, accuracy_drop=drop)
            metrics, scored = run.evaluate_scored(goodnet)
            note = f"{len(defence.pruned_channels(drop))} of {point.n_channels} channels of {point.layer_name} pruned"
            if drop == config.goodnet_drop:
                goodnet_row = make_row(
                    f"GoodNet X={drop:g}",
                    fitted + time.perf_counter() - begin,
                    note=f"B and B'(X={drop:g}) side by side; {note}",
                    **metrics["GoodNet"],
                    **scored.detection(),
                )
            tpr, fpr, auroc = run.detection_rates(goodnet.pruned_model)
            return make_row(
                name,
                fitted + time.perf_counter() - begin,
                poison_detection_tpr=tpr,
                poison_detection_fpr=fpr,
                poison_detection_auroc=auroc,
                note=note,
                retune=run.retune(goodnet.pruned_model),
                **without_flags(metrics["B'"]),
            )

        rows.append(guarded(name, begin - fitted, measure))
    name = f"GoodNet X={config.goodnet_drop:g}"
    rows.append(goodnet_row or make_row(name, fitted, error=f"not measured: pruning X={config.goodnet_drop:g} failed"))
    return rows
