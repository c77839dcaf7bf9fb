"""
This module implements a poison detector on top of fine-pruning, with ART's poison-filtering contract: a training
sample is flagged as poisoned where the original network B and its (fine-)pruned copy B' disagree on it.

| Paper link: https://arxiv.org/abs/1805.12185

1. Fit :class:`~art_pruning_defense.FinePruning` on the defender's clean validation data.
2. Predict every training sample with B and with B' (fine-pruned where ``fine_tune_epochs > 0``, else B'(X)).
3. Report a sample as clean (1) where both agree, as poisoned (0) where they differ, and a continuous score per
   sample (the GoodNet's :meth:`~art_pruning_defense.GoodNetClassifier.score`). With ``false_positive_rate``, a
   share of the validation data is held out of step 1 and a sample is flagged where its score exceeds the conformal
   threshold chosen on that share: a clean sample is then flagged with probability at most that rate.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from art.defences.detector.poison.ground_truth_evaluator import GroundTruthEvaluator
from art.defences.detector.poison.poison_filtering_defence import PoisonFilteringDefence
from art.utils import segment_by_class

from art_pruning_defense import _holdout, _metrics, _sanity
from art_pruning_defense._defaults import RECOMMENDED_CALIBRATION_FRACTION
from art_pruning_defense._stream import is_one_shot, is_stream
from art_pruning_defense._validation import check_inputs, check_labels
from art_pruning_defense._params import DEFAULTS, PARAMS, docstring_fields
from art_pruning_defense.fine_pruning import RECOMMENDED_FINE_TUNE_EPOCHS, FinePruning

if TYPE_CHECKING:
    from art.utils import CLASSIFIER_TYPE

logger = logging.getLogger(__name__)

#: The detector's defaults: FinePruning's, with one X (10) instead of several and fine-pruning on (the recommended
#: epochs), as a detector compares B with the fine-pruned B'.
DETECTOR_DEFAULTS = {
    "accuracy_drop": 10.0,
    "false_positive_rate": None,
    **{name: value for name, value in DEFAULTS.items() if name != "accuracy_drops"},
    "fine_tune_epochs": RECOMMENDED_FINE_TUNE_EPOCHS,
}


class FinePruningDetector(PoisonFilteringDefence):
    """
    Flag the training samples on which a classifier and its fine-pruned copy disagree.

    | Paper link: https://arxiv.org/abs/1805.12185
    """

    #: FinePruning's parameters that the detector passes on (all but ``accuracy_drops``: it takes one X).
    shared_params = [name for name in PARAMS if name != "accuracy_drops"]
    defence_params = ["classifier", "accuracy_drop", "false_positive_rate", *shared_params]

    def __init__(
        self,
        classifier: "CLASSIFIER_TYPE",
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_val: "np.ndarray | Iterable",
        y_val: np.ndarray | None,
        **params: Any,
    ) -> None:
        unknown = sorted(set(params) - set(self.defence_params[1:]))
        if unknown:
            raise TypeError(
                f"FinePruningDetector got unexpected parameter(s) {', '.join(map(repr, unknown))}; its parameters "
                f"are: {', '.join(self.defence_params[1:])}."
            )
        super().__init__(classifier, x_train, y_train)
        self.x_val = x_val
        self.y_val = y_val
        for name, default in DETECTOR_DEFAULTS.items():
            setattr(self, name, params.get(name, default))
        self.defence_: FinePruning | None = None
        self._check_params()

    def _calibration_fraction(self) -> float | None:
        """
        :return: The share of the validation data held out: ``calibration_fraction``, or the recommended one where
                 a false-positive rate is asked for without it.
        """
        if self.calibration_fraction is None and self.false_positive_rate is not None:
            return RECOMMENDED_CALIBRATION_FRACTION
        return self.calibration_fraction

    def _defence(self) -> FinePruning:
        params = {name: getattr(self, name) for name in self.shared_params}
        params["calibration_fraction"] = self._calibration_fraction()
        return FinePruning(self.classifier, accuracy_drops=(self.accuracy_drop,), **params)

    def _check_params(self) -> None:
        self._defence()  # FinePruning validates the classifier, the layer and every shared parameter
        n_classes = self.classifier.nb_classes
        check_inputs(self.x_train, self.classifier.input_shape, "x_train")
        check_labels(self.y_train, len(self.x_train), n_classes, "y_train")
        if is_stream(self.x_val):
            # Its batches are checked as FinePruning.fit reads them; the labels travel in them.
            if self.y_val is not None:
                raise TypeError(
                    "x_val is a stream of batches, whose labels travel in the batches as (x, y) pairs: y_val must be "
                    "None."
                )
            if is_one_shot(self.x_val):
                raise ValueError(
                    "x_val is a one-shot iterator (a generator), but the detector reads it on every detect_poison "
                    "(and evaluate_defence) call, and once per fine-tuning epoch: pass a re-iterable instead (a "
                    "tf.data.Dataset, a list of batches, or an object whose __iter__ returns a fresh iterator)."
                )
        else:
            check_inputs(self.x_val, self.classifier.input_shape, "x_val")
            check_labels(self.y_val, len(self.x_val), n_classes, "y_val")
        if self.false_positive_rate is not None:
            self.false_positive_rate = _metrics.check_false_positive_rate(self.false_positive_rate)
            if is_stream(self.x_val):
                raise ValueError(
                    "false_positive_rate holds part of x_val out to calibrate, which needs x_val and y_val as arrays, "
                    "not a stream of batches."
                )
            _holdout.check_holdout(len(self.x_val), self._calibration_fraction(), self.false_positive_rate, "x_val")

    def detect_poison(self, **kwargs: Any) -> tuple[dict, list[int]]:
        """
        Fit fine-pruning on the validation data and flag the training samples on which B and B' disagree.

        :param kwargs: Parameters to change first (any of ``defence_params``).
        :return: ``(report, is_clean_lst)``: ``is_clean_lst[i]`` is 1 if ``x_train[i]`` looks clean, 0 if it is
                 flagged. The report holds ``n_flagged``, ``flagged_by_class`` (by training label), ``method``,
                 ``pruned_channels``, the fitted ``FinePruning`` summary (``fine_tune``) and ``scores``: the
                 GoodNet's continuous score per training sample (float64 array of shape ``(n,)``, in [0, 2], higher =
                 more likely poisoned; see :meth:`GoodNetClassifier.score`), from the same single pass of B and B'
                 as the flags. Flagged samples score at least 1.5, the others at most 1 − 1/N, so ``scores > 1``
                 equals ``is_clean_lst == 0``; ranking by the score (e.g. for AUROC) also orders each group. With
                 ``false_positive_rate``, a sample is flagged where ``scores > threshold`` instead (the report's
                 ``threshold``, chosen on the ``calibration_samples`` held-out validation images; both ``None``
                 otherwise).
        """
        self.set_params(**kwargs)
        defence = self._defence()
        defence.fit(self.x_val, self.y_val)
        drop = None if self.fine_tune_epochs > 0 else self.accuracy_drop
        goodnet = defence(self.classifier, drop, false_positive_rate=self.false_positive_rate)
        bad, pruned, scores = goodnet.labels_and_scores(self.x_train, self.batch_size)  # one pass of B and of B'
        flagged_samples = bad != pruned if goodnet.threshold_ is None else scores > goodnet.threshold_
        is_clean = (~flagged_samples).astype(int)
        labels = check_labels(self.y_train, len(self.x_train), self.classifier.nb_classes, "y_train")
        flagged = labels[is_clean == 0]
        report = {
            "n_flagged": int(np.count_nonzero(is_clean == 0)),
            "flagged_by_class": {
                f"class_{c}": int(np.count_nonzero(flagged == c)) for c in range(self.classifier.nb_classes)
            },
            "method": goodnet.metadata["method"],
            "pruned_channels": goodnet.metadata["pruned_channels"],
            "fine_tune": defence.fine_tune_,
            "scores": scores,
            "threshold": goodnet.threshold_,
            "calibration_samples": goodnet.metadata.get("calibration_samples"),
        }
        self.defence_ = defence
        logger.info("Flagged %d of %d training samples.", report["n_flagged"], len(is_clean))
        _sanity.warn_if_flags_most(100.0 * report["n_flagged"] / len(is_clean), "The detector flags the training set")
        return report, is_clean.tolist()

    def evaluate_defence(self, is_clean: np.ndarray, **kwargs: Any) -> str:
        """
        Score the detection against the ground truth, in the JSON layout of ART's ``ActivationDefence``: one
        confusion matrix per class (by training label).

        :param is_clean: Ground truth: ``is_clean[i] = 1`` if ``x_train[i]`` is clean, 0 if it is poison.
        :param kwargs: Parameters to change first (any of ``defence_params``).
        :return: JSON object with a confusion matrix per class.
        """
        is_clean = np.asarray(is_clean)
        if is_clean.ndim != 1 or len(is_clean) != len(self.x_train):
            raise ValueError(
                f"is_clean must hold one 0/1 value per training sample ({len(self.x_train)}), got shape "
                f"{is_clean.shape}."
            )
        if not np.all(np.isin(is_clean, (0, 1))):
            raise ValueError("is_clean must hold only 0 (poison) and 1 (clean).")
        _, assigned = self.detect_poison(**kwargs)
        n_classes = self.classifier.nb_classes
        labels = check_labels(self.y_train, len(self.x_train), n_classes, "y_train")
        assigned_by_class = segment_by_class(np.asarray(assigned), labels, n_classes)
        is_clean_by_class = segment_by_class(is_clean, labels, n_classes)
        _, confusion = GroundTruthEvaluator().analyze_correctness(assigned_by_class, is_clean_by_class)
        return confusion


def _constructor_docs() -> None:
    """
    Give ``FinePruningDetector.__init__`` the signature and parameter documentation of FinePruning's declarations.
    """
    init = FinePruningDetector.__init__
    keyword = inspect.Parameter.KEYWORD_ONLY
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    head = [
        inspect.Parameter(name, positional) for name in ("self", "classifier", "x_train", "y_train", "x_val", "y_val")
    ]
    tail = [inspect.Parameter(name, keyword, default=default) for name, default in DETECTOR_DEFAULTS.items()]
    init.__signature__ = inspect.Signature(head + tail, return_annotation="None")
    init.__doc__ = (
        "Create a fine-pruning poison detector. Every parameter after ``y_val`` is a keyword argument.\n\n"
        ":param classifier: The classifier trained on the (possibly poisoned) training data.\n"
        ":param x_train: The training data to filter.\n"
        ":param y_train: Its labels (integers or one-hot), as used in training.\n"
        ":param x_val: The defender's clean validation data: an array, or a re-iterable stream of ``(x, y)`` batches "
        "(a ``tf.data.Dataset``, a list of batches; not a one-shot generator, as each :meth:`detect_poison` reads it "
        "anew), read batch by batch so that memory is bounded by a batch (see :meth:`FinePruning.fit`).\n"
        ":param y_val: Its labels (integers or one-hot); ``None`` where ``x_val`` is a stream (its batches carry "
        "them).\n"
        ":param accuracy_drop: X of the pruned B' when fine-tuning is off (default 10).\n"
        ":param false_positive_rate: Flag a training sample where its score exceeds the conformal threshold for this "
        "rate α, chosen on the share ``calibration_fraction`` of ``x_val`` held out of fine-pruning (default here: "
        f"{RECOMMENDED_CALIBRATION_FRACTION:g}), so that a clean sample is flagged with probability at most α; "
        "``None`` (default): where B and B' disagree.\n"
        + docstring_fields(FinePruningDetector.shared_params).replace(
            ":param fine_tune_epochs: ", f":param fine_tune_epochs: (Default here: {RECOMMENDED_FINE_TUNE_EPOCHS}.) "
        )
        + "\n"
    )


_constructor_docs()
