"""
The pruning-aware attack of the Fine-Pruning paper (Liu, Dolan-Gavitt and Garg, RAID 2018, §4): an attacker who
expects the defender to prune the channels dormant on clean data trains the backdoor where that pruning will not
reach, and leaves decoys for it to prune.

The attacker

1. trains the network on the clean training images (the poisoned ones left out) with the cell's recipe;
2. prunes the ``prune_fraction`` of the channels of the defender's layer (the layer :class:`FinePruning` prunes by
   default) with the lowest mean activation on those clean images;
3. trains the pruned network, the pruned channels held at zero, on the poisoned training set (the ``base``
   attack's poison), with the recipe again: the backdoor has to live in the channels that stay, which clean data
   also uses;
4. re-inserts the pruned channels with their weights and biases, and lowers each one's bias (the pruned layer's
   bias, or the offset of the BatchNormalization right after it) by its largest activation on the clean images and
   :data:`DECOY_SLACK` more, so that it stays dormant: activation ranking prunes these decoys first, at no cost in
   accuracy, before it reaches the channels that hold the backdoor.

The poison and the trigger are the ``base`` attack's (any other attack of the zoo, ``badnets`` by default, with
``base_options``; the badnets trigger is the cell's ``trigger``). Training costs twice the recipe's epochs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from art_pruning_defense._validation import check_number
from art_pruning_defense.benchmark.attacks._base import Attack, PoisonedData

if TYPE_CHECKING:
    import keras
    from art.estimators.classification import KerasClassifier

    from art_pruning_defense.benchmark.config import BenchmarkConfig
    from art_pruning_defense.lab.digits import BadNetData

logger = logging.getLogger(__name__)

#: Clean training images on which the attacker ranks the channels and sizes the decoys' bias shift.
ACTIVATION_SAMPLES = 2000
#: The decoys' bias is lowered by their largest clean activation times ``1 + DECOY_SLACK``, plus :data:`DECOY_FLOOR`:
#: a margin for clean images the attacker did not see.
DECOY_SLACK = 0.25
DECOY_FLOOR = 1e-3


class PruningAware(Attack):
    """
    The pruning-aware attack: the backdoor trained into the channels that activation pruning keeps, the pruned
    channels re-inserted as dormant decoys.
    """

    name: ClassVar[str] = "pruning-aware"
    options: ClassVar[dict[str, Any]] = {"base": "badnets", "base_options": {}, "prune_fraction": 0.5}

    def _check_params(self) -> None:
        super()._check_params()
        from art_pruning_defense.benchmark.attacks import ATTACKS, make_attack

        choices = [name for name in ATTACKS if name != self.name]
        if not isinstance(self.base, str) or self.base not in choices:
            raise ValueError(f"pruning-aware: unknown base attack {self.base!r}; expected one of: {', '.join(choices)}.")
        if not isinstance(self.base_options, dict):
            raise TypeError(f"pruning-aware: base_options must map option names to values, got {self.base_options!r}.")
        self.prune_fraction = check_number(self.prune_fraction, "pruning-aware: prune_fraction", 0.0, 1.0)
        self._base = make_attack(self.base, self.target, self.poison_rate, self.seed, **self.base_options)
        self.clean_label = self._base.clean_label
        #: The decoy channels of the last network :meth:`train_model` trained (indices in the pruned layer).
        self.decoys_: np.ndarray | None = None

    def params(self) -> dict[str, Any]:
        """
        :return: The options, the base attack's as it applies them.
        """
        return {"base": self.base, "base_options": self._base.params(), "prune_fraction": self.prune_fraction}

    def n_poison(self, y: np.ndarray) -> int:
        return self._base.n_poison(y)

    def poison(self, x: np.ndarray, y: np.ndarray, copy: bool = True) -> PoisonedData:
        return self._base.poison(x, y, copy=copy)

    def apply_trigger(self, x: np.ndarray) -> np.ndarray:
        return self._base.apply_trigger(x)

    # -----------------------------------------------------------------------------------------------------------------

    def train_model(self, data: "BadNetData", config: "BenchmarkConfig", train: Callable) -> "KerasClassifier":
        """
        Train the backdoored network in the four steps of the module's note.

        :param data: The cell's data (poisoned training set, which samples are poisoned).
        :param config: The cell (architecture, recipe, seed).
        :param train: What trains a fresh network: ``train(x, y, n_classes, config, rows=...)``
               (:func:`~art_pruning_defense.benchmark.training.train_badnet`).
        :return: The backdoored network, as an ART ``KerasClassifier`` with clip values (0, 1); its decoy channels
                 are in :attr:`decoys_`.
        :raises ValueError: If the network has no layer to prune, or none whose channels have a bias to lower.
        """
        import keras
        from art.estimators.classification import KerasClassifier

        from art_pruning_defense.benchmark.training import train_further
        from art_pruning_defense.keras import as_functional, find_prune_point, masked_copy

        clean_rows = np.flatnonzero(~np.asarray(data.is_poison_train, dtype=bool))
        model = as_functional(train(data.x_train, data.y_train, data.n_classes, config, rows=clean_rows).model)
        try:
            point = find_prune_point(model)
        except ValueError as error:
            raise ValueError(f"pruning-aware: the network has no layer to prune ({error})") from None
        offset = _offset_layer(model, point.layer_name)
        sample = data.x_train[clean_rows[:ACTIVATION_SAMPLES]]
        means = _channel_statistic(model, point.cut_name, sample, np.mean)
        n_pruned = round(self.prune_fraction * point.n_channels)
        decoys = np.sort(np.argsort(means, kind="stable")[:n_pruned])
        mask = np.ones(point.n_channels, dtype="float32")
        mask[decoys] = 0.0
        logger.info(
            "pruning-aware: %d of %d channels of %s pruned; training the backdoor into the rest.",
            n_pruned,
            point.n_channels,
            point.layer_name,
        )
        pruned = masked_copy(model, point, mask)
        train_further(pruned, data.x_train, data.y_train, config)
        for layer in model.layers:  # re-insert: every weight from the pruned network (the decoys' are unchanged)
            if layer.weights:
                layer.set_weights(pruned.get_layer(layer.name).get_weights())
        peaks = _channel_statistic(model, offset.name, sample, np.max)
        weights = offset.get_weights()
        # Conv2D: [kernel, bias]; BatchNormalization: [gamma (where it scales), beta, moving mean, moving variance].
        index = 1 if isinstance(offset, keras.layers.Conv2D) or offset.scale else 0
        shift = np.maximum(peaks[decoys], 0.0) * (1.0 + DECOY_SLACK) + DECOY_FLOOR
        weights[index] = weights[index].copy()
        weights[index][decoys] -= shift.astype(weights[index].dtype)
        offset.set_weights(weights)
        self.decoys_ = decoys
        return KerasClassifier(model, clip_values=(0.0, 1.0))


def _offset_layer(model: "keras.Model", layer_name: str) -> "keras.layers.Layer":
    """
    :return: The layer whose per-channel offset makes a channel of ``layer_name`` dormant: the layer itself where
             it is a Conv2D with a bias, else a BatchNormalization with an offset that directly follows it.
    :raises ValueError: If there is none.
    """
    import keras

    from art_pruning_defense.keras._graph import consumers_and_calls

    layer = model.get_layer(layer_name)
    if isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
        return layer
    following = consumers_and_calls(model)[0].get(layer_name, [])
    if len(following) == 1:
        nxt = model.get_layer(following[0])
        if isinstance(nxt, keras.layers.BatchNormalization) and nxt.center:
            return nxt
    raise ValueError(
        f"pruning-aware: layer {layer_name!r} ({type(layer).__name__}) has no bias, nor a BatchNormalization offset "
        "right after it, to make its pruned channels dormant decoys."
    )


def _channel_statistic(
    model: "keras.Model", layer_name: str, x: np.ndarray, reduce: Callable[..., np.ndarray]
) -> np.ndarray:
    """
    :return: ``reduce`` (``np.mean``, ``np.max``) of each channel of the output of ``layer_name`` over ``x`` and the
             spatial positions.
    """
    import keras

    from art_pruning_defense.keras import BatchPredictor

    head = keras.Model(model.inputs, model.get_layer(layer_name).output)
    activations = np.asarray(BatchPredictor(head)(x, 256))
    return reduce(activations.reshape(-1, activations.shape[-1]), axis=0)
