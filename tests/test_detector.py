"""FinePruningDetector: ART's poison-filtering contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
from art.defences.detector.poison import PoisonFilteringDefence
from art.defences.detector.poison.ground_truth_evaluator import GroundTruthEvaluator
from art.utils import segment_by_class

from art_pruning_defense import FinePruningDetector


@pytest.fixture(scope="module")
def detection(digits_badnet):
    data, classifier = digits_badnet
    detector = FinePruningDetector(
        classifier, data.x_train, data.y_train, data.x_valid, data.y_valid, fine_tune_epochs=10, verbose=False
    )
    report, is_clean = detector.detect_poison()
    return data, detector, report, is_clean


def test_detect_poison_flags_poison_more_than_clean(detection):
    data, detector, report, is_clean = detection
    assert isinstance(detector, PoisonFilteringDefence)
    assert len(is_clean) == len(data.x_train) and set(is_clean) <= {0, 1}
    flagged = np.asarray(is_clean) == 0
    assert report["n_flagged"] == int(flagged.sum())
    assert sum(report["flagged_by_class"].values()) == report["n_flagged"]
    assert report["method"] == "fine-pruning"
    tpr = flagged[data.is_poison_train].mean()
    fpr = flagged[~data.is_poison_train].mean()
    assert tpr > 0.5 > fpr


def test_evaluate_defence_has_activation_defence_layout(detection):
    data, detector, _, is_clean = detection
    truth = (~data.is_poison_train).astype(int)
    result = json.loads(detector.evaluate_defence(truth))
    assert sorted(result) == sorted(f"class_{c}" for c in range(10))
    # Same numbers as ART's own evaluator on the same assignment, since detection is deterministic.
    expected = json.loads(
        GroundTruthEvaluator().analyze_correctness(
            segment_by_class(np.asarray(is_clean), data.y_train, 10), segment_by_class(truth, data.y_train, 10)
        )[1]
    )
    assert result == expected
    assert set(result["class_0"]) == {"TruePositive", "TrueNegative", "FalsePositive", "FalseNegative"}


def test_evaluate_defence_checks_ground_truth(detection):
    _, detector, _, _ = detection
    with pytest.raises(ValueError, match="one 0/1 value per training sample"):
        detector.evaluate_defence(np.ones(3))


def test_detector_checks_its_data(digits_badnet):
    data, classifier = digits_badnet
    with pytest.raises(ValueError, match="y_val"):
        FinePruningDetector(classifier, data.x_train, data.y_train, data.x_valid, data.y_valid[:-1])
    with pytest.raises(ValueError, match="x_train has shape"):
        FinePruningDetector(classifier, data.x_train[:, :8], data.y_train, data.x_valid, data.y_valid)


def test_report_holds_a_score_per_training_sample_from_one_pass(detection):
    from art_pruning_defense import _metrics

    data, detector, report, is_clean = detection
    scores = report["scores"]
    assert isinstance(scores, np.ndarray) and scores.shape == (len(data.x_train),) and scores.dtype == np.float64
    flagged = np.asarray(is_clean) == 0
    np.testing.assert_array_equal(scores > 1.0, flagged)  # every flagged sample above every other one
    assert scores[flagged].min() >= 1.5 and scores[~flagged].max() <= 1.0
    goodnet = detector.defence_(detector.classifier)  # the same fine-pruned B'
    np.testing.assert_allclose(scores, goodnet.score(data.x_train), atol=1e-6)
    continuous = _metrics.detection_metrics(scores, data.is_poison_train)["auroc"]
    binary = _metrics.detection_metrics(flagged.astype(float), data.is_poison_train)["auroc"]
    assert continuous >= binary - 1e-9


def test_detect_poison_runs_b_and_b_prime_once_over_the_training_data(digits_badnet, monkeypatch):
    from art_pruning_defense import GoodNetClassifier

    data, classifier = digits_badnet
    calls = []
    original = GoodNetClassifier._outputs

    def counted(self, x, batch_size):
        calls.append(len(x))
        return original(self, x, batch_size)

    monkeypatch.setattr(GoodNetClassifier, "_outputs", counted)
    detector = FinePruningDetector(
        classifier, data.x_train, data.y_train, data.x_valid, data.y_valid, fine_tune_epochs=0, verbose=False
    )
    report, _ = detector.detect_poison()
    assert calls == [len(data.x_train)] and len(report["scores"]) == len(data.x_train)


def test_calibrated_detector_flags_above_the_threshold_of_the_held_out_validation_data(digits_badnet):
    from art_pruning_defense import _metrics
    from art_pruning_defense._holdout import holdout_split

    data, classifier = digits_badnet
    detector = FinePruningDetector(
        classifier,
        data.x_train,
        data.y_train,
        data.x_valid,
        data.y_valid,
        fine_tune_epochs=0,
        false_positive_rate=0.1,
        verbose=False,
    )
    report, is_clean = detector.detect_poison()
    _, held = holdout_split(len(data.x_valid), 0.3, seed=0)  # the recommended share, the default seed
    assert report["calibration_samples"] == len(held) == 90
    np.testing.assert_array_equal(detector.defence_.calibration_indices_, held)
    goodnet = detector.defence_(detector.classifier, detector.accuracy_drop)
    assert report["threshold"] == _metrics.calibrate_threshold(goodnet.score(data.x_valid[held]), 0.1)
    np.testing.assert_array_equal(np.asarray(is_clean) == 0, report["scores"] > report["threshold"])
    with pytest.raises(ValueError, match="x_val holds 300 samples.*holds out 90 .* at least 99 .* give at least 330"):
        detector.set_params(false_positive_rate=0.01)
