"""
ART's Neural Cleanse: one reverse engineering, then each mitigation ("filtering", "unlearning", "pruning") on a
fresh copy of B, one row each.

ART 1.20.1 under Keras 3, as met here (the first two are worked around here, the rest reported as is):

- ``KerasNeuralCleanse.reset()`` sets every variable of its Adam optimiser to zero, the learning rate included
  (Keras 3 keeps it among the optimiser's variables), so that the reverse-engineered trigger never moves from its
  random start and no class is ever flagged. :class:`_NeuralCleanse` restores the learning rate after ART's reset.
- ``KerasNeuralCleanse``'s "pruning" mitigation takes the layer at index ``len(layer_names) - 2`` of
  ``model.layers``, which is the intended dense layer only for a Sequential model (a Functional model lists its
  InputLayer first, and the index lands on ``Flatten``, which has no weights). Neural Cleanse therefore runs on a
  Sequential copy of B.
- Each call of ``mitigate`` repeats the whole reverse engineering; it runs once here and the three mitigations reuse
  its triggers (what a second, identically seeded run would find).
- ``mitigate``'s backdoor examples are the flagged class's own validation images with the reversed trigger and
  their own (target) labels: "unlearning" retrains on those, and "pruning" stops only when predictions equal the
  one-hot labels exactly, so in practice it prunes its maximum, 30 % of the layer's neurons.
- ``KerasNeuralCleanse`` prints a tensor per optimisation step and shows tqdm bars that cannot be turned off; the
  printing is swallowed, and the bars are hidden with ``verbose=False``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
from art.estimators.poison_mitigation.neural_cleanse import KerasNeuralCleanse
from art.utils import to_categorical

from art_pruning_defense.benchmark.config import NC_MITIGATIONS, PROBE_SIZE
from art_pruning_defense.benchmark.defences import register
from art_pruning_defense.benchmark.defences.base import (
    Run,
    abstaining_labels,
    art_output,
    guarded,
    make_row,
    metrics_on_test_set,
    predict_in_chunks,
    without_unfiltered_warning,
)
from art_pruning_defense.keras import seed_everything

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


class _NeuralCleanse(KerasNeuralCleanse):
    """
    ART's ``KerasNeuralCleanse`` (what ``NeuralCleanse(classifier)(classifier, ...)`` returns), with two changes:

    - :meth:`reset` restores Adam's learning rate, which ART's ``reset`` sets to zero under Keras 3 (it zeroes every
      variable of the optimiser, and Keras 3 counts the learning rate among them), so that the trigger would never
      move from its random start;
    - :meth:`outlier_detection` returns the ``triggers`` given at construction where there are some, so that several
      mitigations can share one reverse engineering.
    """

    def __init__(self, model: "keras.Model", triggers: list | None = None, **kwargs) -> None:
        """
        :param model: The Keras model (Sequential: see the module's notes); pruning and unlearning change it.
        :param triggers: The result of an earlier :meth:`outlier_detection` on the same data and an equal model.
        :param kwargs: ``KerasNeuralCleanse``'s parameters.
        """
        super().__init__(model, **kwargs)
        self.triggers = triggers

    def reset(self) -> None:
        """
        ART's reset, then the learning rate put back.
        """
        super().reset()
        self.opt.learning_rate.assign(self.learning_rate)

    def outlier_detection(self, x_val: np.ndarray, y_val: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """
        :return: ART's ``(class, mask, pattern)`` of each class flagged as backdoored (computed once).
        """
        if self.triggers is None:
            self.triggers = super().outlier_detection(x_val, y_val)
        return list(self.triggers)


def _pruned_neurons(classifier: KerasNeuralCleanse) -> str:
    """
    :return: How many neurons of the layer Neural Cleanse's "pruning" mitigation works on are zeroed.
    """
    layer = classifier.model.layers[len(classifier.layer_names) - 2]
    weights, bias = layer.get_weights()
    zeroed = int(np.count_nonzero(np.all(weights == 0, axis=0) & (bias == 0)))
    return f"{zeroed} of {len(bias)} neurons of {layer.name} pruned"


def _sequential_copy(model: "keras.Model", probe: np.ndarray) -> "keras.Model":
    """
    :param model: A Functional model whose layers form a single chain.
    :param probe: A few inputs on which the copy must compute what the model computes.
    :return: An independent Sequential copy with equal weights, compiled for ART's ``fit`` on one-hot labels.
    :raises ValueError: If the model is not a single chain of layers.
    """
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    try:
        copy = keras.Sequential(
            [keras.Input(shape=model.inputs[0].shape[1:])]
            + [type(lay).from_config(lay.get_config()) for lay in layers],
            name=f"{model.name}_sequential",
        )
        copy.set_weights(model.get_weights())
    except ValueError as error:
        raise ValueError(f"Neural Cleanse needs a model whose layers form a single chain: {error}") from error
    if not np.allclose(copy.predict(probe, verbose=0), model.predict(probe, verbose=0), atol=1e-5):
        raise ValueError("Neural Cleanse needs a model whose layers form a single chain (a Sequential model).")
    copy.compile(optimizer="adam", loss="categorical_crossentropy")
    return copy


@register(
    "neural-cleanse",
    "ART's Neural Cleanse: one reverse engineering, then each mitigation on a fresh copy of B",
    lambda config: [f"neural cleanse ({mitigation})" for mitigation in NC_MITIGATIONS],
)
def _neural_cleanse(run: Run) -> list[dict]:
    config, data = run.config, run.data
    n = min(config.neural_cleanse_samples, len(data.x_valid))
    x_val = data.x_valid[:n]
    y_val = to_categorical(data.y_valid[:n], data.n_classes)
    params = {
        "steps": config.neural_cleanse_steps,
        "patience": config.neural_cleanse_patience,
        "batch_size": config.neural_cleanse_batch_size,
        "learning_rate": float(config.neural_cleanse_learning_rate),
    }
    start = time.perf_counter()
    finder = _NeuralCleanse(_sequential_copy(run.model, x_val[:PROBE_SIZE]), **params)
    with art_output(run.verbose):
        triggers = finder.outlier_detection(x_val, y_val)
    flagged_classes = [int(label) for label, _, _ in triggers]
    shared = time.perf_counter() - start
    logger.info("Neural Cleanse flagged the classes %s in %.1f s.", flagged_classes or "(none)", shared)
    note = f"classes flagged: {', '.join(map(str, flagged_classes)) or 'none (nothing mitigated)'}"
    rows = []
    for mitigation in NC_MITIGATIONS:
        name = f"neural cleanse ({mitigation})"
        begin = time.perf_counter()

        def measure(mitigation: str = mitigation, name: str = name, begin: float = begin) -> dict:
            seed_everything(config.seed)
            classifier = _NeuralCleanse(_sequential_copy(run.model, x_val[:PROBE_SIZE]), triggers=triggers, **params)

            def predict(x: np.ndarray) -> np.ndarray:
                return classifier.predict(x, batch_size=config.predict_batch_size)

            with art_output(run.verbose), without_unfiltered_warning():
                classifier.mitigate(x_val, y_val, mitigation_types=[mitigation])
                clean, poisoned = (
                    abstaining_labels(predict_in_chunks(predict, x, config.predict_batch_size))
                    for x in (data.x_test, data.x_test_poisoned)
                )
            metrics = metrics_on_test_set(run, clean, poisoned, flags=True)
            detail = note
            if mitigation == "pruning" and flagged_classes:
                detail += "; " + _pruned_neurons(classifier)
            seconds = shared + time.perf_counter() - begin
            # "filtering" leaves B as it is (it abstains on flagged inputs): there is no repaired model to re-tune.
            retune = run.retune(classifier.model) if mitigation != "filtering" else None
            return make_row(name, seconds, note=detail, retune=retune, **metrics)

        rows.append(guarded(name, begin - shared, measure))
    return rows
