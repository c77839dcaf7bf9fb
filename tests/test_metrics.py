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


@pytest.mark.parametrize("n, rate", [(100, 0.01), (99, 0.01), (98, 0.01), (100, 0.29), (1000, 0.07), (37, 0.1), (3, 0.5)])
def test_conformal_rank_and_minimum_samples_follow_their_definitions(n, rate):
    rank = _metrics.conformal_rank(n, rate)
    assert rank - 1 < (n + 1) * (1 - rate) <= rank + 1e-9
    needed = _metrics.min_calibration_samples(rate)
    assert needed >= 1 / rate - 1 - 1e-9 and (needed == 1 or needed - 1 < 1 / rate - 1 - 1e-9)
    assert (rank <= n) == (n >= needed)


def test_conformal_threshold_of_a_hand_computed_case():
    # n = 19 scores 1..19, α = 0.05: ⌈20 × 0.95⌉ = 19, the largest; α = 0.25: ⌈20 × 0.75⌉ = 15.
    scores = np.arange(19, 0, -1, dtype=float)
    assert _metrics.calibrate_threshold(scores, 0.05) == 19.0
    assert _metrics.calibrate_threshold(scores, 0.25) == 15.0
    # n = 100, α = 0.1: ⌈101 × 0.9⌉ = ⌈90.9⌉ = 91, so 9 of the 100 lie above it (the empirical rule flagged 10).
    assert _metrics.calibrate_threshold(np.arange(100.0), 0.1) == 90.0
    assert _metrics.min_calibration_samples(0.01) == 99 and _metrics.min_calibration_samples(0.05) == 19


@pytest.mark.parametrize("seed", range(6))
def test_conformal_threshold_is_the_ranked_score_and_flags_at_most_the_rate(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(int(rng.integers(20, 400))), int(rng.integers(1, 4)))  # many ties
    rate = float(rng.choice([0.05, 0.1, 0.25]))
    threshold = _metrics.calibrate_threshold(scores, rate)
    assert threshold == np.sort(scores)[int(np.ceil((len(scores) + 1) * (1 - rate) - 1e-9)) - 1]
    assert np.count_nonzero(scores > threshold) / len(scores) <= rate


def test_calibration_refuses_too_few_samples_and_bad_scores():
    with pytest.raises(ValueError, match=r"holds 98 samples.*needs at least 99 \(n >= 1/0.01 - 1\)"):
        _metrics.calibrate_threshold(np.zeros(98), 0.01)
    assert _metrics.calibrate_threshold(np.zeros(99), 0.01) == 0.0
    with pytest.raises(ValueError, match="NaN or infinite for 2 of 100"):
        _metrics.calibrate_threshold(np.r_[np.zeros(98), np.nan, np.inf], 0.01)


@pytest.mark.parametrize("rate, n", [(0.01, 1000), (0.05, 300)])
def test_fresh_false_alarms_of_exchangeable_scores_fall_in_the_conformal_band(rate, n):
    # Calibrate on n synthetic clean scores, read the rate on 200,000 fresh ones from the same distribution.
    low, high = _metrics.conformal_band(n, rate)
    assert low < rate < high
    rng = np.random.default_rng(1)
    inside, realised = 0, []
    for _ in range(20):
        threshold = _metrics.calibrate_threshold(rng.gamma(2.0, size=n), rate)
        realised.append(np.mean(rng.gamma(2.0, size=200_000) > threshold))
        inside += low <= realised[-1] <= high
    assert inside >= 16  # 95 % bands: 19 of 20 expected; 16 or fewer happens with probability < 2 %
    assert abs(np.mean(realised) - rate) < 2.5 * (high - low) / 4 / np.sqrt(20)  # the mean rate is α


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
