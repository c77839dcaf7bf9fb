"""Streaming inputs: a tf.data.Dataset or any iterable of batches gives what the same data as arrays gives."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from art.estimators.classification import KerasClassifier

from art_pruning_defense import FinePruning, FinePruningDetector
from conftest import conv_block_model

N = 120
#: conv_block_model's activations at the cut (pool): 3 × 3 × 6 float32 = 216 bytes per sample, so 2 KiB holds 9
#: samples and the 120 samples need more than 12 times the cache.
TINY_CACHE = 2048


class Passes:
    """A re-iterable list of batches that counts how often it is read."""

    def __init__(self, batches: list) -> None:
        self.batches = batches
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        return iter(self.batches)


@pytest.fixture
def setup():
    model = conv_block_model()
    classifier = KerasClassifier(model, clip_values=(0.0, 1.0))
    rng = np.random.default_rng(0)
    x = rng.random((N, 10, 10, 3), dtype=np.float32)
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    y[::3] = (y[::3] + 1) % 4  # some errors, so that accuracy can move both ways
    return classifier, x, y, x[:30] * 0.5


def _counts(sweep, n, key):
    return [round(getattr(r, key) * n / 100) for r in sweep]


def _assert_same_sweep(streamed, reference, n_clean, n_poisoned):
    np.testing.assert_array_equal(streamed.ranking_, reference.ranking_)
    np.testing.assert_allclose(streamed.mean_activation_, reference.mean_activation_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        [r.clean_accuracy for r in streamed.sweep_], [r.clean_accuracy for r in reference.sweep_], atol=1e-6
    )
    assert _counts(streamed.sweep_, n_clean, "clean_accuracy") == _counts(reference.sweep_, n_clean, "clean_accuracy")
    assert _counts(streamed.sweep_, n_clean, "clean_flagged") == _counts(reference.sweep_, n_clean, "clean_flagged")
    if n_poisoned:
        asr = "attack_success_rate"
        assert _counts(streamed.sweep_, n_poisoned, asr) == _counts(reference.sweep_, n_poisoned, asr)
    assert streamed.steps_ == reference.steps_
    for drop in reference.accuracy_drops:
        np.testing.assert_array_equal(streamed.pruned_channels(drop), reference.pruned_channels(drop))


@pytest.mark.parametrize("kind", ["dataset", "list", "list-one-hot"])
def test_stream_larger_than_the_cache_gives_the_in_memory_sweep(setup, kind):
    classifier, x, y, px = setup
    reference = FinePruning(classifier, accuracy_drops=(2, 10), batch_size=16, verbose=False)
    reference.fit(x, y, poisoned_x=px, poisoned_target=2)
    assert N * 216 > 10 * TINY_CACHE

    streamed = FinePruning(classifier, accuracy_drops=(2, 10), batch_size=16, max_cache_bytes=TINY_CACHE, verbose=False)
    if kind == "dataset":
        clean = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)
        poisoned = tf.data.Dataset.from_tensor_slices(px).batch(8)
        streamed.fit(clean, poisoned_x=poisoned, poisoned_target=2)
    else:
        labels = np.eye(4)[y] if kind == "list-one-hot" else y
        clean = Passes([(x[i : i + 11], labels[i : i + 11]) for i in range(0, N, 11)])
        # Poisoned batches of (x, target) pairs, the targets one per sample.
        poisoned = [(px[i : i + 13], np.full(len(px[i : i + 13]), 2)) for i in range(0, len(px), 13)]
        streamed.fit(clean, poisoned_x=poisoned)
        assert clean.passes == 2  # the activations did not fit: the head ran again, batch by batch
    _assert_same_sweep(streamed, reference, N, len(px))


def test_stream_that_fits_the_cache_is_read_once(setup):
    classifier, x, y, _ = setup
    reference = FinePruning(classifier, batch_size=16, verbose=False)
    reference.fit(x, y)
    clean = Passes([(x[i : i + 32], y[i : i + 32]) for i in range(0, N, 32)])
    streamed = FinePruning(classifier, batch_size=16, verbose=False)
    streamed.fit(clean)
    assert clean.passes == 1
    _assert_same_sweep(streamed, reference, N, 0)
    # A one-shot generator works too where one pass is enough.
    generated = FinePruning(classifier, batch_size=16, verbose=False)
    generated.fit((x[i : i + 32], y[i : i + 32]) for i in range(0, N, 32))
    _assert_same_sweep(generated, reference, N, 0)


def test_goodnet_predict_and_score_on_a_dataset_equal_the_array(setup):
    classifier, x, y, px = setup
    defence = FinePruning(classifier, accuracy_drops=(10,), batch_size=16, verbose=False)
    defence.fit(x, y)
    goodnet = defence(classifier, 10)
    inputs = np.concatenate([x, px])
    only_x = tf.data.Dataset.from_tensor_slices(inputs).batch(17)
    pairs = tf.data.Dataset.from_tensor_slices((inputs, np.zeros(len(inputs), dtype=np.int64))).batch(9)
    expected_scores = goodnet.score(inputs)
    expected = goodnet.predict(inputs)
    for stream in (only_x, pairs):
        np.testing.assert_allclose(goodnet.predict(stream), expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(goodnet.score(stream), expected_scores, rtol=1e-6, atol=1e-7)
        for got, want in zip(goodnet.predict_labels(stream), goodnet.predict_labels(inputs)):
            np.testing.assert_array_equal(got, want)
    threshold = goodnet.calibrate(inputs, false_positive_rate=0.1)
    assert goodnet.calibrate(only_x, false_positive_rate=0.1) == pytest.approx(threshold, abs=1e-6)
    np.testing.assert_array_equal(
        goodnet.predict_classes((inputs[i : i + 20] for i in range(0, len(inputs), 20))),
        goodnet.predict_classes(inputs),
    )


def test_detector_with_streamed_validation_data_equals_arrays(setup):
    classifier, x, y, px = setup
    x_train = np.concatenate([x[:60], px])
    y_train = np.concatenate([y[:60], np.full(len(px), 2)])
    kwargs = {"fine_tune_epochs": 0, "accuracy_drop": 10.0, "batch_size": 16, "verbose": False}
    report, is_clean = FinePruningDetector(classifier, x_train, y_train, x[60:], y[60:], **kwargs).detect_poison()
    dataset = tf.data.Dataset.from_tensor_slices((x[60:], y[60:])).batch(8)
    streamed = FinePruningDetector(classifier, x_train, y_train, dataset, None, **kwargs)
    streamed_report, streamed_is_clean = streamed.detect_poison()
    assert streamed_is_clean == is_clean
    assert streamed_report["pruned_channels"] == report["pruned_channels"]
    np.testing.assert_allclose(streamed_report["scores"], report["scores"], rtol=1e-6, atol=1e-7)


def test_fine_tuning_reads_a_dataset_once_per_epoch(setup):
    classifier, x, y, _ = setup
    before = [w.copy() for w in classifier.model.get_weights()]
    clean = Passes([(x[i : i + 32], y[i : i + 32]) for i in range(0, N, 32)])
    defence = FinePruning(classifier, batch_size=16, fine_tune_epochs=2, fine_tune_batch_size=10, verbose=False)
    defence.fit(clean)
    assert clean.passes == 1 + 2 + 1  # sweep (cached), two epochs, the summary
    assert defence.fine_tune_["epochs"] == 2 and 0.0 <= defence.fine_tune_["clean_accuracy"] <= 100.0
    assert all(np.array_equal(a, b) for a, b in zip(before, classifier.model.get_weights()))  # B untouched


def test_one_shot_generator_with_fine_tuning_is_refused_before_reading(setup):
    classifier, x, y, _ = setup
    read = []

    def batches():
        for i in range(0, N, 32):
            read.append(i)
            yield x[i : i + 32], y[i : i + 32]

    defence = FinePruning(classifier, fine_tune_epochs=2, verbose=False)
    with pytest.raises(ValueError, match="one-shot iterator.*fine_tune_epochs=2.*re-iterable"):
        defence.fit(batches())
    assert read == [] and not defence.is_fitted
    # Without fine-tuning, but with activations beyond the cache, a second pass is needed as well.
    small = FinePruning(classifier, max_cache_bytes=TINY_CACHE, verbose=False)
    with pytest.raises(ValueError, match="max_cache_bytes.*one-shot iterator.*re-iterable"):
        small.fit(batches())
    assert not small.is_fitted
    with pytest.raises(ValueError, match="one-shot iterator"):
        FinePruningDetector(classifier, x, y, batches(), None, verbose=False)


def _batches(x, y, size=10):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _bad_streams(x, y):
    """(stream of (x, y) batches, error type, message pattern naming the batch)."""
    ok = _batches(x[:40], y[:40])
    mixed = list(ok)
    mixed[2] = (x[20:30, :9], y[20:30])
    out_of_range = list(ok)
    out_of_range[1] = (x[10:20], np.full(10, 4))
    wrong_shape = list(ok)
    wrong_shape[3] = (x[30:40], np.zeros((10, 2)))
    mismatch = list(ok)
    mismatch[3] = (x[30:40], y[30:39])
    text = list(ok)
    text[1] = (x[10:20].astype(str), y[10:20])
    nan = list(ok)
    nan[2] = (np.where(np.arange(10)[:, None, None, None] == 4, np.nan, x[20:30]), y[20:30])
    return [
        pytest.param(tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(4), ValueError, "empty", id="empty"),
        pytest.param(iter([]), ValueError, "empty", id="empty-generator"),
        pytest.param(mixed, ValueError, r"batch 2 .*shape \(9, 10, 3\).*batch 0 had \(10, 10, 3\)", id="mixed"),
        pytest.param(out_of_range, ValueError, r"batch 1 .*outside \[0, 4\)", id="label-range"),
        pytest.param(wrong_shape, ValueError, "batch 3 .*one-hot with 2 columns", id="label-shape"),
        pytest.param(mismatch, ValueError, "batch 3 .*10 samples but y has 9 labels", id="length"),
        pytest.param(text, TypeError, "batch 1 .*integers or floats", id="dtype"),
        pytest.param(nan, ValueError, "batch 2 .*NaN", id="nan"),
        pytest.param([x[:10], x[10:20]], TypeError, r"batch 0: a batch must be an \(x, y\) pair", id="no-labels"),
    ]


@pytest.fixture(scope="module")
def bad_data():
    rng = np.random.default_rng(1)
    return rng.random((40, 10, 10, 3), dtype=np.float32), rng.integers(0, 4, 40)


@pytest.mark.parametrize("index", range(9))
def test_bad_streams_are_refused_naming_the_batch(tiny_classifier, bad_data, index):
    stream, error, pattern = _bad_streams(*bad_data)[index].values
    defence = FinePruning(tiny_classifier, verbose=False)
    with pytest.raises(error, match=pattern):
        defence.fit(stream)
    assert not defence.is_fitted


def test_bad_streams_in_goodnet_and_fit_arguments(tiny_classifier, bad_data):
    x, y = bad_data
    defence = FinePruning(tiny_classifier, verbose=False)
    with pytest.raises(TypeError, match="y must be None"):
        defence.fit(_batches(x, y), y)
    with pytest.raises(TypeError, match="poisoned_target as one int"):
        defence.fit(_batches(x, y), poisoned_x=[x[:5]], poisoned_target=np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="attack_aware.*arrays"):
        FinePruning(tiny_classifier, strategy="attack_aware", verbose=False).fit(
            _batches(x, y), poisoned_x=[x[:5]], poisoned_target=1
        )
    defence.fit(x, y)
    goodnet = defence(tiny_classifier, 10.0)
    with pytest.raises(ValueError, match=r"x, batch 1 .*shape"):
        goodnet.predict([x[:5], x[5:10, :, :9]])
    with pytest.raises(TypeError, match="x, batch 2 .*integers or floats"):
        goodnet.score([x[:5], x[5:10], x[10:15].astype(bool)])
    with pytest.raises(ValueError, match="x_clean is empty"):
        goodnet.calibrate(tf.data.Dataset.from_tensor_slices(x[:0]).batch(3))
    assert goodnet.threshold_ is None


def test_rebatch_gives_the_samples_in_order_and_keeps_none_of_a_batch_it_gave():
    import weakref

    from art_pruning_defense._stream import rebatch

    made = []

    def make(i: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.full((3, 2), i, dtype=np.float32)
        made.append(weakref.ref(x))
        return x, np.full(3, i)

    batches = rebatch((make(i) for i in range(4)), 5)
    x, y = next(batches)
    assert x.shape == (5, 2) and y.tolist() == [0, 0, 0, 1, 1]
    # The first input batch went entirely into the output: nothing but the output holds its samples.
    assert made[0]() is None
    rest = list(batches)
    assert [len(b) for b, _ in rest] == [5, 2]
    assert np.concatenate([y] + [r for _, r in rest]).tolist() == np.repeat(np.arange(4), 3).tolist()


def test_regroup_hands_on_views_of_the_batches_and_keeps_none_of_a_group_it_gave():
    """The sweep's chunks: groups of the batches' own pieces (no copy); a group the caller empties is freed."""
    import weakref

    from art_pruning_defense._stream import regroup

    made = []

    def make(i: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.full((3, 2), i, dtype=np.float32)
        made.append((x, weakref.ref(x)))
        return x, np.full(3, i)

    groups = regroup((make(i) for i in range(4)), 5)
    xs, ys = next(groups)
    assert [len(x) for x in xs] == [3, 2] and np.concatenate(ys).tolist() == [0, 0, 0, 1, 1]
    assert all(np.shares_memory(x, source) for x, (source, _) in zip(xs, made))  # views, not copies
    ref = made[0][1]
    made.clear()
    xs.clear()
    assert ref() is None  # the first batch went entirely into the group: freed with it
    rest = list(groups)
    assert [sum(len(x) for x in xs) for xs, _ in rest] == [5, 2]
    assert np.concatenate(ys + [y for _, group in rest for y in group]).tolist() == np.repeat(np.arange(4), 3).tolist()
