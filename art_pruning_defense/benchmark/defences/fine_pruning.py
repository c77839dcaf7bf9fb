"""
Fine-pruning: the fine-pruned B' (with the detection rates of ``FinePruningDetector``'s defaults, from the same
fitted ``FinePruning``), and GoodNet over it twice: with the label rule (flag where B and B' differ) and calibrated
(flag ``score > threshold``, the threshold chosen on the defender's clean validation data at a 1 % false-positive
rate). Both GoodNet rows carry the AUROC and TPR at 1 % FPR of the GoodNet score on the test inputs.
"""

from __future__ import annotations

import time

from art_pruning_defense.benchmark.defences import register
from art_pruning_defense.benchmark.defences.base import DETECTION_FPR, Run, make_row, without_flags

#: Name of the calibrated GoodNet's row.
CALIBRATED = f"fine-pruning GoodNet ({100 * DETECTION_FPR:g}% FPR)"


@register(
    "fine-pruning",
    "fine-pruning (prune, then fine-tune on the clean validation data), alone and as GoodNet (label rule, calibrated)",
    lambda config: ["fine-pruning", "fine-pruning GoodNet", CALIBRATED],
)
def _fine_pruning(run: Run) -> list[dict]:
    config, data = run.config, run.data
    start = time.perf_counter()
    defence = run.fine_pruning()
    defence.fit(data.x_valid, data.y_valid)
    goodnet = defence(run.classifier)
    metrics, scored = run.evaluate_scored(goodnet)
    detection = scored.detection()
    evaluated = time.perf_counter() - start
    summary = defence.fine_tune_
    note = (
        f"{summary['channels_pruned']} of {defence.prune_point.n_channels} channels pruned, "
        f"{summary['epochs']} epochs of fine-tuning"
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
    threshold = goodnet.calibrate(data.x_valid, DETECTION_FPR, batch_size=config.predict_batch_size)
    calibrated = scored.compare(run, threshold)["GoodNet"]
    calibrated_row = make_row(
        CALIBRATED,
        evaluated + time.perf_counter() - begin,
        note=f"score > {threshold:.4f}, chosen on the {len(data.x_valid)} clean validation images (which also "
        f"fine-tuned B') to flag at most {100 * DETECTION_FPR:g} % of them; {note}",
        **calibrated,
        **detection,
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
    return [row, goodnet_row, calibrated_row]
