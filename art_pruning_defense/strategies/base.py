"""
The strategies' narrow interface. A strategy chooses the channels to prune and in which order; everything after the
ranking is shared by :class:`~art_pruning_defense.FinePruning`: the budgets X, masks held at exactly zero, B'(X),
GoodNet(X), fine-tuning and the summaries.

A strategy is one class with

- ``name`` (its registry key), ``needs_clean``, ``needs_poisoned``, ``streams`` and ``single_layer``;
- :meth:`Strategy.prune_points`: the layers it masks, chosen from the model and the user's ``layer_name`` /
  ``layer_names``;
- :meth:`Strategy.fit`: the ranking, and the sweep to each budget, as a :class:`StrategyFit`.

:class:`FitRun` is what a strategy may use of the defence: the model, the data in the classifier's input space
(preprocessed on the way), the batch size, the memory bound, progress bars.
"""

from __future__ import annotations

import math
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from art_pruning_defense._aligned import aligned_empty
from art_pruning_defense._sweep import SweepStep
from art_pruning_defense._validation import check_finite_batch, is_lazy_array

if TYPE_CHECKING:
    import keras

    from art_pruning_defense.keras import BatchPredictor, CompiledTail, PrunePoint

#: The compiled head and tail of each model, by cut: ``{user model: {cut name: (head, head_predict, tail)}}``.
#: Keyed weakly, and nothing in the values refers to the user's model object, so an entry goes with its model.
COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: The data a strategy reads, batch by batch: arrays (``ArrayBatches``) or a stream (``StreamBatches``); a name for
#: annotations only.
Source = "ArrayBatches | StreamBatches"


@dataclass
class StrategyFit:
    """
    What a strategy's :meth:`Strategy.fit` gives, for every budget (each accuracy drop X, and ``prune_until`` when
    fine-pruning follows).

    :param sweeps: The sweep's records per budget (the unpruned network first). Strategies with one sweep for every
           budget give the same list for each.
    :param steps: Per budget, the index of B'(X)'s record in ``sweeps[budget]``.
    :param masks: Per budget, the channel mask (1 keep, 0 prune) of every prune point.
    :param channels: Per budget, the pruned channels of each layer, in pruning order.
    :param ranking: The channels in pruning order: an array for one layer, ``{layer: array}`` for several.
    :param scores: What the channels were ranked by (mean clean activation, a Lipschitz bound, a mask value), in the
           same shape as ``ranking``.
    :param own_cut: Masks of the strategy's own cut (a threshold that needs no accuracy budget), or ``None``.
    :param fine_prune: Where fine-pruning prunes before it fine-tunes, or ``None`` where it was not asked for.
    """

    sweeps: dict[float, list[SweepStep]]
    steps: dict[float, int]
    masks: dict[float, dict["PrunePoint", np.ndarray]]
    channels: dict[float, dict[str, np.ndarray]]
    ranking: Any
    scores: Any
    own_cut: dict["PrunePoint", np.ndarray] | None = None
    fine_prune: "FinePruneCut | None" = None


@dataclass
class FinePruneCut:
    """
    The pruned network that fine-pruning fine-tunes.

    :param masks: The channel mask of every prune point.
    :param channels: The pruned channels of each layer, in pruning order.
    :param clean_accuracy: Its clean accuracy on the fit's clean data, where the sweep measured it (else ``None``).
    """

    masks: dict["PrunePoint", np.ndarray]
    channels: dict[str, list[int]]
    clean_accuracy: float | None


class FitRun:
    """
    What a strategy may use of the defence while it fits.

    :param model: B as one Functional model (see :func:`~art_pruning_defense.keras.as_functional`); never modified.
    :param user_model: The user's model object, the key of the compiled functions shared between fits.
    :param points: The prune points the strategy chose, in the model's order.
    :param n_classes: N.
    :param prepare: The classifier's preprocessing: inputs in its input space → float32 inputs of the model.
    :param batch_size: Samples per forward pass.
    :param max_cache_bytes: Bound on the memory of the activation caches.
    :param seed: The defence's seed.
    :param verbose: Show progress bars.
    """

    def __init__(
        self,
        model: "keras.Model",
        user_model: "keras.Model",
        points: Sequence["PrunePoint"],
        n_classes: int,
        prepare: Callable[[np.ndarray], np.ndarray],
        batch_size: int,
        max_cache_bytes: int,
        seed: int,
        verbose: bool,
    ) -> None:
        self.model = model
        self.user_model = user_model
        self.points = list(points)
        self.n_classes = n_classes
        self.prepared = prepare
        self.batch_size = batch_size
        self.max_cache_bytes = max_cache_bytes
        self.seed = seed
        self.verbose = verbose

    @property
    def n_prunable(self) -> int:
        """
        :return: The channels of every prune point together.
        """
        return sum(point.n_channels for point in self.points)

    def compiled_split(self, cut_name: str) -> tuple["keras.Model", "BatchPredictor", "CompiledTail"]:
        """
        :param cut_name: Where to split the network.
        :return: ``(head, head_predict, tail)``: the head, its compiled prediction and the compiled tail, shared by
                 every fit on the same model (each is traced once per model and cut, not once per fit).
        """
        from art_pruning_defense.keras import BatchPredictor, CompiledTail, split

        by_cut = COMPILED.setdefault(self.user_model, {})
        if cut_name not in by_cut:
            head, tail = split(self.model, cut_name)
            by_cut[cut_name] = (head, BatchPredictor(head), CompiledTail(tail))
        return by_cut[cut_name]

    def chunk_size(self, head: "keras.Model") -> int:
        """
        :return: How many samples' activations at the head's output fit in ``max_cache_bytes``.
        """
        return max(1, self.max_cache_bytes // (4 * math.prod(int(d) for d in head.outputs[0].shape[1:])))

    def activation_cache(self, head_predict: "BatchPredictor", x: np.ndarray, name: str) -> np.ndarray:
        """
        :return: The activations at the cut of all of ``x``, filled batch by batch into one float32 array (no list
                 of batches and concatenated copy side by side), aligned so that TensorFlow shares it.
        """
        cache: np.ndarray | None = None
        start = 0
        for activations in self.activations(head_predict, x, name=name):
            if cache is None:
                cache = aligned_empty((len(x), *activations.shape[1:]), np.float32)
            cache[start : start + len(activations)] = activations
            start += len(activations)
        if cache is None:
            raise ValueError(f"{name} holds no samples.")
        return cache

    def activations(self, head_predict: "BatchPredictor", x: np.ndarray, name: str = "x") -> Iterator[np.ndarray]:
        """
        :param x: Inputs: a numpy array, or a lazy array read batch by batch (each batch checked for NaN/inf).
        :param name: Name of the data (for error messages).
        :return: Activations at the cut of ``x``, batch by batch, after the classifier's preprocessing.
        """
        lazy = is_lazy_array(x)
        for first in range(0, len(x), self.batch_size):
            batch = np.asarray(x[first : min(first + self.batch_size, len(x))])
            if lazy:
                check_finite_batch(batch, first, name)
            yield head_predict(self.prepared(batch), self.batch_size)


class Strategy(ABC):
    """
    A way of choosing the channels to prune. Subclasses set the class attributes and implement :meth:`fit`.
    """

    #: The name under which :data:`art_pruning_defense.strategies.STRATEGIES` holds it (``FinePruning(strategy=...)``).
    name: ClassVar[str]
    #: Whether ``fit`` needs clean labelled data (a data-free strategy ranks from the weights alone).
    needs_clean: ClassVar[bool] = True
    #: Whether ``fit`` needs triggered validation data (``poisoned_x`` and ``poisoned_target``).
    needs_poisoned: ClassVar[bool] = False
    #: Whether the validation data may be a stream of batches (else numpy arrays).
    streams: ClassVar[bool] = False
    #: Whether it prunes one layer (``layer_name``) rather than several (``layer_names`` or every channel layer).
    single_layer: ClassVar[bool] = False
    #: Whether it takes ``layer_names`` (a list of layers to prune).
    takes_layer_names: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        """
        :param options: The defence's strategy options (those the strategy reads; see each strategy).
        """
        self.options = options

    @abstractmethod
    def prune_points(
        self, model: "keras.Model", user_model: "keras.Model", layer_name: str | None, layer_names: list[str] | None
    ) -> list["PrunePoint"]:
        """
        :param model: B as one Functional model.
        :param user_model: The user's model (to resolve ``"nested/layer"`` names).
        :param layer_name: The user's ``layer_name``.
        :param layer_names: The user's ``layer_names``.
        :return: The prune points, in the model's order.
        :raises ValueError: If the model has nothing this strategy can prune.
        """

    @abstractmethod
    def fit(
        self,
        run: FitRun,
        clean: Source | None,
        poisoned: Source | None,
        budgets: list[float],
        prune_until: float | None,
    ) -> StrategyFit:
        """
        :param run: What the strategy may use of the defence.
        :param clean: The clean validation data, batch by batch (``None`` for a data-free fit).
        :param poisoned: The triggered validation data and its targets, or ``None``.
        :param budgets: The accuracy budgets X to sweep to (sorted; empty for a data-free fit).
        :param prune_until: Fine-pruning's budget, where fine-pruning follows (``None`` otherwise); a strategy with a
               cut of its own may prune there instead.
        :return: The ranking, the sweep and, with ``prune_until``, the network that fine-pruning fine-tunes.
        """


def prefix_masks(points: Sequence["PrunePoint"], order: Sequence[tuple[int, int]], k: int) -> dict:
    """
    :param points: The prune points.
    :param order: ``(point index, channel)`` in pruning order.
    :param k: How many to prune.
    :return: The masks with the first ``k`` of ``order`` pruned.
    """
    masks = {point: np.ones(point.n_channels, dtype=np.float32) for point in points}
    for index, channel in order[:k]:
        masks[points[index]][channel] = 0.0
    return masks
