"""
Training the BadNet (and the networks a filtering defence retrains): a built-in architecture or the user's own
``.keras`` model, freshly initialised from the seed, with its architecture's recipe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
from art.estimators.classification import KerasClassifier

from art_pruning_defense.benchmark.config import AUGMENT_PADDING, BenchmarkConfig
from art_pruning_defense.keras import ARCHITECTURES, build_architecture, fit_classifier, seed_everything

if TYPE_CHECKING:
    import keras

    from art_pruning_defense.lab.digits import BadNetData


def train_badnet(
    x: np.ndarray, y: np.ndarray, n_classes: int, config: BenchmarkConfig, rows: np.ndarray | None = None
) -> KerasClassifier:
    """
    :param x: Training images in [0, 1], channels last.
    :param y: Integer labels.
    :param n_classes: Number of classes.
    :param config: Architecture (or model file), seed, epochs, batch size and augmentation (defaults resolved here).
    :param rows: Train on these samples only (as on ``x[rows]``, without that copy); ``None``: all.
    :return: The network, freshly initialised from the seed and trained, as an ART ``KerasClassifier`` with clip
             values (0, 1).
    """
    config = config.resolved()
    # Seed before building: the initial weights are drawn when the layers are created.
    seed_everything(config.seed)
    if config.model is not None:
        model = _fresh_user_model(config.model, tuple(x.shape[1:]), n_classes)
    else:
        model = build_architecture(config.arch, x.shape[1:], n_classes)
    train_further(model, x, y, config, rows=rows)
    return KerasClassifier(model, clip_values=(0.0, 1.0))


def train_further(
    model: "keras.Model", x: np.ndarray, y: np.ndarray, config: BenchmarkConfig, rows: np.ndarray | None = None
) -> "keras.Model":
    """
    Train a network, in place, with the cell's recipe (epochs, batch size, optimizer, learning rate, augmentation,
    seed): what :func:`train_badnet` does after building it.

    :param model: The network (recompiled, trained in place).
    :param x: Training images in [0, 1], channels last.
    :param y: Integer labels.
    :param config: The cell (defaults resolved here).
    :param rows: Train on these samples only; ``None``: all.
    :return: The model.
    """
    config = config.resolved()
    recipe = ARCHITECTURES[config.arch].recipe
    augment = config.augment if config.augment is not None else x.shape[-1] == 3
    return fit_classifier(
        model,
        x,
        y,
        epochs=config.epochs,
        batch_size=config.batch_size,
        optimizer=recipe.optimizer,
        learning_rate=recipe.learning_rate,
        augment_pad=AUGMENT_PADDING if augment else 0,
        augment_flip=augment and config.flip,
        seed=config.seed,
        rows=rows,
    )


def train_backdoored(data: "BadNetData", config: BenchmarkConfig, train: Callable = train_badnet) -> KerasClassifier:
    """
    Train the cell's B: with :func:`train_badnet` on the poisoned training set, or by the attack's own procedure
    where it has one (``train_model``, e.g. the pruning-aware attack, which trains in stages).

    :param data: The cell's data (poisoned training set and which samples are poisoned).
    :param config: The cell.
    :param train: What trains a network on a training set (default :func:`train_badnet`).
    :return: B.
    """
    attack = config.make_attack()
    if hasattr(attack, "train_model"):
        return attack.train_model(data, config, train)
    return train(data.x_train, data.y_train, data.n_classes, config)


def _fresh_user_model(path: str, input_shape: tuple[int, ...], n_classes: int) -> "keras.Model":
    """
    :return: The architecture of the ``.keras`` file at ``path``, with freshly initialised weights.
    """
    import keras

    from art_pruning_defense.keras import load_model

    loaded = load_model(path)
    shape = tuple(loaded.inputs[0].shape[1:])
    if shape != input_shape:
        raise ValueError(f"model {path} takes inputs of shape {shape}, but the data's images are {input_shape}.")
    outputs = loaded.outputs[0].shape[-1]
    if outputs != n_classes:
        raise ValueError(f"model {path} has {outputs} outputs, but the data has {n_classes} classes.")
    return keras.models.clone_model(loaded)  # new layers from the config: new initial weights
