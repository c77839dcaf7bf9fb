"""
The re-tuning attack (RA) of Min et al., "Uncovering, Explaining, and Mitigating the Superficial Safety of Backdoor
Defense" (NeurIPS 2024): does the backdoor come back when a repaired model is fine-tuned a little on clean data plus
a few poisoned images?

A copy of the repaired model (never the model itself) is trained for :data:`RETUNE_EPOCHS` epochs of plain SGD
(constant learning rate :data:`RETUNE_LEARNING_RATE`, no momentum, batches of :data:`RETUNE_BATCH_SIZE`) on the
defender's clean validation split plus k poisoned training images (drawn with the cell's seed), then measured on the
clean and triggered test sets. Pruned channels stay pruned (their mask layers have no weights); BatchNormalization
layers train, as in ordinary fine-tuning; no augmentation.

The learning rate: 0.01 is the rate of feature-shift tuning's published settings (Min et al. 2023, the same group),
and it is gentler than the defences' own fine-tuning (FinePruning: 0.02 with momentum 0.9, an effective step of
about 0.2): what comes back at this rate was not removed. A model trained without poison and re-tuned the same way
(the control row, :data:`CONTROL_ROW`) says what k poisoned images teach from scratch.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Sequence

import numpy as np

from art_pruning_defense import _sweep

if TYPE_CHECKING:
    import keras

    from art_pruning_defense.benchmark.defences.base import Run
    from art_pruning_defense.lab.digits import BadNetData

logger = logging.getLogger(__name__)

#: Epochs of the re-tuning (Min et al.: 5).
RETUNE_EPOCHS = 5
#: Its constant learning rate, plain SGD (see the module's note).
RETUNE_LEARNING_RATE = 0.01
#: Its batch size (FinePruning's fine-tuning batch).
RETUNE_BATCH_SIZE = 32
#: The control row: a model trained on the same clean data, no poison, re-tuned the same way.
CONTROL_ROW = "clean model (re-tuning control)"
#: The row key of the re-tuning's wall time (all its k together), seconds.
RETUNE_SECONDS = "retune_seconds"


def retune_keys(k: int) -> tuple[str, str]:
    """
    :param k: Poisoned images of the re-tuning.
    :return: The row keys of its attack success rate and clean accuracy (percent).
    """
    return f"asr_after_retune_k{k}", f"clean_after_retune_k{k}"


def poisoned_rows(data: "BadNetData", k: int, seed: int) -> np.ndarray:
    """
    :param data: The cell's data.
    :param k: How many poisoned training images.
    :param seed: The cell's seed.
    :return: The indices of k of the poisoned training images, drawn with the seed (sorted).
    :raises ValueError: If there are fewer than k.
    """
    poisoned = np.flatnonzero(data.is_poison_train)
    if k > len(poisoned):
        raise ValueError(f"retune_poisons: {k} poisoned images asked for, but the training set holds {len(poisoned)}.")
    return np.sort(np.random.default_rng(seed).choice(poisoned, size=k, replace=False))


def retune(model: "keras.Model", data: "BadNetData", k: int, seed: int, predict_batch_size: int) -> dict[str, float]:
    """
    Re-tune a copy of ``model`` and measure it.

    :param model: A repaired model (not modified).
    :param data: The cell's data: the defender's clean split, the poisoned training images, the test sets.
    :param k: Poisoned training images added to the clean split.
    :param seed: Seed of the choice of the images, of the shuffling and of the backend.
    :param predict_batch_size: Samples per forward pass when evaluating.
    :return: The two figures of :func:`retune_keys`.
    """
    import keras

    from art_pruning_defense.keras import BatchPredictor, copy_model, outputs_probabilities

    start = time.perf_counter()
    rows = poisoned_rows(data, k, seed)
    x = np.concatenate([data.x_valid, data.x_train[rows]])
    y = np.concatenate([data.y_valid, data.y_train[rows]]).astype(np.int64)
    keras.utils.set_random_seed(seed)
    tuned = copy_model(model)
    for layer in tuned.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = True
    tuned.compile(
        optimizer=keras.optimizers.SGD(RETUNE_LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not outputs_probabilities(tuned)),
    )
    tuned.fit(x, y, epochs=RETUNE_EPOCHS, batch_size=RETUNE_BATCH_SIZE, shuffle=True, verbose=0)
    predict = BatchPredictor(tuned, labels_only=True)
    clean = predict(data.x_test, predict_batch_size)
    triggered = predict(data.x_test_poisoned, predict_batch_size)
    asr_key, clean_key = retune_keys(k)
    figures = {
        asr_key: float(_sweep.attack_success_rate(triggered, data.target)),
        clean_key: float(_sweep.accuracy(clean, data.y_test)),
    }
    logger.info(
        "Re-tuned with %d poisoned images in %.1f s: attack success %.2f %%, clean accuracy %.2f %%.",
        k,
        time.perf_counter() - start,
        figures[asr_key],
        figures[clean_key],
    )
    return figures


def retune_columns(
    model: "keras.Model", data: "BadNetData", ks: Sequence[int], seed: int, predict_batch_size: int
) -> dict[str, float]:
    """
    :return: :func:`retune`'s figures for each k of ``ks`` and ``retune_seconds``, their wall time (empty without
             any k).
    """
    columns: dict[str, float] = {}
    start = time.perf_counter()
    for k in ks:
        columns.update(retune(model, data, k, seed, predict_batch_size))
    if columns:
        columns[RETUNE_SECONDS] = round(time.perf_counter() - start, 2)
    return columns


def control_row(run: "Run", model_cache: str | None) -> dict:
    """
    The control row: a model trained on the cell's clean training split with B's recipe and seed (from the model
    cache where an earlier run trained it), measured, then re-tuned as the repaired models are.

    :param run: The cell's state.
    :param model_cache: The model cache directory (``None``: the model is trained).
    :return: The row :data:`CONTROL_ROW`.
    """
    from art_pruning_defense.benchmark.cache import cached_clean_model
    from art_pruning_defense.benchmark.defences.base import make_row, metrics_on_test_set

    config, data = run.config, run.data
    start = time.perf_counter()
    classifier, info = cached_clean_model(config, data.n_classes, model_cache)
    metrics = metrics_on_test_set(run, *run.labels_of(classifier.model, data.x_test, data.x_test_poisoned))
    how = "loaded from the model cache" if info and info["hit"] else f"trained {config.epochs} epochs"
    note = f"no poison: the clean training split, B's recipe and seed; {how}"
    if info:
        note += f" (cache key {info['key'][:12]}…)"
    seconds = time.perf_counter() - start
    return make_row(CONTROL_ROW, seconds, note=note, retune=run.retune(classifier.model), **metrics)
