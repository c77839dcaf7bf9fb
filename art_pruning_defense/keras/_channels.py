"""
Every convolution's output channels, wherever they sit in the graph: the channels that channel-level defences
(CLP, ANP) score and prune, including those inside residual branches, which the bottleneck layers of
:func:`~art_pruning_defense.keras.find_prune_point`'s default miss.

A :class:`ChannelLayer` names a Conv2D, the BatchNormalization that directly follows it (if any) and the prune
point where its channels are masked: the end of its conv block (after BN, activation and pooling). Inside a
residual branch, a channel masked there is zeroed in that branch only; the shortcut still carries the block's input,
which is what pruning a channel means in these methods.

:func:`conv_bn_weights` reads a conv's kernel and its BN's statistics (for CLP's scores).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from art_pruning_defense.keras._graph import PrunePoint, as_functional, consumers_and_calls, find_prune_point

logger = logging.getLogger(__name__)

#: Convolutions that are not a plain :class:`keras.layers.Conv2D` and are skipped.
_SKIPPED_CONVS: tuple[type, ...] = (
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv1D,
    keras.layers.Conv3D,
)


@dataclass(frozen=True)
class ChannelLayer:
    """
    A convolution whose output channels can be scored and pruned.

    :param conv_name: The Conv2D layer.
    :param bn_name: The BatchNormalization that takes the conv's output directly (the conv's only consumer,
                    channels-last axis), or ``None``.
    :param point: Where its channels are masked: the end of its conv block.
    """

    conv_name: str
    bn_name: str | None
    point: PrunePoint

    @property
    def n_channels(self) -> int:
        """
        :return: The conv's output channels.
        """
        return self.point.n_channels


def _is_channels_last_bn(layer: keras.layers.Layer) -> bool:
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return len(axis) == 1 and axis[0] in (-1, 3)


def channel_layers(model: keras.Model) -> list[ChannelLayer]:
    """
    :param model: A Functional or Sequential model (nested models are inlined with
           :func:`~art_pruning_defense.keras.as_functional`; pass its result to use the names it gives).
    :return: Every Conv2D whose channels can be masked, in the model's order, with its BatchNormalization and its
             prune point. Depthwise, separable and transposed convolutions are skipped (logged), as are convs that
             cannot be masked on their own (called more than once, or feeding the output directly).
    :raises ValueError: If the model has no Conv2D layer.
    """
    model = as_functional(model)
    consumers, calls = consumers_and_calls(model)
    found: list[ChannelLayer] = []
    n_convs = 0
    for layer in model.layers:
        if isinstance(layer, _SKIPPED_CONVS):
            logger.info("Skipping %s (%s): only Conv2D channels are scored.", layer.name, type(layer).__name__)
            continue
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        n_convs += 1
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            logger.info("Skipping %s: channels_first convolutions are not supported.", layer.name)
            continue
        try:
            point = find_prune_point(model, layer.name)
        except ValueError as error:
            logger.info("Skipping %s: its channels cannot be masked on their own (%s)", layer.name, error)
            continue
        bn_name = None
        nexts = consumers.get(layer.name, [])
        if len(nexts) == 1:
            nxt = model.get_layer(nexts[0])
            if (
                isinstance(nxt, keras.layers.BatchNormalization)
                and calls.get(nxt.name, 0) == 1
                and _is_channels_last_bn(nxt)
            ):
                bn_name = nxt.name
        found.append(ChannelLayer(conv_name=layer.name, bn_name=bn_name, point=point))
    if not found:
        names = ", ".join(f"{layer.name} ({type(layer).__name__})" for layer in model.layers)
        raise ValueError(
            f"Expected a model with at least one Conv2D layer whose channels can be pruned "
            f"({n_convs} Conv2D found); its layers are: {names}"
        )
    return found


def _array(variable: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)


def conv_bn_weights(
    model: keras.Model, channel_layer: ChannelLayer
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, float]:
    """
    :param model: The model that ``channel_layer`` was found in.
    :param channel_layer: One of :func:`channel_layers`'s entries.
    :return: ``(kernel, gamma, variance, epsilon)``: the conv's kernel ``(kh, kw, in, out)`` and its
             BatchNormalization's scale (``None`` without scale), moving variance and epsilon (``None, None, 0``
             where no BN follows), as float64.
    """
    kernel = _array(model.get_layer(channel_layer.conv_name).kernel)
    if channel_layer.bn_name is None:
        return kernel, None, None, 0.0
    bn = model.get_layer(channel_layer.bn_name)
    gamma = _array(bn.gamma) if getattr(bn, "scale", True) and getattr(bn, "gamma", None) is not None else None
    return kernel, gamma, _array(bn.moving_variance), float(bn.epsilon)
