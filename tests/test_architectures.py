"""
Standard architectures: keras.applications backbones (standalone and nested under a new head), VGG-BN and the
benchmark's ResNet-20. For each: the default prune point, exact zeros downstream of the pruned channels, and the
sweep's accuracy curve against brute-force masked forward passes.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from art.estimators.classification import KerasClassifier

from art_pruning_defense import FinePruning, GoodNetClassifier
from art_pruning_defense.keras import (
    as_functional,
    build_architecture,
    find_prune_point,
    masked_copy,
    resolve_layer_name,
    split,
)

SHAPE = (32, 32, 3)
N_CLASSES = 3
APPS = keras.applications


def _nested(base: keras.Model) -> keras.Model:
    """The transfer-learning shape: a backbone without its top, under a new pooling + softmax head."""
    inputs = keras.Input(SHAPE, name="image")
    x = base(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(0.2, name="head_dropout")(x)
    return keras.Model(inputs, keras.layers.Dense(N_CLASSES, activation="softmax", name="head")(x), name="transfer")


def _nested_sequential(base: keras.Model) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(SHAPE),
            base,
            keras.layers.GlobalAveragePooling2D(name="head_pool"),
            keras.layers.Dense(N_CLASSES, activation="softmax", name="head"),
        ],
        name="transfer_seq",
    )


def _vgg_bn_small() -> keras.Model:
    """A VGG-style net with BatchNormalization after every conv (narrow, so that the test stays fast)."""
    inputs = keras.Input(SHAPE, name="image")
    x = inputs
    for block, width in enumerate((8, 16, 16), start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv_{block}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{block}")(x)
        x = keras.layers.Activation("relu", name=f"relu_{block}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{block}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, keras.layers.Dense(N_CLASSES, activation="softmax", name="output")(x), name="vgg_bn")


# (name, builder, expected (layer_name, cut_name) of the default prune point).
STANDALONE = [
    (
        "ResNet50V2",
        lambda: APPS.ResNet50V2(weights=None, input_shape=SHAPE, classes=N_CLASSES),
        ("post_relu", "avg_pool"),
    ),
    (
        "ResNet50",
        lambda: APPS.ResNet50(weights=None, input_shape=SHAPE, classes=N_CLASSES),
        ("conv5_block3_out", "avg_pool"),
    ),
    (
        "MobileNetV2",
        lambda: APPS.MobileNetV2(weights=None, input_shape=SHAPE, classes=N_CLASSES, alpha=0.35),
        ("Conv_1", "global_average_pooling2d"),
    ),
    (
        "EfficientNetB0",
        lambda: APPS.EfficientNetB0(weights=None, input_shape=SHAPE, classes=N_CLASSES),
        ("top_conv", "top_dropout"),
    ),
    ("DenseNet121", lambda: APPS.DenseNet121(weights=None, input_shape=SHAPE, classes=N_CLASSES), ("relu", "avg_pool")),
    ("VGG-BN", _vgg_bn_small, ("conv_3", "pool_3")),
    ("resnet20", lambda: build_architecture("resnet20", SHAPE, N_CLASSES), ("stage3_block3_out", "avg_pool")),
]
NESTED = [
    ("ResNet50V2", lambda: APPS.ResNet50V2(weights=None, include_top=False, input_shape=SHAPE), "post_relu"),
    ("ResNet50", lambda: APPS.ResNet50(weights=None, include_top=False, input_shape=SHAPE), "conv5_block3_out"),
    (
        "MobileNetV2",
        lambda: APPS.MobileNetV2(weights=None, include_top=False, input_shape=SHAPE, alpha=0.35),
        "Conv_1",
    ),
    ("EfficientNetB0", lambda: APPS.EfficientNetB0(weights=None, include_top=False, input_shape=SHAPE), "top_conv"),
    ("DenseNet121", lambda: APPS.DenseNet121(weights=None, include_top=False, input_shape=SHAPE), "relu"),
    ("VGG-BN", lambda: keras.Model(*_backbone(_vgg_bn_small(), "pool_3"), name="vgg_base"), "conv_3"),
]


def _backbone(model: keras.Model, last: str) -> tuple:
    return model.inputs, model.get_layer(last).output


def _data(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).random((n, *SHAPE), dtype=np.float32)


def _forward(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """
    One eager forward pass in inference mode: what ``predict`` computes, without tracing a predict function for a
    network of hundreds of layers (seconds per model; three models per test).
    """
    inputs = [x] if isinstance(getattr(model, "input", None), list) else x
    return keras.ops.convert_to_numpy(model(inputs, training=False))


def _check_sweep(model: keras.Model, expected_layer: str, expected_cut: str | None, layer_name: str | None = None):
    x = _data()
    classifier = KerasClassifier(model, clip_values=(0.0, 1.0))
    # Labels B gets right on about half the samples, so that pruning can move the accuracy either way.
    b_labels = np.argmax(_forward(model, x), axis=1)
    y = np.where(np.arange(len(x)) % 2 == 0, b_labels, (b_labels + 1) % N_CLASSES)
    weights_before = [w.copy() for w in model.get_weights()]
    defence = FinePruning(classifier, layer_name=layer_name, accuracy_drops=(50.0,), verbose=False)
    point = defence.prune_point
    assert point.layer_name == expected_layer
    if expected_cut is not None:
        assert point.cut_name == expected_cut
    defence.fit(x, y)
    n = point.n_channels
    assert [r.channels_pruned for r in defence.sweep_] == list(range(n + 1))
    flat = as_functional(model)
    for step in (n // 2,):
        mask = np.ones(n, dtype=np.float32)
        mask[defence.ranking_[:step]] = 0.0
        pruned = masked_copy(flat, point, mask)
        # Brute force: the whole masked network.
        labels = np.argmax(_forward(pruned, x), axis=1)
        assert defence.sweep_[step].clean_accuracy == pytest.approx(100.0 * np.mean(labels == y))
        # The pruned channels are exactly zero after the mask, whatever precedes it.
        head = split(pruned, point.mask_name)[0]
        at_mask = _forward(head, x)
        assert np.all(at_mask[..., defence.ranking_[:step]] == 0.0)
        assert np.any(at_mask[..., defence.ranking_[step:]] != 0.0)
    # The user's model is untouched.
    assert all(np.array_equal(a, b) for a, b in zip(weights_before, model.get_weights()))
    return defence, classifier, x


@pytest.mark.parametrize("name,build,expected", STANDALONE, ids=[s[0] for s in STANDALONE])
def test_standalone_default_prune_point_and_exact_sweep(name, build, expected):
    _check_sweep(build(), *expected)


@pytest.mark.parametrize("name,build,expected", NESTED, ids=[s[0] for s in NESTED])
def test_nested_backbone_default_prune_point_and_exact_sweep(name, build, expected):
    model = _nested(build())
    # Where the backbone ends in a feature map, the head's global pooling (and dropout) join the cut.
    _check_sweep(model, expected, "pool_3" if name == "VGG-BN" else "head_dropout")


def test_nested_layer_addressed_by_path_and_sequential_head():
    base = APPS.MobileNetV2(weights=None, include_top=False, input_shape=SHAPE, alpha=0.35)
    model = _nested_sequential(base)
    path = f"{base.name}/block_16_project_BN"
    assert resolve_layer_name(model, path) == "block_16_project_BN"
    _check_sweep(model, "block_16_project_BN", None, layer_name=path)


def test_nested_names_wrongly_give_the_candidates():
    base = APPS.MobileNetV2(weights=None, include_top=False, input_shape=SHAPE, alpha=0.35)
    model = _nested(base)
    classifier = KerasClassifier(model, clip_values=(0.0, 1.0))
    with pytest.raises(ValueError, match=rf"the nested model {base.name!r} holds: .*Conv_1"):
        FinePruning(classifier, layer_name=f"{base.name}/no_such_layer")
    with pytest.raises(ValueError, match=rf"no nested model 'backbone'; its nested models are: {base.name}"):
        FinePruning(classifier, layer_name="backbone/Conv_1")
    with pytest.raises(
        ValueError, match=r"Unknown layer_name 'Conv_9'; the model's layers with a 4-D output are: .*Conv_1"
    ):
        FinePruning(classifier, layer_name="Conv_9")


def test_goodnet_over_a_nested_backbone_saves_and_reloads_exactly(tmp_path):
    model = _nested(keras.Model(*_backbone(_vgg_bn_small(), "pool_3"), name="vgg_base"))
    defence, classifier, x = _check_sweep(model, "conv_3", "pool_3")
    goodnet = defence(accuracy_drop=50.0)
    goodnet.save(str(tmp_path / "goodnet"))
    again = GoodNetClassifier.load(str(tmp_path / "goodnet"))
    np.testing.assert_array_equal(goodnet.predict(x), again.predict(x))


def _bypassed_everywhere() -> keras.Model:
    """Two parallel branches from the input to the head: no 4-D layer is on every path."""
    inputs = keras.Input((8, 8, 2))
    a = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 3, name="left")(inputs))
    b = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 3, name="right")(inputs))
    x = keras.layers.Concatenate()([a, b])
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def test_bypassed_feature_maps_name_the_candidates():
    with pytest.raises(
        ValueError, match=r"another path to the output bypasses every 4-D layer \(candidates: .*left.*right"
    ):
        find_prune_point(_bypassed_everywhere())


def test_channels_first_model_is_refused():
    inputs = keras.Input((2, 8, 8))
    x = keras.layers.Conv2D(3, 3, data_format="channels_first", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ValueError, match=r"channels-first feature maps \(layer 'conv'"):
        FinePruning(KerasClassifier(model))


@pytest.mark.parametrize("name", ["resnet20", "vgg11-bn", "small-cnn"])
def test_benchmark_architectures_build(name):
    model = build_architecture(name, SHAPE, 10)
    assert model.outputs[0].shape[-1] == 10
    point = find_prune_point(as_functional(model))
    expected = {"resnet20": "stage3_block3_out", "vgg11-bn": "block8_conv", "small-cnn": "conv_2"}[name]
    assert point.layer_name == expected


def test_unknown_architecture():
    with pytest.raises(ValueError, match="Unknown architecture 'resnet99'; choose one of: small-cnn, resnet20"):
        build_architecture("resnet99", SHAPE, 10)


def test_attack_aware_default_layers_are_blocks_on_every_path():
    from art_pruning_defense.keras import build_deepid, last_prunable_layers

    deepid = build_deepid()
    assert last_prunable_layers(as_functional(deepid), 3) == ["conv_1", "conv_2", "conv_3"]  # conv_4 is on a branch
    resnet = build_architecture("resnet20", SHAPE, 10)
    assert last_prunable_layers(as_functional(resnet), 3) == [f"stage3_block{b}_out" for b in (1, 2, 3)]
    defence = FinePruning(KerasClassifier(deepid, clip_values=(0.0, 255.0)), strategy="attack_aware")
    assert [p.layer_name for p in defence.prune_points] == ["conv_1", "conv_2", "conv_3"]


def _augment_whole(x: np.ndarray, rng: np.random.Generator, pad: int, flip: bool) -> np.ndarray:
    """The augmentation written for the whole array at once (the definition that the chunked one must reproduce)."""
    n, height, width = x.shape[:3]
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    out = np.stack([padded[i, dy[i] : dy[i] + height, dx[i] : dx[i] + width] for i in range(n)])
    if flip:
        flipped = rng.random(n) < 0.5
        out[flipped] = out[flipped, :, ::-1]
    return out


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_augment_in_chunks_and_by_rows_equals_the_whole_array(monkeypatch, chunk):
    from art_pruning_defense.keras import _architectures

    monkeypatch.setattr(_architectures, "AUGMENT_CHUNK", chunk)
    x = np.random.default_rng(0).random((10, 6, 5, 3), dtype=np.float32)
    rows = np.array([7, 2, 2, 9, 0])
    whole = _augment_whole(x, np.random.default_rng(1), pad=2, flip=True)
    assert np.array_equal(_architectures.augment(x, np.random.default_rng(1), 2, True), whole)
    assert np.array_equal(
        _architectures.augment(x, np.random.default_rng(1), 2, True, rows=rows),
        _augment_whole(x[rows], np.random.default_rng(1), pad=2, flip=True),
    )
    assert not np.array_equal(whole, _augment_whole(x, np.random.default_rng(2), pad=2, flip=True))


@pytest.mark.parametrize("augment_pad", [0, 1])
def test_fit_classifier_on_rows_equals_fitting_the_copy(augment_pad):
    """Training on ``rows`` of x (no copy kept) gives the very weights of training on ``x[rows]``."""
    from art_pruning_defense.keras import fit_classifier

    rng = np.random.default_rng(0)
    x = rng.random((60, 8, 8, 3), dtype=np.float32)
    y = rng.integers(0, 3, 60)
    rows = np.sort(rng.choice(60, 40, replace=False))

    def trained(**kwargs) -> list[np.ndarray]:
        keras.utils.set_random_seed(0)
        model = build_architecture("small-cnn", (8, 8, 3), 3)
        fit_classifier(model, epochs=2, batch_size=16, augment_pad=augment_pad, augment_flip=augment_pad > 0, **kwargs)
        return model.get_weights()

    by_rows = trained(x=x, y=y, rows=rows)
    copied = trained(x=x[rows], y=y[rows])
    assert all(np.array_equal(a, b) for a, b in zip(by_rows, copied))
    other = trained(x=x, y=y, rows=rows[::-1])  # another order of the same rows trains otherwise
    assert not all(np.array_equal(a, b) for a, b in zip(by_rows, other))


def test_training_inputs_are_shared_with_tensorflow_without_a_copy():
    """Augmented inputs are made aligned and handed to Keras as a tensor over the same memory; others are copied."""
    from art_pruning_defense._aligned import TENSOR_ALIGNMENT, aligned_empty
    from art_pruning_defense.keras import _architectures
    from art_pruning_defense.keras._predict import shared_tensor

    x = np.random.default_rng(0).random((20, 6, 5, 3), dtype=np.float32)
    augmented = _architectures.augment(x, np.random.default_rng(1), 1, True)
    assert augmented.ctypes.data % TENSOR_ALIGNMENT == 0 and augmented.flags.c_contiguous
    shared = _architectures._fit_inputs(augmented)
    assert np.array_equal(np.asarray(shared), augmented)
    augmented[0, 0, 0, 0] = 7.0  # the same memory: the tensor sees the change
    assert float(shared[0, 0, 0, 0]) == 7.0
    # Not shareable (misaligned, float64, strided, read-only): the same values, copied (or left to Keras).
    misaligned = aligned_empty((x.size + 1,), np.float32)[1:].reshape(x.shape)
    misaligned[...] = x
    read_only = x.copy()
    read_only.flags.writeable = False
    for array in (misaligned, x.astype(np.float64), x[:, ::2], read_only):
        assert _architectures._fit_inputs(array) is array
        copied = shared_tensor(array)
        assert np.array_equal(np.asarray(copied), np.asarray(array, np.float32))
    copied = shared_tensor(misaligned)
    misaligned[0, 0, 0, 0] = 7.0
    assert float(copied[0, 0, 0, 0]) == x[0, 0, 0, 0]
