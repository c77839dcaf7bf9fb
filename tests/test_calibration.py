"""GoodNet's continuous score and its calibration to a chosen false-positive rate."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from conftest import reseal
from art_pruning_defense import FinePruning, GoodNetClassifier, _metrics
from art_pruning_defense.keras import find_prune_point, masked_copy
from test_goodnet import logits_twin


@pytest.fixture
def goodnet_parts(tiny_model):
    point = find_prune_point(tiny_model)
    mask = np.ones(point.n_channels, dtype=np.float32)
    mask[[0, 3]] = 0
    return tiny_model, masked_copy(tiny_model, point, mask)


def _count_passes(goodnet: GoodNetClassifier) -> dict[str, int]:
    """Wrap the GoodNet's batched predictors so that each call (one pass over all inputs) is counted."""
    calls = {"B": 0, "B'": 0}
    for name, attribute in (("B", "_bad_predict"), ("B'", "_pruned_predict")):
        original = getattr(goodnet, attribute)

        def counted(x, batch_size, _original=original, _name=name):
            calls[_name] += 1
            return _original(x, batch_size)

        setattr(goodnet, attribute, counted)
    return calls


def _manual_scores(bad, pruned, x) -> np.ndarray:
    p_bad, p_pruned = bad.predict(x, verbose=0), pruned.predict(x, verbose=0).astype(np.float64)
    b, p = np.argmax(p_bad, axis=1), np.argmax(p_pruned, axis=1)
    return (b != p) + 1.0 - p_pruned[np.arange(len(x)), b]


def test_score_is_one_pass_of_each_model_and_follows_its_definition(goodnet_parts, tiny_data):
    bad, pruned = goodnet_parts
    x, _ = tiny_data
    goodnet = GoodNetClassifier(bad, pruned, clip_values=(0.0, 1.0))
    calls = _count_passes(goodnet)
    scores = goodnet.score(x, batch_size=7)  # several batches, still one pass over the inputs
    assert calls == {"B": 1, "B'": 1}
    assert scores.shape == (60,) and scores.dtype == np.float64
    assert np.all((scores >= 0) & (scores <= 2))
    np.testing.assert_allclose(scores, _manual_scores(bad, pruned, x), atol=1e-6)
    b, p = goodnet.predict_labels(x)
    disagree = b != p
    assert disagree.any() and (~disagree).any()
    assert scores[disagree].min() > scores[~disagree].max()  # every flagged input above every agreeing one
    np.testing.assert_array_equal(scores > 1.0, disagree)


def test_score_of_a_logits_model_equals_that_of_its_softmax_twin(goodnet_parts, tiny_data):
    bad, pruned = goodnet_parts
    x, _ = tiny_data
    expected = GoodNetClassifier(bad, pruned).score(x)
    goodnet = GoodNetClassifier(logits_twin(bad), logits_twin(pruned))
    assert goodnet.outputs_logits
    np.testing.assert_allclose(goodnet.score(x), expected, atol=1e-6)
    threshold = goodnet.calibrate(x, 0.1)
    assert np.count_nonzero(goodnet.score(x) > threshold) <= 6


def test_score_orders_flagged_triggered_inputs_above_agreeing_ones_on_the_digits_badnet(digits_badnet):
    data, classifier = digits_badnet
    defence = FinePruning(classifier, accuracy_drops=(10,), verbose=False)
    defence.fit(data.x_valid, data.y_valid)
    goodnet = defence(classifier, accuracy_drop=10)
    x = np.concatenate([data.x_test, data.x_test_poisoned])
    truth = np.r_[np.zeros(len(data.x_test), int), np.ones(len(data.x_test_poisoned), int)]
    bad, pruned, scores = goodnet.labels_and_scores(x)
    disagree = bad != pruned
    assert disagree.any() and (~disagree).any()
    assert scores[disagree].min() > scores[~disagree].max()
    metrics = _metrics.detection_metrics(scores, truth, 0.05)
    # The continuous score ranks at least as well as the binary rule it refines, and better than chance.
    binary = _metrics.detection_metrics(disagree.astype(float), truth, 0.05)
    assert metrics["auroc"] >= binary["auroc"] - 1e-9 and metrics["auroc"] > 0.5

    goodnet.calibrate(data.x_valid, 0.05)
    valid_flagged = np.mean(goodnet.score(data.x_valid) > goodnet.threshold_)
    assert valid_flagged <= 0.05
    fresh_flagged = np.mean(goodnet.score(data.x_test) > goodnet.threshold_)
    assert fresh_flagged <= 0.05 + 0.1  # ~ the rate on fresh clean data: a loose check only


def test_calibrated_predict_and_evaluate_use_the_threshold(goodnet_parts, tiny_data):
    bad, pruned = goodnet_parts
    x, y = tiny_data
    goodnet = GoodNetClassifier(bad, pruned, clip_values=(0.0, 1.0))
    label_rule = np.argmax(goodnet.predict(x), axis=1) == 4
    threshold = goodnet.calibrate(x, 0.1)
    assert goodnet.threshold_ == threshold and goodnet.false_positive_rate_ == 0.1
    scores = goodnet.score(x)
    flagged = scores > threshold
    assert 0 < flagged.sum() <= 6 and not np.array_equal(flagged, label_rule)
    calls = _count_passes(goodnet)
    outputs = goodnet.predict(x)
    assert calls == {"B": 1, "B'": 1}  # the threshold needs no second pass
    np.testing.assert_array_equal(np.argmax(outputs, axis=1) == 4, flagged)
    b_labels = np.argmax(bad.predict(x, verbose=0), axis=1)
    np.testing.assert_array_equal(goodnet.predict_classes(x), np.where(flagged, 4, b_labels))
    rows = goodnet.evaluate(x, y, x[:20], 1)
    assert rows["GoodNet"]["clean_flagged"] == pytest.approx(100 * flagged.mean())
    assert rows["GoodNet"]["poisoned_flagged"] == pytest.approx(100 * flagged[:20].mean())

    goodnet.threshold_ = goodnet.false_positive_rate_ = None  # back to the label rule
    np.testing.assert_array_equal(np.argmax(goodnet.predict(x), axis=1) == 4, label_rule)


def test_calibrated_abstaining_goodnet_abstains_above_the_threshold(goodnet_parts, tiny_data):
    x, _ = tiny_data
    goodnet = GoodNetClassifier(*goodnet_parts, abstain=True)
    threshold = goodnet.calibrate(x, 0.2)
    flagged = goodnet.score(x) > threshold
    outputs = goodnet.predict(x)
    assert outputs.shape == (60, 4) and flagged.any() and (~flagged).any()
    np.testing.assert_array_equal(outputs.sum(axis=1) == 0, flagged)
    classes = goodnet.predict_classes(x)
    np.testing.assert_array_equal(classes == 4, flagged)  # N, not the argmax 0 of an all-zero row


def test_calibration_is_saved_and_reloaded_exactly(goodnet_parts, tiny_data, tmp_path):
    x, _ = tiny_data
    goodnet = GoodNetClassifier(*goodnet_parts, clip_values=(0.0, 1.0))
    goodnet.save(str(tmp_path / "plain"))
    meta = json.loads((tmp_path / "plain" / "goodnet.json").read_text())
    assert meta["threshold"] is None and meta["false_positive_rate"] is None
    assert GoodNetClassifier.load(str(tmp_path / "plain")).threshold_ is None

    threshold = goodnet.calibrate(x, 0.07)
    goodnet.save(str(tmp_path / "g"))
    again = GoodNetClassifier.load(str(tmp_path / "g"))
    assert type(again.threshold_) is float and again.threshold_ == threshold  # float64 round trip, bit for bit
    assert type(again.false_positive_rate_) is float and again.false_positive_rate_ == 0.07
    np.testing.assert_array_equal(again.predict(x), goodnet.predict(x))


@pytest.mark.parametrize(
    "threshold, rate, message",
    [
        ("1.0", 0.01, r"threshold must be a number in \[0, 2\]"),
        (True, 0.01, r"threshold must be a number in \[0, 2\]"),
        (float("nan"), 0.01, r"score's range\), got nan"),
        (2.5, 0.01, r"score's range\), got 2.5"),
        (-0.1, 0.01, r"score's range\), got -0.1"),
        (1.2, 0.0, r"false_positive_rate must be in \(0, 1\)"),
        (1.2, 1.5, r"false_positive_rate must be in \(0, 1\)"),
        (1.2, "0.01", r"false_positive_rate must be a number in \(0, 1\)"),
        (1.2, None, "must both be set"),
        (None, 0.01, "must both be set"),
    ],
)
def test_tampered_calibration_in_goodnet_json_is_refused(goodnet_parts, tiny_data, tmp_path, threshold, rate, message):
    goodnet = GoodNetClassifier(*goodnet_parts)
    goodnet.calibrate(tiny_data[0], 0.1)
    goodnet.save(str(tmp_path / "g"))
    path = tmp_path / "g" / "goodnet.json"
    config = json.loads(path.read_text())
    config["threshold"], config["false_positive_rate"] = threshold, rate
    path.write_text(json.dumps(config))
    reseal(tmp_path / "g")  # NaN is written as the token NaN, which Python's json reads back
    with pytest.raises(ValueError, match=message) as info:
        GoodNetClassifier.load(str(tmp_path / "g"))
    assert "goodnet.json" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"false_positive_rate": 0.0}, ValueError, r"false_positive_rate must be in \(0, 1\)"),
        ({"false_positive_rate": 1.0}, ValueError, r"must be in \(0, 1\)"),
        ({"false_positive_rate": 1.5}, ValueError, r"must be in \(0, 1\)"),
        ({"false_positive_rate": -0.01}, ValueError, r"must be in \(0, 1\)"),
        ({"false_positive_rate": float("nan")}, ValueError, r"must be in \(0, 1\)"),
        ({"false_positive_rate": "0.01"}, TypeError, "must be a number in"),
        ({"false_positive_rate": True}, TypeError, "must be a number in"),
        ({"false_positive_rate": 0.01}, ValueError, r"x_clean holds 60 samples.*needs at least 99 \(n >= 1/0.01 - 1\)"),
        ({"false_positive_rate": 0.1, "x_clean": "wrong shape"}, ValueError, "x_clean has shape"),
        ({"false_positive_rate": 0.1, "x_clean": [[0.0]]}, TypeError, "x_clean must be a numpy array"),
        ({"false_positive_rate": 0.1, "batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_calibrate_refuses_bad_input_before_any_work(goodnet_parts, tiny_data, kwargs, error, message):
    x, _ = tiny_data
    goodnet = GoodNetClassifier(*goodnet_parts)
    calls = _count_passes(goodnet)
    kwargs = dict(kwargs)
    x_clean = kwargs.pop("x_clean", x)
    if isinstance(x_clean, str):
        x_clean = x[:, :8]
    with pytest.raises(error, match=message):
        goodnet.calibrate(x_clean, **kwargs)
    assert calls == {"B": 0, "B'": 0} and goodnet.threshold_ is None and goodnet.false_positive_rate_ is None


def test_nan_scores_are_an_error_naming_how_many_inputs(goodnet_parts, tiny_data):
    bad, pruned = goodnet_parts
    x, _ = tiny_data
    broken = logits_twin(pruned)
    kernel, bias = broken.get_layer("output").get_weights()
    kernel[:, 1] = np.nan
    broken.get_layer("output").set_weights([kernel, bias])
    goodnet = GoodNetClassifier(logits_twin(bad), broken)
    with pytest.raises(ValueError, match="NaN or infinite for 20 of 20 inputs"):
        goodnet.score(x[:20])
    with pytest.raises(ValueError, match="NaN or infinite for 20 of 20 inputs"):
        goodnet.calibrate(x[:20], 0.1)
    assert goodnet.threshold_ is None


def test_set_params_keeps_the_calibration_unless_the_scores_change(goodnet_parts, tiny_data, caplog):
    x, _ = tiny_data
    goodnet = GoodNetClassifier(*goodnet_parts, clip_values=(0.0, 1.0))
    threshold = goodnet.calibrate(x, 0.1)
    goodnet.set_params(**goodnet.get_params())  # ART's round trip changes nothing
    goodnet.set_params(abstain=True, metadata={"note": 1}, clip_values=(0.0, 2.0))
    assert goodnet.threshold_ == threshold and goodnet.false_positive_rate_ == 0.1
    with pytest.raises(ValueError):
        goodnet.set_params(preprocessing=(0.0, 1e-300))  # a failed call changes nothing
    assert goodnet.threshold_ == threshold
    with caplog.at_level(logging.WARNING, logger="art_pruning_defense"):
        goodnet.set_params(preprocessing=(0.5, 2.0))
    assert goodnet.threshold_ is None and goodnet.false_positive_rate_ is None
    assert "calibrated threshold" in caplog.text and "call calibrate() anew" in caplog.text
