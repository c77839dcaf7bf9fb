"""Fine-pruning proper: prune to prune_until, then retrain with the pruned channels held at zero."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from art.estimators.classification import KerasClassifier

from art_pruning_defense import FinePruning
from conftest import conv_block_model


def test_fine_tuning_keeps_pruned_channels_at_zero_and_b_untouched(tiny_data):
    model = conv_block_model(batch_norm=True, activation="tanh")
    classifier = KerasClassifier(model, clip_values=(0.0, 1.0))
    before = [w.copy() for w in model.get_weights()]
    x, _ = tiny_data
    y = np.argmax(model.predict(x, verbose=0), axis=1)  # B is 100 % accurate: pruning soon costs a point
    defence = FinePruning(classifier, fine_tune_epochs=3, prune_until=1, verbose=False)
    defence.fit(x, y)
    tuned = defence.fine_pruned_model_
    point = defence.prune_point
    step = defence.fine_tune_["channels_pruned"]
    assert 1 <= step < point.n_channels
    pruned = defence.ranking_[:step]
    mask = tuned.get_layer(point.mask_name).scale
    assert sorted(np.flatnonzero(mask == 0).tolist()) == sorted(pruned.tolist())
    cut = keras.Model(tuned.inputs[0], tuned.get_layer(point.mask_name).output).predict(x, verbose=0)
    assert np.all(cut[..., pruned] == 0.0)
    # The fine-tuning changed the copy's weights, not B's; by default BatchNormalization learns on the clean data.
    assert not np.array_equal(tuned.get_layer("conv_2").kernel.numpy(), model.get_layer("conv_2").kernel.numpy())
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert not np.array_equal(tuned.get_layer("bn").moving_mean.numpy(), model.get_layer("bn").moving_mean.numpy())
    goodnet = defence(classifier)
    assert goodnet.metadata["method"] == "fine-pruning"
    assert goodnet.metadata["pruned_channels"] == pruned.tolist()
    assert defence(classifier, accuracy_drop=4).metadata["method"] == "pruning"
    copy = defence.fine_pruned_model()
    np.testing.assert_array_equal(copy.predict(x, verbose=0), tuned.predict(x, verbose=0))


def test_frozen_batchnorm_keeps_b_statistics_and_augmentation_changes_the_result(tiny_data):
    model = conv_block_model(batch_norm=True, activation="tanh")
    classifier = KerasClassifier(model, clip_values=(0.0, 1.0))
    x, _ = tiny_data
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    frozen = FinePruning(classifier, fine_tune_epochs=2, prune_until=1, fine_tune_batchnorm="frozen", verbose=False)
    frozen.fit(x, y)
    tuned = frozen.fine_pruned_model_
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        np.testing.assert_array_equal(
            getattr(tuned.get_layer("bn"), name).numpy(), getattr(model.get_layer("bn"), name).numpy()
        )
    assert not np.array_equal(tuned.get_layer("conv_2").kernel.numpy(), model.get_layer("conv_2").kernel.numpy())
    shifted = FinePruning(
        classifier,
        fine_tune_epochs=2,
        prune_until=1,
        fine_tune_batchnorm="frozen",
        fine_tune_augment=True,
        verbose=False,
    )
    shifted.fit(x, y)
    assert not np.array_equal(
        shifted.fine_pruned_model_.get_layer("conv_2").kernel.numpy(), tuned.get_layer("conv_2").kernel.numpy()
    )
    adam = FinePruning(
        classifier,
        fine_tune_epochs=2,
        prune_until=1,
        fine_tune_optimizer="adam",
        fine_tune_learning_rate=1e-3,
        verbose=False,
    )
    adam.fit(x, y)
    goodnet = adam(classifier)
    assert goodnet.metadata["fine_tune_optimizer"] == "adam"
    assert goodnet.metadata["fine_tune_batchnorm"] == "train"


@pytest.mark.parametrize(
    "params,error",
    [
        ({"fine_tune_optimizer": "rmsprop"}, "fine_tune_optimizer must be one of 'sgd', 'adam', got 'rmsprop'"),
        ({"fine_tune_batchnorm": "off"}, "fine_tune_batchnorm must be one of 'train', 'frozen', got 'off'"),
        ({"fine_tune_augment": "yes"}, "fine_tune_augment must be a bool, got str"),
    ],
)
def test_fine_tuning_options_are_checked(tiny_classifier, params, error):
    with pytest.raises((ValueError, TypeError), match=error):
        FinePruning(tiny_classifier, **params)


@pytest.mark.parametrize("prune_until", [1, 100])
def test_prune_until_sets_the_depth_and_keeps_one_channel(tiny_classifier, tiny_data, prune_until):
    x, y = tiny_data
    defence = FinePruning(tiny_classifier, fine_tune_epochs=1, prune_until=prune_until, verbose=False)
    defence.fit(x, y)
    accuracy = [r.clean_accuracy for r in defence.sweep_]
    expected = next((k for k, a in enumerate(accuracy) if accuracy[0] - a >= prune_until), len(accuracy) - 1)
    assert defence.fine_tune_["channels_pruned"] == min(expected, 5)  # never all 6 channels


def test_fine_pruned_model_needs_fine_tuning(tiny_classifier, tiny_data):
    defence = FinePruning(tiny_classifier, verbose=False)
    defence.fit(*tiny_data)
    assert defence.fine_pruned_model_ is None
    with pytest.raises(ValueError, match="fine_tune_epochs=0"):
        defence.fine_pruned_model()


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"fine_tune_epochs": -1}, ValueError),
        ({"fine_tune_epochs": 1.5}, TypeError),
        ({"fine_tune_learning_rate": 0}, ValueError),
        ({"fine_tune_learning_rate": "fast"}, TypeError),
        ({"prune_until": 0}, ValueError),
        ({"fine_tune_batch_size": 0}, ValueError),
    ],
)
def test_fine_tuning_parameters_are_checked(tiny_classifier, kwargs, error):
    with pytest.raises(error):
        FinePruning(tiny_classifier, **kwargs)


def test_fine_pruning_removes_more_of_the_digits_backdoor_than_pruning(digits_badnet):
    data, classifier = digits_badnet
    defence = FinePruning(classifier, fine_tune_epochs=10, verbose=False)
    defence.fit(data.x_valid, data.y_valid)
    fine = defence(classifier).evaluate(data.x_test, data.y_test, data.x_test_poisoned, data.target)
    pruned = defence(classifier, accuracy_drop=10).evaluate(data.x_test, data.y_test, data.x_test_poisoned, data.target)
    assert fine["B'"]["attack_success_rate"] < pruned["B'"]["attack_success_rate"]
    assert fine["B'"]["clean_accuracy"] > pruned["B'"]["clean_accuracy"]


def test_same_inputs_and_seed_give_the_same_outputs(digits_badnet):
    data, classifier = digits_badnet
    runs = []
    for _ in range(2):
        defence = FinePruning(classifier, fine_tune_epochs=2, seed=3, verbose=False)
        defence.fit(data.x_valid, data.y_valid, poisoned_x=data.x_valid_poisoned, poisoned_target=data.target)
        runs.append((defence.sweep_, defence.fine_tune_, defence.fine_pruned_model_.get_weights()))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][2], runs[1][2]))


def test_diverged_fine_tuning_is_redone_at_half_the_rate(tiny_data, monkeypatch, caplog):
    """A fine-tuning run that leaves B' worse on its own clean data than the pruned copy is redone, rate halved."""
    import art_pruning_defense.tuning as fine_pruning_module

    real = fine_pruning_module.fine_tune
    rates = []

    def diverging_once(model, x, y, **options):
        rates.append(options["learning_rate"])
        if len(rates) == 1:  # as a diverged run ends: one class for every input, the rarest of the labels
            weights = model.get_weights()
            weights[-2] = np.zeros_like(weights[-2])
            weights[-1] = np.where(np.arange(len(weights[-1])) == rarest, 50.0, 0.0).astype(weights[-1].dtype)
            model.set_weights(weights)
            return model
        return real(model, x, y, **options)

    monkeypatch.setattr(fine_pruning_module, "fine_tune", diverging_once)
    model = conv_block_model(batch_norm=True, activation="tanh")
    x, _ = tiny_data
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    rarest = int(np.argmin(np.bincount(y, minlength=model.outputs[0].shape[-1])))
    defence = FinePruning(
        KerasClassifier(model, clip_values=(0.0, 1.0)), fine_tune_epochs=2, fine_tune_learning_rate=0.02, verbose=False
    )
    with caplog.at_level("WARNING", logger="art_pruning_defense.tuning"):
        defence.fit(x, y)
    assert rates == [0.02, 0.01]
    summary = defence.fine_tune_
    assert summary["learning_rate"] == 0.01 and summary["clean_accuracy"] >= summary["pruned_accuracy"]
    assert "diverged" in caplog.text and "retrying at 0.01" in caplog.text


def test_fine_tuning_that_works_is_run_once(tiny_data, monkeypatch):
    import art_pruning_defense.tuning as fine_pruning_module

    real = fine_pruning_module.fine_tune
    calls = []
    monkeypatch.setattr(fine_pruning_module, "fine_tune", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = conv_block_model(batch_norm=True, activation="tanh")
    x, _ = tiny_data
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    defence = FinePruning(KerasClassifier(model, clip_values=(0.0, 1.0)), fine_tune_epochs=2, verbose=False)
    defence.fit(x, y)
    assert len(calls) == 1 and defence.fine_tune_["learning_rate"] == defence.fine_tune_learning_rate


def test_feature_shift_tuning_runs_once_even_below_the_pruned_accuracy(tiny_data, monkeypatch, caplog):
    """FST re-initialises the head: ending below the pruned copy's accuracy is expected, not a divergence to retry."""
    import art_pruning_defense.tuning as tuning

    calls = []

    def worse(model, x, y, **options):
        calls.append(options["learning_rate"])
        weights = model.get_weights()
        weights[-1] = np.where(np.arange(len(weights[-1])) == rarest, 50.0, 0.0).astype(weights[-1].dtype)
        weights[-2] = np.zeros_like(weights[-2])
        model.set_weights(weights)  # the rarest class for every input: below the pruned copy
        return model

    monkeypatch.setattr(tuning, "feature_shift_tune", worse)
    model = conv_block_model(batch_norm=True, activation="tanh")
    x, _ = tiny_data
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    rarest = int(np.argmin(np.bincount(y, minlength=model.outputs[0].shape[-1])))
    defence = FinePruning(
        KerasClassifier(model, clip_values=(0.0, 1.0)),
        fine_tune_epochs=2,
        fine_tune_mode="feature-shift",
        verbose=False,
    )
    with caplog.at_level("WARNING", logger="art_pruning_defense.tuning"):
        defence.fit(x, y)
    assert calls == [0.02]
    assert defence.fine_tune_["clean_accuracy"] < defence.fine_tune_["pruned_accuracy"]
    assert "diverged" not in caplog.text


@pytest.mark.parametrize("augment", [False, True])
def test_feature_shift_tuning_takes_the_augment_option(tiny_data, monkeypatch, augment):
    """``fine_tune_augment`` reaches feature-shift tuning (it was once honoured by plain fine-tuning only)."""
    import art_pruning_defense.tuning as tuning

    seen = []

    def spy(model, x, y, **options):
        seen.append(options["augment_pad"])
        return model

    monkeypatch.setattr(tuning, "feature_shift_tune", spy)
    model = conv_block_model(batch_norm=True)
    x, _ = tiny_data
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    defence = FinePruning(
        KerasClassifier(model, clip_values=(0.0, 1.0)),
        fine_tune_epochs=1,
        fine_tune_mode="feature-shift",
        fine_tune_augment=augment,
        verbose=False,
    )
    defence.fit(x, y)
    side = min(int(d) for d in model.inputs[0].shape[1:3])
    assert seen == [max(1, round(side / 8)) if augment else 0]
