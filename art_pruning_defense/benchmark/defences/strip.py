"""
ART's STRIP: ``STRIP(classifier)()``, ``mitigate`` on the defender's clean validation data, then ``predict``.

ART 1.20.1, as met here: ``STRIP()`` changes the class of the classifier it was given (it is given a fresh wrapper of
B here) and computes its entropy over the perturbed copies, per class (``axis=0``), rather than per prediction; its
tqdm bar cannot be turned off (it is hidden with ``verbose=False``).

ART's STRIP exposes no score, only its abstentions. For the AUROC and TPR at 1 % FPR, :func:`strip_scores` computes
STRIP's score the way its paper defines it: each input is blended half and half with ``num_samples`` random clean
validation images, the entropy (bits) of B's prediction is taken per blend and averaged; a trigger that survives the
blending keeps the predictions confident, so the score is the negated mean entropy (higher = more likely triggered).
That score gets the calibration split of the fine-pruning GoodNet (:meth:`Run.calibration_split`, the same images):
it blends with the part that is not held out, and its conformal threshold at each rate of
:data:`~art_pruning_defense.benchmark.defences.base.CALIBRATION_RATES` is chosen on the held-out part, so that the two
detectors are compared at the same promised false-positive rate ("STRIP score (1% FPR)" rows).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from art.estimators.classification import KerasClassifier

from art_pruning_defense.benchmark.defences import register
from art_pruning_defense import _metrics
from art_pruning_defense.benchmark.defences.base import (
    ABSTAIN,
    CALIBRATION_RATES,
    Run,
    abstaining_labels,
    art_output,
    as_probabilities,
    detection_on_test_set,
    calibrated_name,
    calibration_note,
    make_row,
    metrics_on_test_set,
    predict_in_chunks,
)
from art_pruning_defense.keras import BatchPredictor

if TYPE_CHECKING:
    import keras

#: Blended images per forward pass of :func:`strip_scores`.
_BLENDS_PER_PASS = 4096


def strip_scores(
    model: "keras.Model", x: np.ndarray, x_clean: np.ndarray, num_samples: int, seed: int, batch_size: int = 256
) -> np.ndarray:
    """
    STRIP's score per input: minus the mean entropy (bits) of the model's prediction over ``num_samples`` blends
    ``0.5 * x + 0.5 * x_clean[j]`` with random clean images ``j``.

    :param model: The classifier (softmax or logits output).
    :param x: Inputs to score.
    :param x_clean: Clean images to blend with (the defender's validation data).
    :param num_samples: Blends per input.
    :param seed: Seed of the choice of clean images.
    :param batch_size: Samples per forward pass.
    :return: Scores of shape ``(len(x),)``; higher = lower entropy = more likely triggered.
    """
    rng = np.random.default_rng(seed)
    predict = BatchPredictor(model)
    per_pass = max(1, _BLENDS_PER_PASS // num_samples)
    scores = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), per_pass):
        chunk = np.asarray(x[start : start + per_pass], dtype=np.float32)
        chosen = rng.integers(0, len(x_clean), size=(len(chunk), num_samples))
        blends = 0.5 * chunk[:, None] + 0.5 * np.asarray(x_clean[chosen], dtype=np.float32)
        outputs = predict(blends.reshape((-1,) + chunk.shape[1:]), batch_size)
        probabilities = np.clip(as_probabilities(model, outputs), 1e-12, 1.0)
        entropy = -np.sum(probabilities * np.log2(probabilities), axis=1).reshape(len(chunk), num_samples)
        scores[start : start + len(chunk)] = -entropy.mean(axis=1)
    return scores


@register(
    "strip",
    "ART's STRIP: mitigate on the defender's clean validation data, then abstain on low-entropy inputs",
    lambda config: ["STRIP"] + [calibrated_name("STRIP score", rate) for rate in CALIBRATION_RATES],
)
def _strip(run: Run) -> list[dict]:
    from art.defences.transformer.poisoning import STRIP

    config, data = run.config, run.data
    start = time.perf_counter()
    # STRIP() changes the class of the classifier it is given: give it a wrapper of its own.
    wrapper = KerasClassifier(run.model, clip_values=(0.0, 1.0))
    strip = STRIP(wrapper)(
        num_samples=config.strip_num_samples, false_acceptance_rate=float(config.strip_false_acceptance_rate)
    )
    with art_output(run.verbose):
        strip.mitigate(data.x_valid)
    clean, poisoned = (
        abstaining_labels(predict_in_chunks(strip.predict, x, config.predict_batch_size))
        for x in (data.x_test, data.x_test_poisoned)
    )
    metrics = metrics_on_test_set(run, clean, poisoned, flags=True)
    fit, held = run.calibration_split()
    blend_with = data.x_valid[fit]
    score = {
        name: strip_scores(
            run.model, x, blend_with, config.strip_num_samples, config.seed, batch_size=config.predict_batch_size
        )
        for name, x in (("clean", data.x_test), ("poisoned", data.x_test_poisoned), ("held", data.x_valid[held]))
    }
    note = (
        f"entropy threshold {strip.entropy_threshold:.3f} from {len(data.x_valid)} clean validation images; AUROC "
        f"from the mean per-blend entropy over {config.strip_num_samples} blends with {len(fit)} of them (STRIP's "
        "paper; ART's STRIP exposes no score)"
    )
    detection = detection_on_test_set(score["clean"], score["poisoned"])
    rows = [make_row("STRIP", time.perf_counter() - start, note=note, **metrics, **detection)]
    labels = {"clean": run.bad_labels("test"), "poisoned": run.bad_labels("test_poisoned")}
    for rate in CALIBRATION_RATES:
        threshold = _metrics.calibrate_threshold(score["held"], rate)
        flagged = {name: np.where(score[name] > threshold, ABSTAIN, labels[name]) for name in labels}
        rows.append(
            make_row(
                calibrated_name("STRIP score", rate),
                time.perf_counter() - start,
                note=f"{calibration_note(threshold, rate, len(held), len(data.x_valid))}; B's label elsewhere",
                **metrics_on_test_set(run, flagged["clean"], flagged["poisoned"], flags=True),
                **detection,
            )
        )
    return rows
