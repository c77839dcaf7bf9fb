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
    assert sorted(os.listdir(path)) == [".art-prune-output", "bad_model.keras", "goodnet.json", "pruned_model.keras"]
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
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "g")], capture_output=True, text=True, timeout=300)
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
