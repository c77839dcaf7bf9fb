"""
Adversarial Neuron Pruning (ANP) of Wu and Wang (NeurIPS 2021), "Adversarial Neuron Pruning Purifies Backdoored Deep
Models": the mask optimisation on a Keras model.

| Paper link: https://arxiv.org/abs/2110.14430

Backdoor channels are the ones whose small perturbation changes the model's output most. ANP gives each channel of
the chosen convolutions a mask value and learns it under adversarial channel perturbations:

1. Work on a copy of the model in which every BatchNormalization computes, per channel, ``γ (m + δ) x̂ + β (1 + ξ)``
   (a conv without BN: ``(m + δ) · (W * x) + (1 + ξ) · b`` on its output, before its activation), with mask ``m = 1``
   and perturbations ``δ = ξ = 0`` to start with. The user's model is never modified.
2. Each iteration draws a batch of the clean data (with replacement, as the authors' sampler), then:

   a. draws ``δ, ξ`` uniformly in ``[-ε, ε]`` and takes ``anp_steps`` signed-gradient ascent steps of size
      ``ε / anp_steps`` on the cross-entropy, projected back onto ``[-ε, ε]`` (the paper's constraint; the
      authors' code does not clip, so that one step from a uniform start reaches up to ``2ε``);
   b. takes one SGD step (momentum 0.9) on the masks for ``α · L(natural) + (1 - α) · L(perturbed)``, then clips the
      masks to ``[0, 1]``.

3. The masks' final values rank the channels; channels below 0.2 (the paper's threshold) are pruned with
   :func:`art_pruning_defense.strategies.adversarial.anp_prune_masks` and masked at the end of their conv block.

Hyper-parameters from the paper and its code: ``ε = 0.4``, ``α = 0.2``, mask learning rate 0.2 with momentum 0.9,
one perturbation step, batches of 128, pruning threshold 0.2. The authors run 2,000 iterations; see
:data:`ANP_ITERATIONS` for the default here. As in the authors' code (``model.train()``), normalisation uses each
batch's statistics while the masks are learnt (``batch_statistics=False``: the moving statistics) and the other
layers run in inference mode (no dropout, unlike the authors' ``model.train()``); cross-entropy is
taken on the logits where the output layer is a softmax ``Dense`` (its activation is dropped in the copy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from art_pruning_defense._validation import integer_labels
from art_pruning_defense.keras._masking import clone_layer
from art_pruning_defense.keras._architectures import outputs_probabilities
from art_pruning_defense.keras._graph import PrunePoint, as_functional
from art_pruning_defense.keras._channels import ChannelLayer, channel_layers

logger = logging.getLogger(__name__)

#: Default iterations. The authors run 2,000 iterations of 128 images, three forward-backward passes each (the
#: perturbation step, the perturbed loss, the natural loss). Measured on ResNet-20 (32×32×3, 10 classes, random
#: weights, 2,000 images) with TensorFlow 2.21 on two CPU cores shared with other work: 1.31 s per iteration at batch
#: 128 under a load average of 3 (1 iteration 6.6 s, 41 iterations 59.1 s) and 1.49 s under a load average of 5 (1
#: iteration 13.5 s, 61 iterations 102.9 s; the single iteration is mostly tracing and the model's copy), so 2,000
#: iterations would take 45-50 minutes. 180 iterations of 128 (11.5 passes over 2,000 images) take 4.0-4.7 minutes
#: there, within a 5-minute budget; the batch keeps the authors' size so that each mask step sees as much data as
#: theirs.
ANP_ITERATIONS = 180
#: The paper's perturbation budget on the normalisation's scale and shift.
ANP_EPS = 0.4
#: The paper's weight of the natural loss in the mask objective.
ANP_ALPHA = 0.2
#: The authors' mask learning rate (SGD, momentum :data:`ANP_MOMENTUM`).
ANP_LEARNING_RATE = 0.2
#: Momentum of the mask optimiser.
ANP_MOMENTUM = 0.9

Target = ChannelLayer | PrunePoint | str


class _NoisyChannels(keras.layers.Layer):
    """
    A channel-wise affine map with ANP's mask and perturbations.

    ``mode="bn"`` replaces a BatchNormalization (normalising with the batch's or the moving statistics);
    ``mode="conv"`` follows a conv without BN whose output (with bias ``bias``, before any activation) it rescales.
    """

    def __init__(
        self,
        n_channels: int,
        mode: str,
        constants: dict[str, np.ndarray],
        epsilon: float = 1e-3,
        batch_statistics: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.epsilon = float(epsilon)
        self.batch_statistics = batch_statistics
        self.constants = {key: tf.constant(value, dtype=tf.float32) for key, value in constants.items()}
        self.mask = self.add_weight(shape=(n_channels,), initializer="ones", trainable=False, name="mask")
        self.noise_scale = self.add_weight(shape=(n_channels,), initializer="zeros", trainable=False, name="delta")
        self.noise_shift = self.add_weight(shape=(n_channels,), initializer="zeros", trainable=False, name="xi")
        self.perturbed = self.add_weight(shape=(), initializer="zeros", trainable=False, name="perturbed")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        scale = self.mask.value + self.perturbed.value * self.noise_scale.value
        shift = 1.0 + self.perturbed.value * self.noise_shift.value
        if self.mode == "conv":
            bias = self.constants["bias"]
            return (x - bias) * scale + bias * shift
        if self.batch_statistics:
            mean, variance = tf.nn.moments(x, axes=list(range(len(x.shape) - 1)))
        else:
            mean, variance = self.constants["mean"], self.constants["variance"]
        normalised = (x - mean) * tf.math.rsqrt(variance + self.epsilon)
        return normalised * (self.constants["gamma"] * scale) + self.constants["beta"] * shift


def _is_linear(activation: Any) -> bool:
    return activation is None or getattr(activation, "__name__", "") == "linear"


def _value(variable: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


def _last_axis(bn: keras.layers.BatchNormalization) -> bool:
    axis = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    return len(axis) == 1 and axis[0] in (-1, len(bn.input.shape) - 1)


def _bn_constants(bn: keras.layers.BatchNormalization) -> tuple[dict[str, np.ndarray], float]:
    n = int(bn.moving_mean.shape[0])
    gamma = _value(bn.gamma) if getattr(bn, "gamma", None) is not None else np.ones(n, np.float32)
    beta = _value(bn.beta) if getattr(bn, "beta", None) is not None else np.zeros(n, np.float32)
    constants = {
        "gamma": gamma,
        "beta": beta,
        "mean": _value(bn.moving_mean),
        "variance": _value(bn.moving_variance),
    }
    return constants, float(bn.epsilon)


def _resolve(model: keras.Model, targets: Iterable[Target] | None) -> list[tuple[PrunePoint, ChannelLayer]]:
    layers = channel_layers(model)
    if targets is None:
        return [(layer.point, layer) for layer in layers]
    by_conv = {layer.conv_name: layer for layer in layers}
    resolved: list[tuple[PrunePoint, ChannelLayer]] = []
    for target in targets:
        if isinstance(target, ChannelLayer):
            name, key = target.conv_name, target.point
        elif isinstance(target, PrunePoint):
            name, key = target.layer_name, target
        elif isinstance(target, str):
            name, key = target, None
        else:
            raise TypeError(f"Expected ChannelLayer, PrunePoint or a conv's name, got {type(target).__name__}.")
        if name not in by_conv:
            raise ValueError(
                f"ANP masks the channels of Conv2D layers; {name!r} is not one of them: " + ", ".join(by_conv)
            )
        resolved.append((key if key is not None else by_conv[name].point, by_conv[name]))
    if not resolved:
        raise ValueError("Expected at least one layer to optimise masks for.")
    return resolved


def _noisy_copy(
    model: keras.Model, targets: list[ChannelLayer], batch_statistics: bool
) -> tuple[keras.Model, dict[str, _NoisyChannels], bool]:
    """
    :return: ``(copy, noisy, from_logits)``: the model's copy with every BatchNormalization replaced by a
             :class:`_NoisyChannels` (and one after each target conv without BN), the noisy layers of the targets by
             conv name, and whether the copy outputs logits.
    """
    output_layer = model.outputs[0]._keras_history[0]
    drop_softmax = isinstance(output_layer, keras.layers.Dense) and outputs_probabilities(model)
    from_logits = drop_softmax or not outputs_probabilities(model)
    bare_convs = {layer.conv_name for layer in targets if layer.bn_name is None}
    target_bns = {layer.bn_name: layer.conv_name for layer in targets if layer.bn_name is not None}
    noisy: dict[str, _NoisyChannels] = {}
    activations: dict[str, Any] = {}

    def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer.name in bare_convs and not _is_linear(layer.activation):
            activations[layer.name] = config["activation"]
            config["activation"] = "linear"
        elif drop_softmax and layer is output_layer:
            config["activation"] = "linear"
        return clone_layer(layer, config)

    def call_function(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        source = model.get_layer(layer.name)
        if isinstance(source, keras.layers.BatchNormalization) and _last_axis(source):
            constants, epsilon = _bn_constants(source)
            channels = _NoisyChannels(
                len(constants["gamma"]),
                "bn",
                constants,
                epsilon,
                batch_statistics,
                name=f"{layer.name}_anp",
            )
            if layer.name in target_bns:
                noisy[target_bns[layer.name]] = channels
            return channels(args[0])
        out = layer(*args, **kwargs)
        if layer.name in bare_convs:
            n = int(source.filters)
            bias = _value(source.bias) if source.use_bias else np.zeros(n, np.float32)
            channels = _NoisyChannels(n, "conv", {"bias": bias}, name=f"{layer.name}_anp")
            noisy[layer.name] = channels
            out = channels(out)
            if layer.name in activations:
                out = keras.layers.Activation(activations[layer.name], name=f"{layer.name}_anp_activation")(out)
        return out

    copy = keras.models.clone_model(model, clone_function=clone_function, call_function=call_function)
    by_name = {layer.name: layer for layer in model.layers}
    for layer in copy.layers:
        if layer.name in by_name and layer.weights and not isinstance(layer, _NoisyChannels):
            layer.set_weights(by_name[layer.name].get_weights())
    return copy, noisy, from_logits


def anp_mask_values(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    points_or_layers: Iterable[Target] | None = None,
    eps: float = ANP_EPS,
    alpha: float = ANP_ALPHA,
    iterations: int = ANP_ITERATIONS,
    batch_size: int = 128,
    learning_rate: float = ANP_LEARNING_RATE,
    anp_steps: int = 1,
    seed: int = 0,
    verbose: bool = False,
    batch_statistics: bool = True,
) -> dict[PrunePoint, np.ndarray]:
    """
    Learn each channel's ANP mask value on clean data (the model is not modified).

    Timing (ResNet-20, 32×32×3, batches of 128, two shared CPU cores): see :data:`ANP_ITERATIONS`.

    :param model: A Functional or Sequential classifier (softmax or logits output).
    :param x: Clean inputs, preprocessed for the model.
    :param y: Their labels: integers, or one-hot rows.
    :param points_or_layers: The convolutions whose channels get masks: :class:`ChannelLayer` entries, prune points
           (whose ``layer_name`` is a Conv2D) or conv names; ``None`` for every conv of :func:`channel_layers`.
    :param eps: Perturbation budget ε on the channels' scale and shift (0: no perturbation, masks learnt on the
           natural loss alone).
    :param alpha: Weight α of the natural loss; ``1 - α`` weighs the perturbed loss.
    :param iterations: Mask updates, one batch each.
    :param batch_size: Images per batch (drawn with replacement).
    :param learning_rate: The masks' SGD learning rate (momentum 0.9).
    :param anp_steps: Signed-gradient ascent steps on the perturbations per iteration (step size ε / anp_steps).
    :param seed: Seed for the batches and the perturbations' random starts.
    :param verbose: Show a progress bar.
    :param batch_statistics: Normalise with each batch's statistics while learning (the authors' ``model.train()``);
           ``False``: the BatchNormalization layers' moving statistics.
    :return: For each prune point (a given :class:`PrunePoint` itself, else the conv's :attr:`ChannelLayer.point`),
             its channels' mask values in ``[0, 1]`` (float32); low values mark channels to prune.
    """
    from tqdm.auto import tqdm

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}.")
    for name, value in (("iterations", iterations), ("batch_size", batch_size), ("anp_steps", anp_steps)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}.")
    functional = as_functional(model)
    x = np.asarray(x, dtype=np.float32)
    labels = integer_labels(y, len(x))
    if len(x) == 0:
        raise ValueError("Expected clean data to learn the masks on, got no samples.")
    targets = _resolve(functional, points_or_layers)
    copy, noisy, from_logits = _noisy_copy(functional, [layer for _, layer in targets], batch_statistics)
    layers = [noisy[layer.conv_name] for _, layer in targets]
    masks = [layer.mask.value for layer in layers]
    noises = [variable.value for layer in layers for variable in (layer.noise_scale, layer.noise_shift)]
    flags = [layer.perturbed for layer in layers]
    velocity = [tf.Variable(tf.zeros_like(mask), trainable=False) for mask in masks]
    step_size = eps / anp_steps
    perturb = eps > 0

    def loss_of(inputs: tf.Tensor, targets_: tf.Tensor) -> tf.Tensor:
        outputs = copy(inputs, training=False)
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(targets_, outputs, from_logits=from_logits))

    def set_flags(value: float) -> None:
        for flag in flags:
            flag.assign(value)

    @tf.function(reduce_retracing=True)
    def step(inputs: tf.Tensor, targets_: tf.Tensor, seeds: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        loss_rob = tf.constant(0.0)
        if perturb:
            for index, noise in enumerate(noises):
                noise.assign(tf.random.stateless_uniform(noise.shape, seeds[index], minval=-eps, maxval=eps))
            set_flags(1.0)
            for _ in range(anp_steps):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(noises)
                    loss = loss_of(inputs, targets_)
                for noise, grad in zip(noises, tape.gradient(loss, noises)):
                    noise.assign(tf.clip_by_value(noise + step_size * tf.sign(grad), -eps, eps))
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(masks)
                loss_rob = loss_of(inputs, targets_)
            grads_rob = tape.gradient(loss_rob, masks)
            set_flags(0.0)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(masks)
            loss_nat = loss_of(inputs, targets_)
        grads = [alpha * grad for grad in tape.gradient(loss_nat, masks)]
        if perturb:
            grads = [grad + (1.0 - alpha) * rob for grad, rob in zip(grads, grads_rob)]
        for mask, buffer, grad in zip(masks, velocity, grads):
            buffer.assign(ANP_MOMENTUM * buffer + grad)
            mask.assign(tf.clip_by_value(mask - learning_rate * buffer, 0.0, 1.0))
        return loss_nat, loss_rob

    rng = np.random.default_rng(seed)
    n_noises = len(noises)
    start = time.perf_counter()
    for iteration in tqdm(range(int(iterations)), desc="ANP masks", unit="it", disable=not verbose, leave=False):
        index = rng.integers(0, len(x), size=int(batch_size))
        seeds = np.stack(
            [np.full(n_noises, seed, np.int64), iteration * n_noises + np.arange(n_noises, dtype=np.int64)], axis=1
        )
        loss_nat, loss_rob = step(tf.constant(x[index]), tf.constant(labels[index]), tf.constant(seeds))
        if (iteration + 1) % 50 == 0 or iteration + 1 == iterations:
            logger.info(
                "ANP iteration %d/%d: natural loss %.4f, perturbed loss %.4f (%.1f s).",
                iteration + 1,
                iterations,
                float(loss_nat),
                float(loss_rob),
                time.perf_counter() - start,
            )
    return {point: _value(noisy[layer.conv_name].mask) for point, layer in targets}
