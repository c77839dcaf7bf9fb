"""
The lipschitz (CLP) and adversarial (ANP) strategies and feature-shift tuning through FinePruning: every conv channel
of a ResNet-20 and of a keras.applications backbone under a head, masks exact, the user's model untouched, GoodNets
saved and loaded equal, set_params effective, and the bad inputs refused in one line.
"""

from __future__ import annotations

import numpy as np
import pytest
from art.estimators.classification import KerasClassifier

from art_pruning_defense import FinePruning, GoodNetClassifier
from art_pruning_defense._sweep import search_steps, select_steps
from art_pruning_defense.keras import channel_layers, resnet20, small_cnn, weights_equal

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def resnet():
    """A ResNet-20 whose BatchNorm statistics are not the identity, and 160 images labelled by the model itself."""
    keras.utils.set_random_seed(0)
    model = resnet20((16, 16, 3), 4)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma * rng.uniform(0.5, 2, gamma.shape), beta, mean, variance])
    x = rng.random((160, 16, 16, 3), dtype=np.float32)
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    y[:40] = np.arange(40) % 4  # several classes whatever the random network answers
    return model, x, y


def _classifier(model):
    return KerasClassifier(model, clip_values=(0.0, 1.0))


@pytest.mark.parametrize("strategy", ["lipschitz", "adversarial"])
def test_ranked_strategies_on_resnet20_prune_every_conv_exactly_and_leave_the_model_alone(resnet, strategy):
    model, x, y = resnet
    before = [w.copy() for w in model.get_weights()]
    defence = FinePruning(
        _classifier(model), strategy=strategy, adversarial_iterations=3, accuracy_drops=(5.0, 30.0), verbose=False
    )
    layers = channel_layers(model)
    assert len(defence.prune_points) == len(layers) == 21  # every conv of ResNet-20, inside residual branches too
    defence.fit(x, y)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert set(defence.steps_) == {5.0, 30.0}
    for drop, step in defence.steps_.items():
        record = defence.sweep_[step]
        assert record.clean_accuracy <= defence.sweep_[0].clean_accuracy - drop or step == len(defence.sweep_) - 1
        channels = defence.pruned_channels(drop)
        assert sum(len(c) for c in channels.values()) == record.channels_pruned
        pruned = defence.pruned_model(drop)
        # Each pruned channel is exactly zero after its block's mask, for every input (every mask read by one probe,
        # in one call, rather than a model and a traced predict function per prune point).
        points = [point for point in defence.prune_points if len(channels[point.layer_name])]
        probe = keras.Model(pruned.inputs, [pruned.get_layer(point.mask_name).output for point in points])
        probed = probe.predict(x[:8], verbose=0) if points else []
        probed = probed if isinstance(probed, (list, tuple)) else [probed]
        for point, outputs in zip(points, probed):
            pruned_here = channels[point.layer_name]
            assert np.all(outputs[..., pruned_here] == 0.0)
            assert np.any(outputs[..., [c for c in range(point.n_channels) if c not in set(pruned_here)]] != 0.0)
    own = defence.pruned_model(None)
    assert weights_equal(model, _classifier(model).model)
    goodnet = defence(_classifier(model))  # the strategy's own cut without an X
    assert goodnet.metadata["strategy"] == strategy and goodnet.metadata["accuracy_drop"] is None
    np.testing.assert_array_equal(
        np.argmax(own.predict(x, verbose=0), axis=1), np.argmax(goodnet.pruned_model.predict(x, verbose=0), axis=1)
    )


def test_goodnets_of_ranked_strategies_save_and_load_equal(resnet, tmp_path):
    model, x, y = resnet
    defence = FinePruning(_classifier(model), strategy="lipschitz", accuracy_drops=(5.0,), verbose=False)
    defence.fit(x, y)
    goodnet = defence(_classifier(model), accuracy_drop=5.0)
    goodnet.save(str(tmp_path / "g"))
    again = GoodNetClassifier.load(str(tmp_path / "g"))
    np.testing.assert_array_equal(again.predict(x), goodnet.predict(x))
    assert again.metadata["pruned_channels"] == goodnet.metadata["pruned_channels"]


def test_set_params_changes_the_strategy_and_its_threshold(resnet):
    model, x, y = resnet
    defence = FinePruning(_classifier(model), verbose=False)
    assert len(defence.prune_points) == 1
    defence.set_params(strategy="lipschitz")
    assert len(defence.prune_points) == 21
    defence.fit()
    strict = sum(len(c) for c in defence.pruned_channels(None).values())
    defence.set_params(lipschitz_threshold=1.0)
    assert not defence.is_fitted
    defence.fit()
    loose = sum(len(c) for c in defence.pruned_channels(None).values())
    assert loose > strict
    with pytest.raises(ValueError, match="layer_names is for strategy='attack_aware'; strategy='lipschitz'"):
        defence.set_params(layer_names=["conv_1"])
    assert defence.strategy == "lipschitz" and defence.is_fitted  # a failed call changes nothing


def test_a_keras_applications_backbone_under_a_head():
    keras.utils.set_random_seed(1)
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35, pooling="avg"
    )
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(backbone(inputs))
    model = keras.Model(inputs, outputs)
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(1).random((128, 32, 32, 3), dtype=np.float32)
    y = np.arange(128) % 3
    defence = FinePruning(_classifier(model), strategy="lipschitz", accuracy_drops=(10.0,), verbose=False)
    names = [p.layer_name for p in defence.prune_points]
    assert "Conv1" in names and "block_16_project" in names  # convs inside the nested backbone
    defence.fit(x, y)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    pruned = defence.pruned_model(10.0)
    assert pruned.predict(x[:4], verbose=0).shape == (4, 3)


def test_feature_shift_fine_pruning_keeps_masks_at_zero_and_the_head_norm(resnet):
    model, x, y = resnet
    defence = FinePruning(
        _classifier(model),
        strategy="lipschitz",
        lipschitz_threshold=1.5,
        fine_tune_epochs=1,
        fine_tune_mode="feature-shift",
        fine_tune_learning_rate=0.01,
        accuracy_drops=(10.0,),
        verbose=False,
    )
    defence.fit(x, y)
    tuned = defence.fine_pruned_model()
    head = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1].name
    np.testing.assert_allclose(
        np.linalg.norm(tuned.get_layer(head).get_weights()[0]), np.linalg.norm(model.get_layer(head).get_weights()[0]),
        rtol=1e-4,
    )
    assert not np.allclose(tuned.get_layer(head).get_weights()[0], model.get_layer(head).get_weights()[0])
    assert defence.fine_tune_["mode"] == "feature-shift"
    own = defence.pruned_channels(None)
    assert sum(len(c) for c in own.values()) > 0
    for point in defence.prune_points:
        mask = np.asarray(tuned.get_layer(point.mask_name).scale).reshape(-1)
        assert np.flatnonzero(mask == 0).tolist() == own[point.layer_name].tolist()
    goodnet = defence(_classifier(model))
    assert goodnet.metadata["method"] == "fine-pruning" and goodnet.metadata["fine_tune_mode"] == "feature-shift"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"strategy": "clp"}, ValueError, "strategy must be one of 'activation', 'attack_aware', 'lipschitz', 'adv"),
        ({"fine_tune_mode": "fst"}, ValueError, "fine_tune_mode must be one of 'plain', 'feature-shift', got 'fst'"),
        ({"lipschitz_threshold": 0}, ValueError, r"lipschitz_threshold must be in \(0, 100\], got 0"),
        ({"adversarial_eps": 2.0}, ValueError, r"adversarial_eps must be in \[0, 1\], got 2.0"),
        ({"adversarial_iterations": 0}, ValueError, "adversarial_iterations must be >= 1, got 0"),
        ({"adversarial_threshold": "0.2"}, TypeError, "adversarial_threshold must be a number"),
        ({"strategie": "lipschitz"}, TypeError, "unexpected parameter.*'strategie'.*its parameters are: layer_name"),
    ],
)
def test_bad_strategy_parameters_are_refused_in_one_line(tiny_classifier, kwargs, error, match):
    with pytest.raises(error, match=match):
        FinePruning(tiny_classifier, **kwargs)


@pytest.mark.parametrize("strategy", ["lipschitz", "adversarial"])
def test_a_model_without_conv_layers_is_refused(strategy):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(5)(x)))
    with pytest.raises(ValueError, match="Expected a model with at least one Conv2D layer"):
        FinePruning(_classifier(model), strategy=strategy)


def test_ranked_strategies_refuse_one_class_and_too_few_images_and_need_data_where_they_learn():
    model = small_cnn((8, 8, 1), 3)
    x = np.random.default_rng(2).random((200, 8, 8, 1), dtype=np.float32)
    defence = FinePruning(_classifier(model), strategy="adversarial", verbose=False)
    with pytest.raises(ValueError, match="needs at least 128 clean images .*got 100"):
        defence.fit(x[:100], np.arange(100) % 3)
    with pytest.raises(ValueError, match="several classes .*200 images of class 1 only"):
        defence.fit(x, np.ones(200, dtype=int))
    with pytest.raises(TypeError, match="fit needs the clean validation data x and y for strategy='adversarial'"):
        defence.fit()
    lipschitz = FinePruning(_classifier(model), strategy="lipschitz", fine_tune_epochs=2, verbose=False)
    with pytest.raises(ValueError, match="fine_tune_epochs=2 fine-tunes on clean data, but fit was given none"):
        lipschitz.fit()
    activation = FinePruning(_classifier(model), verbose=False)
    activation.fit(x, np.arange(200) % 3)
    with pytest.raises(ValueError, match="strategy='activation' has no cut of its own"):
        activation.pruned_model(None)


def test_search_steps_is_select_steps_where_accuracy_falls_monotonically_and_cheaper():
    rng = np.random.default_rng(3)
    accuracy = 90.0 - np.cumsum(rng.exponential(0.05, 700))
    accuracy = np.concatenate([[90.0], accuracy])
    calls = []

    def evaluate(step: int) -> float:
        calls.append(step)
        return float(accuracy[step])

    drops = (2.0, 4.0, 10.0)
    assert search_steps(evaluate, 700, drops) == select_steps(accuracy, drops)
    assert len(set(calls)) < 60 and len(calls) == len(set(calls))  # each step at most once, far fewer than 701
    assert search_steps(lambda step: 90.0, 700, (2.0,)) == {2.0: 700}  # never falls: every channel
