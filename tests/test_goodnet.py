"""GoodNetClassifier: N + 1 semantics, ART base classes, save/load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator

from conftest import reseal
from art_pruning_defense import FinePruning, GoodNetClassifier
from art_pruning_defense.keras import find_prune_point, masked_copy


@pytest.fixture
def goodnet_parts(tiny_model):
    point = find_prune_point(tiny_model)
    mask = np.ones(point.n_channels, dtype=np.float32)
    mask[[0, 3]] = 0
    return tiny_model, masked_copy(tiny_model, point, mask)


def test_scores_follow_b_where_b_and_b_prime_agree_and_flag_class_n_elsewhere(goodnet_parts, tiny_data):
    bad, pruned = goodnet_parts
    x, _ = tiny_data
    goodnet = GoodNetClassifier(bad, pruned, clip_values=(0.0, 1.0))
    scores = goodnet.predict(x)
    b_scores = bad.predict(x, verbose=0)
    b_labels, p_labels = np.argmax(b_scores, axis=1), np.argmax(pruned.predict(x, verbose=0), axis=1)
    agree = b_labels == p_labels
    assert agree.any() and (~agree).any()  # both cases are exercised
    assert scores.shape == (len(x), 5) and goodnet.nb_classes == 5
    np.testing.assert_allclose(scores[agree, :4], b_scores[agree], rtol=1e-6)
    assert np.all(scores[agree, 4] == 0)
    np.testing.assert_array_equal(scores[~agree], np.eye(5)[[4] * int((~agree).sum())])
    assert np.argmax(scores, axis=1).tolist() == np.where(agree, b_labels, 4).tolist()


def test_is_an_art_classifier(goodnet_parts):
    goodnet = GoodNetClassifier(*goodnet_parts)
    assert isinstance(goodnet, ClassifierMixin) and isinstance(goodnet, BaseEstimator)
    assert goodnet.input_shape == (10, 10, 3)
    assert goodnet.n_classes == 4
    with pytest.raises(NotImplementedError):
        goodnet.fit(np.zeros((1, 10, 10, 3)), np.zeros(1))


def test_evaluate_counts_flags(goodnet_parts, tiny_data):
    x, y = tiny_data
    goodnet = GoodNetClassifier(*goodnet_parts)
    rows = goodnet.evaluate(x, y, x[:20], 1)
    labels = np.argmax(goodnet.predict(x), axis=1)
    assert rows["GoodNet"]["clean_accuracy"] == pytest.approx(100 * np.mean(labels == y))
    assert rows["GoodNet"]["clean_flagged"] == pytest.approx(100 * np.mean(labels == 4))
    assert rows["B"]["attack_success_rate"] == pytest.approx(
        100 * np.mean(np.argmax(goodnet_parts[0].predict(x[:20], verbose=0), axis=1) == 1)
    )


def test_save_load_round_trip(tiny_classifier, tiny_data, tmp_path):
    x, y = tiny_data
    defence = FinePruning(tiny_classifier, accuracy_drops=(4,), verbose=False)
    defence.fit(x, y)
    goodnet = defence(tiny_classifier)
    path = tmp_path / "goodnet_x4"
    goodnet.save(str(path))
    assert sorted(os.listdir(path)) == [
        ".art-prune-output",
        "MANIFEST.json",
        "bad_model.keras",
        "goodnet.json",
        "pruned_model.keras",
    ]
    assert sorted(os.listdir(tmp_path)) == ["goodnet_x4"]  # no temporary left behind
    again = GoodNetClassifier.load(str(path))
    np.testing.assert_array_equal(again.predict(x), goodnet.predict(x))
    assert again.metadata["pruned_channels"] == defence.pruned_channels(4).tolist()
    assert again.metadata["accuracy_drop"] == 4.0 and again.metadata["layer_name"] == "conv_2"
    assert again.metadata["n_classes"] == 4
    assert again.clip_values.tolist() == [0.0, 1.0]
    meta = json.loads((path / "goodnet.json").read_text())
    assert meta["nb_classes"] == 5

    with pytest.raises(FileExistsError):
        goodnet.save(str(path))
    goodnet.save(str(path), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["goodnet_x4"]


def test_saved_models_load_with_plain_keras(goodnet_parts, tmp_path):
    GoodNetClassifier(*goodnet_parts).save(str(tmp_path / "g"))
    code = (
        "import keras, sys\n"
        "for name in ('bad_model', 'pruned_model'):\n"
        "    m = keras.models.load_model(sys.argv[1] + '/' + name + '.keras', safe_mode=True)\n"
        "    print(name, m.output.shape[-1])\n"
        "print('package imported:', 'art_pruning_defense' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "g")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pruned_model 4" in done.stdout and "bad_model 4" in done.stdout
    assert "package imported: False" in done.stdout


def test_preprocessing_is_carried_and_saved(tiny_model, tiny_data, tmp_path):
    from art.estimators.classification import KerasClassifier

    x, y = tiny_data
    classifier = KerasClassifier(tiny_model, clip_values=(0.0, 255.0), preprocessing=(0.0, 255.0))
    defence = FinePruning(classifier, accuracy_drops=(4,), verbose=False)
    defence.fit(x * 255, y)
    goodnet = defence(classifier)
    goodnet.save(str(tmp_path / "g"))
    again = GoodNetClassifier.load(str(tmp_path / "g"))
    np.testing.assert_array_equal(again.predict(x * 255), goodnet.predict(x * 255))
    b_labels = np.argmax(classifier.predict(x * 255), axis=1)
    agree = np.argmax(goodnet.predict(x * 255), axis=1) != 4
    assert np.array_equal(np.argmax(goodnet.predict(x * 255), axis=1)[agree], b_labels[agree])


# ---------------------------------------------------------------------------------------------------------------------
# ART's set_params.
# ---------------------------------------------------------------------------------------------------------------------


def test_set_params_changes_what_it_may_and_predictions_follow(goodnet_parts, tiny_data):
    from art.defences.postprocessor import Rounded

    bad, pruned = goodnet_parts
    x, _ = tiny_data
    goodnet = GoodNetClassifier(bad, pruned, clip_values=(0.0, 1.0))
    goodnet.set_params(preprocessing=(0.5, 2.0), clip_values=(0.0, 2.0), metadata={"note": 1})
    expected = GoodNetClassifier(bad, pruned, preprocessing=(0.5, 2.0)).predict(x)
    np.testing.assert_array_equal(goodnet.predict(x), expected)
    assert goodnet.clip_values.tolist() == [0.0, 2.0] and goodnet.metadata == {"note": 1}
    goodnet.set_params(postprocessing_defences=Rounded(decimals=1))
    np.testing.assert_array_equal(goodnet.predict(x), np.around(expected, decimals=1))
    goodnet.set_params(**goodnet.get_params())  # ART's round trip: unchanged values are accepted
    assert goodnet.nb_classes == 5 and goodnet.predict(x).shape == (60, 5)


def test_set_params_refuses_fixed_parameters_and_a_failed_call_changes_nothing(goodnet_parts, tiny_data, tiny_model):
    import keras

    bad, pruned = goodnet_parts
    x, _ = tiny_data
    goodnet = GoodNetClassifier(bad, pruned, clip_values=(0.0, 1.0))
    before = goodnet.predict(x)
    other = keras.models.clone_model(tiny_model)
    cases = [
        ({"model": other}, ValueError, "model \\(B\\) cannot be changed.*set_params can change: clip_values"),
        ({"nb_classes": 4}, ValueError, "nb_classes is fixed by B's N = 4 classes: N \\+ 1 = 5"),
        ({"abstain": True, "nb_classes": 5}, ValueError, "with abstain=True it is 4, got 5"),
        ({"clip_values": (1.0, 0.0), "preprocessing": (0.5, 2.0)}, ValueError, r"min < max in float32, got \(1.0"),
        ({"clip_values": (0.0, 1e39)}, ValueError, "clip_values max is out of float32 range"),
        ({"preprocessing": (0.0, 1e-300)}, ValueError, "std must be non-zero in float32"),
        ({"preprocessing": (1e300, 1.0)}, ValueError, "mean is out of float32 range"),
        ({"bad_model": other}, ValueError, "Unexpected parameter\\(s\\) 'bad_model'"),
        ({"abstain": 1}, TypeError, "abstain must be a bool"),
    ]
    for kwargs, error, message in cases:
        state = dict(vars(goodnet))
        operations = list(goodnet.preprocessing_operations)
        with pytest.raises(error, match=message):
            goodnet.set_params(**kwargs)
        assert vars(goodnet).keys() == state.keys() and all(vars(goodnet)[k] is v for k, v in state.items()), kwargs
        assert goodnet.preprocessing_operations == operations
        assert goodnet.nb_classes == 5 and goodnet.model is goodnet.bad_model
        np.testing.assert_array_equal(goodnet.predict(x), before)


# ---------------------------------------------------------------------------------------------------------------------
# Models that output logits.
# ---------------------------------------------------------------------------------------------------------------------


def logits_twin(model):
    """The same network and weights with the softmax of its output layer removed: it outputs the logits."""
    import keras

    config = model.get_config()
    for layer in config["layers"]:
        if layer["config"]["name"] == "output":
            layer["config"]["activation"] = "linear"
    twin = keras.Model.from_config(config)
    twin.set_weights(model.get_weights())
    return twin


def test_logits_model_sweeps_as_its_softmax_twin(tiny_model, tiny_data):
    from art.estimators.classification import KerasClassifier
    from art_pruning_defense.keras import outputs_probabilities

    x, y = tiny_data
    twin = logits_twin(tiny_model)
    assert not outputs_probabilities(twin)
    probabilities = FinePruning(KerasClassifier(tiny_model, clip_values=(0.0, 1.0)), verbose=False)
    probabilities.fit(x, y, poisoned_x=x[:20], poisoned_target=1)
    logits = FinePruning(KerasClassifier(twin, clip_values=(0.0, 1.0), use_logits=True), verbose=False)
    logits.fit(x, y, poisoned_x=x[:20], poisoned_target=1)
    assert logits.sweep_ == probabilities.sweep_
    assert logits.ranking_.tolist() == probabilities.ranking_.tolist()


def test_fine_tuning_a_logits_model_uses_a_loss_from_logits(tiny_model, tiny_data):
    from art.estimators.classification import KerasClassifier

    x, y = tiny_data
    for model, from_logits in ((tiny_model, False), (logits_twin(tiny_model), True)):
        defence = FinePruning(KerasClassifier(model, clip_values=(0.0, 1.0)), fine_tune_epochs=1, verbose=False)
        defence.fit(x, y)
        assert defence.fine_pruned_model_.loss.get_config()["from_logits"] is from_logits


def test_goodnet_over_logits_gives_probabilities_and_survives_save_load(tiny_model, tiny_data, tmp_path):
    from art.estimators.classification import KerasClassifier

    x, y = tiny_data
    twin = logits_twin(tiny_model)
    softmax_classifier = KerasClassifier(tiny_model, clip_values=(0.0, 1.0))
    logits_classifier = KerasClassifier(twin, clip_values=(0.0, 1.0), use_logits=True)
    expected = FinePruning(softmax_classifier, accuracy_drops=(4,), verbose=False)
    expected.fit(x, y)
    defence = FinePruning(logits_classifier, accuracy_drops=(4,), verbose=False)
    defence.fit(x, y)
    goodnet = defence(logits_classifier, accuracy_drop=4)
    assert goodnet.outputs_logits and not expected(softmax_classifier, accuracy_drop=4).outputs_logits
    scores = goodnet.predict(x)
    assert scores.shape == (60, 5) and np.all(scores >= 0)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scores, expected(softmax_classifier, accuracy_drop=4).predict(x), atol=1e-6)
    goodnet.save(str(tmp_path / "g"))
    again = GoodNetClassifier.load(str(tmp_path / "g"))
    assert again.outputs_logits
    np.testing.assert_array_equal(again.predict(x), scores)


def test_b_and_b_prime_must_output_the_same_kind_of_scores(tiny_model):
    with pytest.raises(ValueError, match=r"B outputs a probability vector \(softmax\) and B' outputs logits"):
        GoodNetClassifier(tiny_model, logits_twin(tiny_model))


# ---------------------------------------------------------------------------------------------------------------------
# ART's abstain convention.
# ---------------------------------------------------------------------------------------------------------------------


def test_abstain_gives_n_columns_and_an_all_zero_row_for_flagged_inputs(tiny_classifier, tiny_data, tmp_path):
    x, y = tiny_data
    defence = FinePruning(tiny_classifier, accuracy_drops=(4,), verbose=False)
    defence.fit(x, y)
    flagging = defence(tiny_classifier, accuracy_drop=4)
    abstaining = defence(tiny_classifier, accuracy_drop=4, abstain=True)
    reference = flagging.predict(x)
    flagged = np.argmax(reference, axis=1) == 4
    assert flagged.any() and (~flagged).any()
    scores = abstaining.predict(x)
    assert abstaining.nb_classes == 4 and abstaining.n_classes == 4 and scores.shape == (60, 4)
    np.testing.assert_array_equal(scores[flagged], 0.0)
    np.testing.assert_array_equal(scores[~flagged], reference[~flagged, :4])
    built = GoodNetClassifier.from_classifier(tiny_classifier, defence.pruned_model(4), abstain=True)
    np.testing.assert_array_equal(built.predict(x), scores)

    abstaining.save(str(tmp_path / "g"))
    assert json.loads((tmp_path / "g" / "goodnet.json").read_text())["abstain"] is True
    again = GoodNetClassifier.load(str(tmp_path / "g"))
    assert again.abstain and again.nb_classes == 4
    np.testing.assert_array_equal(again.predict(x), scores)

    again.set_params(abstain=False)
    assert again.nb_classes == 5
    np.testing.assert_array_equal(again.predict(x), reference)


# ---------------------------------------------------------------------------------------------------------------------
# ART's attacks and metrics (the README's table).
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("abstain", [False, True])
def test_decision_based_attacks_run_and_gradient_based_ones_fail_clearly(tiny_classifier, tiny_data, abstain):
    from art.attacks.evasion import BoundaryAttack, FastGradientMethod, HopSkipJump
    from art.exceptions import EstimatorError
    from art.metrics import clever_u, loss_sensitivity

    x, y = tiny_data
    defence = FinePruning(tiny_classifier, accuracy_drops=(4,), verbose=False)
    defence.fit(x, y)
    goodnet = defence(tiny_classifier, accuracy_drop=4, abstain=abstain)
    hsj = HopSkipJump(goodnet, max_iter=2, max_eval=20, init_eval=5, init_size=5, verbose=False)
    boundary = BoundaryAttack(
        goodnet, targeted=False, max_iter=2, num_trial=5, sample_size=5, init_size=5, verbose=False
    )
    for attack in (hsj, boundary):
        adversarial = attack.generate(x[:2])
        assert adversarial.shape == (2, 10, 10, 3) and np.all((adversarial >= 0) & (adversarial <= 1))
    with pytest.raises(NotImplementedError, match="GoodNetClassifier is not differentiable"):
        loss_sensitivity(goodnet, x[:2], np.eye(goodnet.nb_classes)[y[:2]])
    with pytest.raises(NotImplementedError, match="GoodNetClassifier is not differentiable"):
        clever_u(goodnet, x[0], nb_batches=2, batch_size=2, radius=0.3, norm=2, verbose=False)
    with pytest.raises(EstimatorError, match="LossGradientsMixin"):
        FastGradientMethod(goodnet, eps=0.1)


# ---------------------------------------------------------------------------------------------------------------------
# Numbers checked in float32; NaN never becomes a class; inputs far outside the clip values.
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("std", 1e-300, "preprocessing std must be non-zero in float32"),
        ("std", 1e-40, "preprocessing std must be non-zero in float32"),
        ("mean", 1e300, "preprocessing mean is out of float32 range"),
        ("mean", -1e39, "preprocessing mean is out of float32 range"),
        ("clip_values", [0.0, 1e300], "clip_values is out of float32 range"),
        ("clip_values", [1.0, 1.00000001], "min < max in float32"),
    ],
)
def test_goodnet_json_numbers_are_checked_in_float32(goodnet_parts, tmp_path, field, value, message):
    GoodNetClassifier(*goodnet_parts, clip_values=(0.0, 255.0), preprocessing=(0.0, 255.0)).save(str(tmp_path / "g"))
    path = tmp_path / "g" / "goodnet.json"
    config = json.loads(path.read_text())
    if field == "clip_values":
        config["clip_values"] = value
    else:
        config["preprocessing"][field] = value
    path.write_text(json.dumps(config))
    reseal(tmp_path / "g")
    with pytest.raises(ValueError, match=message) as info:
        GoodNetClassifier.load(str(tmp_path / "g"))
    assert "NaN or infinite" not in str(info.value) and "goodnet.json" in str(info.value)


def test_nan_scores_are_an_error_naming_how_many_inputs(goodnet_parts, tiny_data):
    bad, pruned = goodnet_parts
    x, _ = tiny_data
    x = x[:5].copy()
    x[[1, 3]] = 1e10  # finite, but beyond float32 once divided by the std
    goodnet = GoodNetClassifier(bad, pruned, preprocessing=(0.0, 1e-30))
    with pytest.raises(ValueError, match="2 of 5 inputs are NaN or infinite after the GoodNet's preprocessing"):
        goodnet.predict(x)
    with pytest.raises(ValueError, match="2 of 5 inputs"):
        goodnet.evaluate(x, np.zeros(5, dtype=int))
    broken = logits_twin(bad)
    kernel, bias = broken.get_layer("output").get_weights()
    bias[2] = np.nan
    broken.get_layer("output").set_weights([kernel, bias])
    with pytest.raises(ValueError, match="output is NaN or infinite for 5 of 5 inputs"):
        GoodNetClassifier(broken, logits_twin(pruned)).predict(x[[0, 2, 4, 0, 2]])


def test_inputs_far_outside_the_clip_values_are_warned_about_once(goodnet_parts, tiny_data, caplog):
    x, _ = tiny_data
    goodnet = GoodNetClassifier(*goodnet_parts, clip_values=(0.0, 1.0))
    with caplog.at_level("WARNING", logger="art_pruning_defense"):
        goodnet.predict(np.clip(x * 1.005, 0.0, 1.005), batch_size=7)  # within 1 %: silent
        assert not caplog.records
        goodnet.predict(x * 255.0, batch_size=7)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "beyond the classifier's clip values [0, 1]" in message
    assert f"[{x.min() * 255:g}, {x.max() * 255:g}]" in message
