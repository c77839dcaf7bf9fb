"""
Every convolution's output channels, wherever they sit in the graph: the channels that channel-level defences
(CLP, ANP) score and prune, including those inside residual branches, which the bottleneck layers of
:func:`~art_pruning_defense.keras.find_prune_point`'s default miss.

A :class:`ChannelLayer` names a Conv2D, the BatchNormalization that directly follows it (if any) and the prune
point where its channels are masked: the end of its conv block (after BN, activation and pooling). Inside a
residual branch, a channel masked there is zeroed in that branch only; the shortcut still carries the block's input,
which is what pruning a channel means in these methods.

CLP's adapter (:func:`lipschitz_scores`, :func:`lipschitz_masks`) reads the conv kernels and BN statistics and calls
the numpy core :mod:`art_pruning_defense.strategies.lipschitz`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from art_pruning_defense.keras import PrunePoint, as_functional, find_prune_point
from art_pruning_defense.strategies.lipschitz import CLP_U, channel_lipschitz, lipschitz_outliers

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


def _consumers(model: keras.Model) -> tuple[dict[str, list[str]], dict[str, int]]:
    """
    :return: ``(consumers, calls)``: the layers that read each layer's output in this model's graph, and how many
             times each layer is called.
    """
    consumers: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    calls: dict[str, int] = {}

    def parents(obj: Any) -> Iterator[str]:
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                yield obj["config"]["keras_history"][0]
            else:
                for value in obj.values():
                    yield from parents(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                yield from parents(value)

    for config in model.get_config()["layers"]:
        nodes = config.get("inbound_nodes", [])
        calls[config["name"]] = len(nodes)
        for parent in set(parents(nodes)):
            consumers.setdefault(parent, []).append(config["name"])
    return consumers, calls


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
    consumers, calls = _consumers(model)
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


def layer_lipschitz(model: keras.Model, channel_layer: ChannelLayer) -> np.ndarray:
    """
    :param model: The model that ``channel_layer`` was found in.
    :param channel_layer: One of :func:`channel_layers`'s entries.
    :return: Its channels' UCLCs (:func:`~art_pruning_defense.strategies.lipschitz.channel_lipschitz`).
    """
    conv = model.get_layer(channel_layer.conv_name)
    kernel = _array(conv.kernel)
    if channel_layer.bn_name is None:
        return channel_lipschitz(kernel)
    bn = model.get_layer(channel_layer.bn_name)
    gamma = _array(bn.gamma) if getattr(bn, "scale", True) and getattr(bn, "gamma", None) is not None else None
    return channel_lipschitz(kernel, gamma, _array(bn.moving_variance), float(bn.epsilon))


def lipschitz_scores(model: keras.Model) -> dict[ChannelLayer, np.ndarray]:
    """
    CLP's channel scores for every Conv2D of a model (data-free; the model is only read).

    :param model: A Functional or Sequential model.
    :return: For each :class:`ChannelLayer` (its ``point`` is where to mask), the UCLC of each output channel.
    """
    functional = as_functional(model)
    return {layer: layer_lipschitz(functional, layer) for layer in channel_layers(functional)}


def lipschitz_masks(model: keras.Model, u: float = CLP_U) -> dict[PrunePoint, np.ndarray]:
    """
    CLP end to end: score every conv's channels and prune each layer's outliers.

    :param model: A Functional or Sequential model.
    :param u: Threshold in standard deviations above a layer's mean UCLC (the paper's 3 by default).
    :return: One float32 mask per prune point (1 keep, 0 prune), for
             :func:`~art_pruning_defense.keras.multi_masked_copy` (with ``as_functional(model)``).
    """
    masks: dict[PrunePoint, np.ndarray] = {}
    for layer, scores in lipschitz_scores(model).items():
        masks[layer.point] = (~lipschitz_outliers(scores, u)).astype(np.float32)
    pruned = sum(int((mask == 0).sum()) for mask in masks.values())
    total = sum(mask.size for mask in masks.values())
    logger.info("CLP (u=%g): pruning %d of %d channels over %d convolutions.", u, pruned, total, len(masks))
    return masks
