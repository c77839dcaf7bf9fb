"""
Training and fine-tuning: plain training of the embedded examples' CNNs, seeding, and fine-tuning of a pruned copy
(masks held at zero, BatchNormalization trained or frozen, optional shift augmentation).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import keras
import numpy as np

from art_pruning_defense._params import BATCHNORM_MODES
from art_pruning_defense.keras._architectures import compile_classifier, fit_classifier, outputs_probabilities

logger = logging.getLogger(__name__)


def train(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    verbose: bool = False,
) -> keras.Model:
    """
    Train a classifier with Adam on integer labels (compiles the model).

    :param model: The model (trained in place).
    :param x: Inputs.
    :param y: Integer labels.
    :param epochs: Epochs.
    :param batch_size: Batch size.
    :param learning_rate: Adam's learning rate.
    :param seed: Seed for shuffling.
    :param verbose: Show Keras's progress bar.
    :return: The model.
    """
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=1 if verbose else 0)
    return model


def seed_everything(seed: int) -> None:
    """
    Seed Python's, numpy's and the backend's random generators (Keras's ``set_random_seed``).

    :param seed: The seed.
    """
    keras.utils.set_random_seed(seed)


def check_probability_output(model: keras.Model, name: str = "the model") -> None:
    """
    :param model: A Functional classifier.
    :param name: Name used in the error message.
    :raises ValueError: If the model's output is not a probability vector (its last layer does not end in softmax).
    """
    if not outputs_probabilities(model):
        layer = model.outputs[0]._keras_history[0]
        activation = getattr(getattr(layer, "activation", None), "__name__", type(layer).__name__)
        raise ValueError(
            f"Expected {name} to output a probability vector (a softmax as its last activation), but its output "
            f"layer {layer.name!r} ends in {activation!r}: GoodNet's scores would be wrong. Add a softmax "
            "(keras.layers.Softmax()) after the logits."
        )


def augment_padding(shape: tuple[int | None, ...]) -> int:
    """
    :param shape: Per-sample input shape ``(height, width, channels)``.
    :return: The random-crop padding used when fine-tuning with augmentation: an eighth of the image's smaller side
             (4 pixels on 32×32 images, as in the standard CIFAR recipe), at least 1.
    """
    sides = [int(d) for d in shape[:2] if d is not None]
    return max(1, round(min(sides) / 8)) if len(sides) == 2 else 0


@dataclass(frozen=True)
class BatchSource:
    """
    Training data read batch by batch, for :func:`fine_tune`.

    :param batches: Called once per epoch: an iterable of ``(inputs, integer labels)``, inputs preprocessed.
    :param n_samples: Samples per epoch (for the learning-rate schedule).
    """

    batches: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
    n_samples: int


def fine_tune(
    model: keras.Model,
    x: np.ndarray | BatchSource,
    y: np.ndarray | None,
    epochs: int,
    learning_rate: float,
    batch_size: int = 32,
    seed: int = 0,
    verbose: bool = False,
    optimizer: str = "sgd",
    batchnorm: str = "train",
    augment: bool = True,
) -> keras.Model:
    """
    Retrain every weight of a (pruned) model on clean data, in place. Mask layers have no weights, so pruned
    channels stay at zero throughout.

    Arrays are shuffled each epoch. A :class:`BatchSource` is read once per epoch and its samples are trained on
    re-batched to ``batch_size``, in the order the stream gives them (no shuffling across batches: shuffle in the
    stream, e.g. ``tf.data.Dataset.shuffle``, if wanted); memory is then bounded by one batch of each size.

    :param model: The model; recompiled.
    :param x: Clean inputs, already preprocessed for the network; or a :class:`BatchSource` of inputs and labels.
    :param y: Integer labels of ``x`` (``None`` with a :class:`BatchSource`).
    :param epochs: Epochs.
    :param learning_rate: Initial learning rate.
    :param batch_size: Batch size.
    :param seed: Seed for shuffling and augmentation.
    :param verbose: Show a progress bar over the epochs.
    :param optimizer: ``"sgd"`` (momentum 0.9, Nesterov, cosine decay to 0 over the run) or ``"adam"`` (constant).
    :param batchnorm: ``"train"``: BatchNormalization layers learn and update their statistics on the clean data,
           as in ordinary training; ``"frozen"``: they keep B's statistics and parameters (inference mode).
    :param augment: Random shifts of up to an eighth of the image size (:func:`augment_padding`, zero padding);
           never flips, since mirroring changes the class of some data (digits, text).
    :return: The model.
    """
    from tqdm.auto import tqdm

    pad = _prepare_fine_tuning(model, batchnorm, augment)
    with tqdm(total=epochs, desc="Fine-tuning", unit="epoch", disable=not verbose, leave=False) as progress:
        options = {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "learning_rate": learning_rate,
            "augment_pad": pad,
            "seed": seed,
            "on_epoch": lambda _: progress.update(),
        }
        if isinstance(x, BatchSource):
            _fit_batches(model, x, **options)
        else:
            fit_classifier(model, x, y, augment_flip=False, **options)
    return model


def fine_tune_stream(
    model: keras.Model,
    batches: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
    n_samples: int,
    epochs: int,
    learning_rate: float,
    batch_size: int = 32,
    seed: int = 0,
    verbose: bool = False,
    optimizer: str = "sgd",
    batchnorm: str = "train",
    augment: bool = True,
) -> keras.Model:
    """
    :func:`fine_tune` on data read batch by batch (a :class:`BatchSource` of ``batches`` and ``n_samples``).

    :param batches: Called once per epoch: an iterable of ``(inputs, integer labels)``, inputs preprocessed.
    :param n_samples: Samples per epoch (for the learning-rate schedule).
    :return: The model.
    """
    source = BatchSource(batches, n_samples)
    return fine_tune(
        model, source, None, epochs, learning_rate, batch_size, seed, verbose, optimizer, batchnorm, augment
    )


def _fit_batches(
    model: keras.Model,
    source: BatchSource,
    epochs: int,
    batch_size: int,
    optimizer: str,
    learning_rate: float,
    augment_pad: int,
    seed: int,
    on_epoch: Callable[[int], None],
) -> None:
    """
    :func:`~art_pruning_defense.keras._architectures.fit_classifier` for a :class:`BatchSource`: compile, then train
    on each epoch's samples re-batched to ``batch_size``, shifted at random where ``augment_pad``.
    """
    from art_pruning_defense._stream import rebatch
    from art_pruning_defense.keras._architectures import augment as shift

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    compile_classifier(model, optimizer, learning_rate, epochs * math.ceil(source.n_samples / batch_size))
    for epoch in range(1, epochs + 1):
        for x, y in rebatch(source.batches(), batch_size):
            if augment_pad:
                x = shift(x, rng, augment_pad, False)
            model.train_on_batch(x, y)
        on_epoch(epoch)


def _prepare_fine_tuning(model: keras.Model, batchnorm: str, augment: bool) -> int:
    """
    :param batchnorm: ``"train"`` or ``"frozen"``: set the BatchNormalization layers trainable or not.
    :param augment: Whether to shift the inputs at random.
    :return: The shifts' padding (0 without augmentation).
    :raises ValueError: If ``batchnorm`` is neither.
    """
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}.")
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = batchnorm == "train"
    return augment_padding(tuple(model.inputs[0].shape[1:])) if augment else 0
