"""
This module implements a poison detector on top of fine-pruning, with ART's poison-filtering contract: a training
sample is flagged as poisoned where the original network B and its (fine-)pruned copy B' disagree on it.

| Paper link: https://arxiv.org/abs/1805.12185

1. Fit :class:`~art_pruning_defense.FinePruning` on the defender's clean validation data.
2. Predict every training sample with B and with B' (fine-pruned where ``fine_tune_epochs > 0``, else B'(X)).
3. Report a sample as clean (1) where both agree, as poisoned (0) where they differ, and a continuous score per
   sample (the GoodNet's :meth:`~art_pruning_defense.GoodNetClassifier.score`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from art.defences.detector.poison.ground_truth_evaluator import GroundTruthEvaluator
from art.defences.detector.poison.poison_filtering_defence import PoisonFilteringDefence
from art.utils import segment_by_class

from art_pruning_defense._stream import is_one_shot, is_stream
from art_pruning_defense._validation import check_inputs, check_labels
from art_pruning_defense.fine_pruning import (
    DEFAULT_FINE_TUNE_LEARNING_RATE,
    DEFAULT_PRUNE_UNTIL,
    RECOMMENDED_FINE_TUNE_EPOCHS,
    FinePruning,
)

if TYPE_CHECKING:
    from art.utils import CLASSIFIER_TYPE

logger = logging.getLogger(__name__)


class FinePruningDetector(PoisonFilteringDefence):
    """
    Flag the training samples on which a classifier and its fine-pruned copy disagree.

    | Paper link: https://arxiv.org/abs/1805.12185
    """

    defence_params = [
        "classifier",
        "layer_name",
        "accuracy_drop",
        "fine_tune_epochs",
        "fine_tune_learning_rate",
        "prune_until",
        "batch_size",
        "verbose",
    ]

    def __init__(
        self,
        classifier: "CLASSIFIER_TYPE",
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_val: "np.ndarray | Iterable",
        y_val: np.ndarray | None,
        layer_name: str | None = None,
        accuracy_drop: float = 10.0,
        fine_tune_epochs: int = RECOMMENDED_FINE_TUNE_EPOCHS,
        fine_tune_learning_rate: float = DEFAULT_FINE_TUNE_LEARNING_RATE,
        prune_until: float = DEFAULT_PRUNE_UNTIL,
        batch_size: int = 256,
        verbose: bool = True,
    ) -> None:
        """
        Create a fine-pruning poison detector.

        :param classifier: The classifier trained on the (possibly poisoned) training data.
        :param x_train: The training data to filter.
        :param y_train: Its labels (integers or one-hot), as used in training.
        :param x_val: The defender's clean validation data: an array, or a re-iterable stream of ``(x, y)`` batches
               (a ``tf.data.Dataset``, a list of batches; not a one-shot generator, as each :meth:`detect_poison`
               reads it anew), read batch by batch so that memory is bounded by a batch (see
               :meth:`FinePruning.fit`).
        :param y_val: Its labels (integers or one-hot); ``None`` where ``x_val`` is a stream (its batches carry them).
        :param layer_name: The layer to prune (``None``: the last Conv2D).
        :param accuracy_drop: X of the pruned B' when fine-tuning is off.
        :param fine_tune_epochs: Fine-tuning epochs after pruning to ``prune_until``; 0 compares B with B'(X).
        :param fine_tune_learning_rate: The initial learning rate of fine-tuning (see :class:`FinePruning`).
        :param prune_until: How far clean accuracy may fall (points) before fine-tuning.
        :param batch_size: Samples per forward pass.
        :param verbose: Show progress bars.
        """
        super().__init__(classifier, x_train, y_train)
        self.x_val = x_val
        self.y_val = y_val
        self.layer_name = layer_name
        self.accuracy_drop = accuracy_drop
        self.fine_tune_epochs = fine_tune_epochs
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.prune_until = prune_until
        self.batch_size = batch_size
        self.verbose = verbose
        self.defence_: FinePruning | None = None
        self._check_params()

    def _defence(self) -> FinePruning:
        return FinePruning(
            self.classifier,
            layer_name=self.layer_name,
            accuracy_drops=(self.accuracy_drop,),
            batch_size=self.batch_size,
            fine_tune_epochs=self.fine_tune_epochs,
            fine_tune_learning_rate=self.fine_tune_learning_rate,
            prune_until=self.prune_until,
            verbose=self.verbose,
        )

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
                 equals ``is_clean_lst == 0``; ranking by the score (e.g. for AUROC) also orders each group.
        """
        self.set_params(**kwargs)
        defence = self._defence()
        defence.fit(self.x_val, self.y_val)
        goodnet = (
            defence(self.classifier) if self.fine_tune_epochs > 0 else defence(self.classifier, self.accuracy_drop)
        )
        bad, pruned, scores = goodnet.labels_and_scores(self.x_train, self.batch_size)  # one pass of B and of B'
        is_clean = (bad == pruned).astype(int)
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
        }
        self.defence_ = defence
        logger.info("Flagged %d of %d training samples.", report["n_flagged"], len(is_clean))
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
