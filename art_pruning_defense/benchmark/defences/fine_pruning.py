"""
Fine-pruning: the fine-pruned B' (with the detection rates of ``FinePruningDetector``'s defaults, from the same
fitted ``FinePruning``), and GoodNet over it.
"""

from __future__ import annotations

import time

from art_pruning_defense.fine_pruning import FinePruning

from art_pruning_defense.benchmark.defences import register
from art_pruning_defense.benchmark.defences._common import _row, _Run, _without_flags


@register(
    "fine-pruning",
    "fine-pruning (prune, then fine-tune on the clean validation data), alone and as GoodNet",
    lambda config: ["fine-pruning", "fine-pruning GoodNet"],
)
def _fine_pruning(run: _Run) -> list[dict]:
    config, data = run.config, run.data
    start = time.perf_counter()
    defence = FinePruning(
        run.classifier,
        accuracy_drops=config.accuracy_drops,
        batch_size=config.predict_batch_size,
        fine_tune_epochs=config.fine_tune_epochs,
        seed=config.seed,
        verbose=False,
    )
    defence.fit(data.x_valid, data.y_valid)
    goodnet = defence(run.classifier)
    metrics = run.evaluate(goodnet)
    evaluated = time.perf_counter() - start
    summary = defence.fine_tune_
    note = (
        f"{summary['channels_pruned']} of {defence.prune_point.n_channels} channels pruned, "
        f"{summary['epochs']} epochs of fine-tuning"
    )
    goodnet_row = _row(
        "fine-pruning GoodNet", evaluated, note=f"B and the fine-pruned B' side by side; {note}", **metrics["GoodNet"]
    )
    tpr, fpr = run.detection_rates(goodnet.pruned_model)
    row = _row(
        "fine-pruning",
        time.perf_counter() - start,
        poison_detection_tpr=tpr,
        poison_detection_fpr=fpr,
        note=note,
        **_without_flags(metrics["B'"]),
    )
    return [row, goodnet_row]
