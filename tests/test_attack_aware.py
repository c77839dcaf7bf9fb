"""The attack-aware strategy: several layers, pruned only where that lowers the attack success rate."""

from __future__ import annotations

import numpy as np
import pytest

from art_pruning_defense import FinePruning


@pytest.fixture(scope="module")
def attack_aware(digits_badnet):
    data, classifier = digits_badnet
    defence = FinePruning(classifier, strategy="attack_aware", accuracy_drops=(2, 10), verbose=False)
    defence.fit(data.x_valid, data.y_valid, poisoned_x=data.x_valid_poisoned, poisoned_target=data.target)
    return data, classifier, defence


def test_each_step_lowers_the_attack_within_the_budget(attack_aware):
    _, _, defence = attack_aware
    assert [p.layer_name for p in defence.prune_points] == ["conv_1", "conv_2"]
    for drop, records in defence.sweeps_.items():
        asr = [r.attack_success_rate for r in records]
        accuracy = [r.clean_accuracy for r in records]
        for k in range(1, len(records)):  # lower attack, or the same attack at no clean cost
            assert asr[k] < asr[k - 1] or (asr[k] == asr[k - 1] and accuracy[k] >= accuracy[k - 1])
        assert all(records[0].clean_accuracy - r.clean_accuracy <= drop for r in records)
        assert [r.channels_pruned for r in records] == list(range(len(records)))
    assert defence.sweep_ is defence.sweeps_[10.0]
    assert defence.sweep_[-1].attack_success_rate < 0.5 * defence.sweep_[0].attack_success_rate


def test_pruned_model_reproduces_the_records(attack_aware):
    data, _, defence = attack_aware
    for drop in (2, 10):
        model = defence.pruned_model(drop)
        record = defence.sweeps_[float(drop)][-1]
        clean = np.argmax(model.predict(data.x_valid, verbose=0), axis=1)
        poisoned = np.argmax(model.predict(data.x_valid_poisoned, verbose=0), axis=1)
        assert 100 * np.mean(clean == data.y_valid) == pytest.approx(record.clean_accuracy)
        assert 100 * np.mean(poisoned == data.target) == pytest.approx(record.attack_success_rate)
        channels = defence.pruned_channels(drop)
        assert sum(len(c) for c in channels.values()) == record.channels_pruned
        points = {p.layer_name: p for p in defence.prune_points}
        for layer, pruned in channels.items():
            mask = model.get_layer(points[layer].mask_name)
            assert sorted(np.flatnonzero(mask.scale == 0).tolist()) == sorted(pruned.tolist())


def test_goodnet_and_metadata(attack_aware):
    data, classifier, defence = attack_aware
    goodnet = defence(classifier, accuracy_drop=10)
    assert goodnet.metadata["strategy"] == "attack_aware"
    assert set(goodnet.metadata["pruned_channels"]) == {"conv_1", "conv_2"}
    rows = goodnet.evaluate(data.x_test, data.y_test, data.x_test_poisoned, data.target)
    assert rows["B'"]["attack_success_rate"] < rows["B"]["attack_success_rate"]


def test_attack_aware_needs_poisoned_data(digits_badnet):
    data, classifier = digits_badnet
    defence = FinePruning(classifier, strategy="attack_aware", verbose=False)
    with pytest.raises(ValueError, match="needs triggered validation data"):
        defence.fit(data.x_valid, data.y_valid)


def test_strategy_parameters_are_checked(digits_badnet):
    _, classifier = digits_badnet
    with pytest.raises(ValueError, match="strategy must be one of"):
        FinePruning(classifier, strategy="random")
    with pytest.raises(ValueError, match="layer_names is for strategy='attack_aware'; strategy='activation' does not take it"):
        FinePruning(classifier, layer_names=["conv_1"])
    with pytest.raises(ValueError, match="Unknown layer_name 'nope'"):
        FinePruning(classifier, strategy="attack_aware", layer_names=["conv_2", "nope"])


def _sample_bytes(shape) -> int:
    return 4 * int(np.prod([int(d) for d in shape[1:]]))


def test_cuts_too_large_for_the_cache_are_recomputed_from_the_inputs_with_the_same_result(attack_aware, caplog):
    data, classifier, cached = attack_aware
    n = len(data.x_valid) + len(data.x_valid_poisoned)
    input_bytes = n * _sample_bytes(data.x_valid.shape)
    model = classifier.model
    cut_bytes = {p.layer_name: n * _sample_bytes(model.get_layer(p.cut_name).output.shape) for p in cached.prune_points}
    assert all(size > input_bytes for size in cut_bytes.values())  # else the test would not reach the new path
    defence = FinePruning(
        classifier, strategy="attack_aware", accuracy_drops=(2, 10), max_cache_bytes=input_bytes, verbose=False
    )
    with caplog.at_level("INFO", logger="art_pruning_defense.strategies.attack_aware"):
        defence.fit(data.x_valid, data.y_valid, poisoned_x=data.x_valid_poisoned, poisoned_target=data.target)
    assert sum("recomputing the head" in r.getMessage() for r in caplog.records) == len(cut_bytes)
    for layer in cut_bytes:
        np.testing.assert_array_equal(defence.ranking_[layer], cached.ranking_[layer])
        np.testing.assert_allclose(defence.mean_activation_[layer], cached.mean_activation_[layer], rtol=1e-6)
    assert defence.sweeps_ == cached.sweeps_
    for drop in (2, 10):
        for layer, channels in cached.pruned_channels(drop).items():
            np.testing.assert_array_equal(defence.pruned_channels(drop)[layer], channels)


def test_attack_aware_refuses_a_cache_bound_below_the_inputs(digits_badnet):
    data, classifier = digits_badnet
    n = len(data.x_valid) + len(data.x_valid_poisoned)
    defence = FinePruning(
        classifier, strategy="attack_aware", max_cache_bytes=n * _sample_bytes(data.x_valid.shape) - 1, verbose=False
    )
    with pytest.raises(ValueError, match=r"keeps either the activations at .* or the inputs .* both exceed"):
        defence.fit(data.x_valid, data.y_valid, poisoned_x=data.x_valid_poisoned, poisoned_target=data.target)


def test_activation_caches_are_shared_with_tensorflow_not_copied(attack_aware):
    """The attack-aware caches are aligned, so TensorFlow reads them in place (one copy of each, not two)."""
    from art_pruning_defense._aligned import is_shareable
    from art_pruning_defense.keras import BatchPredictor, shared_tensor, split

    data, classifier, defence = attack_aware
    point = defence.prune_points[0]
    head = split(classifier.model, point.cut_name)[0]
    from art_pruning_defense.strategies import FitRun

    run = FitRun(classifier.model, classifier.model, defence.prune_points, 10, defence._prepared, 64, 2**30, 0, False)
    cache = run.activation_cache(BatchPredictor(head), data.x_valid, "x")
    assert is_shareable(cache)
    np.testing.assert_allclose(cache, head.predict(defence._prepared(data.x_valid), verbose=0), rtol=1e-5, atol=1e-6)
    tensor = shared_tensor(cache)
    cache[0].flat[0] += 1.0  # the same memory: the tensor sees the change
    assert float(np.asarray(tensor)[0].flat[0]) == float(cache[0].flat[0])
