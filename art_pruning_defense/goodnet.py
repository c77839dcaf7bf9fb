"""
This module implements the GoodNet of the pruning defence: an ART classifier with N + 1 classes that runs a possibly
backdoored network B and its pruned copy B' side by side. Where they agree it answers their class; where they
differ it answers class N, meaning "poisoned input" (or, with ``abstain=True``, abstains: an all-zero row of N scores,
ART's convention for classifiers that may abstain). A continuous score (:meth:`GoodNetClassifier.score`) and a
threshold calibrated to a chosen false-positive rate on clean data (:meth:`GoodNetClassifier.calibrate`) replace
the label rule where wanted.

| Paper link: https://arxiv.org/abs/1805.12185
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator
from art.preprocessing.standardisation_mean_std.numpy import StandardisationMeanStd

from art_pruning_defense import _metrics, _sweep, goodnet_format
from art_pruning_defense._classifier import model_of
from art_pruning_defense._stream import StreamBatches, is_stream
from art_pruning_defense._validation import check_inputs, check_labels, check_positive_int, check_target
from art_pruning_defense._validation import check_float32, warn_outside_clip_values
from art_pruning_defense.keras import (
    BatchPredictor,
    as_functional,
    input_shape,
    n_outputs,
    outputs_probabilities,
)

if TYPE_CHECKING:
    import keras
    from art.utils import CLASSIFIER_TYPE

logger = logging.getLogger(__name__)

#: The parameters of ART's ``set_params`` that a GoodNet lets change; ``model`` and ``nb_classes`` are fixed by B and B'
#: (``set_params`` accepts them only with their current values, so that ``set_params(**get_params())`` works).
SETTABLE_PARAMS = (
    "clip_values",
    "preprocessing",
    "preprocessing_defences",
    "postprocessing_defences",
    "metadata",
    "abstain",
)

NOT_DIFFERENTIABLE = (
    "GoodNetClassifier is not differentiable: its output switches to class N (or abstains) where B and B' disagree, "
    "a step function of the input, so it has no {what}. Gradient-based attacks and metrics (FGSM, PGD, CLEVER, "
    "loss_sensitivity, empirical_robustness with 'fgsm') cannot run on it; use decision-based attacks "
    "(HopSkipJump, BoundaryAttack), or attack B itself (a KerasClassifier over goodnet.bad_model)."
)


def _softmax(logits: np.ndarray) -> np.ndarray:
    """
    :param logits: Shape ``(n, N)``, finite.
    :return: The softmax of each row, in the dtype of ``logits``.
    """
    shifted = np.exp(logits - np.max(logits, axis=1, keepdims=True))
    return shifted / np.sum(shifted, axis=1, keepdims=True)


def _check_standardisation(preprocessing: Any) -> None:
    """
    :param preprocessing: ART's ``preprocessing`` argument; a ``(mean, std)`` tuple is checked in float32 before ART
           converts it (where 1e-300 would silently become 0).
    :raises ValueError: If the mean or std is out of float32's range, or the std is zero in float32.
    """
    if isinstance(preprocessing, tuple) and len(preprocessing) == 2:
        check_float32(preprocessing[0], "preprocessing mean")
        check_float32(preprocessing[1], "preprocessing std", std=True)


def _check_clip_values(clip_values: Any) -> None:
    """
    :param clip_values: ``(min, max)`` (scalars or arrays) or ``None``; checked before ART converts it to float32.
    :raises ValueError: If it is not a pair, is out of float32's range, or min >= max in float32.
    """
    if clip_values is None:
        return
    if not isinstance(clip_values, (tuple, list, np.ndarray)) or len(clip_values) != 2:
        raise ValueError(f"clip_values must be (min, max), got {clip_values!r}.")
    low = check_float32(clip_values[0], "clip_values min")
    high = check_float32(clip_values[1], "clip_values max")
    if np.any(low >= high):
        raise ValueError(f"clip_values must be (min, max) with min < max in float32, got {clip_values!r}.")


class _StreamPredict:
    """
    Where :class:`GoodNetClassifier`'s ``predict`` is defined. ART's ``InputFilter`` metaclass (of ``ClassifierMixin``)
    wraps a ``predict`` defined in a classifier's own class body into a function that first converts ``x`` with
    ``np.array``, which would turn a stream of batches into an array of objects. Defined in this plain base class,
    ``predict`` is not wrapped: it converts what is neither an array nor a stream itself, as ART would.
    """

    def predict(self, x: "np.ndarray | Iterable", batch_size: int = 128, **kwargs) -> np.ndarray:
        """
        :param x: Inputs: a numpy array, or a stream of batches (a ``tf.data.Dataset``, a list of batches, a
               generator) of inputs or of ``(x, y)`` pairs whose ``y`` is ignored, read once, batch by batch.
        :param batch_size: Samples per forward pass.
        :return: Scores of shape ``(n, N + 1)``, ``argmax == N`` meaning "poisoned input"; with ``abstain``, of
                 shape ``(n, N)``, an all-zero row meaning "poisoned input". An input is flagged where B and B'
                 differ, or, once calibrated, where ``score > threshold_``. Postprocessing defences, if any, are
                 applied to them.
        :raises ValueError: If the networks' output is NaN or infinite for some input.
        """
        if not isinstance(x, np.ndarray) and not is_stream(x):
            x = np.array(x)  # what ART's InputFilter does to every x, for all but streams
        return self._predict(x, batch_size)


class GoodNetClassifier(_StreamPredict, ClassifierMixin, BaseEstimator):
    """
    GoodNet: B and B' side by side, with an extra class N for the inputs on which they disagree.

    ``predict`` returns scores of shape ``(n, N + 1)``: B's probabilities with 0 in column N where
    ``argmax B == argmax B'``, a one-hot row at N where they differ. With ``abstain=True`` it returns ``(n, N)``:
    B's probabilities where they agree, an all-zero row where they differ (ART's abstain convention, that of
    ``AbstainPredictorMixin``), so that tooling expecting N columns works.

    :meth:`score` gives a continuous score per input, ``[ŷ_B' ≠ ŷ_B] + (1 − p_B'(ŷ_B))`` in [0, 2], and
    :meth:`calibrate` chooses a threshold on clean data for a chosen false-positive rate; once calibrated
    (``threshold_`` set), an input is flagged where ``score > threshold_`` instead of where the labels differ.

    B may output probabilities (a softmax as its last activation) or logits: a GoodNet over a logits model applies a
    softmax to B's output for its scores. The GoodNet has no gradients (:meth:`loss_gradient`).
    """

    estimator_params = BaseEstimator.estimator_params + ClassifierMixin.estimator_params + ["metadata", "abstain"]

    def __init__(
        self,
        bad_model: "keras.Model",
        pruned_model: "keras.Model",
        clip_values: tuple[float, float] | None = None,
        preprocessing_defences: Any = None,
        preprocessing: Any = (0.0, 1.0),
        metadata: dict | None = None,
        abstain: bool = False,
        postprocessing_defences: Any = None,
    ) -> None:
        """
        :param bad_model: B, the original (possibly backdoored) Keras model with N classes, ending in a softmax or in
               logits.
        :param pruned_model: B', its pruned (and possibly fine-tuned) copy, with the same input, N classes and the
               same kind of output (probabilities or logits).
        :param clip_values: ``(min, max)`` of the input features, as for ART's classifiers.
        :param preprocessing_defences: ART preprocessing defences applied before both networks.
        :param preprocessing: ``(subtrahend, divisor)`` applied before both networks, as for ART's classifiers.
        :param metadata: Facts about how B' was made (layer, X, pruned channels, ...), saved with the GoodNet.
        :param abstain: Flag an input by abstaining (an all-zero row, ``nb_classes == N``) instead of answering
               class N (``nb_classes == N + 1``).
        :param postprocessing_defences: ART postprocessing defences applied to the GoodNet's scores.
        """
        bad = as_functional(bad_model)
        pruned = as_functional(pruned_model)
        if input_shape(bad) != input_shape(pruned):
            raise ValueError(
                f"B takes inputs of shape {input_shape(bad)} but B' takes {input_shape(pruned)}; they must match."
            )
        n_classes = n_outputs(bad)
        if n_outputs(pruned) != n_classes:
            raise ValueError(f"B has {n_classes} classes but B' has {n_outputs(pruned)}; they must match.")
        kinds = {name: outputs_probabilities(model) for name, model in (("B", bad), ("B'", pruned))}
        if kinds["B"] != kinds["B'"]:
            raise ValueError(
                "B and B' must output the same kind of scores, but "
                + " and ".join(
                    f"{name} outputs {'a probability vector (softmax)' if probs else 'logits (no softmax)'}"
                    for name, probs in kinds.items()
                )
                + ": B' must be a pruned copy of B."
            )
        if not isinstance(abstain, bool):
            raise TypeError(f"abstain must be a bool, got {type(abstain).__name__}.")
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}.")
        _check_standardisation(preprocessing)
        _check_clip_values(clip_values)
        super().__init__(
            model=bad,
            clip_values=clip_values,
            preprocessing_defences=preprocessing_defences,
            postprocessing_defences=postprocessing_defences,
            preprocessing=preprocessing,
        )
        self._bad = bad
        self._pruned = pruned
        self._input_shape = input_shape(bad)
        self._n_classes = n_classes
        self._logits = not kinds["B"]
        self.abstain = abstain
        self.nb_classes = n_classes if abstain else n_classes + 1
        self.metadata = dict(metadata or {})
        #: The calibrated threshold (``None``: the label rule) and the false-positive rate it was chosen for.
        self.threshold_: float | None = None
        self.false_positive_rate_: float | None = None
        self._check_params()
        self._bad_predict = BatchPredictor(bad)
        self._pruned_predict = BatchPredictor(pruned)

    @classmethod
    def from_classifier(
        cls,
        classifier: "CLASSIFIER_TYPE",
        pruned_model: "keras.Model",
        metadata: dict | None = None,
        abstain: bool = False,
    ) -> "GoodNetClassifier":
        """
        :param classifier: The ART classifier of B; its clip values and preprocessing carry over.
        :param pruned_model: B'.
        :param metadata: Facts about how B' was made.
        :param abstain: Abstain (an all-zero row of N scores) instead of answering class N.
        :return: The GoodNet.
        """
        if getattr(classifier, "postprocessing_defences", None):
            logger.warning("The classifier's postprocessing defences are not carried over to the GoodNet.")
        return cls(
            bad_model=model_of(classifier),
            pruned_model=pruned_model,
            clip_values=classifier.clip_values,
            preprocessing_defences=classifier.preprocessing_defences,
            preprocessing=classifier.preprocessing,
            metadata=metadata,
            abstain=abstain,
        )

    def _check_params(self) -> None:
        super()._check_params()
        if self.clip_values is not None:
            check_float32(self.clip_values, "clip_values")
        for operation in self.preprocessing_operations:
            if isinstance(operation, StandardisationMeanStd):
                check_float32(operation.mean, "preprocessing mean")
                check_float32(operation.std, "preprocessing std", std=True)

    def set_params(self, **kwargs) -> None:
        """
        Change parameters as ART's ``set_params`` does, keeping the GoodNet consistent: ``clip_values``,
        ``preprocessing``, ``preprocessing_defences``, ``postprocessing_defences``, ``metadata`` and ``abstain``
        (which sets ``nb_classes`` to N or N + 1) take effect. ``model`` and ``nb_classes`` are fixed by B and B'
        and are accepted only with their current values. A failed call leaves the GoodNet as it was.

        :param kwargs: Parameters among :attr:`estimator_params`.
        :raises ValueError: If a name is not a parameter, a fixed parameter would change, or a value is invalid.
        :raises TypeError: If ``abstain`` or ``metadata`` has the wrong type.
        """
        unknown = sorted(set(kwargs) - set(self.estimator_params))
        if unknown:
            raise ValueError(
                f"Unexpected parameter(s) {', '.join(map(repr, unknown))}; GoodNetClassifier's parameters are: "
                f"{', '.join(self.estimator_params)}."
            )
        settable = ", ".join(SETTABLE_PARAMS)
        if "model" in kwargs and kwargs["model"] is not self._bad:
            raise ValueError(
                "A GoodNet's model (B) cannot be changed: B' is a pruned copy of it, and they are used as a pair. "
                "Build a new GoodNet for another model (FinePruning on its classifier, or "
                f"GoodNetClassifier(bad_model, pruned_model)); set_params can change: {settable}."
            )
        abstain = kwargs.get("abstain", self.abstain)
        if not isinstance(abstain, bool):
            raise TypeError(f"abstain must be a bool, got {type(abstain).__name__}.")
        nb_classes = self._n_classes if abstain else self._n_classes + 1
        if "nb_classes" in kwargs and kwargs["nb_classes"] != nb_classes:
            raise ValueError(
                f"nb_classes is fixed by B's N = {self._n_classes} classes: N + 1 = {self._n_classes + 1} (class N "
                f"flags poisoned inputs) or N = {self._n_classes} with abstain=True; with abstain={abstain} it is "
                f"{nb_classes}, got {kwargs['nb_classes']!r}. set_params can change: {settable}."
            )
        metadata = kwargs.get("metadata", self.metadata)
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}.")
        _check_standardisation(kwargs.get("preprocessing"))
        _check_clip_values(kwargs.get("clip_values"))
        art_params = {k: v for k, v in kwargs.items() if k in BaseEstimator.estimator_params and k != "model"}
        before = self._scoring_fingerprint()
        if art_params:
            snapshot = dict(vars(self))
            operations = list(self.preprocessing_operations)  # ART updates this list in place
            try:
                super().set_params(**art_params)  # assigns, rebuilds the preprocessing, then calls _check_params
            except Exception:
                vars(self).clear()
                vars(self).update(snapshot)
                self.preprocessing_operations[:] = operations
                raise
        self.abstain = abstain
        self.nb_classes = nb_classes
        self.metadata = dict(metadata)
        if self.threshold_ is not None and self._scoring_fingerprint() != before:
            logger.warning(
                "The GoodNet's preprocessing changed, so its scores did: the calibrated threshold %.6g (at a "
                "false-positive rate of %g) was dropped and the label rule applies again; call calibrate() anew.",
                self.threshold_,
                self.false_positive_rate_,
            )
            self.threshold_ = None
            self.false_positive_rate_ = None

    def _scoring_fingerprint(self) -> list:
        """
        :return: What the scores depend on besides B and B': the preprocessing steps (mean and std by value, other
                 steps by identity).
        """
        steps: list = []
        for operation in self.preprocessing_operations:
            if isinstance(operation, StandardisationMeanStd):
                mean, std = np.asarray(operation.mean), np.asarray(operation.std)
                steps.append(("standardisation", mean.shape, mean.tobytes(), std.shape, std.tobytes()))
            else:
                steps.append(("operation", id(operation)))
        return steps

    @property
    def input_shape(self) -> tuple[int, ...]:
        """
        :return: Shape of one input sample.
        """
        return self._input_shape  # type: ignore[return-value]

    @property
    def bad_model(self) -> "keras.Model":
        """
        :return: B.
        """
        return self._bad

    @property
    def pruned_model(self) -> "keras.Model":
        """
        :return: B'.
        """
        return self._pruned

    @property
    def n_classes(self) -> int:
        """
        :return: N, the number of classes of B; N is also GoodNet's "poisoned input" class (without ``abstain``).
        """
        return self._n_classes

    @property
    def outputs_logits(self) -> bool:
        """
        :return: Whether B (and B') output logits, to which the GoodNet applies a softmax for its scores.
        """
        return self._logits

    def _prepare(self, x: np.ndarray, name: str = "x", warn: bool = True) -> np.ndarray:
        x = check_inputs(x, self._input_shape, name)
        if warn:
            warn_outside_clip_values(x, self.clip_values, logger, "Inputs given to the GoodNet")
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            prepared, _ = self._apply_preprocessing(np.asarray(x, dtype=np.float32), y=None, fit=False)
            prepared = np.asarray(prepared, dtype=np.float32)
        broken = ~np.all(np.isfinite(prepared.reshape(len(prepared), -1)), axis=1)
        if np.any(broken):
            raise ValueError(
                f"{int(np.count_nonzero(broken))} of {len(x)} inputs are NaN or infinite after the GoodNet's "
                f"preprocessing (the first is input {int(np.argmax(broken))}): they overflow float32. Check the "
                "preprocessing (mean, std) and the scale of the inputs; no class is given for such inputs."
            )
        return prepared

    def _outputs(self, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """
        One batched pass of B and one of B'.

        :param x: Inputs, preprocessed.
        :param batch_size: Samples per forward pass.
        :return: ``(B's probabilities, B's labels, B''s labels, scores)``, the scores as in :meth:`score`.
        :raises ValueError: If B's or B''s output is NaN or infinite for some input: no class is made up for it.
        """
        bad = self._bad_predict(x, batch_size)
        pruned = self._pruned_predict(x, batch_size)
        broken = ~(np.all(np.isfinite(bad), axis=1) & np.all(np.isfinite(pruned), axis=1))
        if np.any(broken):
            raise ValueError(
                f"B's or B''s output is NaN or infinite for {int(np.count_nonzero(broken))} of {len(x)} inputs "
                f"(the first is input {int(np.argmax(broken))}): the inputs after preprocessing overflow the "
                "network's float32 computation. Check the preprocessing (mean, std) and the scale of the inputs; "
                "no class is given for such inputs."
            )
        probabilities = _softmax(bad) if self._logits else bad
        bad_labels, pruned_labels = np.argmax(bad, axis=1), np.argmax(pruned, axis=1)
        pruned_probabilities = np.asarray(pruned, dtype=np.float64)
        if self._logits:
            pruned_probabilities = _softmax(pruned_probabilities)
        scores = _metrics.disagreement_scores(probabilities, pruned_probabilities, bad_labels, pruned_labels)
        return probabilities, bad_labels, pruned_labels, scores

    def _all_outputs(
        self, x: "np.ndarray | Iterable", batch_size: int, name: str = "x"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """
        :meth:`_outputs` of inputs given as an array or as a stream of batches (see :meth:`predict`).

        :param x: Inputs: an array, or a stream of batches of inputs or of ``(x, y)`` pairs whose ``y`` is ignored.
        :param batch_size: Samples per forward pass.
        :param name: Name of the inputs in error messages.
        :return: As :meth:`_outputs`, concatenated over the stream's batches.
        :raises ValueError: If a batch is bad (naming it), or the stream is empty.
        """
        if not is_stream(x):
            return self._outputs(self._prepare(x, name), batch_size)
        parts = []
        warned = False
        for batch in StreamBatches(x, self._input_shape, name, labels="ignored").batches():
            if not warned:
                warned = warn_outside_clip_values(batch.x, self.clip_values, logger, "Inputs given to the GoodNet")
            try:
                parts.append(self._outputs(self._prepare(batch.x, name, warn=False), batch_size))
            except ValueError as error:
                raise ValueError(f"{name}, batch {batch.index} (from sample {batch.start}): {error}") from None
        return tuple(np.concatenate(column) for column in zip(*parts))  # type: ignore[return-value]

    def _flagged(self, scores: np.ndarray) -> np.ndarray | None:
        """
        :param scores: Scores of the inputs (:meth:`score`).
        :return: ``score > threshold_`` once calibrated; ``None`` (the label rule) before.
        """
        if self.threshold_ is None:
            return None
        return scores > goodnet_format.checked_threshold(self.threshold_, "threshold_")

    def score(self, x: "np.ndarray | Iterable", batch_size: int = 128) -> np.ndarray:
        """
        A continuous detection score per input, higher = more likely triggered, from one batched pass of B and one
        of B':

        ``s(x) = [ŷ_B'(x) ≠ ŷ_B(x)] + (1 − p_B'(ŷ_B(x) | x))``

        the probability mass B' takes away from B's answer ``ŷ_B``, plus 1 where the labels differ (``p_B'`` is B''s
        softmax output, or the softmax of its logits). Where B and B' agree the score lies in [0, 1 − 1/N]; where
        they differ, in [1.5, 2] (B' then keeps at most half its mass on B's label). So every input the label rule
        flags scores above every input it does not, ``score > 1`` is exactly the label rule, and a threshold chosen
        by :meth:`calibrate` trades false alarms for detections continuously within each group. Without the
        indicator, ``1 − p_B'(ŷ_B)`` alone would not separate the two groups for N > 2 (an agreeing input on which
        B' is unsure can score higher than a disagreeing one).

        :param x: Inputs: a numpy array, or a stream of batches (a ``tf.data.Dataset``, a list of batches, a
               generator) of inputs or of ``(x, y)`` pairs whose ``y`` is ignored, read once, batch by batch.
        :param batch_size: Samples per forward pass.
        :return: Scores of shape ``(n,)``, float64, in [0, 2].
        :raises ValueError: If the inputs have the wrong shape, or the networks' output (hence the score) is NaN or
                infinite for some inputs (naming how many).
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        return self._all_outputs(x, batch_size)[3]

    def calibrate(
        self, x_clean: "np.ndarray | Iterable", false_positive_rate: float = 0.01, batch_size: int = 128
    ) -> float:
        """
        Choose the conformal threshold on clean inputs that B' never saw, and from then on flag (class N, or
        abstain) the inputs with ``score > threshold_``. The threshold is the ``⌈(n + 1)(1 − α)⌉``-th smallest of
        the n clean scores (ties at it are not flagged): if the calibration inputs and a fresh clean input are
        exchangeable, the fresh input is flagged with probability at most α; the rate one calibration set gives
        lies in the band logged here (:func:`~art_pruning_defense._metrics.conformal_band`), the wider the fewer
        inputs. The data must be unseen by B': inputs that fine-tuned B' score lower than fresh ones, and the rate
        on fresh clean inputs then exceeds α (12.8 times on one ResNet-20). ``FinePruning(...,
        calibration_fraction=…)`` holds such data out and calibrates with ``defence(..., false_positive_rate=α)``.
        Nothing holds under distribution shift (inputs unlike the calibration data). The threshold and the rate
        are stored as ``threshold_`` and ``false_positive_rate_`` and saved with the GoodNet; set both to ``None``
        to return to the label rule.

        :param x_clean: Clean inputs that B' never saw (not its fine-tuning data), at least ``1/α − 1`` of them
               (99 for α = 0.01): an array, or a stream of batches as for :meth:`predict` (its size is then
               checked after the pass).
        :param false_positive_rate: The share of clean inputs that may be flagged, in (0, 1).
        :param batch_size: Samples per forward pass.
        :return: The threshold (float64).
        :raises TypeError: If ``false_positive_rate`` is not a number or ``x_clean`` not a numeric array.
        :raises ValueError: If the rate is outside (0, 1), ``x_clean`` has the wrong per-sample shape or too few
                samples, or some scores are NaN; all but the last before any forward pass.
        """
        false_positive_rate = _metrics.check_false_positive_rate(false_positive_rate)
        if not is_stream(x_clean):
            x_clean = check_inputs(x_clean, self._input_shape, "x_clean")
            _metrics.check_calibration_size(len(x_clean), false_positive_rate, "x_clean")
        batch_size = check_positive_int(batch_size, "batch_size")
        scores = self._all_outputs(x_clean, batch_size, "x_clean")[3]
        _metrics.check_calibration_size(len(scores), false_positive_rate, "x_clean")
        threshold = _metrics.calibrate_threshold(scores, false_positive_rate)
        self.threshold_ = threshold
        self.false_positive_rate_ = false_positive_rate
        low, high = _metrics.conformal_band(len(scores), false_positive_rate)
        logger.info(
            "Calibrated the GoodNet at a false-positive rate of %g on %d clean inputs: threshold %.6g flags %d of "
            "them; on fresh clean inputs the rate is at most %g on average, within [%.3g, %.3g] with 95%% "
            "probability over the calibration data.",
            false_positive_rate,
            len(scores),
            threshold,
            int(np.count_nonzero(scores > threshold)),
            false_positive_rate,
            low,
            high,
        )
        return threshold

    def _predict(self, x: "np.ndarray | Iterable", batch_size: int = 128) -> np.ndarray:
        """
        :meth:`predict` on an array or a stream of batches (see :class:`_StreamPredict`).
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        probabilities, bad_labels, pruned_labels, scores = self._all_outputs(x, batch_size)
        outputs = _sweep.goodnet_scores(
            probabilities, pruned_labels, bad_labels=bad_labels, abstain=self.abstain, flagged=self._flagged(scores)
        )
        return self._apply_postprocessing(outputs, fit=False)

    def predict_labels(self, x: "np.ndarray | Iterable", batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """
        :param x: Inputs: a numpy array, or a stream of batches (a ``tf.data.Dataset``, a list of batches, a
               generator) of inputs or of ``(x, y)`` pairs whose ``y`` is ignored, read once, batch by batch.
        :param batch_size: Samples per forward pass.
        :return: ``(labels of B, labels of B')``.
        :raises ValueError: If the networks' output is NaN or infinite for some input.
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        _, bad_labels, pruned_labels, _ = self._all_outputs(x, batch_size)
        return bad_labels, pruned_labels

    def labels_and_scores(
        self, x: "np.ndarray | Iterable", batch_size: int = 128
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """
        :meth:`predict_labels` and :meth:`score` from the same single pass of each network.

        :param x: Inputs: a numpy array, or a stream of batches (a ``tf.data.Dataset``, a list of batches, a
               generator) of inputs or of ``(x, y)`` pairs whose ``y`` is ignored, read once, batch by batch.
        :param batch_size: Samples per forward pass.
        :return: ``(labels of B, labels of B', scores)``.
        :raises ValueError: If the networks' output is NaN or infinite for some input.
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        _, bad_labels, pruned_labels, scores = self._all_outputs(x, batch_size)
        return bad_labels, pruned_labels, scores

    def predict_classes(self, x: "np.ndarray | Iterable", batch_size: int = 128) -> np.ndarray:
        """
        :param x: Inputs: a numpy array, or a stream of batches (a ``tf.data.Dataset``, a list of batches, a
               generator) of inputs or of ``(x, y)`` pairs whose ``y`` is ignored, read once, batch by batch.
        :param batch_size: Samples per forward pass.
        :return: One class per input in [0, N], N meaning "poisoned input" (also with ``abstain``, whose scores
                 would read an abstained row as class 0).
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        _, bad_labels, pruned_labels, scores = self._all_outputs(x, batch_size)
        return _sweep.goodnet_labels(bad_labels, pruned_labels, self._n_classes, self._flagged(scores))

    def loss_gradient(self, x: np.ndarray, y: np.ndarray, **kwargs) -> np.ndarray:
        """
        Not supported: a GoodNet is not differentiable.

        :raises NotImplementedError: Always.
        """
        raise NotImplementedError(NOT_DIFFERENTIABLE.format(what="loss gradient"))

    def class_gradient(self, x: np.ndarray, label: Any = None, **kwargs) -> np.ndarray:
        """
        Not supported: a GoodNet is not differentiable.

        :raises NotImplementedError: Always.
        """
        raise NotImplementedError(NOT_DIFFERENTIABLE.format(what="class gradient"))

    def evaluate(
        self,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
        poisoned_x: np.ndarray | None = None,
        poisoned_target: int | np.ndarray | None = None,
        batch_size: int = 128,
    ) -> dict[str, dict[str, float | None]]:
        """
        Clean accuracy, attack success rate and the share of inputs sent to class N, for B, B' and GoodNet.

        :param x: Clean inputs (optional).
        :param y: Their labels, integers or one-hot (with ``x``).
        :param poisoned_x: Inputs carrying the trigger (optional).
        :param poisoned_target: The attack target: one int, or one label per poisoned input (with ``poisoned_x``).
        :param batch_size: Samples per forward pass.
        :return: ``{"B": row, "B'": row, "GoodNet": row}`` (see :func:`art_pruning_defense._sweep.compare_labels`);
                 once calibrated, the GoodNet's flags are ``score > threshold_``.
        """
        n = self.n_classes
        if (x is None) != (y is None) or (poisoned_x is None) != (poisoned_target is None):
            raise ValueError("Give x with y, and poisoned_x with poisoned_target.")
        if x is None and poisoned_x is None:
            raise ValueError("Nothing to evaluate: give clean data (x, y), poisoned data, or both.")
        labels = bad = pruned = target = poisoned_bad = poisoned_pruned = flagged = poisoned_flagged = None
        if x is not None:
            x = check_inputs(x, self._input_shape, "x")
            labels = check_labels(y, len(x), n, "y")
        if poisoned_x is not None:
            poisoned_x = check_inputs(poisoned_x, self._input_shape, "poisoned_x")
            target = check_target(poisoned_target, len(poisoned_x), n, "poisoned_target")
        batch_size = check_positive_int(batch_size, "batch_size")
        if x is not None:
            _, bad, pruned, scores = self._all_outputs(x, batch_size)
            flagged = self._flagged(scores)
        if poisoned_x is not None:
            prepared = self._prepare(poisoned_x, "poisoned_x")
            _, poisoned_bad, poisoned_pruned, scores = self._outputs(prepared, batch_size)
            poisoned_flagged = self._flagged(scores)
        return _sweep.compare_labels(
            n, labels, bad, pruned, target, poisoned_bad, poisoned_pruned, flagged, poisoned_flagged
        )

    def fit(self, x: np.ndarray, y: np.ndarray, **kwargs) -> None:
        """
        Not supported: a GoodNet is built by :class:`~art_pruning_defense.FinePruning`, not trained.
        """
        raise NotImplementedError("A GoodNet is not trained; build it with FinePruning(...)(classifier, X).")

    # ------------------------------------------------------------------------------------------ persistence

    def _preprocessing_config(self) -> dict | None:
        if self.preprocessing_defences:
            raise ValueError("A GoodNet with preprocessing defences cannot be saved; save it without them.")
        if self.postprocessing_defences:
            raise ValueError("A GoodNet with postprocessing defences cannot be saved; save it without them.")
        if self.preprocessing is None:
            return None
        if isinstance(self.preprocessing, StandardisationMeanStd):
            return {
                "mean": np.asarray(self.preprocessing.mean).tolist(),
                "std": np.asarray(self.preprocessing.std).tolist(),
            }
        raise ValueError(
            f"Only (mean, std) preprocessing can be saved with a GoodNet, got {type(self.preprocessing).__name__}."
        )

    def save(self, path: str, overwrite: bool = False) -> None:
        """
        Save B, B' (Keras 3 ``.keras`` files, loadable without custom code) and the metadata (JSON) into the
        directory ``path``, atomically.

        :param path: Directory to create.
        :param overwrite: Replace an existing directory: only one that art-prune wrote (it holds the marker file
                          ``.art-prune-output``), never a symbolic link or the current directory.
        :raises FileExistsError: If ``path`` exists and ``overwrite`` is false.
        :raises ValueError: If ``path`` may not be replaced.
        """
        clip = None if self.clip_values is None else np.asarray(self.clip_values).tolist()
        config = {
            "nb_classes": self.nb_classes,
            "abstain": self.abstain,
            "clip_values": clip,
            "preprocessing": self._preprocessing_config(),
            "metadata": self.metadata,
            "threshold": self.threshold_,
            "false_positive_rate": self.false_positive_rate_,
        }
        goodnet_format.write(path, self._bad, self._pruned, config, overwrite=overwrite)
        logger.info("Saved GoodNet to %s.", path)

    @classmethod
    def load(cls, path: str, safe_mode: bool = True) -> "GoodNetClassifier":
        """
        :param path: A directory written by :meth:`save`.
        :param safe_mode: Refuse model files that would run code when loaded (Keras ``safe_mode``).
        :return: The GoodNet.
        """
        saved = goodnet_format.read(path, safe_mode=safe_mode)
        goodnet = cls(
            bad_model=saved.bad_model,
            pruned_model=saved.pruned_model,
            clip_values=saved.clip_values,
            preprocessing=saved.preprocessing,
            metadata=saved.metadata,
            abstain=saved.abstain,
        )
        if goodnet.nb_classes != saved.nb_classes:
            raise ValueError(
                f"{path}: the models have {goodnet.n_classes} classes, so nb_classes must be {goodnet.nb_classes} "
                f"(abstain={goodnet.abstain}), but the metadata says {saved.nb_classes}."
            )
        goodnet.threshold_ = saved.threshold
        goodnet.false_positive_rate_ = saved.false_positive_rate
        return goodnet
