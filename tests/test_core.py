"""The framework-free core: ranking, incremental sweep, stopping rule, metrics."""

from __future__ import annotations

import numpy as np
import pytest

from art_pruning_defense import _sweep


def test_ranking_is_ascending_with_ties_in_index_order():
    means = np.array([0.5, 0.0, 0.2, 0.0, 0.2, 1.0])
    assert _sweep.rank_channels(means).tolist() == [1, 3, 2, 4, 0, 5]


def test_channel_means_stream_over_batches():
    rng = np.random.default_rng(0)
    acts = rng.random((10, 3, 2, 4))
    stats = _sweep.ChannelMeans()
    stats.update(acts[:3])
    stats.update(acts[3:])
    np.testing.assert_allclose(stats.mean, acts.mean(axis=(0, 1, 2)))


@pytest.mark.parametrize(
    "drops, expected",
    [
        ((2,), {2.0: 2}),  # 90 -> 88 is exactly 2 points
        ((1, 4), {1.0: 2, 4.0: 4}),
        ((50,), {50.0: 5}),  # never reached: the whole layer
    ],
)
def test_stopping_rule(drops, expected):
    accuracy = [90.0, 89.5, 88.0, 88.5, 85.0, 80.0]
    assert _sweep.select_steps(accuracy, drops) == expected


def test_stopping_rule_takes_the_first_step_even_if_accuracy_recovers():
    assert _sweep.select_steps([90.0, 87.0, 90.0, 89.0], (2,)) == {2.0: 1}


def _brute_force(acts, refs, order, weights):
    """Evaluate every step from scratch: mask, then a linear tail and argmax."""
    hits, changed = [], []
    mask = np.ones(acts.shape[-1])
    base = np.argmax((acts * mask).reshape(len(acts), -1) @ weights, axis=1)
    for k in range(len(order) + 1):
        mask = np.ones(acts.shape[-1])
        mask[order[:k]] = 0
        labels = np.argmax((acts * mask).reshape(len(acts), -1) @ weights, axis=1)
        hits.append(np.count_nonzero(labels == refs))
        changed.append(np.count_nonzero(labels != base))
    return hits, changed


def test_incremental_sweep_matches_brute_force_and_skips_unchanged_rows():
    rng = np.random.default_rng(3)
    acts = rng.random((40, 2, 2, 5)) * (rng.random((40, 2, 2, 5)) < 0.3)  # sparse, like ReLU maps
    acts[:, :, :, 1] = 0  # a dead channel
    weights = rng.normal(size=(20, 3))
    refs = rng.integers(0, 3, 40)
    order = np.array([1, 4, 0, 3, 2])
    rows_seen = []

    def predict_rows(rows, mask):
        a = acts if rows is None else acts[rows]
        rows_seen.append(len(a))
        return np.argmax((a * mask).reshape(len(a), -1) @ weights, axis=1)

    counts = _sweep.sweep_chunk(_sweep.active_channels(acts), refs, order, predict_rows)
    hits, changed = _brute_force(acts, refs, order, weights)
    assert counts.hits.tolist() == hits
    assert counts.changed.tolist() == changed
    assert counts.n_samples == 40
    # The dead channel costs no evaluation, and no step re-evaluates every row.
    assert rows_seen[0] == 40
    assert sum(rows_seen[1:]) < 40 * len(order)
    assert len(rows_seen) == 1 + sum(acts[..., c].any() for c in order)


def test_records_count_channels_and_follow_the_order():
    order = np.array([2, 0, 1])
    clean = _sweep.SweepCounts(np.array([9, 9, 8, 5]), np.array([0, 0, 1, 4]), 10)
    poisoned = _sweep.SweepCounts(np.array([4, 4, 1, 0]), np.array([0, 0, 3, 4]), 4)
    records = _sweep.build_records(order, 3, clean, poisoned)
    assert [r.channels_pruned for r in records] == [0, 1, 2, 3]
    assert [r.channel for r in records] == [None, 2, 0, 1]
    assert [r.fraction_pruned for r in records] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert [r.clean_accuracy for r in records] == pytest.approx([90, 90, 80, 50])
    assert [r.attack_success_rate for r in records] == pytest.approx([100, 100, 25, 0])
    assert [r.clean_flagged for r in records] == pytest.approx([0, 0, 10, 40])
    assert records[2].poisoned_flagged == pytest.approx(75)
    no_poison = _sweep.build_records(order, 3, clean, None)
    assert no_poison[1].attack_success_rate is None and no_poison[1].poisoned_flagged is None


def test_goodnet_scores_and_labels():
    bad = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]])
    pruned = np.array([0, 1, 1])
    scores = _sweep.goodnet_scores(bad, pruned)
    assert scores.shape == (3, 4)
    np.testing.assert_array_equal(scores[0], [0.7, 0.2, 0.1, 0.0])
    np.testing.assert_array_equal(scores[1], [0, 0, 0, 1])
    np.testing.assert_array_equal(scores[2], [0.3, 0.6, 0.1, 0.0])
    assert _sweep.goodnet_labels(np.argmax(bad, axis=1), pruned, 3).tolist() == [0, 3, 1]


def test_compare_labels():
    rows = _sweep.compare_labels(
        n_classes=3,
        labels=np.array([0, 1, 2, 2]),
        bad=np.array([0, 1, 2, 1]),
        pruned=np.array([0, 1, 1, 1]),
        target=np.array([0, 0]),
        poisoned_bad=np.array([0, 0]),
        poisoned_pruned=np.array([0, 2]),
    )
    assert rows["B"]["clean_accuracy"] == 75.0 and rows["B"]["attack_success_rate"] == 100.0
    assert rows["B'"]["clean_accuracy"] == 50.0 and rows["B'"]["attack_success_rate"] == 50.0
    assert rows["GoodNet"] == {
        "clean_accuracy": 50.0,
        "attack_success_rate": 50.0,
        "clean_flagged": 25.0,
        "poisoned_flagged": 50.0,
    }
    assert rows["B"]["poisoned_flagged"] is None


def test_attack_aware_pass_matches_a_brute_force_greedy():
    rng = np.random.default_rng(5)
    n_channels = 6
    weights = rng.normal(size=(4 * n_channels, 3))
    clean = rng.random((30, 2, 2, n_channels)) * (rng.random((30, 2, 2, n_channels)) < 0.5)
    poisoned = rng.random((20, 2, 2, n_channels)) * (rng.random((20, 2, 2, n_channels)) < 0.5)
    poisoned[..., 2] += 2.0  # a "trigger" channel
    weights[2::n_channels, 0] += 3.0  # that drives class 0
    y = rng.integers(0, 3, 30)
    target = np.zeros(20, dtype=np.int64)

    def tail(a):
        return np.argmax(a.reshape(len(a), -1) @ weights, axis=1)

    order = np.arange(n_channels)
    min_hits = int(np.count_nonzero(tail(clean) == y)) - 3

    def rows_of(acts):
        return lambda rows, mask: tail((acts if rows is None else acts[rows]) * mask)

    state = _sweep.GreedyState.start(tail(clean), y, tail(poisoned), target)
    mask = _sweep.attack_aware_pass(
        state,
        "L",
        _sweep.active_channels(clean),
        _sweep.active_channels(poisoned),
        order,
        rows_of(clean),
        rows_of(poisoned),
        min_hits,
    )

    expected_mask = np.ones(n_channels)
    accepted = []
    for c in order:
        trial = expected_mask.copy()
        trial[c] = 0
        asr_now = np.count_nonzero(tail(poisoned * expected_mask) == 0)
        asr_new = np.count_nonzero(tail(poisoned * trial) == 0)
        clean_now = np.count_nonzero(tail(clean * expected_mask) == y)
        clean_new = np.count_nonzero(tail(clean * trial) == y)
        if (asr_new < asr_now and clean_new >= min_hits) or (
            asr_new == asr_now and clean_new >= max(clean_now, min_hits)
        ):
            expected_mask = trial
            accepted.append(("L", int(c)))
    assert accepted, "the test needs at least one accepted channel"
    np.testing.assert_array_equal(mask, expected_mask)
    assert state.accepted == accepted
    assert state.poisoned.hits[-1] == np.count_nonzero(tail(poisoned * expected_mask) == 0)
    assert state.clean.hits[-1] == np.count_nonzero(tail(clean * expected_mask) == y)
    assert np.all(np.diff(state.poisoned.hits) <= 0)
    assert np.all(state.clean.hits >= min_hits)


def test_a_stepper_sees_each_step_once_in_order_with_every_sample_it_changes():
    """The Stepper contract: begin once, then prune once per step that changes some sample's input, in the sweep's
    order, with every sample active on the channel but those left with no active channel; counts as without it."""
    rng = np.random.default_rng(7)
    acts = rng.random((50, 2, 2, 6)) * (rng.random((50, 2, 2, 6)) < 0.3)
    acts[:, :, :, 4] = 0  # a dead channel: its step has no call
    weights = rng.normal(size=(24, 3))
    bias = rng.normal(size=3)
    refs = rng.integers(0, 3, 50)
    order = np.array([4, 2, 5, 0, 3, 1])
    active = _sweep.active_channels(acts)

    def predict_rows(rows, mask):
        a = acts if rows is None else acts[rows]
        return np.argmax((a * mask).reshape(len(a), -1) @ weights + bias, axis=1)

    class Recorder:
        def __init__(self):
            self.calls = []

        def begin(self):
            self.calls.append(("begin", None, None))
            return predict_rows(None, np.ones(6))

        def prune(self, rows, channel, mask):
            self.calls.append(("prune", channel, rows.copy()))
            assert mask[channel] == 0
            return predict_rows(rows, mask)

    recorder = Recorder()
    with_stepper = _sweep.sweep_chunk(active, refs, order, predict_rows, stepper=recorder)
    without = _sweep.sweep_chunk(active, refs, order, predict_rows)
    assert with_stepper.hits.tolist() == without.hits.tolist()
    assert with_stepper.changed.tolist() == without.changed.tolist()
    assert recorder.calls[0][0] == "begin" and [c for c, _, _ in recorder.calls].count("begin") == 1
    remaining = active.sum(axis=1)
    expected = []
    for channel in order:
        rows = np.flatnonzero(active[:, channel])
        remaining[rows] -= 1
        if np.any(remaining[rows] > 0):
            expected.append((channel, rows[remaining[rows] > 0].tolist()))
    assert 4 not in [channel for channel, _ in expected]  # the dead channel's step makes no call
    assert [(channel, rows.tolist()) for _, channel, rows in recorder.calls[1:]] == expected


def test_samples_left_without_active_channels_share_one_evaluation():
    rng = np.random.default_rng(5)
    acts = rng.random((30, 2, 2, 4)) * (rng.random((30, 2, 2, 4)) < 0.4)
    bias = rng.normal(size=3)  # the all-zero input has a label of its own
    weights = rng.normal(size=(16, 3))
    refs = rng.integers(0, 3, 30)
    order = np.array([2, 0, 3, 1])
    calls = []

    def predict_rows(rows, mask):
        a = acts if rows is None else acts[rows]
        calls.append((len(a), float(mask.sum())))
        return np.argmax((a * mask).reshape(len(a), -1) @ weights + bias, axis=1)

    counts = _sweep.sweep_chunk(_sweep.active_channels(acts), refs, order, predict_rows)
    labels = [np.argmax((acts * m).reshape(30, -1) @ weights + bias, axis=1) for m in _masks(order, 4)]
    assert counts.hits.tolist() == [int(np.count_nonzero(lab == refs)) for lab in labels]
    assert counts.changed.tolist() == [int(np.count_nonzero(lab != labels[0])) for lab in labels]
    assert [n for n, kept in calls if kept == 0] == [1]  # the blank input, once


def _masks(order, n_channels):
    mask = np.ones(n_channels)
    yield mask.copy()
    for channel in order:
        mask[channel] = 0
        yield mask.copy()


def test_active_channels_in_chunks_equal_the_whole_array_at_once(monkeypatch):
    """active_channels compares a few samples with zero at a time (memory); the flags are those of one comparison."""
    rng = np.random.default_rng(0)
    for shape in [(37, 5, 4, 6), (300, 9, 9, 8), (3, 7), (5, 1, 1, 3)]:
        acts = (np.maximum(rng.normal(size=shape), 0) * (rng.random(shape) < 0.02)).astype(np.float32)
        expected = np.any(acts.reshape(shape[0], -1, shape[-1]) != 0, axis=1)
        assert shape[0] < 300 or (expected.any() and not expected.all())  # a mix of active and silent maps
        for values in (1, 100, _sweep.ACTIVE_CHUNK_VALUES):
            monkeypatch.setattr(_sweep, "ACTIVE_CHUNK_VALUES", values)
            got = _sweep.active_channels(acts)
            assert got.dtype == bool and np.array_equal(got, expected), (shape, values)
