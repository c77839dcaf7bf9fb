"""
Standard image classifiers for the benchmarks, and the training recipe that goes with them.

Keras only (TensorFlow is imported only on its backend, to hand training inputs over without a copy), so that the
builders and the recipe run on any Keras 3 backend.

- :func:`small_cnn`: a two-block CNN for the embedded examples and tests.
- ``small-cnn``: the CNN of Keras's MNIST example and of ART's poisoning examples (:func:`mnist_cnn`).
- ``resnet20``: the CIFAR ResNet of He et al. (2016), section 4.2: a 3×3 stem of 16 channels, three stages of three
  basic blocks (16, 32, 64 channels; stride 2 at the start of stages 2 and 3, 1×1 projection shortcuts there),
  global average pooling and a softmax layer; 0.27 M parameters.
- ``vgg11-bn``: VGG-11 (Simonyan and Zisserman, 2015, configuration A) with BatchNormalization after every conv,
  as torchvision's ``vgg11_bn``, with the small-image head used on CIFAR (flatten → softmax layer).

Every builder gives an uncompiled Functional model with softmax outputs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from art_pruning_defense._aligned import aligned_empty, is_shareable
from art_pruning_defense._defaults import ARCH_NAMES

logger = logging.getLogger(__name__)

#: He et al.'s weight decay for the CIFAR ResNets (also used for VGG-BN).
WEIGHT_DECAY = 1e-4
#: VGG-11's configuration A: channels per conv, "M" for a 2×2 max-pooling.
VGG11_LAYERS: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
#: Images :func:`augment` crops and flips at a time (bounds its temporaries: a CIFAR-sized set padded whole is 1 GB).
AUGMENT_CHUNK = 4096


def _l2(weight_decay: float) -> keras.regularizers.Regularizer | None:
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def _conv_bn(x, filters: int, strides: int, name: str, weight_decay: float, relu: bool = True):
    regularizer = _l2(weight_decay)
    x = keras.layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def resnet20(input_shape: tuple[int, int, int], n_classes: int, weight_decay: float = WEIGHT_DECAY) -> keras.Model:
    """
    ResNet-20 for small images (He et al., 2016, "Deep Residual Learning for Image Recognition", section 4.2).

    The last stage's output, ``stage3_block3_out`` (after the final ``Add`` and ReLU), is the layer that fine-pruning
    prunes by default: every path to the output passes through it.

    :param input_shape: ``(height, width, channels)``.
    :param n_classes: Number of classes.
    :param weight_decay: L2 factor on the conv and dense kernels.
    :return: An uncompiled Functional model with softmax outputs.
    """
    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn(inputs, 16, 1, "stem", weight_decay)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            name = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            y = _conv_bn(x, filters, strides, f"{name}_1", weight_decay)
            y = _conv_bn(y, filters, 1, f"{name}_2", weight_decay, relu=False)
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = keras.layers.Conv2D(
                    filters,
                    1,
                    strides=strides,
                    use_bias=False,
                    kernel_initializer="he_normal",
                    kernel_regularizer=_l2(weight_decay),
                    name=f"{name}_shortcut_conv",
                )(shortcut)
                shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
            x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
            x = keras.layers.Activation("relu", name=f"{name}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=_l2(weight_decay), name="output")(
        x
    )
    return keras.Model(inputs, outputs, name="resnet20")


def vgg11_bn(input_shape: tuple[int, int, int], n_classes: int, weight_decay: float = WEIGHT_DECAY) -> keras.Model:
    """
    VGG-11 with BatchNormalization (configuration A of Simonyan and Zisserman, 2015), for small images: after the
    five conv stages a 32×32 input is 1×1×512, flattened into the softmax layer. The last stage's pooling,
    ``pool_5``, is where fine-pruning prunes by default.

    :param input_shape: ``(height, width, channels)``; height and width at least 32 (five 2×2 poolings).
    :param n_classes: Number of classes.
    :param weight_decay: L2 factor on the conv and dense kernels.
    :return: An uncompiled Functional model with softmax outputs.
    """
    if min(input_shape[:2]) < 32:
        raise ValueError(f"vgg11-bn needs images of at least 32×32 (five 2×2 poolings), got {input_shape[:2]}.")
    inputs = keras.Input(shape=input_shape, name="input")
    x, conv, pool = inputs, 0, 0
    for item in VGG11_LAYERS:
        if item == "M":
            pool += 1
            x = keras.layers.MaxPooling2D(2, name=f"pool_{pool}")(x)
        else:
            conv += 1
            x = _conv_bn(x, int(item), 1, f"block{conv}", weight_decay)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=_l2(weight_decay), name="output")(
        x
    )
    return keras.Model(inputs, outputs, name="vgg11_bn")


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


def mnist_cnn(input_shape: tuple[int, int, int], n_classes: int) -> keras.Model:
    """
    The CNN of Keras's MNIST example, also the BadNet of ART's poisoning examples: conv 32 → conv 64 → max-pool →
    dropout → dense 128 → dropout → softmax. ``conv_2`` (64 channels) is the layer to prune.

    :param input_shape: ``(height, width, channels)``.
    :param n_classes: Number of classes.
    :return: An uncompiled Functional model with softmax outputs.
    """
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv_1")(inputs)
    x = keras.layers.Conv2D(64, 3, activation="relu", name="conv_2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool_2")(x)
    x = keras.layers.Dropout(0.25, name="dropout_1")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(128, activation="relu", name="fc_1")(x)
    x = keras.layers.Dropout(0.5, name="dropout_2")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")


@dataclass(frozen=True)
class Recipe:
    """
    How an architecture is trained from scratch.

    :param optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9, Nesterov).
    :param learning_rate: The initial learning rate (cosine decay to 0 over the run for SGD, constant for Adam).
    :param epochs: Default number of epochs.
    :param batch_size: Batch size.
    """

    optimizer: str
    learning_rate: float
    epochs: int
    batch_size: int


@dataclass(frozen=True)
class Architecture:
    """
    A named architecture of the benchmarks.

    :param build: ``build(input_shape, n_classes) -> keras.Model``.
    :param recipe: Its training recipe.
    """

    build: Callable[[tuple[int, int, int], int], keras.Model]
    recipe: Recipe


#: The benchmark's architectures by name. ResNet-20: 25 epochs of SGD reach about 80 % on 20,000 CIFAR-10 images
#: in about 25 minutes on 2 CPU cores.
ARCHITECTURES: dict[str, Architecture] = {
    "small-cnn": Architecture(mnist_cnn, Recipe("adam", 1e-3, 3, 64)),
    "resnet20": Architecture(resnet20, Recipe("sgd", 0.1, 25, 128)),
    "vgg11-bn": Architecture(vgg11_bn, Recipe("sgd", 0.05, 25, 128)),
}


assert tuple(ARCHITECTURES) == ARCH_NAMES, "keep _defaults.ARCH_NAMES in step with ARCHITECTURES"


def architecture_names() -> tuple[str, ...]:
    """
    :return: The names of the built-in architectures.
    """
    return tuple(ARCHITECTURES)


def build_architecture(name: str, input_shape: tuple[int, int, int], n_classes: int) -> keras.Model:
    """
    :param name: One of :func:`architecture_names`.
    :param input_shape: ``(height, width, channels)``.
    :param n_classes: Number of classes.
    :return: The architecture, freshly initialised (seed Keras first for reproducible weights).
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {name!r}; choose one of: {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[name].build(tuple(int(d) for d in input_shape), int(n_classes))


def augment(
    x: np.ndarray, rng: np.random.Generator, pad: int, flip: bool, rows: np.ndarray | None = None
) -> np.ndarray:
    """
    The standard augmentation of small natural images: a random crop of the image padded with ``pad`` zero pixels on
    each side, and (``flip``) a horizontal flip with probability 1/2.

    Images are augmented :data:`AUGMENT_CHUNK` at a time, so that beyond its result it holds the padded copy of one
    chunk, not of the whole set; the random draws are made for the whole set first, so the result does not depend on
    the chunk size.

    :param x: Images, shape ``(n, height, width, channels)``.
    :param rng: Random generator.
    :param pad: Padding in pixels (0: no crop).
    :param flip: Flip horizontally at random (off for data where mirroring changes the class, e.g. digits).
    :param rows: Augment only these images of ``x``, in this order (the same as augmenting ``x[rows]``, without that
           copy); ``None``: all.
    :return: Augmented copies of the images.
    """
    n = len(x) if rows is None else len(rows)
    height, width = x.shape[1:3]
    if pad > 0:
        dy = rng.integers(0, 2 * pad + 1, n)
        dx = rng.integers(0, 2 * pad + 1, n)
    flipped = rng.random(n) < 0.5 if flip else None
    out = aligned_empty((n, *x.shape[1:]), x.dtype)  # fit_classifier can hand it to TensorFlow without a copy
    for start in range(0, n, AUGMENT_CHUNK):
        stop = min(n, start + AUGMENT_CHUNK)
        part = x[start:stop] if rows is None else x[rows[start:stop]]
        target = out[start:stop]
        if pad > 0:
            padded = np.pad(part, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            crop_rows = dy[start:stop, None] + np.arange(height)[None, :]
            crop_cols = dx[start:stop, None] + np.arange(width)[None, :]
            target[:] = padded[np.arange(stop - start)[:, None, None], crop_rows[:, :, None], crop_cols[:, None, :]]
        else:
            target[:] = part
        if flipped is not None:
            chunk_flipped = flipped[start:stop]
            target[chunk_flipped] = target[chunk_flipped, :, ::-1]
    return out


def make_optimizer(name: str, learning_rate: float, total_steps: int) -> keras.optimizers.Optimizer:
    """
    :param name: ``"adam"`` (constant rate) or ``"sgd"`` (momentum 0.9, Nesterov, cosine decay to 0).
    :param learning_rate: Initial learning rate.
    :param total_steps: Optimizer steps of the whole run (for the schedule).
    :return: The optimizer.
    """
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, total_steps))
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}.")


def compile_classifier(model: keras.Model, optimizer: str, learning_rate: float, total_steps: int) -> keras.Model:
    """
    Compile a classifier for integer labels: cross-entropy on its probabilities, or on its logits where its last
    layer is no softmax.

    :param model: The model (compiled in place).
    :param optimizer: ``"adam"`` or ``"sgd"`` (see :func:`make_optimizer`).
    :param learning_rate: Initial learning rate.
    :param total_steps: Optimizer steps of the whole run (for the schedule).
    :return: The model.
    """
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate, total_steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not outputs_probabilities(model)),
    )
    return model


def fit_classifier(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    augment_pad: int = 0,
    augment_flip: bool = False,
    seed: int = 0,
    on_epoch: Callable[[int], None] | None = None,
    rows: np.ndarray | None = None,
) -> keras.Model:
    """
    Train a classifier on integer labels (compiles the model), with optional augmentation drawn afresh each epoch.

    Keras gets each epoch's inputs (augmented, or ``x[rows]``) as a tensor that shares their memory
    (:func:`_fit_inputs`), so that training holds ``x`` and one copy of them, not also the copy Keras would make.

    :param model: The model (trained in place).
    :param x: Inputs.
    :param y: Integer labels of ``x``.
    :param epochs: Epochs.
    :param batch_size: Batch size.
    :param optimizer: ``"adam"`` or ``"sgd"`` (see :func:`make_optimizer`).
    :param learning_rate: Initial learning rate.
    :param augment_pad: Random-crop padding in pixels (0: none).
    :param augment_flip: Random horizontal flips.
    :param seed: Seed for shuffling and augmentation.
    :param on_epoch: Called with the epoch number (from 1) after each epoch (progress).
    :param rows: Train on these samples of ``x`` and ``y`` only, in this order (the same training as on ``x[rows]``,
           without keeping that copy); ``None``: all.
    :return: The model.
    """
    n = len(x) if rows is None else len(rows)
    labels = y if rows is None else y[rows]
    keras.utils.set_random_seed(seed)
    compile_classifier(model, optimizer, learning_rate, epochs * math.ceil(n / batch_size))
    if not (augment_pad > 0 or augment_flip):
        callbacks = (
            [] if on_epoch is None else [keras.callbacks.LambdaCallback(on_epoch_end=lambda e, _: on_epoch(e + 1))]
        )
        inputs = x
        if rows is not None:
            inputs = _fit_inputs(np.take(x, rows, axis=0, out=aligned_empty((n, *x.shape[1:]), x.dtype)))
        model.fit(inputs, labels, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0, callbacks=callbacks)
        return model
    rng = np.random.default_rng(seed)
    for epoch in range(1, epochs + 1):
        inputs = _fit_inputs(augment(x, rng, augment_pad, augment_flip, rows))
        model.fit(inputs, labels, epochs=1, batch_size=batch_size, shuffle=True, verbose=0)
        del inputs  # before the next epoch's images are made
        if on_epoch is not None:
            on_epoch(epoch)
    return model


def _fit_inputs(x: np.ndarray) -> object:
    """
    :param x: Training inputs made for one fit (not used elsewhere while it runs).
    :return: ``x`` as ``model.fit`` should take it: on the TensorFlow backend, an aligned float32 array
             (:func:`~art_pruning_defense._aligned.is_shareable`) becomes a tensor sharing its memory
             (:func:`~art_pruning_defense.keras.shared_tensor`), since Keras would otherwise convert the whole
             array into a tensor of its own, a second copy for the whole fit. Anything else is returned as it is. The
             batches, their order and their values are the same either way.
    """
    if keras.backend.backend() != "tensorflow" or not is_shareable(x):
        return x
    from art_pruning_defense.keras._predict import shared_tensor

    return shared_tensor(x)


def outputs_probabilities(model: keras.Model) -> bool:
    """
    :param model: A Functional classifier.
    :return: Whether its output layer ends in a softmax (probabilities) rather than logits.
    """
    layer = model.outputs[0]._keras_history[0]
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"
