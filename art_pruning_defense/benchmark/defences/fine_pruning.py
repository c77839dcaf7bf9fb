"""
Fine-pruning: the fine-pruned B' (with the detection rates of ``FinePruningDetector``'s defaults, from the same
fitted ``FinePruning``), and GoodNet over it with the label rule (flag where B and B' differ) and calibrated at each
rate of :data:`~art_pruning_defense.benchmark.defences.base.CALIBRATION_RATES` (flag ``score > threshold``, the
conformal threshold chosen on the share of the defender's clean validation data held out of the sweep and the
fine-tuning: ``calibration_fraction``). The GoodNet rows carry the AUROC and TPR at 1 % FPR of the GoodNet score on
the test inputs.
"""

from __future__ import annotations

import time

from art_pruning_defense.benchmark.defences import register
from art_pruning_defense.benchmark.defences.base import (
    CALIBRATION_RATES,
    Run,
    calibrated_name,
    calibration_note,
    make_row,
    without_flags,
)


@register(
    "fine-pruning",
    "fine-pruning (prune, then fine-tune on the clean validation data not held out to calibrate), alone and as "
    "GoodNet (label rule, calibrated)",
    lambda config: (
        ["fine-pruning", "fine-pruning GoodNet"]
        + [calibrated_name("fine-pruning GoodNet", rate) for rate in CALIBRATION_RATES]
    ),
)
def _fine_pruning(run: Run) -> list[dict]:
    config, data = run.config, run.data
    start = time.perf_counter()
    run.calibration_split()  # refused here, before the work, if too small
    defence = run.fine_pruning(calibration_fraction=run.calibration_fraction)
    defence.fit(data.x_valid, data.y_valid)
    held = defence.calibration_indices_  # the cell's split (Run.calibration_split): the seed is the cell's
    goodnet = defence(run.classifier)
    metrics, scored = run.evaluate_scored(goodnet)
    detection = scored.detection()
    evaluated = time.perf_counter() - start
    summary = defence.fine_tune_
    note = (
        f"{summary['channels_pruned']} of {defence.prune_point.n_channels} channels pruned, "
        f"{summary['epochs']} epochs of fine-tuning on {len(data.x_valid) - len(held)} clean images"
    )
    if summary["learning_rate"] != defence.fine_tune_learning_rate:
        note += f" at rate {summary['learning_rate']:g} (diverged at {defence.fine_tune_learning_rate:g})"
    goodnet_row = make_row(
        "fine-pruning GoodNet",
        evaluated,
        note=f"B and the fine-pruned B' side by side; {note}",
        **metrics["GoodNet"],
        **detection,
    )
    begin = time.perf_counter()
    calibrated_rows = []
    for rate in CALIBRATION_RATES:
        threshold = goodnet.calibrate(data.x_valid[held], rate, batch_size=config.predict_batch_size)
        calibrated_rows.append(
            make_row(
                calibrated_name("fine-pruning GoodNet", rate),
                evaluated + time.perf_counter() - begin,
                note=f"{calibration_note(threshold, rate, len(held), len(data.x_valid))}; {note}",
                **scored.compare(run, threshold)["GoodNet"],
                **detection,
            )
        )
    tpr, fpr, auroc = run.detection_rates(goodnet.pruned_model)
    row = make_row(
        "fine-pruning",
        time.perf_counter() - begin + evaluated,
        poison_detection_tpr=tpr,
        poison_detection_fpr=fpr,
        poison_detection_auroc=auroc,
        note=note,
        retune=run.retune(goodnet.pruned_model),
        **without_flags(metrics["B'"]),
    )
    return [row, goodnet_row, *calibrated_rows]
