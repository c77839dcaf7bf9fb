"""
This module implements the pruning defence against backdoors of Liu, Dolan-Gavitt and Garg (2018), as a
transformation defence of the Adversarial Robustness Toolbox.

| Paper link: https://arxiv.org/abs/1805.12185

The algorithm, for a classifier B with N classes and clean validation data:

1. Rank the channels of a late convolutional layer by their mean activation on the clean data (after the layer's
   normalisation, non-linearity and pooling).
2. Prune them one at a time, least active first, recording clean accuracy (and attack success rate where poisoned
   validation data is given) after each step.
3. For each accuracy drop X, B'(X) is the network at the first step whose clean accuracy is at least X percentage
   points below B's.
4. Fine-pruning (``fine_tune_epochs > 0``): prune deeper, to the step where clean accuracy has fallen
   ``prune_until`` points, then retrain the pruned network on the clean data with the pruned channels held at zero.
5. A GoodNet runs B and B' side by side and answers class N ("poisoned input") where they disagree.

The ``attack_aware`` strategy (for a defender who holds triggered validation samples) replaces steps 1-3: over
several layers, deepest first, least active channel first, a channel is pruned if that lowers the attack success
rate on the poisoned validation data while clean accuracy stays within X points of B's, or if it changes neither.
"""

from __future__ import annotations

import logging
import math
import numbers
import weakref
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
from art.defences.transformer.transformer import Transformer
from tqdm.auto import tqdm

from art_pruning_defense import _defaults, _sweep
from art_pruning_defense._aligned import aligned_empty
from art_pruning_defense._stream import ArrayBatches, StreamBatches, is_stream, regroup
from art_pruning_defense._validation import check_drop, check_drops, check_finite_batch, check_inputs, check_labels
from art_pruning_defense._validation import check_positive_int, check_target, is_lazy_array
from art_pruning_defense._validation import warn_outside_clip_values
from art_pruning_defense._classifier import is_identity_preprocessing, model_of
from art_pruning_defense.goodnet import GoodNetClassifier
from art_pruning_defense.keras import (
    BATCHNORM_MODES,
    BatchPredictor,
    CachedTail,
    CompiledHead,
    CompiledTail,
    PrunePoint,
    RecomputedTail,
    as_functional,
    copy_model,
    find_prune_point,
    fine_tune,
    fine_tune_stream,
    input_shape,
    seed_everything,
    last_prunable_layers,
    multi_masked_copy,
    n_outputs,
    resolve_layer_name,
    shared_tensor,
    split,
    weights_equal,
)

if TYPE_CHECKING:
    import keras
    from art.utils import CLASSIFIER_TYPE

logger = logging.getLogger(__name__)


class _CutView(NamedTuple):
    """
    What the attack-aware pass needs of one cut: the channel means on the clean data, the ranking, which channels
    are active on which clean and poisoned sample, and ``rows(tail)``: a budget's tail (a :class:`CompiledTail`) as
    the rows functions on the clean and the poisoned data.
    """

    means: np.ndarray
    order: np.ndarray
    clean_active: np.ndarray
    poisoned_active: np.ndarray
    rows: Callable[[CompiledTail], tuple[CachedTail, CachedTail]]


#: The compiled head and tail of each model, by cut: ``{user model: {cut name: (head, head_predict, tail)}}``.
#: Keyed weakly, and nothing in the values refers to the user's model object, so an entry goes with its model.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: The tail of the network is evaluated in batches this many times larger than ``batch_size`` (fewer rows where a
#: call's widest tensor would exceed the adapter's ``CALL_BYTES``).
TAIL_BATCH_FACTOR = 8
#: Fine-tuning runs that may be tried: a run that leaves B' worse on its own clean data than the pruned copy was has
#: diverged, and is redone from the pruned copy at half the learning rate.
MAX_FINE_TUNE_ATTEMPTS = 4

#: The pruning strategies.
STRATEGIES = ("activation", "attack_aware")

#: Parameters that choose the layers to prune: changing them recomputes the prune points.
STRUCTURAL_PARAMS = ("layer_name", "strategy", "layer_names")
#: Parameters that do not change what ``fit`` computes: changing them keeps the fit.
UNFITTED_PARAMS = ("batch_size", "max_cache_bytes", "verbose")

#: Fine-pruning defaults (how they were chosen: README, "Choosing the fine-pruning defaults").
DEFAULT_PRUNE_UNTIL = 20.0
DEFAULT_FINE_TUNE_LEARNING_RATE = 0.02
DEFAULT_FINE_TUNE_OPTIMIZER = "sgd"
DEFAULT_FINE_TUNE_BATCHNORM = "train"
DEFAULT_FINE_TUNE_AUGMENT = False
#: Fine-tuning optimizers.
OPTIMIZERS = ("sgd", "adam")
#: The fine-tuning epochs we recommend (and the detector's and benchmark's default) when fine-pruning.
RECOMMENDED_FINE_TUNE_EPOCHS = _defaults.RECOMMENDED_FINE_TUNE_EPOCHS


def _same(a: object, b: object) -> bool:
    """
    :return: Whether two parameter values are equal (and of the same type, so that 1 and True differ).
    """
    return type(a) is type(b) and a == b


class FinePruning(Transformer):
    """
    Prune the least active channels of a convolutional layer of a (possibly backdoored) Keras classifier, and build
    GoodNet classifiers that flag the inputs on which the pruned and the original network disagree.

    | Paper link: https://arxiv.org/abs/1805.12185
    """

    params = [
        "layer_name",
        "strategy",
        "layer_names",
        "accuracy_drops",
        "batch_size",
        "max_cache_bytes",
        "fine_tune_epochs",
        "fine_tune_learning_rate",
        "fine_tune_batch_size",
        "fine_tune_optimizer",
        "fine_tune_batchnorm",
        "fine_tune_augment",
        "prune_until",
        "seed",
        "verbose",
    ]

    def __init__(
        self,
        classifier: "CLASSIFIER_TYPE",
        layer_name: str | None = None,
        accuracy_drops: Sequence[float] = (2.0, 4.0, 10.0),
        batch_size: int = 256,
        max_cache_bytes: int = 512 * 2**20,
        fine_tune_epochs: int = 0,
        fine_tune_learning_rate: float = DEFAULT_FINE_TUNE_LEARNING_RATE,
        fine_tune_batch_size: int = 32,
        fine_tune_optimizer: str = DEFAULT_FINE_TUNE_OPTIMIZER,
        fine_tune_batchnorm: str = DEFAULT_FINE_TUNE_BATCHNORM,
        fine_tune_augment: bool = DEFAULT_FINE_TUNE_AUGMENT,
        prune_until: float = DEFAULT_PRUNE_UNTIL,
        seed: int = 0,
        strategy: str = "activation",
        layer_names: Sequence[str] | None = None,
        verbose: bool = True,
    ) -> None:
        """
        Create a fine-pruning defence.

        :param classifier: The classifier B: an ART classifier whose ``model`` is a Keras 3 Functional or Sequential
               model (``KerasClassifier``) whose output is a softmax or logits (the sweep needs only the argmax).
               It is never modified.
        :param layer_name: The layer to prune: any layer with a channels-last 4-D output that every path to the
               output passes through (a Conv2D, or an ``Add``/``Activation``/``Concatenate`` of a residual or dense
               network); ``"nested/layer"`` for a layer inside a nested model (a ``keras.applications`` backbone).
               ``None`` (the default) picks the last such feature map: a ResNet's last stage output, a plain CNN's
               last conv block; ``prune_point`` shows the choice.
        :param accuracy_drops: The accuracy drops X (percentage points, each in (0, 100]) at which B' is taken.
        :param batch_size: Samples per forward pass.
        :param max_cache_bytes: Bound on the memory of the activation cache. Activations of the pruned layer are
               computed once and reused at every step when they fit; otherwise the data is swept in chunks of this
               size and the part of the network before the layer runs twice. (The sweep's per-sample sums of the
               layers that read the pruned layer are kept only where they fit beside the cache in this bound.) With
               ``strategy="attack_aware"``, a layer whose activations on the clean and the poisoned data exceed it
               keeps the (preprocessed) inputs instead and runs the part of the network before the layer again for
               each evaluation.
        :param fine_tune_epochs: Fine-pruning: epochs of retraining on the clean data after pruning to
               ``prune_until``; 0 (the default) for pruning only. See the README for the recommended setting.
        :param fine_tune_learning_rate: The initial learning rate of fine-tuning.
        :param fine_tune_batch_size: Batch size for fine-tuning.
        :param fine_tune_optimizer: ``"sgd"`` (momentum 0.9, Nesterov, cosine decay of the learning rate to 0 over the
               epochs) or ``"adam"`` (constant learning rate).
        :param fine_tune_batchnorm: ``"train"``: BatchNormalization layers learn and update their statistics on the
               clean data while fine-tuning; ``"frozen"``: they keep B's (inference mode).
        :param fine_tune_augment: Fine-tune on randomly shifted copies of the clean data (up to an eighth of the
               image size; never mirrored).
        :param prune_until: Fine-pruning: prune to the first step whose clean accuracy has fallen this many points
               (in (0, 100]) before fine-tuning, deeper than the X of plain pruning since fine-tuning recovers the
               accuracy; at least one channel is always kept.
        :param seed: Seed of the fine-tuning.
        :param strategy: ``"activation"`` (rank one layer's channels by mean clean activation and prune in that
               order; needs only clean data) or ``"attack_aware"`` (over ``layer_names``, keep a channel pruned only
               if that lowers the attack success rate on poisoned validation data, within the accuracy budget X;
               needs ``poisoned_x`` and ``poisoned_target`` in ``fit``: it assumes the defender holds triggered
               samples).
        :param layer_names: The layers of the ``attack_aware`` strategy (default: the last three conv blocks that
               every path to the output passes through; a layer on a side branch or inside a residual block is never
               chosen).
        :param verbose: Show progress bars.
        """
        super().__init__(classifier=classifier)
        self.layer_name = layer_name
        self.accuracy_drops = accuracy_drops
        self.batch_size = batch_size
        self.max_cache_bytes = max_cache_bytes
        self.fine_tune_epochs = fine_tune_epochs
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.fine_tune_batch_size = fine_tune_batch_size
        self.fine_tune_optimizer = fine_tune_optimizer
        self.fine_tune_batchnorm = fine_tune_batchnorm
        self.fine_tune_augment = fine_tune_augment
        self.prune_until = prune_until
        self.seed = seed
        self.strategy = strategy
        self.layer_names = layer_names
        self.verbose = verbose
        self._check_params()
        user_model = model_of(classifier)
        self._model = as_functional(user_model)
        self._n_classes = n_outputs(self._model)
        self._user_model = user_model
        self._points = self._find_prune_points(self.strategy, self.layer_name, self.layer_names)
        self._point = self._points[-1]
        self._check_range = False  # inputs are checked against the clip values during fit
        self._reset_fit()

    def _find_prune_points(
        self, strategy: str, layer_name: str | None, layer_names: Sequence[str] | None
    ) -> list[PrunePoint]:
        """
        :param strategy: The pruning strategy.
        :param layer_name: The layer of the activation strategy (``None``: the last feature map on every path;
               ``"nested/layer"`` inside a nested model).
        :param layer_names: The layers of the ``attack_aware`` strategy (``None``: the last three blocks on every path).
        :return: The prune points, in the model's order.
        :raises ValueError: If a layer is unknown, is no channels-last feature map, is bypassed by another path, or
                two layers are masked at the same place.
        """
        if strategy == "attack_aware":
            names = (
                [resolve_layer_name(self._user_model, name) for name in layer_names]
                if layer_names is not None
                else last_prunable_layers(self._model, 3)
            )
            order = {layer.name: index for index, layer in enumerate(self._model.layers)}
            points = sorted((find_prune_point(self._model, name) for name in names), key=lambda p: order[p.layer_name])
        else:
            name = None if layer_name is None else resolve_layer_name(self._user_model, layer_name)
            points = [find_prune_point(self._model, name)]
        cuts = [point.cut_name for point in points]
        if len(set(cuts)) != len(cuts):
            raise ValueError(
                f"layer_names {[p.layer_name for p in points]} are masked at the same place ({cuts}): "
                "name each conv block once."
            )
        for point in points:
            split(self._model, point.cut_name)  # fails now, with a clear message, if a path bypasses the layer
        return points

    def _reset_fit(self) -> None:
        """
        Forget what ``fit`` computed: the defence is unfitted until ``fit`` runs again.
        """
        self._is_fitted = False
        self.mean_activation_ = None
        self.ranking_ = None
        self.sweep_ = None
        self.sweeps_ = None
        self.steps_ = None
        self.fine_pruned_model_ = None
        self.fine_tune_ = None
        self._masks = None

    def set_params(self, **kwargs) -> None:
        """
        Change parameters, all checked before any is assigned: a failed call leaves the defence as it was.

        Changing ``layer_name``, ``strategy`` or ``layer_names`` recomputes the layers to prune as the constructor
        does. Changing any parameter other than ``batch_size``, ``max_cache_bytes`` and ``verbose`` (which do not
        change what ``fit`` computes) forgets the fit: ``is_fitted`` becomes False and ``fit`` must run again.

        :param kwargs: Parameters among :attr:`params`.
        :raises ValueError: If a name is not a parameter, or a value is invalid.
        :raises TypeError: If a value has the wrong type.
        """
        unknown = sorted(set(kwargs) - set(self.params))
        if unknown:
            raise ValueError(
                f"Unexpected parameter(s) {', '.join(map(repr, unknown))}; FinePruning's parameters are: "
                f"{', '.join(self.params)}."
            )
        current = {name: getattr(self, name) for name in self.params}
        checked = self._checked_params({**current, **kwargs})
        changed = {name for name in self.params if not _same(checked[name], current[name])}
        points = self._points
        if changed & set(STRUCTURAL_PARAMS):
            points = self._find_prune_points(checked["strategy"], checked["layer_name"], checked["layer_names"])
        # Everything is checked: assign.
        for name, value in checked.items():
            setattr(self, name, value)
        self._points = points
        self._point = points[-1]
        if changed - set(UNFITTED_PARAMS):
            if self._is_fitted:
                logger.info("Parameters %s changed: the defence must be fitted again.", ", ".join(sorted(changed)))
            self._reset_fit()

    @property
    def prune_point(self) -> PrunePoint:
        """
        :return: The pruned layer (the deepest one for ``attack_aware``), the layer whose output is ranked and
                 masked, and the number of channels.
        """
        return self._point

    @property
    def prune_points(self) -> list[PrunePoint]:
        """
        :return: Every pruned layer, in the model's order.
        """
        return list(self._points)

    def _check_params(self) -> None:
        for name, value in self._checked_params({name: getattr(self, name) for name in self.params}).items():
            setattr(self, name, value)

    @staticmethod
    def _checked_params(params: dict) -> dict:
        """
        :param params: A value for every parameter of :attr:`params`.
        :return: A new dict of the same values, checked and normalised (``accuracy_drops`` sorted and distinct,
                 ``layer_names`` a list, integers as ``int``); ``params`` is not modified.
        :raises ValueError: If a value is invalid.
        :raises TypeError: If a value has the wrong type.
        """
        p = dict(params)
        layer_name, layer_names, strategy = p["layer_name"], p["layer_names"], p["strategy"]
        if layer_name is not None and not isinstance(layer_name, str):
            raise TypeError(f"layer_name must be a string or None, got {type(layer_name).__name__}.")
        p["accuracy_drops"] = check_drops(p["accuracy_drops"])
        p["batch_size"] = check_positive_int(p["batch_size"], "batch_size")
        p["max_cache_bytes"] = check_positive_int(p["max_cache_bytes"], "max_cache_bytes")
        epochs = p["fine_tune_epochs"]
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral):
            raise TypeError(f"fine_tune_epochs must be an int >= 0, got {type(epochs).__name__}.")
        if epochs < 0:
            raise ValueError(f"fine_tune_epochs must be >= 0, got {epochs}.")
        p["fine_tune_epochs"] = int(epochs)
        rate = p["fine_tune_learning_rate"]
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f"fine_tune_learning_rate must be a number, got {type(rate).__name__}.")
        if not 0.0 < float(rate) < 1.0:
            raise ValueError(f"fine_tune_learning_rate must be in (0, 1), got {rate}.")
        p["fine_tune_batch_size"] = check_positive_int(p["fine_tune_batch_size"], "fine_tune_batch_size")
        if p["fine_tune_optimizer"] not in OPTIMIZERS:
            raise ValueError(
                f"fine_tune_optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, "
                f"got {p['fine_tune_optimizer']!r}."
            )
        if p["fine_tune_batchnorm"] not in BATCHNORM_MODES:
            raise ValueError(
                f"fine_tune_batchnorm must be one of {', '.join(map(repr, BATCHNORM_MODES))}, "
                f"got {p['fine_tune_batchnorm']!r}."
            )
        if not isinstance(p["fine_tune_augment"], bool):
            raise TypeError(f"fine_tune_augment must be a bool, got {type(p['fine_tune_augment']).__name__}.")
        p["prune_until"] = check_drop(p["prune_until"], "prune_until")
        seed = p["seed"]
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
        if not 0 <= int(seed) < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}.")
        p["seed"] = int(seed)
        if not isinstance(strategy, str) or strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}.")
        if layer_names is not None:
            if isinstance(layer_names, (str, bytes)) or not isinstance(layer_names, Iterable):
                raise TypeError(f"layer_names must be a list of layer names, got {type(layer_names).__name__}.")
            layer_names = list(layer_names)
            if not all(isinstance(n, str) for n in layer_names):
                raise TypeError("layer_names must be a list of layer names (strings).")
            if not layer_names or len(set(layer_names)) != len(layer_names):
                raise ValueError(f"layer_names must be distinct and not empty, got {layer_names}.")
            if strategy != "attack_aware":
                raise ValueError(
                    "layer_names is for strategy='attack_aware'; the activation strategy prunes layer_name "
                    "(to switch to it, set layer_names=None too)."
                )
            p["layer_names"] = [str(n) for n in layer_names]
        if not isinstance(p["verbose"], bool):
            raise TypeError(f"verbose must be a bool, got {type(p['verbose']).__name__}.")
        return p

    # ------------------------------------------------------------------------------------------------- fitting

    def fit(
        self,
        x: "np.ndarray | Iterable",
        y: np.ndarray | None = None,
        poisoned_x: "np.ndarray | Iterable | None" = None,
        poisoned_target: int | np.ndarray | None = None,
        **kwargs,
    ) -> None:
        """
        Rank the channels on clean validation data and run the pruning sweep over the whole layer.

        Sets ``mean_activation_``, ``ranking_`` (channels, least active first), ``sweep_`` (one
        :class:`~art_pruning_defense.SweepStep` per step, the unpruned network first) and ``steps_`` (``{X: step}``).

        The validation data may be streamed: ``x`` a ``tf.data.Dataset``, a list of batches or any iterable of
        ``(x, y)`` batches (with ``y=None``). Activations are then reduced batch by batch, so memory is bounded by
        a batch and ``max_cache_bytes``, not by the data: the data is read once where its activations fit in
        ``max_cache_bytes``, twice otherwise, and once more per fine-tuning epoch plus once for the fine-tuning
        summary. A one-shot iterator (a generator) can be read once only: it is refused with fine-tuning, and where
        its activations outgrow ``max_cache_bytes``. A re-iterable stream must give the same samples on every pass.
        The sweep equals that of the same data given as arrays. The ``attack_aware`` strategy needs arrays.

        :param x: Clean validation inputs, in the classifier's input space: a numpy array (or an array read in
               slices, such as an h5py dataset), or a stream of ``(x, y)`` batches.
        :param y: Their labels: integers in [0, N) of shape (n,), or one-hot of shape (n, N); ``None`` where ``x``
               is a stream (the labels travel in its batches, integer or one-hot as here).
        :param poisoned_x: Optional inputs carrying the trigger, to record the attack success rate: an array, or a
               stream of batches of inputs (with an int ``poisoned_target``; a ``y`` in the batches is then
               ignored) or of ``(x, target)`` pairs (with ``poisoned_target=None``).
        :param poisoned_target: The attack's target label: one int, or one label per poisoned input.
        :raises ValueError: If the data is bad (with a stream, naming the batch), or a one-shot iterator would have
                to be read twice.
        :raises TypeError: If the data has the wrong type or dtype.
        """
        if kwargs:
            raise TypeError(f"fit() got unexpected keyword arguments: {', '.join(sorted(kwargs))}.")
        clean, poisoned = self._sources(x, y, poisoned_x, poisoned_target)
        streaming = clean.is_stream or (poisoned is not None and poisoned.is_stream)
        if self.strategy == "attack_aware" and poisoned is None:
            raise ValueError(
                "strategy='attack_aware' needs triggered validation data: pass poisoned_x and poisoned_target "
                "to fit (the activation strategy needs clean data only)."
            )
        if self.strategy == "attack_aware" and streaming:
            raise ValueError(
                "strategy='attack_aware' keeps the activations of all validation data in memory and needs them as "
                "numpy arrays; give x, y, poisoned_x and poisoned_target as arrays (or use strategy='activation', "
                "which streams)."
            )
        if self.fine_tune_epochs > 0:
            for source in (clean, poisoned):
                if source is not None and source.one_shot:
                    raise ValueError(
                        f"{source.name} is a one-shot iterator (a generator), but fine-tuning "
                        f"(fine_tune_epochs={self.fine_tune_epochs}) reads the data once per epoch after the sweep: "
                        "pass a re-iterable instead (a tf.data.Dataset, a list of batches, or an object whose "
                        "__iter__ returns a fresh iterator), or set fine_tune_epochs=0."
                    )
        # A fit that fails half-way must not leave the results of an earlier one looking valid.
        self._reset_fit()
        self._check_range = True
        if self.strategy == "attack_aware":
            self._fit_attack_aware(clean.x, clean.y, poisoned.x, poisoned.y)
        else:
            self._fit_activation(clean, poisoned)
        if self.fine_tune_epochs > 0:
            self._fine_prune(clean, poisoned)
        self._is_fitted = True
        for drop, step in self.steps_.items():
            record = self._records(drop)[step]
            logger.info(
                "X=%g: %d of %d channels pruned, clean accuracy %.2f%%, attack success rate %s.",
                drop,
                record.channels_pruned,
                self._n_prunable,
                record.clean_accuracy,
                "n/a" if record.attack_success_rate is None else f"{record.attack_success_rate:.2f}%",
            )

    def _sources(
        self, x: object, y: object, poisoned_x: object, poisoned_target: object
    ) -> tuple["ArrayBatches | StreamBatches", "ArrayBatches | StreamBatches | None"]:
        """
        Check what ``fit`` was given (arrays entirely, streams as far as knowable before reading them).

        :return: ``(clean, poisoned)``: the data as batches; ``poisoned`` is ``None`` without poisoned data.
        """
        shape = input_shape(self._model)
        clean: ArrayBatches | StreamBatches
        if is_stream(x):
            if y is not None:
                raise TypeError(
                    "x is a stream of batches, whose labels travel in the batches as (x, y) pairs: y must be None."
                )
            clean = StreamBatches(x, shape, "x", labels="required", n_classes=self._n_classes, label_name="y")
        else:
            x = check_inputs(x, shape, "x", allow_lazy=True)
            if y is None:
                raise ValueError("fit needs the labels y of the clean validation data.")
            clean = ArrayBatches(x, check_labels(y, len(x), self._n_classes, "y"), self.batch_size, "x")
        if poisoned_x is None:
            if poisoned_target is not None:
                raise ValueError("Give both poisoned_x and poisoned_target, or neither.")
            return clean, None
        if not is_stream(poisoned_x):
            if poisoned_target is None:
                raise ValueError("Give both poisoned_x and poisoned_target, or neither.")
            poisoned_x = check_inputs(poisoned_x, shape, "poisoned_x", allow_lazy=True)
            targets = check_target(poisoned_target, len(poisoned_x), self._n_classes, "poisoned_target")
            return clean, ArrayBatches(poisoned_x, targets, self.batch_size, "poisoned_x")
        if poisoned_target is None:
            poisoned = StreamBatches(
                poisoned_x, shape, "poisoned_x", labels="required", n_classes=self._n_classes, label_name="target"
            )
        elif isinstance(poisoned_target, numbers.Integral) and not isinstance(poisoned_target, bool):
            target = int(check_target(poisoned_target, 1, self._n_classes, "poisoned_target")[0])
            poisoned = StreamBatches(poisoned_x, shape, "poisoned_x", labels="ignored", fixed_label=target)
        else:
            raise TypeError(
                "poisoned_x is a stream of batches: give poisoned_target as one int, or None with batches of "
                f"(x, target) pairs; got {type(poisoned_target).__name__}."
            )
        return clean, poisoned

    @property
    def _n_prunable(self) -> int:
        return sum(point.n_channels for point in self._points)

    def _records(self, drop: float) -> list[_sweep.SweepStep]:
        return self.sweeps_[drop] if self.strategy == "attack_aware" else self.sweep_

    def _fit_activation(
        self, clean: "ArrayBatches | StreamBatches", poisoned: "ArrayBatches | StreamBatches | None"
    ) -> None:
        """
        The activation-order sweep over one layer. Sets ``mean_activation_``, ``ranking_``, ``sweep_``, ``steps_``.

        :param clean: The clean data and its labels, batch by batch.
        :param poisoned: The poisoned data and its attack targets, or ``None``.
        """
        point = self._point
        head, head_predict, compiled_tail = self._compiled_split(point.cut_name)
        chunk = self._chunk_size(head)
        # The tail needs far less memory per sample than the whole network: fewer, larger calls cost less.
        tail_batch = TAIL_BATCH_FACTOR * self.batch_size

        # Pass 1: channel means on the clean data, keeping the activations while they fit in the cache.
        means = _sweep.ChannelMeans()
        cache: list[tuple[np.ndarray, np.ndarray]] | None = (
            [] if clean.n_samples is None or clean.n_samples <= chunk else None
        )
        cached = 0
        for batch in clean.batches():
            activations = head_predict(self._prepared(batch.x), self.batch_size)
            means.update(activations)
            if cache is not None:
                cached += len(activations)
                if cached <= chunk:
                    cache.append((activations, batch.y))
                else:
                    cache = None
                    if clean.one_shot:
                        raise ValueError(
                            f"The activations of x outgrow max_cache_bytes={self.max_cache_bytes} (from batch "
                            f"{batch.index} on), so the sweep must read x a second time, but x is a one-shot "
                            "iterator (a generator): pass a re-iterable instead (a tf.data.Dataset, a list of "
                            "batches, or an object whose __iter__ returns a fresh iterator), or raise "
                            "max_cache_bytes."
                        )
        order = _sweep.rank_channels(means.mean)

        # Pass 2: the sweep, chunk by chunk; only the tail of the network runs at each step.
        n_chunks = math.ceil(clean.n_samples / chunk)
        if poisoned is not None:
            n_chunks = None if poisoned.n_samples is None else n_chunks + math.ceil(poisoned.n_samples / chunk)
        progress = tqdm(
            total=None if n_chunks is None else n_chunks * len(order),
            desc=f"Pruning {point.layer_name}",
            unit="step",
            disable=not self.verbose,
        )

        def sweep(activations: list[np.ndarray], references: list[np.ndarray]) -> _sweep.SweepCounts:
            """
            :param activations: A chunk's activations, batch by batch: the list is emptied as they are copied (held
                   by nothing else, each batch goes then), so that one copy of a chunk and one batch are held.
            """
            # Cached with the channels in pruning order, step k keeps the last channels: a slice, not a gather. The
            # cache is filled batch by batch, each batch dropped once copied, and is aligned so that TensorFlow
            # shares it rather than copying it: one copy of the chunk in all.
            in_order = aligned_empty((sum(len(a) for a in activations), *activations[0].shape[1:]), np.float32)
            start = 0
            for i, part in enumerate(activations):
                # (mode="clip": the order is a permutation, so no index is clipped, and numpy writes out directly.)
                np.take(
                    np.asarray(part, np.float32), order, axis=-1, out=in_order[start : start + len(part)], mode="clip"
                )
                start += len(part)
                activations[i] = part = None
            activations.clear()
            active = _sweep.active_channels(in_order)[:, np.argsort(order)]
            tail = CachedTail(compiled_tail, shared_tensor(in_order), tail_batch, channel_order=order)
            # The sweep keeps the fronts' sums per sample where they pay and fit beside the cache.
            stepper = tail.stepper(order, active, spare_bytes=self.max_cache_bytes - in_order.nbytes)
            del in_order
            return _sweep.sweep_chunk(
                active, np.concatenate(references), order, tail, on_step=progress.update, stepper=stepper
            )

        def run(source: "ArrayBatches | StreamBatches") -> _sweep.SweepCounts:
            counts = _sweep.SweepCounts.zeros(len(order) + 1)
            activations = ((head_predict(self._prepared(b.x), self.batch_size), b.y) for b in source.batches())
            for parts, references in regroup(activations, chunk):  # chunks of max_cache_bytes, whatever the batches
                counts += sweep(parts, references)
            return counts

        with progress:
            if cache is not None:
                parts, references = [a for a, _ in cache], [r for _, r in cache]
                cache = None
                clean_counts = sweep(parts, references)
            else:
                clean_counts = run(clean)
            cache = None
            poisoned_counts = None if poisoned is None else run(poisoned)

        self.mean_activation_ = means.mean
        self.ranking_ = order
        self.sweep_ = _sweep.build_records(
            order, point.n_channels, clean_counts, poisoned_counts, layers=[point.layer_name] * len(order)
        )
        self.steps_ = _sweep.select_steps([r.clean_accuracy for r in self.sweep_], self.accuracy_drops)
        self.sweeps_ = None

    def _compiled_split(self, cut_name: str) -> tuple["keras.Model", BatchPredictor, CompiledTail]:
        """
        :param cut_name: Where to split the network.
        :return: ``(head, head_predict, tail)``: the head, its compiled prediction and the compiled tail, shared by
                 every fit on the same model (each is traced once per model and cut, not once per fit).
        """
        by_cut = _COMPILED.setdefault(self._user_model, {})
        if cut_name not in by_cut:
            head, tail = split(self._model, cut_name)
            by_cut[cut_name] = (head, BatchPredictor(head), CompiledTail(tail))
        return by_cut[cut_name]

    def _chunk_size(self, head: "keras.Model") -> int:
        """
        :return: How many samples' activations at the head's output fit in ``max_cache_bytes``.
        """
        return max(1, self.max_cache_bytes // (4 * math.prod(int(d) for d in head.outputs[0].shape[1:])))

    def _fit_attack_aware(self, x: np.ndarray, labels: np.ndarray, poisoned_x: np.ndarray, targets: np.ndarray) -> None:
        """
        One attack-aware pass per budget X, layer by layer, deepest first. Sets ``mean_activation_`` and
        ``ranking_`` (per layer), ``sweeps_`` (records per X), ``sweep_`` (those of the largest X), ``steps_``.
        """
        budgets = sorted(set(self.accuracy_drops) | ({self.prune_until} if self.fine_tune_epochs > 0 else set()))
        predict = BatchPredictor(self._model, labels_only=True)
        clean_unpruned = predict(self._prepared(x), self.batch_size)
        poisoned_unpruned = predict(self._prepared(poisoned_x), self.batch_size)
        base_hits = int(np.count_nonzero(clean_unpruned == labels))
        states = {b: _sweep.GreedyState.start(clean_unpruned, labels, poisoned_unpruned, targets) for b in budgets}
        masks = {b: {p: np.ones(p.n_channels, dtype=np.float32) for p in self._points} for b in budgets}
        self.mean_activation_, self.ranking_ = {}, {}
        progress = tqdm(
            total=self._n_prunable * len(budgets), desc="Attack-aware pruning", unit="channel", disable=not self.verbose
        )
        with progress:
            for point in reversed(self._points):
                head = split(self._model, point.cut_name)[0]
                head_predict = BatchPredictor(head)
                cut_bytes = 4 * (len(x) + len(poisoned_x)) * math.prod(int(d) for d in head.outputs[0].shape[1:])
                if cut_bytes <= self.max_cache_bytes:
                    view = self._cached_cut(head_predict, x, poisoned_x)
                else:
                    view = self._recomputed_cut(head_predict, x, poisoned_x, point.cut_name, cut_bytes)
                self.mean_activation_[point.layer_name] = view.means
                self.ranking_[point.layer_name] = view.order
                for budget in budgets:
                    tail = CompiledTail(split(multi_masked_copy(self._model, masks[budget]), point.cut_name)[1])
                    min_hits = math.ceil(base_hits - budget * len(x) / 100.0 - 1e-9)
                    masks[budget][point] = _sweep.attack_aware_pass(
                        states[budget],
                        point.layer_name,
                        view.clean_active,
                        view.poisoned_active,
                        view.order,
                        *view.rows(tail),
                        min_hits,
                        on_candidate=progress.update,
                    )
                del view
        self.sweeps_ = {}
        self._masks = masks
        for budget in budgets:
            state = states[budget]
            self.sweeps_[budget] = _sweep.build_records(
                np.array([c for _, c in state.accepted], dtype=np.int64),
                self._n_prunable,
                state.clean,
                state.poisoned,
                layers=[layer for layer, _ in state.accepted],
            )
        self.sweep_ = self.sweeps_[max(self.accuracy_drops)]
        self.steps_ = {drop: len(self.sweeps_[drop]) - 1 for drop in self.accuracy_drops}

    def _cached_cut(self, head_predict: BatchPredictor, x: np.ndarray, poisoned_x: np.ndarray) -> _CutView:
        """
        :return: The attack-aware pass's view of one cut, from the activations of all of ``x`` and ``poisoned_x``
                 held in memory (one TensorFlow copy of each, shared by the budgets' tails).
        """
        tail_batch = TAIL_BATCH_FACTOR * self.batch_size
        clean_cache = self._activation_cache(head_predict, x, "x")
        means = _sweep.ChannelMeans()
        means.update(clean_cache)
        order = _sweep.rank_channels(means.mean)
        clean_active = _sweep.active_channels(clean_cache)
        # Aligned caches, so TensorFlow shares them (one copy of each, not a numpy and a TensorFlow one).
        clean_cache = shared_tensor(clean_cache)
        poisoned_cache = self._activation_cache(head_predict, poisoned_x, "poisoned_x")
        poisoned_active = _sweep.active_channels(poisoned_cache)
        poisoned_cache = shared_tensor(poisoned_cache)
        return _CutView(
            means.mean,
            order,
            clean_active,
            poisoned_active,
            lambda tail: (CachedTail(tail, clean_cache, tail_batch), CachedTail(tail, poisoned_cache, tail_batch)),
        )

    def _recomputed_cut(
        self, head_predict: BatchPredictor, x: np.ndarray, poisoned_x: np.ndarray, cut_name: str, cut_bytes: int
    ) -> _CutView:
        """
        As :meth:`_cached_cut` where the cut's activations would exceed ``max_cache_bytes``: the means and the active
        channels are reduced batch by batch, and the preprocessed inputs are kept instead of the activations, the
        head run again on the rows of each evaluation (:class:`RecomputedTail`).

        :param cut_name: Name of the cut (for the messages).
        :param cut_bytes: Size of the activations at the cut on ``x`` and ``poisoned_x`` (for the messages).
        :raises ValueError: If the preprocessed inputs do not fit in ``max_cache_bytes`` either.
        """
        head = head_predict.model
        input_bytes = 4 * (len(x) + len(poisoned_x)) * math.prod(int(d) for d in head.inputs[0].shape[1:])
        if input_bytes > self.max_cache_bytes:
            raise ValueError(
                f"strategy='attack_aware' keeps either the activations at {cut_name} "
                f"({cut_bytes / 2**20:.0f} MiB) or the inputs ({input_bytes / 2**20:.0f} MiB) of x and poisoned_x in "
                f"memory; both exceed max_cache_bytes={self.max_cache_bytes / 2**20:.0f} MiB. Raise max_cache_bytes "
                "or use fewer validation samples."
            )
        means = _sweep.ChannelMeans()
        clean_active = []
        for activations in self._activations(head_predict, x, self.batch_size, name="x"):
            means.update(activations)
            clean_active.append(_sweep.active_channels(activations))
        poisoned_active = [
            _sweep.active_channels(a)
            for a in self._activations(head_predict, poisoned_x, self.batch_size, name="poisoned_x")
        ]
        # RecomputedTail takes fewer rows per call where the head's activations of a call would be too wide.
        tail_batch = TAIL_BATCH_FACTOR * self.batch_size
        compiled_head = CompiledHead(head)
        clean_inputs = np.asarray(self._prepared(np.asarray(x)), dtype=np.float32)
        poisoned_inputs = np.asarray(self._prepared(np.asarray(poisoned_x)), dtype=np.float32)
        logger.info(
            "Attack-aware pass at %s: its activations (%.0f MiB) exceed max_cache_bytes; keeping the inputs "
            "(%.0f MiB) and recomputing the head per evaluation.",
            cut_name,
            cut_bytes / 2**20,
            input_bytes / 2**20,
        )
        return _CutView(
            means.mean,
            _sweep.rank_channels(means.mean),
            np.concatenate(clean_active),
            np.concatenate(poisoned_active),
            lambda tail: (
                RecomputedTail(compiled_head, tail, clean_inputs, tail_batch),
                RecomputedTail(compiled_head, tail, poisoned_inputs, tail_batch),
            ),
        )

    def _fine_prune(
        self, clean: "ArrayBatches | StreamBatches", poisoned: "ArrayBatches | StreamBatches | None"
    ) -> None:
        """
        Prune to ``prune_until``, then retrain on the clean data with the pruned channels held at zero.
        Sets ``fine_pruned_model_`` and ``fine_tune_`` (a summary measured on the data given to ``fit``).

        :param clean: The clean data and its labels (arrays are shuffled each epoch; a stream is read once per
               epoch in its own order).
        :param poisoned: The poisoned data and its attack targets, or ``None``.
        """
        if self.strategy == "attack_aware":
            masks = self._masks[self.prune_until]
            accepted = self.sweeps_[self.prune_until][1:]
            pruned_accuracy = self.sweeps_[self.prune_until][-1].clean_accuracy
            channels = {p.layer_name: [r.channel for r in accepted if r.layer == p.layer_name] for p in self._points}
        else:
            step = _sweep.select_steps([r.clean_accuracy for r in self.sweep_], [self.prune_until])[self.prune_until]
            # With every channel gone the output no longer depends on the input: nothing left to fine-tune.
            step = min(step, self._point.n_channels - 1)
            pruned_accuracy = self.sweep_[step].clean_accuracy
            masks = self._activation_masks(step)
            channels = {self._point.layer_name: self.ranking_[:step].tolist()}
        n_pruned = int(sum(np.count_nonzero(mask == 0) for mask in masks.values()))
        logger.info(
            "Fine-pruning: %d of %d channels pruned, retraining for %d epochs on %d clean samples.",
            n_pruned,
            self._n_prunable,
            self.fine_tune_epochs,
            clean.n_samples,
        )
        bad_predict = BatchPredictor(self._model, labels_only=True)

        def measure(model: "keras.Model", source: "ArrayBatches | StreamBatches") -> tuple[float, float]:
            """
            :return: Percent of samples on their reference label, and percent on which the model and B differ.
            """
            predict = BatchPredictor(model, labels_only=True)
            hits = changed = n = 0
            for batch in source.batches():
                prepared = self._prepared(batch.x)
                labels = predict(prepared, self.batch_size)
                hits += int(np.count_nonzero(labels == batch.y))
                changed += int(np.count_nonzero(labels != bad_predict(prepared, self.batch_size)))
                n += len(labels)
            return float(_sweep.percent(hits, n)), float(_sweep.percent(changed, n))

        learning_rate = float(self.fine_tune_learning_rate)
        # The sweep measured the pruned copy on this very data: its accuracy before fine-tuning, without a pass.
        pruned_accuracy = float(pruned_accuracy)
        for attempt in range(MAX_FINE_TUNE_ATTEMPTS):
            # Seed before cloning: the clone's dropout layers draw their seeds when they are created.
            seed_everything(int(self.seed))
            model = multi_masked_copy(self._model, masks)
            options = {
                "epochs": self.fine_tune_epochs,
                "learning_rate": learning_rate,
                "batch_size": self.fine_tune_batch_size,
                "seed": int(self.seed),
                "verbose": self.verbose,
                "optimizer": self.fine_tune_optimizer,
                "batchnorm": self.fine_tune_batchnorm,
                "augment": self.fine_tune_augment,
            }
            if clean.is_stream:
                fine_tune_stream(
                    model, lambda: ((self._prepared(b.x), b.y) for b in clean.batches()), clean.n_samples, **options
                )
            else:
                fine_tune(model, self._prepared(clean.x), clean.y, **options)
            accuracy, flagged = measure(model, clean)
            # Training on the clean data cannot rightly leave the model worse on that very data than before: the
            # optimisation diverged (a too large step for this network). Retry from the pruned copy, half the rate.
            if accuracy >= pruned_accuracy or attempt == MAX_FINE_TUNE_ATTEMPTS - 1:
                break
            logger.warning(
                "Fine-tuning at learning rate %g diverged (%.2f %% on the clean data it trained on, %.2f %% before); "
                "retrying at %g.",
                learning_rate,
                accuracy,
                pruned_accuracy,
                learning_rate / 2,
            )
            learning_rate /= 2
        if accuracy < pruned_accuracy:
            logger.warning(
                "Fine-tuning left the model at %.2f %% on its clean data, below the pruned model's %.2f %%, after %d "
                "attempts down to learning rate %g.",
                accuracy,
                pruned_accuracy,
                MAX_FINE_TUNE_ATTEMPTS,
                learning_rate,
            )
        summary = {
            "channels_pruned": n_pruned,
            "fraction_pruned": n_pruned / self._n_prunable,
            "pruned_channels": channels,
            "epochs": self.fine_tune_epochs,
            "learning_rate": learning_rate,
            "pruned_accuracy": pruned_accuracy,
            "clean_accuracy": accuracy,
            "clean_flagged": flagged,
            "attack_success_rate": None,
            "poisoned_flagged": None,
        }
        if poisoned is not None:
            summary["attack_success_rate"], summary["poisoned_flagged"] = measure(model, poisoned)
        self.fine_pruned_model_ = model
        self.fine_tune_ = summary

    def _activation_masks(self, step: int) -> dict[PrunePoint, np.ndarray]:
        mask = np.ones(self._point.n_channels, dtype=np.float32)
        mask[self.ranking_[:step]] = 0.0
        return {self._point: mask}

    def _prepared(self, x: np.ndarray) -> np.ndarray:
        """
        :return: ``x`` after the classifier's preprocessing, as float32.
        """
        if is_lazy_array(x):
            x = np.asarray(x[0 : len(x)])
        clip_values = self.classifier.clip_values
        if self._check_range and warn_outside_clip_values(x, clip_values, logger, "Inputs given to fit"):
            self._check_range = False  # once per call of fit
        x = np.asarray(x, dtype=np.float32)
        if not is_identity_preprocessing(self.classifier):
            x, _ = self.classifier._apply_preprocessing(x, y=None, fit=False)
        return np.asarray(x, dtype=np.float32)

    def _activation_cache(self, head_predict: BatchPredictor, x: np.ndarray, name: str) -> np.ndarray:
        """
        :return: The activations at the cut of all of ``x``, filled batch by batch into one float32 array (no list
                 of batches and concatenated copy side by side), aligned so that :func:`shared_tensor` shares it.
        """
        cache: np.ndarray | None = None
        start = 0
        for activations in self._activations(head_predict, x, self.batch_size, name=name):
            if cache is None:
                cache = aligned_empty((len(x), *activations.shape[1:]), np.float32)
            cache[start : start + len(activations)] = activations
            start += len(activations)
        if cache is None:
            raise ValueError(f"{name} holds no samples.")
        return cache

    def _activations(
        self,
        head_predict: BatchPredictor,
        x: np.ndarray,
        batch_size: int,
        start: int = 0,
        stop: int | None = None,
        name: str = "x",
    ) -> Iterator[np.ndarray]:
        """
        :param x: Inputs: a numpy array, or a lazy array read batch by batch (each batch checked for NaN/inf).
        :param start: First sample.
        :param stop: End of the samples (default: all).
        :param name: Name of the data (for error messages).
        :return: Activations at the cut of ``x[start:stop]``, batch by batch, after the classifier's preprocessing.
        """
        stop = len(x) if stop is None else min(stop, len(x))
        lazy = is_lazy_array(x)
        for first in range(start, stop, batch_size):
            batch = np.asarray(x[first : min(first + batch_size, stop)])
            if lazy:
                check_finite_batch(batch, first, name)
            yield head_predict(self._prepared(batch), batch_size)

    def _step(self, accuracy_drop: float) -> int:
        if not self._is_fitted:
            raise ValueError("FinePruning is not fitted yet; call fit(x, y) first.")
        drop = check_drop(accuracy_drop)
        if drop not in self.steps_:
            swept = ", ".join(f"{d:g}" for d in self.steps_)
            raise ValueError(f"accuracy_drop={drop:g} was not swept; the fitted values are: {swept}.")
        return self.steps_[drop]

    def _masks_for(self, accuracy_drop: float) -> dict[PrunePoint, np.ndarray]:
        step = self._step(accuracy_drop)
        if self.strategy == "attack_aware":
            return self._masks[check_drop(accuracy_drop)]
        return self._activation_masks(step)

    def pruned_channels(self, accuracy_drop: float) -> np.ndarray | dict[str, np.ndarray]:
        """
        :param accuracy_drop: One of the fitted accuracy drops X.
        :return: The channels pruned in B'(X): for the activation strategy, their indices in pruning order; for
                 ``attack_aware``, ``{layer name: indices in pruning order}``.
        """
        step = self._step(accuracy_drop)
        if self.strategy == "attack_aware":
            records = self._records(check_drop(accuracy_drop))[1:]
            return {
                p.layer_name: np.array([r.channel for r in records if r.layer == p.layer_name], dtype=np.int64)
                for p in self._points
            }
        return self.ranking_[:step].copy()

    def pruned_model(self, accuracy_drop: float) -> "keras.Model":
        """
        :param accuracy_drop: One of the fitted accuracy drops X.
        :return: B'(X): a new Keras model, a copy of B with the pruned channels masked to zero.
        """
        return multi_masked_copy(self._model, self._masks_for(accuracy_drop))

    def summary(self) -> list[dict]:
        """
        :return: One row per fitted X: ``accuracy_drop``, ``channels_pruned``, ``fraction_pruned``,
                 ``clean_accuracy``, ``attack_success_rate`` (None without poisoned data), ``clean_flagged`` and
                 ``poisoned_flagged`` (what a GoodNet at this X flags on the validation data).
        """
        rows = []
        for drop in self.accuracy_drops:
            record = self._records(drop)[self._step(drop)].as_dict()
            record.pop("channel")
            record.pop("layer")
            rows.append({"accuracy_drop": drop, **record})
        return rows

    def fine_pruned_model(self) -> "keras.Model":
        """
        :return: The fine-pruned B': pruned to ``prune_until`` and fine-tuned; a new Keras model (a copy).
        """
        if not self._is_fitted:
            raise ValueError("FinePruning is not fitted yet; call fit(x, y) first.")
        if self.fine_pruned_model_ is None:
            raise ValueError("No fine-pruned model: fine-tuning was off (fine_tune_epochs=0) when fit ran.")
        return copy_model(self.fine_pruned_model_)

    def __call__(  # type: ignore[override]
        self,
        transformed_classifier: "CLASSIFIER_TYPE | None" = None,
        accuracy_drop: float | None = None,
        abstain: bool = False,
    ) -> GoodNetClassifier:
        """
        Build a GoodNet.

        With ``accuracy_drop=X``, B' is the pruned network B'(X). Without it, B' is the fine-pruned network where
        fine-tuning ran (``fine_tune_epochs > 0``), else B'(X) for the only fitted X.

        :param transformed_classifier: The classifier B (by default the one given at construction); it must hold the
               same weights as the classifier that was fitted.
        :param accuracy_drop: One of the fitted X.
        :param abstain: The GoodNet flags an input by abstaining (an all-zero row of N scores, ART's convention)
               instead of answering class N.
        :return: A GoodNet with N + 1 classes (N with ``abstain``).
        """
        if not self._is_fitted:
            raise ValueError("FinePruning is not fitted yet; call fit(x, y) before building a GoodNet.")
        classifier = self.classifier if transformed_classifier is None else transformed_classifier
        model = as_functional(model_of(classifier))
        if not weights_equal(model, self._model):
            raise ValueError(
                "The classifier given to build the GoodNet holds other weights than the one that was fitted."
            )
        metadata: dict = {
            "n_classes": self._n_classes,
            "strategy": self.strategy,
            "layer_name": self._point.layer_name,
            "cut_name": self._point.cut_name,
            "n_channels": self._point.n_channels,
            "layer_names": [p.layer_name for p in self._points],
        }
        if accuracy_drop is None and self.fine_pruned_model_ is not None:
            summary = self.fine_tune_ or {}
            metadata.update(
                {
                    "method": "fine-pruning",
                    "accuracy_drop": None,
                    "prune_until": self.prune_until,
                    "fine_tune_epochs": self.fine_tune_epochs,
                    "fine_tune_learning_rate": float(self.fine_tune_learning_rate),
                    "fine_tune_optimizer": self.fine_tune_optimizer,
                    "fine_tune_batchnorm": self.fine_tune_batchnorm,
                    "fine_tune_augment": self.fine_tune_augment,
                    "pruned_channels": self._channels_metadata(summary["pruned_channels"]),
                }
            )
            return GoodNetClassifier.from_classifier(
                classifier, self.fine_pruned_model(), metadata=metadata, abstain=abstain
            )
        if accuracy_drop is None:
            if len(self.accuracy_drops) != 1:
                swept = ", ".join(f"{d:g}" for d in self.accuracy_drops)
                raise ValueError(f"Several accuracy drops were fitted ({swept}); choose one with accuracy_drop=X.")
            accuracy_drop = self.accuracy_drops[0]
        step = self._step(accuracy_drop)
        record = self._records(check_drop(accuracy_drop))[step]
        metadata.update(
            {
                "method": "pruning",
                "accuracy_drop": check_drop(accuracy_drop),
                "pruned_channels": self._channels_metadata(
                    {p.layer_name: c for p, c in zip(self._points, [self.pruned_channels(accuracy_drop)])}
                    if self.strategy == "activation"
                    else self.pruned_channels(accuracy_drop)
                ),
                "validation_clean_accuracy": record.clean_accuracy,
                "validation_attack_success_rate": record.attack_success_rate,
            }
        )
        return GoodNetClassifier.from_classifier(
            classifier, self.pruned_model(accuracy_drop), metadata=metadata, abstain=abstain
        )

    def _channels_metadata(self, by_layer: dict) -> list[int] | dict[str, list[int]]:
        """
        :return: The pruned channels for a GoodNet's metadata: a list for the activation strategy (one layer), a
                 dict by layer for ``attack_aware``.
        """
        as_lists = {layer: [int(c) for c in channels] for layer, channels in by_layer.items()}
        return as_lists[self._point.layer_name] if self.strategy == "activation" else as_lists
