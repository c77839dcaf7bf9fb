"""
Fine-pruning: the fine-pruned B' with the package's defaults, fitted on the whole clean validation split (with the
detection rates of ``FinePruningDetector``'s defaults, from the same fitted ``FinePruning``), and GoodNet over it with
the label rule (flag where B and B' differ). The calibrated GoodNet rows, one per rate of
:data:`~art_pruning_defense.benchmark.defences.base.CALIBRATION_RATES`, come from a second fit that holds a share of the
split out (``calibration_fraction``, as ``art-prune repair --fpr`` does): its B' never saw those images, and their
conformal threshold flags ``score > threshold``. Every GoodNet row carries the AUROC and TPR at 1 % FPR of its score on
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
from art_pruning_defense.fine_pruning import FinePruning


@register(
    "fine-pruning",
    "fine-pruning (prune, then fine-tune on the clean validation data), alone and as GoodNet (label rule), and "
    "GoodNet calibrated on clean data held out of a second fit",
    lambda config: (
        ["fine-pruning", "fine-pruning GoodNet"]
        + [calibrated_name("fine-pruning GoodNet", rate) for rate in CALIBRATION_RATES]
    ),
)
def _fine_pruning(run: Run) -> list[dict]:
    data = run.data
    start = time.perf_counter()
    run.calibration_split()  # refused here, before the work, if too small
    defence = run.fine_pruning()
    defence.fit(data.x_valid, data.y_valid)
    goodnet = defence(run.classifier)
    metrics, scored = run.evaluate_scored(goodnet)
    evaluated = time.perf_counter() - start
    note = _fit_note(defence, len(data.x_valid))
    goodnet_row = make_row(
        "fine-pruning GoodNet",
        evaluated,
        note=f"B and the fine-pruned B' side by side; {note}",
        **metrics["GoodNet"],
        **scored.detection(),
    )
    begin = time.perf_counter()
    tpr, fpr, auroc = run.detection_rates(goodnet.pruned_model)
    row = make_row(
        "fine-pruning",
        evaluated + time.perf_counter() - begin,
        poison_detection_tpr=tpr,
        poison_detection_fpr=fpr,
        poison_detection_auroc=auroc,
        note=note,
        retune=run.retune(goodnet.pruned_model),
        **without_flags(metrics["B'"]),
    )
    return [row, goodnet_row, *_calibrated_rows(run)]


def _calibrated_rows(run: Run) -> list[dict]:
    """
    :return: The calibrated GoodNet rows: a second fit on the images not held out, its GoodNet's threshold set on the
             held-out ones. The note gives that B''s own clean accuracy and attack success: what holding out costs.
    """
    config, data = run.config, run.data
    start = time.perf_counter()
    defence = run.fine_pruning(calibration_fraction=run.calibration_fraction)
    defence.fit(data.x_valid, data.y_valid)
    held = defence.calibration_indices_  # the cell's split (Run.calibration_split): the seed is the cell's
    goodnet = defence(run.classifier)
    metrics, scored = run.evaluate_scored(goodnet)
    detection = scored.detection()
    pruned = metrics["B'"]
    note = (
        f"{_fit_note(defence, len(data.x_valid) - len(held))}; that B' alone: clean "
        f"{pruned['clean_accuracy']:.2f} %, attack success {pruned['attack_success_rate']:.2f} %"
    )
    rows = []
    for rate in CALIBRATION_RATES:
        threshold = goodnet.calibrate(data.x_valid[held], rate, batch_size=config.predict_batch_size)
        rows.append(
            make_row(
                calibrated_name("fine-pruning GoodNet", rate),
                time.perf_counter() - start,
                note=f"{calibration_note(threshold, rate, len(held), len(data.x_valid))}; {note}",
                **scored.compare(run, threshold)["GoodNet"],
                **detection,
            )
        )
    return rows


def _fit_note(defence: FinePruning, n_fit: int) -> str:
    """
    :return: How many channels the fit pruned and on how many clean images it fine-tuned (and at what rate, where it
             diverged at the set one).
    """
    summary = defence.fine_tune_
    note = (
        f"{summary['channels_pruned']} of {defence.prune_point.n_channels} channels pruned, "
        f"{summary['epochs']} epochs of fine-tuning on {n_fit} clean images"
    )
    if summary["learning_rate"] != defence.fine_tune_learning_rate:
        note += f" at rate {summary['learning_rate']:g} (diverged at {defence.fine_tune_learning_rate:g})"
    return note
