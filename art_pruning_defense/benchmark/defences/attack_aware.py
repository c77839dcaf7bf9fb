"""
Attack-aware pruning and fine-pruning: the defender holds triggered validation samples and prunes the channels the
trigger excites most.
"""

from __future__ import annotations

import time

from art_pruning_defense.benchmark.defences import register
from art_pruning_defense.benchmark.defences.base import Run, make_row, without_flags


@register(
    "attack-aware",
    "attack-aware pruning at goodnet_drop and attack-aware fine-pruning (the defender holds triggered validation "
    "samples)",
    lambda config: ["attack-aware pruning", "attack-aware fine-pruning", "attack-aware fine-pruning GoodNet"],
)
def _attack_aware(run: Run) -> list[dict]:
    config, data = run.config, run.data
    start = time.perf_counter()
    # FinePruning's default cache bound: a layer whose activations exceed it (MNIST's conv_1: 0.8 GiB) is evaluated
    # from the inputs, recomputing the layers before it.
    defence = run.fine_pruning(strategy="attack_aware", accuracy_drops=(config.goodnet_drop,))
    defence.fit(data.x_valid, data.y_valid, poisoned_x=data.x_valid_poisoned, poisoned_target=data.target)
    fitted = time.perf_counter() - start
    rows = []
    pruned = defence(run.classifier, accuracy_drop=config.goodnet_drop)
    metrics = run.evaluate(pruned)
    tpr, fpr, auroc = run.detection_rates(pruned.pruned_model)
    channels = defence.sweeps_[float(config.goodnet_drop)][-1].channels_pruned
    rows.append(
        make_row(
            "attack-aware pruning",
            time.perf_counter() - start,
            poison_detection_tpr=tpr,
            poison_detection_fpr=fpr,
            poison_detection_auroc=auroc,
            note=f"X={config.goodnet_drop:g}: {channels} channels of {', '.join(defence.layer_names or [])} pruned"
            if defence.layer_names
            else f"X={config.goodnet_drop:g}: {channels} channels pruned",
            retune=run.retune(pruned.pruned_model),
            **without_flags(metrics["B'"]),
        )
    )
    goodnet = defence(run.classifier)
    metrics, scored = run.evaluate_scored(goodnet)
    tpr, fpr, auroc = run.detection_rates(goodnet.pruned_model)
    note = f"{defence.fine_tune_['channels_pruned']} channels pruned, {defence.fine_tune_['epochs']} epochs"
    rows.append(
        make_row(
            "attack-aware fine-pruning",
            time.perf_counter() - start,
            poison_detection_tpr=tpr,
            poison_detection_fpr=fpr,
            poison_detection_auroc=auroc,
            note=note,
            retune=run.retune(goodnet.pruned_model),
            **without_flags(metrics["B'"]),
        )
    )
    rows.append(
        make_row("attack-aware fine-pruning GoodNet", fitted, note=note, **metrics["GoodNet"], **scored.detection())
    )
    return rows
