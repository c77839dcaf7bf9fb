"""
ART's STRIP: ``STRIP(classifier)()``, ``mitigate`` on the defender's clean validation data, then ``predict``.

ART 1.20.1, as met here: ``STRIP()`` changes the class of the classifier it was given (it is given a fresh wrapper of
B here) and computes its entropy over the perturbed copies, per class (``axis=0``), rather than per prediction; its
tqdm bar cannot be turned off (it is hidden with ``verbose=False``).
"""

from __future__ import annotations

import time

from art.estimators.classification import KerasClassifier

from art_pruning_defense.benchmark.defences import register
from art_pruning_defense.benchmark.defences._common import (
    _abstaining_labels,
    _art_output,
    _row,
    _Run,
    _test_metrics,
)


@register(
    "strip",
    "ART's STRIP: mitigate on the defender's clean validation data, then abstain on low-entropy inputs",
    lambda config: ["STRIP"],
)
def _strip(run: _Run) -> list[dict]:
    from art.defences.transformer.poisoning import STRIP

    config, data = run.config, run.data
    start = time.perf_counter()
    # STRIP() changes the class of the classifier it is given: give it a wrapper of its own.
    wrapper = KerasClassifier(run.model, clip_values=(0.0, 1.0))
    strip = STRIP(wrapper)(
        num_samples=config.strip_num_samples, false_acceptance_rate=float(config.strip_false_acceptance_rate)
    )
    with _art_output(run.verbose):
        strip.mitigate(data.x_valid)
    clean = _abstaining_labels(strip.predict(data.x_test))
    poisoned = _abstaining_labels(strip.predict(data.x_test_poisoned))
    metrics = _test_metrics(run, clean, poisoned, flags=True)
    note = f"entropy threshold {strip.entropy_threshold:.3f} from {len(data.x_valid)} clean validation images"
    return [_row("STRIP", time.perf_counter() - start, note=note, **metrics)]
