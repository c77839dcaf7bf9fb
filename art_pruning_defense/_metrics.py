"""
Framework-free detection metrics (numpy; scikit-learn for ROC, SciPy for the conformal band): the GoodNet's
continuous score, its conformal calibration to a chosen false-positive rate, and AUROC / TPR at a fixed FPR from
scores and ground truth.

The score of an input x, for B with label ``ŷ_B = argmax p_B(x)`` and B' with label ``ŷ_B' = argmax p_B'(x)``::

    s(x) = [ŷ_B' ≠ ŷ_B] + (1 − p_B'(ŷ_B | x))

the probability mass B' takes away from B's answer, plus 1 where the labels disagree. Where they agree,
``p_B'(ŷ_B) = max p_B' ≥ 1/N`` so ``s ∈ [0, 1 − 1/N]``; where they disagree, ``p_B'(ŷ_B) ≤ p_B'(ŷ_B')`` and the two
sum to at most 1, so ``p_B'(ŷ_B) ≤ 1/2`` and ``s ∈ [1.5, 2]``. Every input the label rule flags therefore scores
above every input it does not (``s > 1`` is exactly the label rule), while within each group the score stays
continuous. Without the indicator, ``1 − p_B'(ŷ_B)`` alone does not separate them for N > 2: an agreeing input on
which B' is unsure (``max p_B' = 0.4``, score 0.6) would outrank a disagreeing one on which B' keeps 0.45 on B's
label (score 0.55).

This module imports neither TensorFlow, scikit-learn nor SciPy at import time (the command line uses its checks before
TensorFlow is loaded).
"""

from __future__ import annotations

import math

import numpy as np

#: Score of the label rule: ``score > LABEL_RULE_THRESHOLD`` exactly where B and B' disagree.
LABEL_RULE_THRESHOLD = 1.0
#: Range of the score.
SCORE_RANGE = (0.0, 2.0)


def check_false_positive_rate(value: object, what: str = "false_positive_rate") -> float:
    """
    :param value: A false-positive rate, a share in (0, 1).
    :param what: Its name, for the message.
    :return: It as a float.
    :raises TypeError: If it is not a real number (a bool, a string, an array, ...).
    :raises ValueError: If it is NaN or not strictly between 0 and 1.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number in (0, 1), got {type(value).__name__} {value!r}.")
    rate = float(value)
    if not (math.isfinite(rate) and 0.0 < rate < 1.0):
        raise ValueError(f"{what} must be in (0, 1) (a share, 0.01 for 1 %), got {rate:g}.")
    return rate


#: Slack of the float product ``(n + 1)(1 − α)`` before its ceiling, so that an exact integer is not pushed up by
#: rounding noise (``100 * 0.99`` is 98.99999999999999 or 99.00000000000001 depending on the operands).
_RANK_SLACK = 1e-9


def conformal_rank(n: int, false_positive_rate: float) -> int:
    """
    :param n: Number of calibration scores.
    :param false_positive_rate: The target rate α, in (0, 1).
    :return: The rank ``r = ⌈(n + 1)(1 − α)⌉`` of the conformal threshold among the n scores sorted up; above n
             where n is too small (``n < 1/α − 1``) for any threshold to promise α.
    """
    return math.ceil((n + 1) * (1.0 - false_positive_rate) - _RANK_SLACK)


def min_calibration_samples(false_positive_rate: float) -> int:
    """
    :param false_positive_rate: The target rate α, in (0, 1).
    :return: The fewest calibration scores for which the conformal threshold exists: the smallest ``n`` with
             ``⌈(n + 1)(1 − α)⌉ <= n``, that is ``n >= 1/α − 1`` (99 for α = 0.01, 19 for α = 0.05).
    """
    n = max(1, int(math.floor(1.0 / false_positive_rate)) - 2)  # below 1/α − 1: count up to the first that works
    while conformal_rank(n, false_positive_rate) > n:
        n += 1
    return n


def check_calibration_size(n: int, false_positive_rate: float, what: str = "x_clean") -> None:
    """
    :param n: Number of calibration samples.
    :param false_positive_rate: The chosen rate, in (0, 1).
    :param what: Their name, for the message.
    :raises ValueError: If fewer than :func:`min_calibration_samples` are given: no threshold can promise the rate.
    """
    needed = min_calibration_samples(false_positive_rate)
    if n < needed:
        raise ValueError(
            f"{what} holds {n} samples; calibrating at a false-positive rate of {false_positive_rate:g} needs at "
            f"least {needed} (n >= 1/{false_positive_rate:g} - 1), or no threshold can promise that rate."
        )


def conformal_band(n: int, false_positive_rate: float, confidence: float = 0.95) -> tuple[float, float]:
    """
    Where the false-alarm rate of a conformal threshold on fresh clean data lies, over the draw of the n
    calibration samples: with exchangeable, continuous (tie-free) scores the rate is ``Beta(n + 1 − r, r)``
    distributed, ``r`` = :func:`conformal_rank`, with mean ``(n + 1 − r)/(n + 1) <= α``. A finite test set adds its
    own binomial noise on top.

    :param n: Number of calibration scores, at least :func:`min_calibration_samples`.
    :param false_positive_rate: The target rate α, in (0, 1).
    :param confidence: Probability of the central band, in (0, 1).
    :return: ``(low, high)``, shares.
    :raises ValueError: If ``n`` is too small for α.
    """
    from scipy.stats import beta

    check_calibration_size(n, false_positive_rate, "the calibration data")
    rank = conformal_rank(n, false_positive_rate)
    tail = (1.0 - confidence) / 2.0
    low, high = beta.ppf([tail, 1.0 - tail], n + 1 - rank, rank)
    return float(low), float(high)


def disagreement_scores(
    bad_probabilities: np.ndarray,
    pruned_probabilities: np.ndarray,
    bad_labels: np.ndarray | None = None,
    pruned_labels: np.ndarray | None = None,
) -> np.ndarray:
    """
    The GoodNet score ``[ŷ_B' ≠ ŷ_B] + (1 − p_B'(ŷ_B))`` (see the module's docstring), in float64.

    :param bad_probabilities: B's probability vectors, shape ``(n, N)``.
    :param pruned_probabilities: B''s probability vectors, shape ``(n, N)``.
    :param bad_labels: B's labels (default: the argmax of ``bad_probabilities``); give the argmax of B's raw output.
    :param pruned_labels: B''s labels (default: the argmax of ``pruned_probabilities``).
    :return: Scores of shape ``(n,)`` in [0, 2]: in [0, 1 − 1/N] where the labels agree, in [1.5, 2] where they
             differ; higher means more likely triggered.
    :raises ValueError: If the shapes differ or some score is NaN (naming how many inputs).
    """
    bad = np.asarray(bad_probabilities)
    pruned = np.asarray(pruned_probabilities, dtype=np.float64)
    if bad.ndim != 2 or bad.shape != pruned.shape:
        raise ValueError(f"B's and B''s probabilities must both have shape (n, N), got {bad.shape} and {pruned.shape}.")
    bad_labels = np.argmax(bad, axis=1) if bad_labels is None else np.asarray(bad_labels)
    pruned_labels = np.argmax(pruned, axis=1) if pruned_labels is None else np.asarray(pruned_labels)
    kept = pruned[np.arange(len(pruned)), bad_labels]
    scores = (bad_labels != pruned_labels).astype(np.float64) + (1.0 - np.clip(kept, 0.0, 1.0))
    broken = np.isnan(scores)
    if np.any(broken):
        raise ValueError(
            f"The GoodNet score is NaN for {int(np.count_nonzero(broken))} of {len(scores)} inputs (the first is "
            f"input {int(np.argmax(broken))}): B''s probabilities are not numbers there."
        )
    return scores


def check_scores(scores: object, what: str = "scores") -> np.ndarray:
    """
    :param scores: One score per input.
    :param what: Their name, for the messages.
    :return: Them as a float64 array of shape ``(n,)``.
    :raises ValueError: If they are not a non-empty 1-D array of numbers, or some are NaN or infinite.
    """
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, got {type(scores).__name__}.") from None
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array (one score per input), got shape {values.shape}.")
    broken = ~np.isfinite(values)
    if np.any(broken):
        raise ValueError(
            f"{what} are NaN or infinite for {int(np.count_nonzero(broken))} of {len(values)} inputs (the first is "
            f"input {int(np.argmax(broken))})."
        )
    return values


def calibrate_threshold(scores: np.ndarray, false_positive_rate: float) -> float:
    """
    The conformal threshold: the ``⌈(n + 1)(1 − α)⌉``-th smallest of the n clean scores; inputs with
    ``score > threshold`` are flagged. If the calibration scores and a fresh clean input's score are exchangeable
    (the same distribution, none of the calibration inputs seen by B' in fine-tuning), the fresh input is flagged
    with probability at most α, over the draw of both (split conformal prediction). The guarantee is on average
    over calibration sets; :func:`conformal_band` gives the spread for one. It says nothing of inputs from another
    distribution, and calibration data that fine-tuned B' score lower than fresh inputs (more are then flagged).

    :param scores: Scores of clean inputs, shape ``(n,)``.
    :param false_positive_rate: The target rate α, in (0, 1).
    :return: The threshold (float64).
    :raises ValueError: If the scores are not finite, or fewer than ``1/α − 1`` (see :func:`check_calibration_size`).
    """
    false_positive_rate = check_false_positive_rate(false_positive_rate)
    values = check_scores(scores, "clean scores")
    check_calibration_size(len(values), false_positive_rate, "the calibration data")
    rank = conformal_rank(len(values), false_positive_rate)
    return float(np.sort(values)[rank - 1])


def detection_metrics(
    scores: np.ndarray, is_poisoned: np.ndarray, false_positive_rate: float = 0.01
) -> dict[str, float]:
    """
    AUROC and the true-positive rate at a fixed false-positive rate, with scikit-learn's ``roc_auc_score`` and
    ``roc_curve`` (every threshold kept, ``drop_intermediate=False``).

    :param scores: One score per input, higher = more likely poisoned.
    :param is_poisoned: Ground truth per input: 1 (or ``True``) poisoned, 0 clean; both must occur.
    :param false_positive_rate: The FPR at which the TPR is read, in (0, 1).
    :return: ``{"auroc": in [0, 1], "tpr_at_fpr": percent, "fpr": percent}``: ``tpr_at_fpr`` is the largest TPR of a
             threshold whose FPR is at most ``false_positive_rate`` (no interpolation), ``fpr`` that threshold's FPR.
    :raises ValueError: If the inputs are malformed, of different lengths, or one class is missing.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    false_positive_rate = check_false_positive_rate(false_positive_rate)
    values = check_scores(scores)
    truth = np.asarray(is_poisoned)
    if truth.shape != values.shape:
        raise ValueError(f"is_poisoned must hold one 0/1 per score ({values.shape}), got shape {truth.shape}.")
    if truth.dtype != bool and not np.all(np.isin(truth, (0, 1))):
        raise ValueError("is_poisoned must hold only 0 (clean) and 1 (poisoned).")
    truth = truth.astype(bool)
    if truth.all() or not truth.any():
        raise ValueError(
            f"AUROC needs both clean and poisoned inputs, got {int(truth.sum())} poisoned of {len(truth)}."
        )
    fpr, tpr, _ = roc_curve(truth, values, drop_intermediate=False)
    within = fpr <= false_positive_rate
    best = int(np.argmax(np.where(within, tpr, -1.0)))
    return {
        "auroc": float(roc_auc_score(truth, values)),
        "tpr_at_fpr": float(100.0 * tpr[best]),
        "fpr": float(100.0 * fpr[best]),
    }


#: False-positive rates (shares) at which :func:`roc_points` reads a ROC curve: 0, then log-spaced from 1e-4 to 1.
ROC_FPR_GRID = tuple([0.0] + [float(v) for v in np.logspace(-4, 0, 81)])


def roc_points(
    scores: np.ndarray, is_poisoned: np.ndarray, grid: tuple[float, ...] = ROC_FPR_GRID
) -> dict[str, list[float]]:
    """
    A ROC curve read at fixed false-positive rates, small enough to store with a result and average over seeds.

    :param scores: One score per input, higher = more likely poisoned.
    :param is_poisoned: Ground truth per input (0/1 or bool); both classes must occur.
    :param grid: False-positive rates (shares, increasing, in [0, 1]) at which the curve is read.
    :return: ``{"fpr": grid, "tpr": ...}``, shares: the largest TPR of a threshold whose FPR is at most each rate
             (the curve as a step function, no interpolation between thresholds).
    :raises ValueError: As :func:`detection_metrics`.
    """
    from sklearn.metrics import roc_curve

    values = check_scores(scores)
    truth = np.asarray(is_poisoned).astype(bool)
    if truth.shape != values.shape or truth.all() or not truth.any():
        raise ValueError("roc_points needs one 0/1 per score, with both clean and poisoned inputs.")
    fpr, tpr, _ = roc_curve(truth, values, drop_intermediate=False)
    # tpr is non-decreasing in fpr: the best TPR at FPR <= f is the TPR of the last point with fpr <= f.
    last = np.searchsorted(fpr, np.asarray(grid), side="right") - 1
    read = np.where(last >= 0, tpr[np.clip(last, 0, None)], 0.0)
    return {"fpr": [float(v) for v in grid], "tpr": [round(float(v), 6) for v in read]}
