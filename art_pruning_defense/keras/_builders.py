"""
Small Keras CNNs for the embedded BadNet examples and benchmarks, and their training.
"""
from __future__ import annotations

import logging

import keras
import numpy as np

logger = logging.getLogger(__name__)


def small_cnn(input_shape: tuple[int, int, int], n_classes: int, width: int = 32) -> keras.Model:
    """
    A two-block CNN (conv → pool, conv → pool, dense) whose last conv, ``conv_2``, is the layer to prune.

    :param input_shape: ``(height, width, channels)``.
    :param n_classes: Number of classes.
    :param width: Channels of the last conv (the first has half).
    :return: An uncompiled Functional model with softmax outputs.
    """
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Conv2D(width // 2, 3, padding="same", activation="relu", name="conv_1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool_1")(x)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv_2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool_2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc_1")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


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
