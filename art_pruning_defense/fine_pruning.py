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
5. A GoodNet runs B and B' side by side and answers class N ("poisoned input") where they disagree, or, calibrated
   to a false-positive rate α on clean data B' never saw (``calibration_fraction``), where its score exceeds the
   conformal threshold.

Steps 1-3 are the ``activation`` strategy's. Other strategies (:mod:`art_pruning_defense.strategies`) choose the
channels otherwise and share the rest: ``attack_aware`` (with triggered validation samples, over several layers),
``lipschitz`` (CLP: every conv channel by its upper Lipschitz bound, data-free; https://arxiv.org/abs/2208.03111) and
``adversarial`` (ANP: every conv channel by a mask learnt against adversarial neuron perturbations;
https://arxiv.org/abs/2110.14430). Fine-tuning is plain or feature-shift (FST, https://arxiv.org/abs/2310.01875):
:mod:`art_pruning_defense.tuning`. This class checks its parameters (declared in :mod:`art_pruning_defense._params`),
calls the strategy and builds B'(X), the fine-pruned B' and the GoodNets.
"""

from __future__ import annotations

import logging
import inspect
import numbers
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from art.defences.transformer.transformer import Transformer

from art_pruning_defense import _defaults, _holdout, _metrics, _sanity, _sweep
from art_pruning_defense._sanity import check_finite_weights
from art_pruning_defense._params import DEFAULTS, FINE_PRUNING_PARAMS, PARAMS, check_params, docstring_fields
from art_pruning_defense._classifier import is_identity_preprocessing, model_of
from art_pruning_defense._stream import ArrayBatches, StreamBatches, is_stream
from art_pruning_defense._validation import check_drop, check_inputs, check_labels
from art_pruning_defense._validation import check_target, is_lazy_array
from art_pruning_defense._validation import warn_outside_clip_values
from art_pruning_defense.goodnet import GoodNetClassifier
from art_pruning_defense.keras import (
    PrunePoint,
    as_functional,
    copy_model,
    input_shape,
    multi_masked_copy,
    n_outputs,
    split,
    weights_equal,
)
from art_pruning_defense.strategies import STRATEGIES, FitRun, Strategy, StrategyFit
from art_pruning_defense.tuning import TuningOptions, fine_tune_pruned

if TYPE_CHECKING:
    import keras
    from art.utils import CLASSIFIER_TYPE

logger = logging.getLogger(__name__)


#: The fine-tuning epochs we recommend (and the detector's and benchmark's default) when fine-pruning.
RECOMMENDED_FINE_TUNE_EPOCHS = _defaults.RECOMMENDED_FINE_TUNE_EPOCHS


def _same(a: object, b: object) -> bool:
    """
    :return: Whether two parameter values are equal (and of the same type, so that 1 and True differ).
    """
    return type(a) is type(b) and a == b


class FinePruning(Transformer):
    """
    Prune channels of a (possibly backdoored) Keras classifier, chosen by a strategy (by default the least active
    channels of one late convolutional layer), optionally fine-tune the pruned copy, and build GoodNet classifiers that
    flag the inputs on which the pruned and the original network disagree.

    | Paper link: https://arxiv.org/abs/1805.12185
    """

    params = [param.name for param in FINE_PRUNING_PARAMS]

    def __init__(self, classifier: "CLASSIFIER_TYPE", **params: Any) -> None:
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise TypeError(
                f"FinePruning got unexpected parameter(s) {', '.join(map(repr, unknown))}; its parameters are: "
                f"{', '.join(self.params)}."
            )
        super().__init__(classifier=classifier)
        for name, default in DEFAULTS.items():
            setattr(self, name, params.get(name, default))
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
        :param layer_name: The layer of a one-layer strategy (``None``: the last feature map on every path;
               ``"nested/layer"`` inside a nested model).
        :param layer_names: The layers of a several-layer strategy (``None``: the strategy's default).
        :return: The prune points, in the model's order.
        :raises ValueError: If a layer is unknown, is no channels-last feature map, is bypassed by another path, or
                two layers are masked at the same place.
        """
        points = STRATEGIES[strategy]().prune_points(self._model, self._user_model, layer_name, layer_names)
        cuts = [point.cut_name for point in points]
        if len(set(cuts)) != len(cuts):
            raise ValueError(
                f"layer_names {[p.layer_name for p in points]} are masked at the same place ({cuts}): "
                "name each conv block once."
            )
        if STRATEGIES[strategy].single_layer or STRATEGIES[strategy].takes_layer_names:
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
        #: With ``calibration_fraction``: the indices of the clean samples given to ``fit`` that were held out.
        self.calibration_indices_: np.ndarray | None = None
        self._calibration_x: np.ndarray | None = None
        self._clean_size = 0
        self._fit: StrategyFit | None = None

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
        if any(PARAMS[name].structural for name in changed):
            points = self._find_prune_points(checked["strategy"], checked["layer_name"], checked["layer_names"])
        # Everything is checked: assign.
        for name, value in checked.items():
            setattr(self, name, value)
        self._points = points
        self._point = points[-1]
        refitting = sorted(name for name in changed if PARAMS[name].refits)
        if refitting:
            if self._is_fitted:
                logger.info("Parameters %s changed: the defence must be fitted again.", ", ".join(refitting))
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
        :raises ValueError: If a value is invalid, or ``layer_names`` is given to a strategy that does not take it.
        :raises TypeError: If a value has the wrong type.
        """
        checked = check_params(params)
        strategy = STRATEGIES[checked["strategy"]]
        if checked["layer_names"] is not None and not strategy.takes_layer_names:
            takers = ", ".join(repr(name) for name, cls in STRATEGIES.items() if cls.takes_layer_names)
            raise ValueError(
                f"layer_names is for strategy={takers}; strategy={strategy.name!r} does not take it "
                "(to switch to it, set layer_names=None too)."
            )
        return checked

    # ------------------------------------------------------------------------------------------------- fitting

    def fit(
        self,
        x: "np.ndarray | Iterable | None" = None,
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
               slices, such as an h5py dataset), or a stream of ``(x, y)`` batches. ``None`` for a data-free fit
               (``strategy="lipschitz"`` without fine-tuning): no sweep, only the strategy's own cut. With
               ``calibration_fraction``, an array: that share of it is held out (``calibration_indices_``) and the
               rest fits.
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
        strategy = STRATEGIES[self.strategy](**{name: getattr(self, name) for name in self.params})
        if x is None:
            self._check_data_free(strategy, y, poisoned_x, poisoned_target)
            clean = poisoned = held_out = None
        else:
            x, y, held_out = self._held_out(x, y)
            clean, poisoned = self._sources(x, y, poisoned_x, poisoned_target)
        streaming = clean is not None and (clean.is_stream or (poisoned is not None and poisoned.is_stream))
        if strategy.needs_poisoned and poisoned is None:
            raise ValueError(
                f"strategy={self.strategy!r} needs triggered validation data: pass poisoned_x and poisoned_target "
                "to fit (the activation strategy needs clean data only)."
            )
        if streaming and not strategy.streams:
            raise ValueError(
                f"strategy={self.strategy!r} keeps the activations of all validation data in memory and needs them "
                "as numpy arrays; give x, y, poisoned_x and poisoned_target as arrays (or use "
                "strategy='activation', which streams)."
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
        check_finite_weights(self._user_model, "The classifier given to FinePruning.fit")
        # A fit that fails half-way must not leave the results of an earlier one looking valid.
        self._reset_fit()
        if held_out is not None:
            self.calibration_indices_, self._calibration_x = held_out
            self._clean_size = len(x) + len(held_out[0])
        self._check_range = True
        run = FitRun(
            self._model,
            self._user_model,
            self._points,
            self._n_classes,
            self._prepared,
            self.batch_size,
            self.max_cache_bytes,
            self.seed,
            self.verbose,
        )
        fine_pruning = self.fine_tune_epochs > 0
        budgets = [] if clean is None else list(self.accuracy_drops)
        fitted = strategy.fit(run, clean, poisoned, budgets, self.prune_until if fine_pruning else None)
        self.mean_activation_ = fitted.scores
        self.ranking_ = fitted.ranking
        self.steps_ = dict(fitted.steps)
        self.sweeps_ = None if strategy.single_layer or not budgets else dict(fitted.sweeps)
        self.sweep_ = fitted.sweeps[max(budgets)] if budgets else None
        self._fit = fitted
        if fine_pruning:
            options = TuningOptions(
                epochs=self.fine_tune_epochs,
                learning_rate=float(self.fine_tune_learning_rate),
                batch_size=self.fine_tune_batch_size,
                optimizer=self.fine_tune_optimizer,
                batchnorm=self.fine_tune_batchnorm,
                augment=self.fine_tune_augment,
            )
            self.fine_pruned_model_, self.fine_tune_ = fine_tune_pruned(
                run, fitted.fine_prune, clean, poisoned, options, mode=self.fine_tune_mode
            )
        self._is_fitted = True
        if self.sweep_:
            _sanity.check_repair(
                self.summary(),
                self.sweep_[0].clean_accuracy,
                self._n_classes,
                prune_until=self.prune_until if fine_pruning else None,
            )
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

    def _check_data_free(self, strategy: "Strategy", y: object, poisoned_x: object, poisoned_target: object) -> None:
        """
        Check a ``fit`` without clean data.

        :raises TypeError: If the strategy needs data (``x`` is then a missing argument).
        :raises ValueError: If fine-tuning is on, or labels or poisoned data come without clean data.
        """
        if strategy.needs_clean:
            free = ", ".join(repr(name) for name, cls in STRATEGIES.items() if not cls.needs_clean)
            raise TypeError(
                f"fit needs the clean validation data x and y for strategy={self.strategy!r}; only "
                f"strategy={free} can fit without data."
            )
        if self.fine_tune_epochs > 0:
            raise ValueError(
                f"fine_tune_epochs={self.fine_tune_epochs} fine-tunes on clean data, but fit was given none: pass x "
                "and y, or set fine_tune_epochs=0."
            )
        if y is not None or poisoned_x is not None or poisoned_target is not None:
            raise ValueError("fit was given labels or poisoned data but no clean inputs x; pass x too, or nothing.")
        if self.calibration_fraction is not None:
            raise ValueError(
                f"calibration_fraction={self.calibration_fraction:g} holds out part of the clean data, but fit was "
                "given none: pass x and y, or set calibration_fraction=None."
            )

    def _held_out(self, x: object, y: object) -> tuple[object, object, tuple[np.ndarray, np.ndarray] | None]:
        """
        Split the clean data with ``calibration_fraction`` (seeded by ``seed``), before any heavy work.

        :return: ``(x, y, held_out)``: the part that fits and its labels, and ``(indices, inputs)`` of the held-out
                 part (``None`` without ``calibration_fraction``: then ``x`` and ``y`` as given).
        :raises ValueError: If ``x`` is a stream, or either part would be empty.
        """
        if self.calibration_fraction is None:
            return x, y, None
        if is_stream(x):
            raise ValueError(
                f"calibration_fraction={self.calibration_fraction:g} splits the clean data, which needs x and y as "
                "arrays, not a stream of batches: pass arrays, or set calibration_fraction=None."
            )
        x = check_inputs(x, input_shape(self._model), "x", allow_lazy=True)
        if y is None:
            raise ValueError("fit needs the labels y of the clean validation data.")
        labels = check_labels(y, len(x), self._n_classes, "y")
        _holdout.check_holdout(len(x), self.calibration_fraction, None, "x")
        fit, held = _holdout.holdout_split(len(x), self.calibration_fraction, self.seed)
        logger.info(
            "Holding out %d of %d clean samples (calibration_fraction=%g) to calibrate; fitting on the other %d.",
            len(held),
            len(x),
            self.calibration_fraction,
            len(fit),
        )
        return np.asarray(x[fit]), labels[fit], (held, np.asarray(x[held]))

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
        return self._fit.sweeps[drop]

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

    def _step(self, accuracy_drop: float) -> int:
        if not self._is_fitted:
            raise ValueError("FinePruning is not fitted yet; call fit(x, y) first.")
        drop = check_drop(accuracy_drop)
        if not self.steps_:
            raise ValueError(
                f"accuracy_drop={drop:g} was not swept: fit ran without data. Use accuracy_drop=None for the "
                f"{self.strategy} strategy's own cut, or fit with clean data to sweep."
            )
        if drop not in self.steps_:
            swept = ", ".join(f"{d:g}" for d in self.steps_)
            raise ValueError(f"accuracy_drop={drop:g} was not swept; the fitted values are: {swept}.")
        return self.steps_[drop]

    def _masks_for(self, accuracy_drop: float) -> dict[PrunePoint, np.ndarray]:
        self._step(accuracy_drop)
        return self._fit.masks[check_drop(accuracy_drop)]

    def pruned_channels(self, accuracy_drop: float | None) -> np.ndarray | dict[str, np.ndarray]:
        """
        :param accuracy_drop: One of the fitted accuracy drops X, or ``None`` for the strategy's own cut.
        :return: The channels pruned in B'(X), in pruning order: for a one-layer strategy (``activation``), their
                 indices; for the others, ``{layer name: indices}`` (the own cut's in increasing order).
        """
        if accuracy_drop is None:
            return {point.layer_name: np.flatnonzero(mask == 0) for point, mask in self._own_cut().items()}
        self._step(accuracy_drop)
        channels = self._fit.channels[check_drop(accuracy_drop)]
        if STRATEGIES[self.strategy].single_layer:
            return channels[self._point.layer_name].copy()
        return {layer: c.copy() for layer, c in channels.items()}

    def pruned_model(self, accuracy_drop: float | None) -> "keras.Model":
        """
        :param accuracy_drop: One of the fitted accuracy drops X, or ``None`` for the strategy's own cut (the
               ``lipschitz`` and ``adversarial`` strategies' thresholds).
        :return: B'(X): a new Keras model, a copy of B with the pruned channels masked to zero.
        """
        if accuracy_drop is None:
            return multi_masked_copy(self._model, self._own_cut())
        return multi_masked_copy(self._model, self._masks_for(accuracy_drop))

    def _own_cut(self) -> dict[PrunePoint, np.ndarray]:
        """
        :return: The masks of the strategy's own cut.
        :raises ValueError: If the defence is not fitted, or the strategy has no cut of its own.
        """
        if not self._is_fitted:
            raise ValueError("FinePruning is not fitted yet; call fit(x, y) first.")
        if self._fit.own_cut is None:
            owners = ", ".join(repr(name) for name, cls in STRATEGIES.items() if hasattr(cls, "own_cut"))
            raise ValueError(
                f"strategy={self.strategy!r} has no cut of its own (only {owners} have one): choose an accuracy drop "
                "X with accuracy_drop=X."
            )
        return self._fit.own_cut

    def summary(self) -> list[dict]:
        """
        :return: One row per fitted X: ``accuracy_drop``, ``channels_pruned``, ``fraction_pruned``,
                 ``clean_accuracy``, ``attack_success_rate`` (None without poisoned data), ``clean_flagged`` and
                 ``poisoned_flagged`` (what a GoodNet at this X flags on the validation data).
        """
        rows = []
        for drop in self.steps_:
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
        false_positive_rate: float | None = None,
    ) -> GoodNetClassifier:
        """
        Build a GoodNet.

        With ``accuracy_drop=X``, B' is the pruned network B'(X). Without it, B' is the fine-pruned network where
        fine-tuning ran (``fine_tune_epochs > 0``), else the strategy's own cut where it has one (``lipschitz``,
        ``adversarial``), else B'(X) for the only fitted X.

        :param transformed_classifier: The classifier B (by default the one given at construction); it must hold the
               same weights as the classifier that was fitted.
        :param accuracy_drop: One of the fitted X.
        :param abstain: The GoodNet flags an input by abstaining (an all-zero row of N scores, ART's convention)
               instead of answering class N.
        :param false_positive_rate: Calibrate the GoodNet (:meth:`GoodNetClassifier.calibrate`) at this rate α on
               the clean samples ``fit`` held out (``calibration_fraction``), which B' never saw: it then flags
               ``score > threshold_``, a fresh clean input with probability at most α. ``None``: the label rule.
        :return: A GoodNet with N + 1 classes (N with ``abstain``).
        :raises ValueError: If the defence is not fitted, or ``false_positive_rate`` is given but nothing was held
                out, or too little for the rate (naming the number of samples needed).
        """
        if not self._is_fitted:
            raise ValueError("FinePruning is not fitted yet; call fit(x, y) before building a GoodNet.")
        if false_positive_rate is not None:
            false_positive_rate = self._check_calibration(false_positive_rate)
        goodnet = self._goodnet(transformed_classifier, accuracy_drop, abstain)
        if false_positive_rate is not None:
            n = len(self._calibration_x)
            goodnet.calibrate(self._calibration_x, false_positive_rate, batch_size=self.batch_size)
            goodnet.metadata["calibration_samples"] = n
        return goodnet

    def _check_calibration(self, false_positive_rate: object) -> float:
        """
        :param false_positive_rate: The rate to calibrate at.
        :return: It, checked.
        :raises ValueError: If nothing was held out, or too little for the rate.
        """
        rate = _metrics.check_false_positive_rate(false_positive_rate)
        if self._calibration_x is None:
            raise ValueError(
                "false_positive_rate needs clean data that B' never saw: fit held nothing out (set "
                f"calibration_fraction, e.g. {_defaults.RECOMMENDED_CALIBRATION_FRACTION:g}, and fit again), or "
                "calibrate the GoodNet yourself on such data with goodnet.calibrate(x_clean, rate)."
            )
        _holdout.check_holdout(self._clean_size, self.calibration_fraction, rate, "the clean data given to fit")
        return rate

    def _goodnet(
        self, transformed_classifier: "CLASSIFIER_TYPE | None", accuracy_drop: float | None, abstain: bool
    ) -> GoodNetClassifier:
        """
        :return: The GoodNet of :meth:`__call__`, not calibrated.
        """
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
                    "fine_tune_mode": self.fine_tune_mode,
                    "pruned_channels": self._channels_metadata(summary["pruned_channels"]),
                }
            )
            return GoodNetClassifier.from_classifier(
                classifier, self.fine_pruned_model(), metadata=metadata, abstain=abstain
            )
        if accuracy_drop is None and self._fit.own_cut is not None:
            masks = self._fit.own_cut
            metadata.update(
                {
                    "method": "pruning",
                    "accuracy_drop": None,
                    "pruned_channels": {
                        point.layer_name: np.flatnonzero(mask == 0).tolist() for point, mask in masks.items()
                    },
                }
            )
            return GoodNetClassifier.from_classifier(
                classifier, multi_masked_copy(self._model, masks), metadata=metadata, abstain=abstain
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
                "pruned_channels": self._channels_metadata(self._fit.channels[check_drop(accuracy_drop)]),
                "validation_clean_accuracy": record.clean_accuracy,
                "validation_attack_success_rate": record.attack_success_rate,
            }
        )
        return GoodNetClassifier.from_classifier(
            classifier, self.pruned_model(accuracy_drop), metadata=metadata, abstain=abstain
        )

    def _channels_metadata(self, by_layer: dict) -> list[int] | dict[str, list[int]]:
        """
        :return: The pruned channels for a GoodNet's metadata: a list for a one-layer strategy, a dict by layer for
                 the others.
        """
        as_lists = {layer: [int(c) for c in channels] for layer, channels in by_layer.items()}
        return as_lists[self._point.layer_name] if STRATEGIES[self.strategy].single_layer else as_lists


def _constructor_docs() -> None:
    """
    Give ``FinePruning.__init__`` the signature and the parameter documentation of the declarations in
    :mod:`art_pruning_defense._params`, so that both follow the one place where parameters are declared.
    """
    init = FinePruning.__init__
    parameters = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("classifier", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="CLASSIFIER_TYPE"),
    ] + [
        inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default, annotation=p.annotation)
        for p in FINE_PRUNING_PARAMS
    ]
    init.__signature__ = inspect.Signature(parameters, return_annotation="None")
    init.__doc__ = (
        "Create a fine-pruning defence. Every parameter is a keyword argument.\n\n"
        ":param classifier: The classifier B: an ART classifier whose ``model`` is a Keras 3 Functional or Sequential "
        "model (``KerasClassifier``) whose output is a softmax or logits (the sweep needs only the argmax). It is "
        "never modified.\n" + docstring_fields() + "\n:raises TypeError: If a parameter is unknown or of the wrong "
        "type.\n:raises ValueError: If a value is invalid, or the model has nothing the strategy can prune.\n"
    )


_constructor_docs()
