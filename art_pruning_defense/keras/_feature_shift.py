"""
Feature Shift Tuning (FST) of Min et al. (NeurIPS 2023), "Towards Stable Backdoor Purification through Feature Shift
Tuning", on a Keras model.

| Paper link: https://arxiv.org/abs/2310.01875

Plain fine-tuning on clean data leaves the backdoor in place when few training samples were poisoned: the clean and
backdoor features stay entangled and the old classifier head keeps reading both. FST forces the features to move by
pushing the head away from the compromised one:

1. Copy the model (the user's model is never modified) and re-initialise its classifier head, the last ``Dense``
   layer: kernel and bias uniform in ``±1/sqrt(fan_in)`` (PyTorch's ``nn.Linear`` scale, as the authors do).
2. Fine-tune every layer on the clean data with SGD (momentum 0.9, learning rate annealed by a cosine over the
   epochs, stepped once per epoch), BatchNormalization in training mode, on the loss
   ``CE + α · <W, W_orig>``: the inner product of the head's kernel with the original head's kernel.
3. After every step, rescale the head's kernel to the original kernel's Frobenius norm, so that the penalty can
   only turn the head away from ``W_orig``, not shrink it.

Hyper-parameters from the authors' code and README (CIFAR-10, ResNet-18, 2 % of the training set as clean data):
10 epochs, learning rate 0.01, batches of 128, ``α = 0.1`` (the README's CIFAR-10 command; the script's default is
0.2), no weight decay (the models' own regularisation losses are not added, as the authors' optimiser has none).

Channel masks from :func:`~art_pruning_defense.keras.multi_masked_copy` are ``Rescaling`` layers without weights:
they are copied with the model and pruned channels stay exactly zero while tuning. Cross-entropy is taken on the
logits where the head ends in a softmax (inside the ``Dense`` or as the following ``Softmax`` layer); the returned
model outputs what the input model outputs.
"""

from __future__ import annotations

import logging
import math
import time

import keras
import numpy as np
import tensorflow as tf

from art_pruning_defense._validation import integer_labels
from art_pruning_defense.keras._masking import clone_layer
from art_pruning_defense.keras._architectures import augment, outputs_probabilities
from art_pruning_defense.keras._graph import as_functional

logger = logging.getLogger(__name__)

#: The authors' README command for CIFAR-10.
FST_ALPHA = 0.1
#: Epochs of tuning (the authors' README).
FST_EPOCHS = 10
#: Initial learning rate (the authors' README).
FST_LEARNING_RATE = 0.01
#: SGD momentum (the authors' optimiser).
FST_MOMENTUM = 0.9


def _copy(model: keras.Model, linear_head: str | None = None) -> keras.Model:
    """
    :param model: A Functional model.
    :param linear_head: A Dense layer whose activation the copy drops (``None``: an exact copy).
    :return: A copy with equal weights.
    """

    def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer.name == linear_head:
            config["activation"] = "linear"
        return clone_layer(layer, config)

    copy = keras.models.clone_model(model, clone_function=clone_function)
    by_name = {layer.name: layer for layer in model.layers}
    for layer in copy.layers:
        if layer.name in by_name and layer.weights:
            layer.set_weights(by_name[layer.name].get_weights())
    return copy


def classifier_head(model: keras.Model) -> keras.layers.Dense:
    """
    :param model: A Functional model.
    :return: Its classifier head: the last ``Dense`` layer in the graph's order.
    :raises ValueError: If it has none.
    """
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ValueError(
            "Feature shift tuning re-initialises the classifier head, the last Dense layer; the model has no Dense "
            "layer (its layers: " + ", ".join(layer.name for layer in model.layers) + ")."
        )
    return dense[-1]


def _is_softmax(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Activation) and getattr(activation, "__name__", "") == "softmax"


def _training_view(model: keras.Model, head: str) -> tuple[keras.Model, keras.Model, bool]:
    """
    :return: ``(copy, view, from_logits)``: the copy that is tuned, the model whose output the loss reads (the
             copy, or the copy up to the head's logits), and whether that output is logits.
    """
    output_layer = model.outputs[0]._keras_history[0]
    probabilities = outputs_probabilities(model)
    if output_layer.name == head and probabilities:
        copy = _copy(model, linear_head=head)
        return copy, copy, True
    copy = _copy(model)
    if _is_softmax(output_layer):
        parent = output_layer.input._keras_history[0] if hasattr(output_layer, "input") else None
        if parent is not None and parent.name == head:
            view = keras.Model(copy.inputs, copy.get_layer(head).output)
            return copy, view, True
    return copy, copy, not probabilities


def feature_shift_tune(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int = FST_EPOCHS,
    learning_rate: float = FST_LEARNING_RATE,
    batch_size: int = 128,
    alpha: float = FST_ALPHA,
    seed: int = 0,
    verbose: bool = False,
    augment_pad: int = 0,
) -> keras.Model:
    """
    Purify a model by feature shift tuning on clean data.

    :param model: A Functional or Sequential classifier ending in a Dense head (softmax or logits); it may carry
           mask layers from :func:`~art_pruning_defense.keras.multi_masked_copy`. Not modified.
    :param x: Clean inputs, preprocessed for the model.
    :param y: Their labels: integers, or one-hot rows.
    :param epochs: Passes over the data.
    :param learning_rate: Initial SGD learning rate (momentum 0.9, cosine annealing per epoch).
    :param batch_size: Batch size (the last batch of an epoch may be smaller).
    :param alpha: Weight α of the inner-product penalty ``<W_head, W_orig>``.
    :param seed: Seed for the head's re-initialisation and the shuffling.
    :param verbose: Show a progress bar over the epochs.
    :param augment_pad: Shift each epoch's images at random by up to this many pixels (a random crop of the image
           padded with zeros; never flipped); 0: no augmentation, as the authors tune.
    :return: A tuned copy of the model, with the same layers and outputs.
    """
    from tqdm.auto import tqdm

    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}.")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}.")
    if int(augment_pad) != augment_pad or augment_pad < 0:
        raise ValueError(f"augment_pad must be a non-negative integer, got {augment_pad}.")
    functional = as_functional(model)
    x = np.asarray(x, dtype=np.float32)
    labels = integer_labels(y, len(x))
    if len(x) == 0:
        raise ValueError("Expected clean data to tune on, got no samples.")
    head_name = classifier_head(functional).name
    copy, view, from_logits = _training_view(functional, head_name)
    head = copy.get_layer(head_name)

    original = np.asarray(keras.ops.convert_to_numpy(head.kernel), dtype=np.float32)
    original_norm = float(np.linalg.norm(original))
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(original.shape[0])
    head.kernel.assign(rng.uniform(-bound, bound, size=original.shape).astype(np.float32))
    if head.use_bias:
        head.bias.assign(rng.uniform(-bound, bound, size=head.bias.shape).astype(np.float32))
    logger.info("FST: re-initialised the head %s (kernel %s, norm %.4f).", head_name, original.shape, original_norm)

    kernel_orig = tf.constant(original)
    variables = list(copy.trainable_variables)
    velocity = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in variables]
    rate = tf.Variable(float(learning_rate), trainable=False, dtype=tf.float32)

    @tf.function(reduce_retracing=True)
    def step(inputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            outputs = view(inputs, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(targets, outputs, from_logits=from_logits)
            )
            loss = loss + alpha * tf.reduce_sum(head.kernel * kernel_orig)
        grads = tape.gradient(loss, variables)
        for variable, buffer, grad in zip(variables, velocity, grads):
            if grad is None:
                continue
            buffer.assign(FST_MOMENTUM * buffer + grad)
            variable.assign(variable - rate * buffer)
        kernel = head.kernel
        kernel.assign(kernel * (original_norm / tf.norm(kernel)))
        return loss

    start = time.perf_counter()
    for epoch in tqdm(range(int(epochs)), desc="Feature shift tuning", unit="epoch", disable=not verbose, leave=False):
        # The authors' cosine annealing, stepped once per epoch (T_max = epochs).
        rate.assign(learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)))
        order = rng.permutation(len(x))
        inputs = augment(x, rng, int(augment_pad), False) if augment_pad else x
        total = 0.0
        for begin in range(0, len(x), int(batch_size)):
            index = order[begin : begin + int(batch_size)]
            total += float(step(tf.constant(inputs[index]), tf.constant(labels[index]))) * len(index)
        del inputs
        logger.info(
            "FST epoch %d/%d: loss %.4f, learning rate %.5f (%.1f s).",
            epoch + 1,
            epochs,
            total / len(x),
            float(rate.numpy()),
            time.perf_counter() - start,
        )
    if copy is view and from_logits and outputs_probabilities(functional):
        return _copy_weights_into(functional, copy)
    return copy


def _copy_weights_into(template: keras.Model, trained: keras.Model) -> keras.Model:
    """
    :return: A copy of ``template`` (its configuration: the head's softmax) holding ``trained``'s weights.
    """
    result = keras.models.clone_model(template, clone_function=lambda layer: clone_layer(layer, layer.get_config()))
    by_name = {layer.name: layer for layer in trained.layers}
    for layer in result.layers:
        if layer.name in by_name and layer.weights:
            layer.set_weights(by_name[layer.name].get_weights())
    return result
