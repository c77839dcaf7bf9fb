"""Bad input: a clear ValueError or TypeError before any work, and nothing written to disk."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from art.estimators.classification import KerasClassifier

from art_pruning_defense import FinePruning, GoodNetClassifier


@pytest.fixture(autouse=True)
def _in_empty_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield
    assert os.listdir(tmp_path) == [], "an error left files behind"


@pytest.fixture
def defence(tiny_classifier):
    return FinePruning(tiny_classifier, verbose=False)


@pytest.fixture
def fitted(tiny_classifier, tiny_data):
    defence = FinePruning(tiny_classifier, accuracy_drops=(2, 4), verbose=False)
    defence.fit(*tiny_data)
    return defence


def test_x_and_y_of_different_lengths(defence, tiny_data):
    x, y = tiny_data
    with pytest.raises(ValueError, match="x has 60 samples but y has 59 labels"):
        defence.fit(x, y[:-1])


@pytest.mark.parametrize("bad_label", [-1, 4, 1000])
def test_labels_outside_range(defence, tiny_data, bad_label):
    x, y = tiny_data
    y = y.copy()
    y[5] = bad_label
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        defence.fit(x, y)


def test_non_integer_and_wrongly_shaped_labels(defence, tiny_data):
    x, y = tiny_data
    with pytest.raises(ValueError, match="non-integer"):
        defence.fit(x, y + 0.5)
    with pytest.raises(ValueError, match="one-hot with 3 columns, but the model has 4 classes"):
        defence.fit(x, np.eye(3)[y % 3])
    with pytest.raises(TypeError, match="numpy array"):
        defence.fit(x, list(y))


def test_input_shape_mismatch(defence, tiny_data):
    _, y = tiny_data
    with pytest.raises(ValueError, match=r"x has shape \(12, 12, 3\) per sample, but the model expects \(10, 10, 3\)"):
        defence.fit(np.zeros((60, 12, 12, 3), dtype=np.float32), y)
    with pytest.raises(ValueError, match="per sample, but the model expects"):
        defence.fit(np.zeros((60, 10, 10), dtype=np.float32), y)


def test_empty_validation_set(defence):
    with pytest.raises(ValueError, match="empty"):
        defence.fit(np.zeros((0, 10, 10, 3), dtype=np.float32), np.zeros(0, dtype=int))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_inputs(defence, tiny_data, value):
    x, y = tiny_data
    x = x.copy()
    x[3, 2, 1, 0] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        defence.fit(x, y)
    with pytest.raises(ValueError, match="poisoned_x holds NaN or infinite"):
        defence.fit(tiny_data[0], y, poisoned_x=x, poisoned_target=0)


def test_non_numeric_inputs(defence, tiny_data):
    _, y = tiny_data
    with pytest.raises(TypeError, match="integers or floats"):
        defence.fit(np.full((60, 10, 10, 3), "a"), y)


@pytest.mark.parametrize("drops", [(0,), (-2,), (100.5,), (2, 101)])
def test_accuracy_drop_outside_range(tiny_classifier, drops):
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        FinePruning(tiny_classifier, accuracy_drops=drops)


def test_accuracy_drops_of_wrong_type(tiny_classifier):
    with pytest.raises(TypeError):
        FinePruning(tiny_classifier, accuracy_drops="2")
    with pytest.raises(ValueError, match="empty"):
        FinePruning(tiny_classifier, accuracy_drops=())


def test_unknown_layer_name(tiny_classifier):
    with pytest.raises(
        ValueError, match=r"Unknown layer_name 'conv_9'; the model's layers with a 4-D output are: .*conv_2"
    ):
        FinePruning(tiny_classifier, layer_name="conv_9")


def test_layer_without_channel_axis(tiny_classifier):
    with pytest.raises(ValueError, match="expected a channels-last feature map"):
        FinePruning(tiny_classifier, layer_name="flatten")


def test_model_without_conv2d():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(4)(inputs)))
    with pytest.raises(ValueError, match=r"no layer with a 4-D channels-last output .* its layers are: .*dense"):
        FinePruning(KerasClassifier(model))


def test_not_an_art_classifier(tiny_model):
    with pytest.raises(TypeError, match="wrap it first"):
        FinePruning(tiny_model)
    with pytest.raises(TypeError, match="ART classifier"):
        FinePruning("model.h5")


def test_pruned_model_for_x_not_swept(fitted):
    with pytest.raises(ValueError, match="accuracy_drop=10 was not swept; the fitted values are: 2, 4"):
        fitted.pruned_model(10)
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        fitted.pruned_model(0)


def test_call_before_fit(defence, tiny_classifier):
    with pytest.raises(ValueError, match="not fitted"):
        defence(tiny_classifier, accuracy_drop=4)
    with pytest.raises(ValueError, match="not fitted"):
        defence.pruned_model(4)


def test_call_needs_a_choice_of_x_and_the_same_model(fitted, tiny_classifier):
    with pytest.raises(ValueError, match="choose one with accuracy_drop"):
        fitted(tiny_classifier)
    other = keras.models.clone_model(tiny_classifier.model)
    with pytest.raises(ValueError, match="other weights"):
        fitted(KerasClassifier(other), accuracy_drop=4)


def test_poisoned_data_needs_a_target(defence, tiny_data):
    x, y = tiny_data
    with pytest.raises(ValueError, match="both poisoned_x and poisoned_target"):
        defence.fit(x, y, poisoned_x=x)
    with pytest.raises(ValueError, match=r"poisoned_target must be a class in \[0, 4\)"):
        defence.fit(x, y, poisoned_x=x, poisoned_target=7)


def test_goodnet_input_errors(fitted, tiny_classifier, tiny_data, tmp_path):
    goodnet = fitted(tiny_classifier, accuracy_drop=2)
    with pytest.raises(ValueError, match="per sample, but the model expects"):
        goodnet.predict(np.zeros((2, 3, 3, 3), dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="not a saved GoodNet"):
        GoodNetClassifier.load(str(tmp_path))


def test_layer_bypassed_by_another_path_is_refused_at_construction():
    inputs = keras.Input((8, 8, 2))
    trunk = keras.layers.Conv2D(4, 3, name="trunk")(inputs)
    branch = keras.layers.Flatten()(keras.layers.Conv2D(3, 2, name="branch")(trunk))
    merged = keras.layers.Concatenate()([branch, keras.layers.Flatten()(trunk)])
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(merged))
    with pytest.raises(ValueError, match="bypasses it"):
        FinePruning(KerasClassifier(model), layer_name="branch")
    assert FinePruning(KerasClassifier(model), verbose=False).prune_point.layer_name == "trunk"


def test_logits_models_are_accepted_but_b_and_b_prime_must_output_the_same_kind(tiny_data):
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Flatten()(keras.layers.Conv2D(3, 3, name="conv")(inputs))
    logits = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    probabilities = keras.Model(inputs, keras.layers.Softmax()(logits.outputs[0]))
    defence = FinePruning(KerasClassifier(logits, use_logits=True), accuracy_drops=(4,), verbose=False)
    defence.fit(*tiny_data)
    assert defence(defence.classifier, accuracy_drop=4).predict(tiny_data[0]).shape == (60, 5)
    with pytest.raises(ValueError, match="B outputs logits .* and B' outputs a probability vector"):
        GoodNetClassifier(logits, probabilities)
