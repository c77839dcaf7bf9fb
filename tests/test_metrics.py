"""The framework-free detection metrics: score, calibration threshold, AUROC and TPR at a fixed FPR."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from art_pruning_defense import _metrics


def _brute_auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    """The probability that a poisoned input outscores a clean one, ties counting one half (Mann-Whitney)."""
    pos, neg = scores[truth], scores[~truth]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def _brute_tpr_at_fpr(scores: np.ndarray, truth: np.ndarray, rate: float) -> float:
    """Largest TPR over the thresholds 'flag score >= t' whose FPR is at most rate."""
    best = 0.0
    for t in np.unique(np.concatenate([scores, [np.inf]])):
        flagged = scores >= t
        if flagged[~truth].mean() <= rate:
            best = max(best, flagged[truth].mean())
    return 100.0 * best


@pytest.mark.parametrize("seed", range(5))
def test_detection_metrics_match_a_brute_force_computation(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random(120) < 0.3
    scores = np.round(rng.normal(truth * 1.2, 1.0), 1)  # rounded: ties between and within the groups
    metrics = _metrics.detection_metrics(scores, truth.astype(int), false_positive_rate=0.05)
    assert metrics["auroc"] == pytest.approx(_brute_auroc(scores, truth))
    assert metrics["tpr_at_fpr"] == pytest.approx(_brute_tpr_at_fpr(scores, truth, 0.05))
    assert metrics["fpr"] <= 5.0


def test_detection_metrics_of_perfect_and_reversed_scores():
    truth = np.array([0] * 100 + [1] * 10)
    scores = np.arange(110, dtype=float)
    assert _metrics.detection_metrics(scores, truth) == {"auroc": 1.0, "tpr_at_fpr": 100.0, "fpr": 0.0}
    reversed_ = _metrics.detection_metrics(-scores, truth)
    assert reversed_["auroc"] == 0.0 and reversed_["tpr_at_fpr"] == 0.0


@pytest.mark.parametrize(
    "scores, truth, rate, error, message",
    [
        ([0.1, 0.2], [0, 1], 0.0, ValueError, r"false_positive_rate must be in \(0, 1\)"),
        ([0.1, 0.2], [0, 1], 1.0, ValueError, r"must be in \(0, 1\)"),
        ([0.1, 0.2], [0, 1], "0.01", TypeError, "must be a number"),
        ([0.1, np.nan], [0, 1], 0.01, ValueError, "NaN or infinite for 1 of 2 inputs"),
        ([0.1, 0.2], [0, 1, 1], 0.01, ValueError, "one 0/1 per score"),
        ([0.1, 0.2], [0, 2], 0.01, ValueError, "only 0 .clean. and 1"),
        ([0.1, 0.2], [1, 1], 0.01, ValueError, "both clean and poisoned"),
        ([[0.1, 0.2]], [[0, 1]], 0.01, ValueError, "1-D array"),
    ],
)
def test_detection_metrics_refuse_bad_input(scores, truth, rate, error, message):
    with pytest.raises(error, match=message):
        _metrics.detection_metrics(np.asarray(scores), np.asarray(truth), rate)


@pytest.mark.parametrize("n, rate", [(100, 0.01), (99, 0.01), (100, 0.29), (1000, 0.07), (37, 0.1), (3, 0.5)])
def test_max_flagged_and_minimum_samples_follow_their_definitions(n, rate):
    k = _metrics.max_flagged(n, rate)
    assert k / n <= rate < (k + 1) / n
    needed = _metrics.min_calibration_samples(rate)
    assert 1 / needed <= rate < 1 / (needed - 1) if needed > 1 else 1 / needed <= rate
    assert (_metrics.max_flagged(n, rate) >= 1) == (n >= needed)


@pytest.mark.parametrize("seed", range(6))
def test_calibrated_threshold_flags_at_most_the_rate_and_is_the_least_such_score(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(int(rng.integers(20, 400))), int(rng.integers(1, 4)))  # many ties
    rate = float(rng.choice([0.05, 0.1, 0.25]))
    if len(scores) < _metrics.min_calibration_samples(rate):
        pytest.skip("too few samples for this rate")
    threshold = _metrics.calibrate_threshold(scores, rate)
    assert threshold in scores
    assert np.count_nonzero(scores > threshold) / len(scores) <= rate
    lower = scores[scores < threshold]
    if lower.size:  # the next lower score would flag too many
        assert np.count_nonzero(scores > lower.max()) / len(scores) > rate


def test_calibration_refuses_too_few_samples_and_bad_scores():
    with pytest.raises(ValueError, match=r"holds 99 samples.*needs at least ceil\(1 / 0.01\) = 100"):
        _metrics.calibrate_threshold(np.zeros(99), 0.01)
    assert _metrics.calibrate_threshold(np.zeros(100), 0.01) == 0.0
    with pytest.raises(ValueError, match="NaN or infinite for 2 of 100"):
        _metrics.calibrate_threshold(np.r_[np.zeros(98), np.nan, np.inf], 0.01)


def test_disagreement_score_separates_the_label_rule_and_follows_its_formula():
    rng = np.random.default_rng(0)
    bad = rng.dirichlet(np.ones(5), 400)
    pruned = rng.dirichlet(np.full(5, 0.3), 400)
    scores = _metrics.disagreement_scores(bad, pruned)
    b, p = np.argmax(bad, axis=1), np.argmax(pruned, axis=1)
    disagree = b != p
    assert disagree.any() and (~disagree).any()
    np.testing.assert_allclose(scores, disagree + 1 - pruned[np.arange(400), b])
    assert scores[disagree].min() >= 1.5 and scores[~disagree].max() <= 1 - 1 / 5
    np.testing.assert_array_equal(scores > _metrics.LABEL_RULE_THRESHOLD, disagree)
    # Without the indicator the two groups overlap on these vectors: the reason for it.
    plain = 1 - pruned[np.arange(400), b]
    assert plain[disagree].min() < plain[~disagree].max()


def test_disagreement_score_refuses_nan_naming_how_many():
    probabilities = np.full((4, 3), 1 / 3)
    broken = probabilities.copy()
    broken[[1, 2]] = np.nan
    with pytest.raises(ValueError, match="NaN for 2 of 4 inputs .the first is input 1"):
        _metrics.disagreement_scores(probabilities, broken, np.zeros(4, int), np.zeros(4, int))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_points_are_the_best_tpr_within_each_fpr(seed):
    """Each point is the largest TPR of a threshold flagging at most that share of the clean inputs (brute force)."""
    rng = np.random.default_rng(seed)
    truth = rng.random(300) < 0.3
    scores = np.round(rng.normal(truth * 1.5, 1.0), 1)  # rounded: ties between clean and poisoned scores
    curve = _metrics.roc_points(scores, truth)
    assert curve["fpr"] == list(_metrics.ROC_FPR_GRID)
    thresholds = np.concatenate([[np.inf], np.unique(scores)])
    fprs = np.array([np.mean(scores[~truth] >= t) for t in thresholds])
    tprs = np.array([np.mean(scores[truth] >= t) for t in thresholds])
    for rate, tpr in zip(curve["fpr"], curve["tpr"]):
        assert tpr == pytest.approx(tprs[fprs <= rate + 1e-12].max(), abs=1e-6)
    # The reading at 1 % agrees with detection_metrics.
    index = curve["fpr"].index(min(curve["fpr"], key=lambda v: abs(v - 0.01)))
    if abs(curve["fpr"][index] - 0.01) < 1e-9:
        expected = _metrics.detection_metrics(scores, truth)["tpr_at_fpr"]
        assert 100 * curve["tpr"][index] == pytest.approx(expected, abs=1e-3)


def test_roc_points_refuse_one_class():
    with pytest.raises(ValueError, match="both clean and poisoned"):
        _metrics.roc_points(np.arange(4.0), np.zeros(4))
