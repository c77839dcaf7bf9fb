"""FinePruning: the sweep against a brute-force evaluation, the stopping rule, B left untouched."""

from __future__ import annotations

import numpy as np
import pytest
from art.defences.transformer.transformer import Transformer
from art.estimators.classification import KerasClassifier

from art_pruning_defense import FinePruning
from art_pruning_defense.keras import find_prune_point, masked_copy
from conftest import conv_block_model


def _brute_force(model, order, x, y, px, target):
    """Build every B' from scratch with the adapter and run the whole network (one eager forward pass in inference
    mode per input set: what ``predict`` computes, without tracing a predict function for each of the copies)."""
    import keras

    point = find_prune_point(model)
    accuracy, asr = [], []
    for k in range(len(order) + 1):
        mask = np.ones(point.n_channels, dtype=np.float32)
        mask[order[:k]] = 0
        copy = masked_copy(model, point, mask)
        labels, poisoned = (np.argmax(keras.ops.convert_to_numpy(copy(v, training=False)), axis=1) for v in (x, px))
        accuracy.append(100 * np.mean(labels == y))
        asr.append(100 * np.mean(poisoned == target))
    return accuracy, asr


@pytest.mark.parametrize("kwargs", [{}, {"batch_norm": True, "activation": "sigmoid"}])
def test_sweep_matches_full_forward_passes(kwargs, tiny_data):
    model = conv_block_model(**kwargs)
    classifier = KerasClassifier(model, clip_values=(0.0, 1.0))
    x, _ = tiny_data
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    y[::3] = (y[::3] + 1) % 4  # some errors, so that accuracy can move both ways
    px = x[:25] * 0.5
    defence = FinePruning(classifier, accuracy_drops=(2, 10), batch_size=16, verbose=False)
    defence.fit(x, y, poisoned_x=px, poisoned_target=2)

    accuracy, asr = _brute_force(model, defence.ranking_, x, y, px, 2)
    assert [r.clean_accuracy for r in defence.sweep_] == pytest.approx(accuracy)
    assert [r.attack_success_rate for r in defence.sweep_] == pytest.approx(asr)
    assert [r.channels_pruned for r in defence.sweep_] == list(range(7))
    assert [r.channel for r in defence.sweep_[1:]] == defence.ranking_.tolist()


def test_a_wide_layer_swept_with_kept_front_sums_matches_full_forward_passes(tiny_data, monkeypatch):
    """24 channels: the sweep keeps the dense layer's sums per sample through its first steps (FrontState) and
    still gives the curves of B' built and run from scratch at every step."""
    import keras

    from art_pruning_defense.keras import FrontState

    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(24, 3, activation="relu", bias_initializer="ones", name="conv")(inputs)
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D(2, name="pool")(x))
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    classifier = KerasClassifier(model, clip_values=(0.0, 1.0))
    x, _ = tiny_data
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    y[::3] = (y[::3] + 1) % 4
    px = x[:25] * 0.5
    shares = []
    prune = FrontState.prune
    monkeypatch.setattr(FrontState, "prune", lambda self, *a: shares.append(a[2]) or prune(self, *a))
    defence = FinePruning(classifier, accuracy_drops=(2, 10), batch_size=16, verbose=False)
    defence.fit(x, y, poisoned_x=px, poisoned_target=2)

    assert shares, "the sums were not kept"
    accuracy, asr = _brute_force(model, defence.ranking_, x, y, px, 2)
    assert [r.clean_accuracy for r in defence.sweep_] == pytest.approx(accuracy)
    assert [r.attack_success_rate for r in defence.sweep_] == pytest.approx(asr)
    # In chunks of 25 samples' activations (864 bytes each), the sums only where they fit beside a chunk (the last
    # clean chunk of 10): the same sweep.
    small = FinePruning(classifier, accuracy_drops=(2, 10), batch_size=16, verbose=False, max_cache_bytes=25 * 864)
    small.fit(x, y, poisoned_x=px, poisoned_target=2)
    assert [r.as_dict() for r in small.sweep_] == [r.as_dict() for r in defence.sweep_]


def test_ranking_uses_mean_activation_after_pooling(tiny_classifier, tiny_model, tiny_data):
    import keras

    x, y = tiny_data
    defence = FinePruning(tiny_classifier, verbose=False)
    defence.fit(x, y)
    pooled = keras.Model(tiny_model.inputs[0], tiny_model.get_layer("pool").output).predict(x, verbose=0)
    np.testing.assert_allclose(defence.mean_activation_, pooled.mean(axis=(0, 1, 2)), rtol=1e-5)
    assert defence.ranking_.tolist() == np.argsort(pooled.mean(axis=(0, 1, 2)), kind="stable").tolist()


def test_bounded_cache_gives_the_same_sweep(tiny_classifier, tiny_data):
    x, y = tiny_data
    full = FinePruning(tiny_classifier, verbose=False)
    full.fit(x, y, poisoned_x=x[:13], poisoned_target=1)
    # 4 * 4 * 6 floats per sample: a bound of 1 KiB holds 10 samples, so 6 + 2 chunks.
    chunked = FinePruning(tiny_classifier, max_cache_bytes=1024, batch_size=7, verbose=False)
    chunked.fit(x, y, poisoned_x=x[:13], poisoned_target=1)
    assert chunked.sweep_ == full.sweep_


def test_one_hot_labels_and_integer_labels_agree(tiny_classifier, tiny_data):
    x, y = tiny_data
    a = FinePruning(tiny_classifier, verbose=False)
    a.fit(x, y)
    b = FinePruning(tiny_classifier, verbose=False)
    b.fit(x, np.eye(4)[y])
    assert a.sweep_ == b.sweep_


def test_classifier_preprocessing_is_applied(tiny_model, tiny_data):
    x, y = tiny_data
    classifier = KerasClassifier(tiny_model, clip_values=(0.0, 255.0), preprocessing=(0.0, 255.0))
    defence = FinePruning(classifier, verbose=False)
    defence.fit(x * 255.0, y)
    expected = 100 * np.mean(np.argmax(classifier.predict(x * 255.0), axis=1) == y)
    assert defence.sweep_[0].clean_accuracy == pytest.approx(expected)


def test_pruned_model_follows_the_stopping_rule_and_leaves_b_untouched(tiny_classifier, tiny_model, tiny_data):
    x, y = tiny_data
    y = np.argmax(tiny_model.predict(x, verbose=0), axis=1)
    y[::3] = (y[::3] + 1) % 4  # B is 2/3 accurate: a drop of 100 points cannot happen
    before = [w.copy() for w in tiny_model.get_weights()]
    defence = FinePruning(tiny_classifier, accuracy_drops=(2, 4, 100), verbose=False)
    defence.fit(x, y)
    accuracy = np.array([r.clean_accuracy for r in defence.sweep_])
    for drop in (2, 4):
        step = defence.steps_[float(drop)]
        assert accuracy[0] - accuracy[step] >= drop
        assert np.all(accuracy[0] - accuracy[:step] < drop)
    assert defence.steps_[100.0] == 6  # never reached: the whole layer
    channels = defence.pruned_channels(4)
    assert channels.tolist() == defence.ranking_[: defence.steps_[4.0]].tolist()
    pruned = defence.pruned_model(4)
    mask = pruned.get_layer("pool_prune_mask").scale
    assert np.flatnonzero(mask == 0).tolist() == sorted(channels.tolist())
    assert 100 * np.mean(np.argmax(pruned.predict(x, verbose=0), axis=1) == y) == pytest.approx(
        accuracy[defence.steps_[4.0]]
    )
    defence(tiny_classifier, accuracy_drop=4)
    assert all(np.array_equal(a, b) for a, b in zip(before, tiny_model.get_weights()))
    assert pruned.get_layer("conv_2").kernel is not tiny_model.get_layer("conv_2").kernel


def test_is_an_art_transformer_with_params(tiny_classifier):
    defence = FinePruning(tiny_classifier, verbose=False)
    assert isinstance(defence, Transformer)
    assert not defence.is_fitted
    defence.set_params(accuracy_drops=[10, 5, 5])
    assert defence.accuracy_drops == (5.0, 10.0)
    assert set(defence.params) <= set(vars(defence))


def test_sweep_from_an_h5_dataset_in_batches_matches_arrays(tiny_classifier, tiny_data, tmp_path):
    import h5py

    x, y = tiny_data
    with h5py.File(tmp_path / "valid.h5", "w") as handle:
        handle["x"] = x
        handle["px"] = x[:13]
    in_memory = FinePruning(tiny_classifier, verbose=False)
    in_memory.fit(x, y, poisoned_x=x[:13], poisoned_target=1)
    with h5py.File(tmp_path / "valid.h5", "r") as handle:
        lazy = FinePruning(tiny_classifier, max_cache_bytes=1024, batch_size=7, verbose=False)
        lazy.fit(handle["x"], y, poisoned_x=handle["px"], poisoned_target=1)
    assert lazy.sweep_ == in_memory.sweep_


def test_nan_in_an_h5_dataset_is_reported_with_its_place(tiny_classifier, tiny_data, tmp_path):
    import h5py

    x, y = tiny_data
    x = x.copy()
    x[42, 0, 0, 0] = np.nan
    with h5py.File(tmp_path / "valid.h5", "w") as handle:
        handle["x"] = x
    with h5py.File(tmp_path / "valid.h5", "r") as handle:
        with pytest.raises(ValueError, match=r"x holds NaN or infinite values \(in samples 40\.\.47\)"):
            FinePruning(tiny_classifier, batch_size=8, verbose=False).fit(handle["x"], y)


# ---------------------------------------------------------------------------------------------------------------------
# ART's set_params.
# ---------------------------------------------------------------------------------------------------------------------


def test_set_params_layer_name_takes_effect(tiny_classifier, tiny_data):
    x, y = tiny_data
    defence = FinePruning(tiny_classifier, verbose=False)
    defence.fit(x, y)
    defence.set_params(layer_name="conv_1")
    assert defence.prune_point.layer_name == "conv_1" and not defence.is_fitted
    assert defence.sweep_ is None and defence.ranking_ is None and defence.steps_ is None
    with pytest.raises(ValueError, match="not fitted"):
        defence.pruned_model(2)
    defence.fit(x, y)
    fresh = FinePruning(tiny_classifier, layer_name="conv_1", verbose=False)
    fresh.fit(x, y)
    assert len(defence.ranking_) == 5 and defence.sweep_ == fresh.sweep_


def test_set_params_strategy_and_layer_names_take_effect(tiny_classifier):
    defence = FinePruning(tiny_classifier, verbose=False)
    defence.set_params(strategy="attack_aware", layer_names=("conv_2", "conv_1"))
    assert [p.layer_name for p in defence.prune_points] == ["conv_1", "conv_2"]
    assert defence.layer_names == ["conv_2", "conv_1"]
    with pytest.raises(ValueError, match="set layer_names=None too"):
        defence.set_params(strategy="activation")
    defence.set_params(strategy="activation", layer_names=None)
    assert [p.layer_name for p in defence.prune_points] == ["conv_2"]


def test_set_params_forgets_the_fit_only_when_the_fit_would_change(tiny_classifier, tiny_data):
    x, y = tiny_data
    defence = FinePruning(tiny_classifier, accuracy_drops=(2, 4), verbose=False)
    defence.fit(x, y)
    sweep = defence.sweep_
    defence.set_params(batch_size=7, max_cache_bytes=1024, verbose=False, accuracy_drops=[4, 2, 2])
    assert defence.is_fitted and defence.sweep_ is sweep and defence.batch_size == 7
    for change in ({"accuracy_drops": (2,)}, {"fine_tune_epochs": 1}, {"seed": 3}, {"prune_until": 30}):
        defence.fit(x, y)
        defence.set_params(**change)
        assert not defence.is_fitted and defence.sweep_ is None, change
        with pytest.raises(ValueError, match="not fitted"):
            defence(tiny_classifier, accuracy_drop=2)


def test_a_failed_set_params_leaves_the_defence_as_it_was(tiny_classifier, tiny_data):
    x, y = tiny_data
    defence = FinePruning(tiny_classifier, accuracy_drops=(2, 4), verbose=False)
    defence.fit(x, y)
    cases = [
        ({"accuracy_drops": (0,)}, ValueError, r"\(0, 100\]"),
        ({"batch_size": 8, "seed": -1}, ValueError, "seed must be in"),
        ({"layer_name": "conv_9"}, ValueError, "Unknown layer_name 'conv_9'"),
        ({"layer_name": "flatten"}, ValueError, "channels-last feature map"),
        ({"strategy": "random"}, ValueError, "strategy must be one of"),
        ({"layer_names": ["conv_1"]}, ValueError, "layer_names is for strategy='attack_aware'"),
        ({"verbose": 1, "prune_until": 5}, TypeError, "verbose must be a bool"),
        ({"classifier": tiny_classifier}, ValueError, r"Unexpected parameter\(s\) 'classifier'"),
        ({"layer": "conv_1"}, ValueError, r"parameter\(s\) 'layer'; FinePruning's parameters are: layer_name"),
    ]
    for kwargs, error, message in cases:
        state = dict(vars(defence))
        with pytest.raises(error, match=message):
            defence.set_params(**kwargs)
        assert vars(defence).keys() == state.keys() and all(vars(defence)[k] is v for k, v in state.items()), kwargs
        assert defence.is_fitted and defence.prune_point.layer_name == "conv_2"
    assert defence.pruned_channels(4).tolist() == defence.ranking_[: defence.steps_[4.0]].tolist()


def test_inputs_far_outside_the_clip_values_are_warned_about_once_per_fit(tiny_classifier, tiny_data, caplog):
    x, y = tiny_data
    defence = FinePruning(tiny_classifier, batch_size=7, max_cache_bytes=1024, verbose=False)
    with caplog.at_level("WARNING", logger="art_pruning_defense"):
        defence.fit(x, y, poisoned_x=x[:13], poisoned_target=1)
        assert not caplog.records
        defence.fit(x * 255.0, y, poisoned_x=x[:13] * 255.0, poisoned_target=1)
    assert len(caplog.records) == 1
    assert "beyond the classifier's clip values [0, 1]" in caplog.records[0].getMessage()


def test_later_fits_on_the_same_model_reuse_the_compiled_head_and_tail_which_go_with_the_model(tiny_data):
    import gc
    import weakref

    from art_pruning_defense.strategies import base

    model = conv_block_model()
    classifier = KerasClassifier(model, clip_values=(0.0, 1.0))
    x, y = tiny_data
    first = FinePruning(classifier, verbose=False)
    first.fit(x, y)
    compiled = base.COMPILED[model]["pool"]
    second = FinePruning(classifier, verbose=False)
    second.fit(x, y)
    assert base.COMPILED[model]["pool"] is compiled
    assert [r.as_dict() for r in first.sweep_] == [r.as_dict() for r in second.sweep_]
    alive = weakref.ref(model)
    del model, classifier, first, second, compiled
    gc.collect()
    assert alive() is None


def test_the_strategy_names_the_cli_offers_are_the_registry():
    """The CLI checks --strategy against _defaults.STRATEGY_NAMES without importing TensorFlow: keep both equal."""
    from art_pruning_defense._defaults import STRATEGY_NAMES
    from art_pruning_defense.strategies import STRATEGIES

    assert tuple(STRATEGIES) == STRATEGY_NAMES
