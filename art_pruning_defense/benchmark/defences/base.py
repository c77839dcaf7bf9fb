"""
What the defences share: the state of one run (:class:`Run`: configuration, data, the BadNet B and B's labels),
result rows, the metrics, and the handling of ART's output and failures.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from art.estimators.classification import KerasClassifier
from art.estimators.poison_mitigation.neural_cleanse.neural_cleanse import NeuralCleanseMixin
from art.utils import to_categorical

from art_pruning_defense import _holdout, _metrics, _sweep
from art_pruning_defense._defaults import RECOMMENDED_CALIBRATION_FRACTION
from art_pruning_defense.benchmark.config import BenchmarkConfig
from art_pruning_defense.benchmark.report import ROW_KEYS
from art_pruning_defense.benchmark.training import train_badnet
from art_pruning_defense.fine_pruning import FinePruning
from art_pruning_defense.goodnet import GoodNetClassifier
from art_pruning_defense.keras import BatchPredictor, outputs_probabilities
from art_pruning_defense.lab.digits import BadNetData

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

#: Label given to an abstention (an all-zero score row) of an ART abstaining predictor.
ABSTAIN = -1

#: The false-positive rate (a share) at which ``tpr_at_1pct_fpr`` is read.
DETECTION_FPR = 0.01

#: The false-positive rates (shares) of the calibrated detectors' rows.
CALIBRATION_RATES = (0.01, 0.05)

#: Images per call of ART's ``get_activations`` for the filtering defences: a multiple of the batch of 32 that
#: ``keras.Model.predict`` uses there, so that the batches, and so the activations, are those of one whole call.
ACTIVATION_CHUNK = 4096


@dataclass
class Run:
    """
    The state shared by the defences: configuration, data, the BadNet B and B's labels on the evaluation sets.
    """

    config: BenchmarkConfig
    data: BadNetData
    classifier: KerasClassifier
    verbose: bool
    _labels: dict[str, np.ndarray] = field(default_factory=dict)

    def fine_pruning(self, **params: object) -> FinePruning:
        """
        :param params: FinePruning parameters that differ from the cell's.
        :return: FinePruning on B with the cell's settings (its X, batch size, fine-tuning epochs and seed), quiet.
        """
        config = self.config
        cell = {
            "accuracy_drops": config.accuracy_drops,
            "batch_size": config.predict_batch_size,
            "fine_tune_epochs": config.fine_tune_epochs,
            "seed": config.seed,
            "verbose": False,
        }
        return FinePruning(self.classifier, **{**cell, **params})

    @property
    def calibration_fraction(self) -> float:
        """
        :return: The share of the clean validation split held out to calibrate the detectors: the recommended one,
                 raised where that would leave fewer images than the smallest rate of :data:`CALIBRATION_RATES`
                 needs (digits: 99 of 300 for 1 %).
        """
        needed = _metrics.min_calibration_samples(min(CALIBRATION_RATES))
        return max(RECOMMENDED_CALIBRATION_FRACTION, needed / len(self.data.x_valid))

    def calibration_split(self) -> tuple[np.ndarray, np.ndarray]:
        """
        :return: ``(fit indices, calibration indices)`` into the clean validation split: the split that
                 ``FinePruning(calibration_fraction=..., seed=...)`` draws with the cell's seed.
        """
        fraction = self.calibration_fraction
        _holdout.check_holdout(len(self.data.x_valid), fraction, min(CALIBRATION_RATES), "The validation split")
        return _holdout.holdout_split(len(self.data.x_valid), fraction, self.config.seed)

    @property
    def model(self) -> "keras.Model":
        """
        :return: B's Keras model.
        """
        return self.classifier.model

    def bad_labels(self, name: str) -> np.ndarray:
        """
        :param name: ``"test"``, ``"test_poisoned"`` or ``"train"``.
        :return: B's labels on that set (computed once).
        """
        if name not in self._labels:
            x = {"test": self.data.x_test, "test_poisoned": self.data.x_test_poisoned, "train": self.data.x_train}
            self._labels[name] = self.labels_of(self.model, x[name])[0]
        return self._labels[name]

    def labels_of(self, model: "keras.Model", *xs: np.ndarray) -> tuple[np.ndarray, ...]:
        """
        :return: The labels a Keras model predicts for each of ``xs``.
        """
        predict = BatchPredictor(model, labels_only=True)
        return tuple(predict(x, self.config.predict_batch_size) for x in xs)

    def evaluate(self, goodnet: GoodNetClassifier) -> dict[str, dict[str, float | None]]:
        """
        :return: ``goodnet.evaluate`` on the clean and triggered test data: rows for B, B' and GoodNet.
        """
        data = self.data
        return goodnet.evaluate(
            data.x_test, data.y_test, data.x_test_poisoned, data.target, batch_size=self.config.predict_batch_size
        )

    def evaluate_scored(self, goodnet: GoodNetClassifier) -> tuple[dict[str, dict[str, float | None]], "_Scored"]:
        """
        Like :meth:`evaluate`, and the GoodNet's continuous score on the same pass of each network.

        :return: ``(rows for B, B' and GoodNet, the labels and scores behind them)``.
        """
        data, batch = self.data, self.config.predict_batch_size
        bad, pruned, scores = goodnet.labels_and_scores(data.x_test, batch_size=batch)
        poisoned_bad, poisoned_pruned, poisoned_scores = goodnet.labels_and_scores(data.x_test_poisoned, batch)
        scored = _Scored(bad, pruned, scores, poisoned_bad, poisoned_pruned, poisoned_scores)
        return scored.compare(self, goodnet.threshold_), scored

    def detection_rates(self, pruned: "keras.Model") -> tuple[float | None, float | None, float | None]:
        """
        The rule of :class:`~art_pruning_defense.FinePruningDetector`: a training sample is flagged where B and B'
        disagree; its report's ``"scores"`` (the GoodNet score) rank them.

        :param pruned: B'.
        :return: ``(TPR, FPR, AUROC)`` on the training set: TPR and FPR percent, AUROC of the GoodNet score (``None``
                 where the training set holds no poison or no clean samples).
        """
        bad = self.train_probabilities()
        pruned_probabilities = as_probabilities(
            pruned, BatchPredictor(pruned)(self.data.x_train, self.config.predict_batch_size)
        )
        scores = _metrics.disagreement_scores(bad, pruned_probabilities)
        flagged = scores > _metrics.LABEL_RULE_THRESHOLD
        tpr, fpr = detection_rates(flagged, self.data.is_poison_train)
        return tpr, fpr, _auroc(scores, self.data.is_poison_train)

    def train_probabilities(self) -> np.ndarray:
        """
        :return: B's probabilities on the training set (computed once).
        """
        key = "train:probabilities"
        if key not in self._labels:
            outputs = BatchPredictor(self.model)(self.data.x_train, self.config.predict_batch_size)
            self._labels[key] = as_probabilities(self.model, outputs)
        return self._labels[key]

    def chunked_classifier(self) -> KerasClassifier:
        """
        :return: B as an ART classifier whose ``get_activations`` runs slice by slice (:class:`ChunkedActivations`),
                 for ART's filtering defences.
        """
        return ChunkedActivations(self.model, clip_values=self.classifier.clip_values)

    def retune(self, model: "keras.Model") -> dict[str, float]:
        """
        The re-tuning attack on a repaired model, for each k of the cell's ``retune_poisons``
        (:func:`~art_pruning_defense.benchmark.retune.retune_columns`).

        :param model: The repaired model (not modified).
        :return: The row's ``asr_after_retune_k<k>`` and ``clean_after_retune_k<k>`` (empty without re-tuning).
        """
        from art_pruning_defense.benchmark.retune import retune_columns

        config = self.config
        return retune_columns(model, self.data, config.retune_poisons, config.seed, config.predict_batch_size)

    def train_cnn(self, x: np.ndarray, y: np.ndarray, rows: np.ndarray | None = None) -> KerasClassifier:
        """
        Train a fresh CNN the way B was trained (same architecture, seed, epochs and batch size).

        :param rows: Train on these samples of ``x`` and ``y`` only (no copy of them is kept); ``None``: all.
        :return: It, wrapped as an ART ``KerasClassifier`` (inputs in [0, 1]).
        """
        return train_badnet(x, y, self.data.n_classes, self.config, rows=rows)


class ChunkedActivations(KerasClassifier):
    """
    B as ART's ``KerasClassifier``, with ``get_activations`` run over slices of :data:`ACTIVATION_CHUNK` inputs.

    ART's filtering defences (activation clustering, spectral signatures) ask for the activations of the whole
    training set in one call, and ART converts the whole array into a TensorFlow tensor before predicting: a second
    float copy of the training set (0.6 GB for 50,000 32×32 colour images). Slices bound that copy by the slice.
    """

    def get_activations(
        self, x: np.ndarray, layer: int | str, batch_size: int = 128, framework: bool = False
    ) -> np.ndarray:
        """
        ART's ``get_activations``, slice by slice (the activations of one whole call, in order).
        """
        whole = super().get_activations
        if framework or len(x) <= ACTIVATION_CHUNK:
            return whole(x, layer, batch_size=batch_size, framework=framework)
        slices = (x[start : start + ACTIVATION_CHUNK] for start in range(0, len(x), ACTIVATION_CHUNK))
        return np.concatenate([np.asarray(whole(part, layer, batch_size=batch_size)) for part in slices])


def as_probabilities(model: "keras.Model", outputs: np.ndarray) -> np.ndarray:
    """
    :return: ``outputs`` of ``model`` as probabilities (float64; the softmax where the model outputs logits).
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs_probabilities(model):
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@dataclass
class _Scored:
    """
    Labels of B and B' and the GoodNet score on the clean and the triggered test sets, from one pass of each network.
    """

    bad: np.ndarray
    pruned: np.ndarray
    scores: np.ndarray
    poisoned_bad: np.ndarray
    poisoned_pruned: np.ndarray
    poisoned_scores: np.ndarray

    def compare(self, run: Run, threshold: float | None = None) -> dict[str, dict[str, float | None]]:
        """
        :param threshold: Flag ``score > threshold`` (a calibrated GoodNet); ``None``: where B and B' differ.
        :return: Rows for B, B' and GoodNet (:func:`art_pruning_defense._sweep.compare_labels`).
        """
        data = run.data
        flagged = poisoned_flagged = None
        if threshold is not None:
            flagged, poisoned_flagged = self.scores > threshold, self.poisoned_scores > threshold
        target = np.full(len(data.x_test_poisoned), data.target, dtype=np.int64)
        return _sweep.compare_labels(
            data.n_classes,
            data.y_test,
            self.bad,
            self.pruned,
            target,
            self.poisoned_bad,
            self.poisoned_pruned,
            flagged,
            poisoned_flagged,
        )

    def detection(self) -> dict:
        """
        :return: ``auroc``, ``tpr_at_1pct_fpr`` and ``roc`` of the score, clean vs triggered test inputs.
        """
        return detection_on_test_set(self.scores, self.poisoned_scores)


def detection_on_test_set(clean_scores: np.ndarray, poisoned_scores: np.ndarray) -> dict:
    """
    :param clean_scores: A detector's score on the clean test inputs (higher = more likely triggered).
    :param poisoned_scores: Its score on the triggered test inputs.
    :return: Row figures: ``auroc`` (0–1), ``tpr_at_1pct_fpr`` (percent; the largest TPR of a threshold flagging at
             most 1 % of the clean inputs) and ``roc`` (:func:`art_pruning_defense._metrics.roc_points`).
    """
    scores = np.concatenate([np.asarray(clean_scores, np.float64), np.asarray(poisoned_scores, np.float64)])
    truth = np.concatenate([np.zeros(len(clean_scores), bool), np.ones(len(poisoned_scores), bool)])
    metrics = _metrics.detection_metrics(scores, truth, DETECTION_FPR)
    return {
        "auroc": metrics["auroc"],
        "tpr_at_1pct_fpr": metrics["tpr_at_fpr"],
        "roc": _metrics.roc_points(scores, truth),
    }


def calibrated_name(detector: str, rate: float) -> str:
    """
    :return: The name of a calibrated detector's row: ``"fine-pruning GoodNet (1% FPR)"``.
    """
    return f"{detector} ({100 * rate:g}% FPR)"


def calibration_note(threshold: float, rate: float, n_calibration: int, n_valid: int) -> str:
    """
    :return: How a calibrated row's threshold was chosen: on how many held-out images, and the band of the rate.
    """
    low, high = _metrics.conformal_band(n_calibration, rate)
    return (
        f"score > {threshold:.4f}, the conformal threshold for {100 * rate:g} % from {n_calibration} of the {n_valid} "
        f"clean validation images, held out of the defence's fitting; on fresh clean inputs the rate lies in "
        f"[{100 * low:.2f}, {100 * high:.2f}] % with 95 % probability"
    )


def _auroc(scores: np.ndarray, is_poison: np.ndarray) -> float | None:
    """
    :return: AUROC of training-set scores against the poison mask (``None`` without both kinds of samples).
    """
    is_poison = np.asarray(is_poison, dtype=bool)
    if is_poison.all() or not is_poison.any():
        return None
    return _metrics.detection_metrics(scores, is_poison, DETECTION_FPR)["auroc"]


def make_row(
    defence: str,
    seconds: float,
    clean_accuracy: float | None = None,
    attack_success_rate: float | None = None,
    poison_detection_tpr: float | None = None,
    poison_detection_fpr: float | None = None,
    poisoned_flagged: float | None = None,
    clean_flagged: float | None = None,
    auroc: float | None = None,
    tpr_at_1pct_fpr: float | None = None,
    poison_detection_auroc: float | None = None,
    note: str | None = None,
    error: str | None = None,
    roc: dict | None = None,
    peak_rss_mib: float | None = None,
    retune: dict[str, float] | None = None,
) -> dict:
    """
    :param retune: The re-tuning attack's figures of the row's repaired model (:meth:`Run.retune`), added as they are.
    :param auroc: AUROC (0–1) of the row's test-time detector, clean vs triggered test inputs.
    :param tpr_at_1pct_fpr: Its TPR (percent) at 1 % FPR on the same inputs.
    :param poison_detection_auroc: AUROC of the row's training-set score (poisoned vs clean training samples).
    :param roc: The test-time detector's ROC curve (:func:`art_pruning_defense._metrics.roc_points`).
    :return: A result row with every key of :data:`ROW_KEYS`, numbers as plain floats (JSON-ready).
    """
    values = {
        "defence": defence,
        "clean_accuracy": clean_accuracy,
        "attack_success_rate": attack_success_rate,
        "poison_detection_tpr": poison_detection_tpr,
        "poison_detection_fpr": poison_detection_fpr,
        "poisoned_flagged": poisoned_flagged,
        "clean_flagged": clean_flagged,
        "auroc": auroc,
        "tpr_at_1pct_fpr": tpr_at_1pct_fpr,
        "poison_detection_auroc": poison_detection_auroc,
        "seconds": round(float(seconds), 2),
        "note": note,
        "error": error,
        "roc": roc,
        "peak_rss_mib": None if peak_rss_mib is None else float(peak_rss_mib),
    }
    for key in ROW_KEYS[1:11]:
        if values[key] is not None:
            values[key] = float(values[key])
    values.update({key: float(value) for key, value in (retune or {}).items()})
    return values


def detection_rates(flagged: np.ndarray, is_poison: np.ndarray) -> tuple[float | None, float | None]:
    """
    :param flagged: Whether each training sample was flagged.
    :param is_poison: Whether each training sample is poison.
    :return: ``(TPR, FPR)``: percent of poisoned samples flagged, percent of clean samples flagged (``None`` where
             there are none).
    """
    flagged = np.asarray(flagged, dtype=bool)
    n_poison = int(np.count_nonzero(is_poison))
    n_clean = len(is_poison) - n_poison
    tpr = float(_sweep.percent(np.count_nonzero(flagged & is_poison), n_poison)) if n_poison else None
    fpr = float(_sweep.percent(np.count_nonzero(flagged & ~is_poison), n_clean)) if n_clean else None
    return tpr, fpr


def predict_in_chunks(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, chunk: int) -> np.ndarray:
    """
    Call an ART ``predict`` on consecutive slices of ``x`` and concatenate the results.

    ART's ``KerasClassifier.predict`` (and so Neural Cleanse's and STRIP's) sends the whole array through the network
    in one call, whatever its ``batch_size``: on the 10,000 MNIST test images the small CNN's two convolutions alone
    hold 2.3 GB at once, and TensorFlow keeps that memory for the rest of the process. Slices bound it by ``chunk``.
    The slices are taken in order, so a predictor that draws random numbers per input (STRIP) draws the same ones.

    :param predict: The predictor, called with one slice at a time.
    :param x: Inputs.
    :param chunk: Inputs per call.
    :return: The predictions of all of ``x``, in order.
    """
    if len(x) <= chunk:
        return np.asarray(predict(x))
    return np.concatenate([np.asarray(predict(x[start : start + chunk])) for start in range(0, len(x), chunk)])


def abstaining_labels(scores: np.ndarray) -> np.ndarray:
    """
    :param scores: Scores of an ART abstaining predictor, ``(n, N)``.
    :return: The argmax label per input, :data:`ABSTAIN` where the row is all zeros.
    """
    scores = np.asarray(scores)
    labels = np.argmax(scores, axis=1).astype(np.int64)
    labels[~np.any(scores != 0, axis=1)] = ABSTAIN
    return labels


def without_flags(metrics: dict[str, float | None]) -> dict[str, float | None]:
    """
    :return: Clean accuracy and attack success rate of a :meth:`GoodNetClassifier.evaluate` row.
    """
    return {key: metrics[key] for key in ("clean_accuracy", "attack_success_rate")}


def metrics_on_test_set(run: Run, clean: np.ndarray, poisoned: np.ndarray, flags: bool = False) -> dict:
    """
    :param clean: Labels predicted on the clean test set (:data:`ABSTAIN` or N for "flagged" where ``flags``).
    :param poisoned: Labels predicted on the triggered test set.
    :param flags: Also report the shares flagged (labels :data:`ABSTAIN` or N).
    :return: ``clean_accuracy``, ``attack_success_rate`` and, with ``flags``, ``clean_flagged`` and
             ``poisoned_flagged``.
    """
    data = run.data
    metrics = {
        "clean_accuracy": _sweep.accuracy(clean, data.y_test),
        "attack_success_rate": _sweep.attack_success_rate(poisoned, data.target),
    }
    if flags:

        def flagged(labels: np.ndarray) -> float:
            return float(
                _sweep.percent(np.count_nonzero((labels == ABSTAIN) | (labels == data.n_classes)), len(labels))
            )

        metrics["clean_flagged"] = flagged(clean)
        metrics["poisoned_flagged"] = flagged(poisoned)
    return metrics


@contextlib.contextmanager
def art_output(verbose: bool) -> Iterator[None]:
    """
    Swallow what ART prints on stdout (``KerasNeuralCleanse`` prints a tensor per optimisation step) and, unless
    ``verbose``, hide its progress bars (on stderr; handlers of the ``logging`` module keep their own stream).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        if verbose:
            yield
        else:
            with contextlib.redirect_stderr(io.StringIO()):
                yield


class _DropUnfilteredWarning(logging.Filter):
    """
    ART's Neural Cleanse warns at every ``predict`` that its filtering is not active; after the "unlearning" and
    "pruning" mitigations that is expected.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Filtering mitigation not activated" not in record.getMessage()


@contextlib.contextmanager
def without_unfiltered_warning() -> Iterator[None]:
    """
    Drop :class:`_DropUnfilteredWarning`'s message from ART's Neural Cleanse logger while in the block.
    """
    art_logger = logging.getLogger(NeuralCleanseMixin.__module__)
    log_filter = _DropUnfilteredWarning()
    art_logger.addFilter(log_filter)
    try:
        yield
    finally:
        art_logger.removeFilter(log_filter)


def guarded(name: str, start: float, function: Callable[[], dict]) -> dict:
    """
    :param name: The row's name.
    :param start: ``time.perf_counter()`` when the work of this row began (shared work included).
    :param function: Measures the row.
    :return: The row, or an error row (figures ``None``, ``error`` holding the message) if ``function`` raised.
    """
    try:
        return function()
    except Exception as error:  # an ART defence may fail in many ways; record it, do not end the benchmark
        logger.warning("%s failed: %s: %s", name, type(error).__name__, error, exc_info=True)
        return make_row(name, time.perf_counter() - start, error=f"{type(error).__name__}: {error}")


def filter_and_retrain(run: Run, name: str, detect: Callable[[np.ndarray], list[int]]) -> list[dict]:
    """
    Flag training samples, remove them, retrain a fresh CNN on the rest, and measure it.

    :param name: The row's name.
    :param detect: Takes the one-hot training labels, returns ART's ``is_clean_lst``.
    """
    data = run.data
    start = time.perf_counter()
    with art_output(run.verbose):
        is_clean = np.asarray(detect(to_categorical(data.y_train, data.n_classes)))
    if is_clean.shape != (len(data.x_train),):
        raise ValueError(f"The detector returned {is_clean.shape} flags for {len(data.x_train)} training samples.")
    flagged = is_clean == 0
    tpr, fpr = detection_rates(flagged, data.is_poison_train)
    keep = ~flagged
    if not np.any(keep):
        raise ValueError("Every training sample was flagged; nothing is left to retrain on.")
    logger.info(
        "%s flagged %d of %d training samples (TPR %s%%, FPR %s%%); retraining on the rest.",
        name,
        np.count_nonzero(flagged),
        len(flagged),
        "n/a" if tpr is None else f"{tpr:.1f}",
        "n/a" if fpr is None else f"{fpr:.1f}",
    )
    retrained = run.train_cnn(data.x_train, data.y_train, rows=np.flatnonzero(keep))
    metrics = metrics_on_test_set(run, *run.labels_of(retrained.model, data.x_test, data.x_test_poisoned))
    note = f"{np.count_nonzero(flagged)} of {len(flagged)} training samples removed, CNN retrained on the rest"
    seconds = time.perf_counter() - start
    return [
        make_row(
            name,
            seconds,
            poison_detection_tpr=tpr,
            poison_detection_fpr=fpr,
            note=note,
            retune=run.retune(retrained.model),
            **metrics,
        )
    ]
