"""
Masked copies (B'): a clone of the model, weights copied, with a non-trainable channel mask right after each cut.

A pruned channel is masked at the end of the conv block: after any BatchNormalization, activation and pooling
layers that directly follow the conv. B' therefore computes exactly what B computes with those channels
multiplied by zero at that point, whatever the bias, normalisation or non-linearity. The user's model is never
modified.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

# TensorFlow is noisy on import; keep it to errors unless the user chose otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from art_pruning_defense.keras._graph import PrunePoint  # noqa: E402

logger = logging.getLogger(__name__)


def clone_layer(layer: keras.layers.Layer, config: dict | None = None) -> keras.layers.Layer:
    """
    :param layer: A layer of a model in memory.
    :param config: The configuration to build it from (default: its own).
    :return: A new layer of the same class from that configuration (weights not copied).
    """
    config = layer.get_config() if config is None else config
    if isinstance(layer, keras.layers.Lambda):
        # The model is already in memory, so its code was accepted when it was loaded (with safe_mode=False):
        # copying it is no new exposure, but Keras refuses to rebuild a Lambda from its config outside that scope.
        from keras.src.saving.serialization_lib import SafeModeScope

        with SafeModeScope(False):
            return layer.__class__.from_config(config)
    return layer.__class__.from_config(config)


def masked_copy(model: keras.Model, point: PrunePoint, mask: np.ndarray) -> keras.Model:
    """
    :param model: A Functional model (not modified).
    :param point: Where to mask.
    :param mask: One value per channel, 1 to keep and 0 to prune.
    :return: A new model with the same weights (copied) and a mask layer right after ``point.cut_name``.
    """
    return multi_masked_copy(model, {point: mask})


def multi_masked_copy(model: keras.Model, masks: Mapping[PrunePoint, np.ndarray]) -> keras.Model:
    """
    :param model: A Functional model (not modified).
    :param masks: One channel mask (1 keep, 0 prune) per prune point.
    :return: A new model with the same weights (copied) and a mask layer right after each point's cut.
    """
    by_cut: dict[str, tuple[str, np.ndarray]] = {}
    for point, mask in masks.items():
        mask = np.asarray(mask, dtype="float32").reshape(-1)
        if mask.shape != (point.n_channels,):
            raise ValueError(
                f"Expected a mask of {point.n_channels} values for {point.layer_name}, got {mask.shape[0]}."
            )
        by_cut[point.cut_name] = (point.mask_name, mask)

    def call_function(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        out = layer(*args, **kwargs)
        if layer.name in by_cut:
            name, mask = by_cut[layer.name]
            out = keras.layers.Rescaling(scale=mask, offset=0.0, name=name)(out)
        return out

    source_input = model.inputs[0]
    new_input = keras.Input(
        batch_shape=source_input.shape, dtype=source_input.dtype, name=source_input._keras_history[0].name
    )
    copy = keras.models.clone_model(
        model, input_tensors=new_input, clone_function=clone_layer, call_function=call_function
    )
    _copy_weights(model, copy)
    return copy


def copy_model(model: keras.Model) -> keras.Model:
    """
    :param model: A Functional model.
    :return: An independent copy with equal weights.
    """
    copy = keras.models.clone_model(model, clone_function=clone_layer)
    _copy_weights(model, copy)
    return copy


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        if layer.name in by_name and layer.weights:
            layer.set_weights(by_name[layer.name].get_weights())


def mask_of(model: keras.Model, point: PrunePoint) -> np.ndarray:
    """
    :param model: A pruned copy made by :func:`masked_copy`.
    :param point: Its prune point.
    :return: Its channel mask.
    """
    return np.asarray(model.get_layer(point.mask_name).scale, dtype="float32").reshape(-1)


def weights_equal(first: keras.Model, second: keras.Model) -> bool:
    """
    :return: Whether both models hold the same weight arrays, in the same order.
    """
    a, b = first.get_weights(), second.get_weights()
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


class _VariableMask(keras.layers.Layer):
    """
    Multiplies its input by a non-trainable channel mask that can be changed without rebuilding the model (for
    evaluation only: a model holding it is never saved).
    """

    def __init__(self, n_channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mask = self.add_weight(shape=(n_channels,), initializer="ones", trainable=False, name="mask")

    def call(self, inputs: Any) -> Any:
        return inputs * self.mask


class MaskedPredictor:
    """
    B with a channel mask after every prune point whose values can be set between calls: many masks evaluated with
    one copy of the model and one traced forward pass (a strategy's sweep over channels of many layers).

    :param model: A Functional model (not modified; its weights are copied).
    :param points: The prune points.
    """

    def __init__(self, model: keras.Model, points: Sequence[PrunePoint]) -> None:
        from art_pruning_defense.keras._predict import BatchPredictor

        by_cut = {point.cut_name: point for point in points}
        self._masks: dict[str, _VariableMask] = {}

        def call_function(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
            out = layer(*args, **kwargs)
            if layer.name in by_cut:
                point = by_cut[layer.name]
                self._masks[point.cut_name] = _VariableMask(point.n_channels, name=point.mask_name)
                out = self._masks[point.cut_name](out)
            return out

        source_input = model.inputs[0]
        new_input = keras.Input(
            batch_shape=source_input.shape, dtype=source_input.dtype, name=source_input._keras_history[0].name
        )
        self.model = keras.models.clone_model(
            model, input_tensors=new_input, clone_function=clone_layer, call_function=call_function
        )
        _copy_weights(model, self.model)
        self._predict = BatchPredictor(self.model, labels_only=True)

    def set_masks(self, masks: Mapping[PrunePoint, np.ndarray]) -> None:
        """
        :param masks: A channel mask (1 keep, 0 prune) for some or all prune points; the others keep theirs.
        """
        for point, mask in masks.items():
            self._masks[point.cut_name].mask.assign(np.asarray(mask, dtype=np.float32).reshape(-1))

    def __call__(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        """
        :param x: Inputs (already preprocessed).
        :param batch_size: Samples per call.
        :return: The predicted labels under the current masks.
        """
        return self._predict(x, batch_size)
