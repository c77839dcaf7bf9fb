"""
The channel-level strategies' building blocks: CLP's channel Lipschitz scores and outlier rule, every conv's
channels (residual branches included), ANP's mask optimisation and prune rule, and feature shift tuning.
Tiny models and a few hundred random samples; the Keras runs are shared through module-scoped fixtures.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from art_pruning_defense.keras import as_functional, multi_masked_copy, small_cnn
from art_pruning_defense.keras._adversarial import _noisy_copy, anp_mask_values
from art_pruning_defense.keras._channels import channel_layers
from art_pruning_defense.strategies.lipschitz import layer_lipschitz
from art_pruning_defense.keras._feature_shift import feature_shift_tune
from art_pruning_defense.strategies import anp_prune_masks, channel_lipschitz, lipschitz_outliers


def residual_model(seed: int = 0) -> keras.Model:
    """
    stem conv → BN → ReLU, then a residual block whose branch is conv → BN → ReLU → conv (no BN, with bias), added
    to the stem's output; a 1×1 shortcut conv → BN on a second path; GAP → softmax. BN statistics non-trivial.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="branch_conv_1")(x)
    y = keras.layers.BatchNormalization(name="branch_bn_1")(y)
    y = keras.layers.Activation("relu", name="branch_relu_1")(y)
    y = keras.layers.Conv2D(4, 3, padding="same", name="branch_conv_2", bias_initializer="ones")(y)
    s = keras.layers.Conv2D(4, 1, use_bias=False, name="shortcut_conv")(x)
    s = keras.layers.BatchNormalization(name="shortcut_bn")(s)
    x = keras.layers.Add(name="add")([s, y])
    x = keras.layers.Activation("relu", name="out_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="output")(x)
    model = keras.Model(inputs, outputs, name="tiny_resnet")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma + rng.normal(0, 0.5, 4), beta + 0.1, mean + rng.random(4), var + rng.random(4)])
    return model


def data(n: int = 256, shape: tuple[int, ...] = (8, 8, 3), classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, classes, n)


def snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w, copy=True) for w in model.get_weights()]


def same_weights(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    return len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second))


# --- CLP: numpy core ---------------------------------------------------------------------------------------------


def direct_uclc(kernel, gamma=None, variance=None, epsilon=1e-3):
    """The definition, one channel at a time: W[..., k] as (in, kh·kw), its largest singular value, BN factor."""
    scores = []
    for k in range(kernel.shape[-1]):
        matrix = np.moveaxis(kernel[..., k], 2, 0).reshape(kernel.shape[2], -1)
        sigma = np.linalg.svd(matrix, compute_uv=False)[0]
        if variance is not None:
            g = 1.0 if gamma is None else gamma[k]
            sigma *= abs(g / np.sqrt(variance[k] + epsilon))
        scores.append(sigma)
    return np.array(scores)


def test_channel_lipschitz_matches_per_channel_svd():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 5, 7))
    gamma, variance = rng.normal(size=7), rng.random(7) + 0.1
    np.testing.assert_allclose(channel_lipschitz(kernel), direct_uclc(kernel), rtol=1e-10)
    np.testing.assert_allclose(
        channel_lipschitz(kernel, gamma, variance, 1e-5), direct_uclc(kernel, gamma, variance, 1e-5), rtol=1e-10
    )
    # The matrix is (in, kh·kw), not (kh·kw·in) flattened: a vector norm would differ.
    assert not np.allclose(channel_lipschitz(kernel), np.linalg.norm(kernel.reshape(-1, 7), axis=0))


def test_channel_lipschitz_applies_the_bn_factor():
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 3, 2, 4))
    gamma = np.array([2.0, -3.0, 0.5, 1.0])
    variance = np.array([4.0, 1.0, 0.25, 9.0])
    plain = channel_lipschitz(kernel)
    with_bn = channel_lipschitz(kernel, gamma, variance, bn_epsilon=0.0)
    np.testing.assert_allclose(with_bn, plain * np.array([1.0, 3.0, 1.0, 1.0 / 3.0]))
    # A BN without scale: γ = 1.
    np.testing.assert_allclose(channel_lipschitz(kernel, None, variance, 0.0), plain / np.sqrt(variance))
    # The epsilon enters under the root.
    np.testing.assert_allclose(
        channel_lipschitz(kernel, gamma, variance, 0.75), plain * np.abs(gamma) / np.sqrt(variance + 0.75)
    )


def test_lipschitz_outliers_hand_computed():
    # Nine 1s and a 10: mean 1.9; unbiased std sqrt(72.9 / 9) = 2.8460; population std sqrt(72.9 / 10) = 2.7.
    scores = np.array([1.0] * 9 + [10.0])
    assert lipschitz_outliers(scores, u=2.0).tolist() == [False] * 9 + [True]  # threshold 7.59
    # u = 2.9: 1.9 + 2.9 · 2.8460 = 10.15 > 10, no outlier with torch's unbiased std (with the population std the
    # threshold would be 9.73 and the 10 would be pruned).
    assert not lipschitz_outliers(scores, u=2.9).any()
    assert lipschitz_outliers(scores, u=2.8).tolist() == [False] * 9 + [True]  # threshold 9.87
    assert not lipschitz_outliers(np.array([5.0])).any()


# --- channel layers and CLP on Keras models -----------------------------------------------------------------------


def test_channel_layers_finds_convs_inside_residual_blocks():
    layers = {layer.conv_name: layer for layer in channel_layers(residual_model())}
    assert sorted(layers) == ["branch_conv_1", "branch_conv_2", "shortcut_conv", "stem_conv"]
    assert layers["stem_conv"].bn_name == "stem_bn"
    assert layers["branch_conv_1"].bn_name == "branch_bn_1"
    assert layers["branch_conv_1"].point.cut_name == "branch_relu_1"
    assert layers["branch_conv_2"].bn_name is None
    assert layers["branch_conv_2"].point.cut_name == "branch_conv_2"
    assert layers["shortcut_conv"].bn_name == "shortcut_bn"
    assert layers["shortcut_conv"].point.cut_name == "shortcut_bn"
    assert all(layer.n_channels == 4 for layer in layers.values())


def test_model_without_conv2d_is_refused():
    inputs = keras.Input(shape=(6,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(4)(inputs)))
    with pytest.raises(ValueError, match="Expected a model with at least one Conv2D layer"):
        channel_layers(model)


def test_lipschitz_scores_read_the_keras_weights():
    model = residual_model()
    scores = {layer.conv_name: layer_lipschitz(model, layer) for layer in channel_layers(model)}
    bn = model.get_layer("branch_bn_1")
    gamma, _, _, variance = bn.get_weights()
    kernel = model.get_layer("branch_conv_1").get_weights()[0]
    np.testing.assert_allclose(scores["branch_conv_1"], direct_uclc(kernel, gamma, variance, bn.epsilon), rtol=1e-6)
    # No BN after branch_conv_2: the kernel alone.
    kernel = model.get_layer("branch_conv_2").get_weights()[0]
    np.testing.assert_allclose(scores["branch_conv_2"], direct_uclc(kernel), rtol=1e-6)


def test_lipschitz_masks_prune_a_planted_outlier():
    model = small_cnn((16, 16, 1), 10)  # no BN: kernels alone
    kernel, bias = model.get_layer("conv_2").get_weights()
    kernel[..., 5] *= 50.0
    model.get_layer("conv_2").set_weights([kernel, bias])
    from art.estimators.classification import KerasClassifier

    from art_pruning_defense import FinePruning

    defence = FinePruning(KerasClassifier(model, clip_values=(0.0, 1.0)), strategy="lipschitz", verbose=False)
    defence.fit()  # data-free: the paper's threshold, u = 3
    pruned = defence.pruned_model(None)
    masks = {name: pruned.get_layer(name + "_prune_mask").scale for name in ("pool_1", "pool_2")}
    assert np.flatnonzero(np.asarray(masks["pool_2"]) == 0).tolist() == [5]
    assert np.asarray(masks["pool_1"]).all()
    assert defence.steps_ == {} and defence.sweep_ is None


# --- ANP ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anp_runs():
    model = residual_model()
    x, y = data()
    before = snapshot(model)
    kwargs = {"iterations": 6, "batch_size": 32, "seed": 3}
    first = anp_mask_values(model, x, y, **kwargs)
    after = snapshot(model)
    second = anp_mask_values(model, x, y, **kwargs)
    other_seed = anp_mask_values(model, x, y, iterations=6, batch_size=32, seed=4)
    keras.backend.clear_session()
    return {"before": before, "after": after, "first": first, "second": second, "other_seed": other_seed}


def test_anp_values_in_unit_interval_for_every_channel(anp_runs):
    values = anp_runs["first"]
    assert sorted(point.layer_name for point in values) == sorted(
        ["stem_conv", "branch_conv_1", "branch_conv_2", "shortcut_conv"]
    )
    for point, value in values.items():
        assert value.shape == (point.n_channels,)
        assert np.all((value >= 0.0) & (value <= 1.0))
    # The masks moved from their start at 1.
    assert any(np.any(value < 1.0) for value in values.values())


def test_anp_leaves_the_model_unchanged(anp_runs):
    assert same_weights(anp_runs["before"], anp_runs["after"])


def test_anp_is_deterministic_for_a_seed(anp_runs):
    first, second, other = anp_runs["first"], anp_runs["second"], anp_runs["other_seed"]
    for point in first:
        np.testing.assert_array_equal(first[point], second[point])
    assert any(not np.array_equal(first[point], other[point]) for point in first)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_noisy_copy_computes_the_model(batch_norm):
    """With masks at 1 and no perturbation (moving statistics), the ANP copy computes what the model computes."""
    model = residual_model() if batch_norm else small_cnn((16, 16, 1), 10)
    x, _ = data(16, model.inputs[0].shape[1:])
    targets = channel_layers(model)
    copy, noisy, from_logits = _noisy_copy(as_functional(model), targets, batch_statistics=False)
    assert from_logits
    assert sorted(noisy) == sorted(layer.conv_name for layer in targets)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(copy(x))), expected, atol=1e-5)
    # Perturbing a channel of the last conv changes the outputs: the perturbation is wired in.
    layer = noisy[targets[-1].conv_name]
    layer.noise_scale.assign(np.full(layer.noise_scale.shape, 0.4, np.float32))
    layer.perturbed.assign(1.0)
    assert not np.allclose(keras.ops.convert_to_numpy(keras.ops.softmax(copy(x))), expected, atol=1e-4)


def test_anp_without_batch_normalization_masks_conv_outputs():
    model = small_cnn((16, 16, 1), 10)
    x, y = data(128, (16, 16, 1), 10)
    values = anp_mask_values(model, x, y, iterations=4, batch_size=32)
    assert [point.layer_name for point in values] == ["conv_1", "conv_2"]
    assert any(np.any(value < 1.0) for value in values.values())


def test_anp_prune_masks_threshold():
    masks = anp_prune_masks({"a": np.array([0.1, 0.2, 0.5, 0.0])})
    assert masks["a"].tolist() == [0.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="threshold"):
        anp_prune_masks({"a": np.ones(2)}, threshold=1.5)


def test_channel_forced_to_zero_outputs_exactly_zero(anp_runs):
    model = as_functional(residual_model())
    values = {point: value.copy() for point, value in anp_runs["first"].items()}
    point = next(p for p in values if p.layer_name == "branch_conv_1")
    values = {p: np.ones_like(v) for p, v in values.items()}
    values[point][2] = 0.0
    pruned = multi_masked_copy(model, anp_prune_masks(values))
    x, _ = data(32)
    cut = keras.Model(pruned.inputs, pruned.get_layer(point.mask_name).output).predict(x, verbose=0)
    assert np.all(cut[..., 2] == 0.0)
    assert np.any(cut[..., [0, 1, 3]] != 0.0)
    reference = keras.Model(model.inputs, model.get_layer(point.cut_name).output).predict(x, verbose=0)
    assert np.any(reference[..., 2] != 0.0)


# --- FST ----------------------------------------------------------------------------------------------------------


def test_fst_keeps_the_head_norm_and_the_input_model():
    model = residual_model()
    x, y = data()
    before = snapshot(model)
    tuned = feature_shift_tune(model, x, y, epochs=2, batch_size=64)
    assert same_weights(before, snapshot(model))
    original = model.get_layer("output").get_weights()[0]
    head = tuned.get_layer("output").get_weights()[0]
    np.testing.assert_allclose(np.linalg.norm(head), np.linalg.norm(original), rtol=1e-5)
    assert not np.allclose(head, original, atol=1e-3)
    # Pushed away from the compromised head: the re-initialised, tuned head is far less aligned with it.
    cosine = float(np.sum(head * original) / np.linalg.norm(head) / np.linalg.norm(original))
    assert cosine < 0.5
    # Still a softmax classifier.
    np.testing.assert_allclose(tuned.predict(x[:8], verbose=0).sum(axis=1), 1.0, atol=1e-5)


def test_fst_keeps_pruned_channels_at_zero():
    model = as_functional(small_cnn((16, 16, 1), 10))
    point = next(layer.point for layer in channel_layers(model) if layer.conv_name == "conv_2")
    mask = np.ones(point.n_channels, np.float32)
    mask[[0, 7, 13]] = 0.0
    masked = multi_masked_copy(model, {point: mask})
    x, y = data(192, (16, 16, 1), 10)
    tuned = feature_shift_tune(masked, x, y, epochs=1, batch_size=64)
    assert not same_weights(snapshot(masked), snapshot(tuned))
    np.testing.assert_array_equal(np.asarray(tuned.get_layer(point.mask_name).scale).reshape(-1), mask)
    cut = keras.Model(tuned.inputs, tuned.get_layer(point.mask_name).output).predict(x[:32], verbose=0)
    assert np.all(cut[..., [0, 7, 13]] == 0.0)
    assert np.any(cut[..., 1] != 0.0)


@pytest.mark.parametrize("pad", [0, 2])
def test_fst_shifts_each_epoch_images_when_asked_and_keeps_masks(monkeypatch, pad):
    import art_pruning_defense.keras._feature_shift as fst

    calls = []
    real = fst.augment

    def spy(x, rng, pad_, flip, rows=None):
        calls.append((pad_, flip))
        shifted = real(x, rng, pad_, flip, rows)
        assert shifted.shape == x.shape and not np.array_equal(shifted, x)
        return shifted

    monkeypatch.setattr(fst, "augment", spy)
    model = as_functional(small_cnn((16, 16, 1), 10))
    point = next(layer.point for layer in channel_layers(model) if layer.conv_name == "conv_2")
    mask = np.ones(point.n_channels, np.float32)
    mask[[0, 7]] = 0.0
    masked = multi_masked_copy(model, {point: mask})
    x, y = data(96, (16, 16, 1), 10)
    tuned = feature_shift_tune(masked, x, y, epochs=2, batch_size=32, augment_pad=pad)
    assert calls == ([(2, False)] * 2 if pad else [])
    cut = keras.Model(tuned.inputs, tuned.get_layer(point.mask_name).output).predict(x[:16], verbose=0)
    assert np.all(cut[..., [0, 7]] == 0.0)
    with pytest.raises(ValueError, match="augment_pad must be a non-negative integer, got -1"):
        feature_shift_tune(masked, x, y, epochs=1, augment_pad=-1)


def test_fst_needs_a_dense_head():
    inputs = keras.Input(shape=(8, 8, 3))
    x = keras.layers.Conv2D(3, 3)(inputs)
    outputs = keras.layers.Softmax()(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(ValueError, match="last Dense layer"):
        feature_shift_tune(keras.Model(inputs, outputs), *data(16))


@pytest.mark.parametrize("head", ["softmax_layer", "logits"])
def test_fst_heads_without_softmax_inside_the_dense(head):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    outputs = keras.layers.Softmax(name="probabilities")(x) if head == "softmax_layer" else x
    model = keras.Model(inputs, outputs)
    x_data, y_data = data(64)
    tuned = feature_shift_tune(model, x_data, y_data, epochs=1, batch_size=32)
    original = model.get_layer("head").get_weights()[0]
    np.testing.assert_allclose(
        np.linalg.norm(tuned.get_layer("head").get_weights()[0]), np.linalg.norm(original), rtol=1e-5
    )
    out = tuned.predict(x_data[:8], verbose=0)
    if head == "softmax_layer":
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    else:
        assert not np.allclose(out.sum(axis=1), 1.0, atol=1e-3)
