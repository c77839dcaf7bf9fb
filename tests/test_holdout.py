"""The calibration split: clean data held out of fine-pruning to calibrate the GoodNet, which B' never saw."""

from __future__ import annotations

import numpy as np
import pytest

from art_pruning_defense import FinePruning, GoodNetClassifier, _metrics
from art_pruning_defense import fine_pruning as fine_pruning_module
from art_pruning_defense._holdout import check_holdout, holdout_split, split_sizes


def test_split_is_disjoint_complete_seeded_and_sized():
    fit, held = holdout_split(1000, 0.3, seed=4)
    assert len(held) == 300 and len(fit) == 700 and split_sizes(1000, 0.3) == (700, 300)
    assert np.intersect1d(fit, held).size == 0
    np.testing.assert_array_equal(np.union1d(fit, held), np.arange(1000))
    assert np.all(np.diff(fit) > 0) and np.all(np.diff(held) > 0)  # increasing, readable from HDF5
    again = holdout_split(1000, 0.3, seed=4)
    np.testing.assert_array_equal(again[1], held)
    assert not np.array_equal(holdout_split(1000, 0.3, seed=5)[1], held)
    assert held.min() < 100 and held.max() > 900  # drawn over the whole data, not a block at one end


@pytest.mark.parametrize(
    "n, fraction, rate, message",
    [
        (
            300,
            0.2,
            0.01,
            r"holds 300 samples, of which calibration_fraction=0.2 holds out 60 .* at least 99 .*"
            r"give at least 495 samples, or a calibration_fraction of at least 0.33",
        ),
        (60, 0.25, 0.05, r"holds out 15 .* at least 19 .* give at least 76 samples"),
        (1, 0.4, None, "holds out 0 to calibrate, but calibrating needs at least one"),
        (2, 0.9, None, "holds out all of them: none is left to fit"),
    ],
)
def test_a_split_leaving_too_few_samples_is_refused_naming_the_count_needed(n, fraction, rate, message):
    with pytest.raises(ValueError, match=message) as info:
        check_holdout(n, fraction, rate, "x")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "value, error, message",
    [
        (0.0, ValueError, r"calibration_fraction must be in \(0, 1\)"),
        (1.0, ValueError, r"calibration_fraction must be in \(0, 1\)"),
        (-0.2, ValueError, r"must be in \(0, 1\)"),
        (float("nan"), ValueError, r"must be in \(0, 1\)"),
        ("0.3", TypeError, "calibration_fraction must be a number"),
        (True, TypeError, "calibration_fraction must be a number"),
    ],
)
def test_calibration_fraction_outside_the_open_interval_is_refused(tiny_classifier, value, error, message):
    with pytest.raises(error, match=message):
        FinePruning(tiny_classifier, calibration_fraction=value)


def _spy_on_fine_tuning(monkeypatch) -> list[np.ndarray]:
    """Record the clean inputs that fine-tuning is given."""
    seen: list[np.ndarray] = []
    original = fine_pruning_module.fine_tune_pruned

    def spy(run, fine_prune, clean, *args, **kwargs):
        seen.append(np.concatenate([batch.x for batch in clean.batches()]))
        return original(run, fine_prune, clean, *args, **kwargs)

    monkeypatch.setattr(fine_pruning_module, "fine_tune_pruned", spy)
    return seen


def test_b_prime_never_trains_on_the_held_out_part_which_calibrates_the_goodnet(
    tiny_classifier, tiny_data, monkeypatch
):
    x, y = tiny_data
    seen = _spy_on_fine_tuning(monkeypatch)
    defence = FinePruning(
        tiny_classifier, fine_tune_epochs=1, calibration_fraction=0.25, seed=3, prune_until=50, verbose=False
    )
    defence.fit(x, y)
    fit, held = holdout_split(len(x), 0.25, seed=3)
    np.testing.assert_array_equal(defence.calibration_indices_, held)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], x[fit])  # exactly the rest, none of the held-out images

    goodnet = defence(false_positive_rate=0.1)
    expected = _metrics.calibrate_threshold(goodnet.score(x[held]), 0.1)
    assert goodnet.threshold_ == expected and goodnet.false_positive_rate_ == 0.1
    assert goodnet.metadata["calibration_samples"] == 15
    assert defence().threshold_ is None  # without a rate: the label rule


def test_false_positive_rate_needs_a_held_out_part_large_enough(tiny_classifier, tiny_data):
    x, y = tiny_data
    plain = FinePruning(tiny_classifier, accuracy_drops=(10,), verbose=False)
    plain.fit(x, y)
    with pytest.raises(ValueError, match="fit held nothing out .set calibration_fraction, e.g. 0.3"):
        plain(false_positive_rate=0.05)
    held = FinePruning(tiny_classifier, accuracy_drops=(10,), calibration_fraction=0.25, verbose=False)
    held.fit(x, y)
    with pytest.raises(ValueError, match="holds out 15 .* at least 19 .* give at least 76 samples"):
        held(false_positive_rate=0.05)
    with pytest.raises(ValueError, match=r"false_positive_rate must be in \(0, 1\)"):
        held(false_positive_rate=1.5)
    assert held(false_positive_rate=0.1).threshold_ is not None


def test_a_stream_cannot_be_split(tiny_classifier, tiny_data):
    x, y = tiny_data
    defence = FinePruning(tiny_classifier, calibration_fraction=0.3, verbose=False)
    with pytest.raises(ValueError, match="needs x and y as arrays, not a stream"):
        defence.fit([(x[:30], y[:30]), (x[30:], y[30:])])
    with pytest.raises(ValueError, match="calibration_fraction=0.3 holds out part of the clean data, but fit"):
        FinePruning(tiny_classifier, strategy="lipschitz", calibration_fraction=0.3, verbose=False).fit()


def test_nan_or_misshapen_calibration_data_is_refused_before_any_pass(tiny_model, tiny_data):
    x, _ = tiny_data
    goodnet = GoodNetClassifier(tiny_model, tiny_model)
    broken = x.copy()
    broken[7, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="x_clean holds NaN or infinite values") as info:
        goodnet.calibrate(broken, 0.1)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="x_clean has shape"):
        goodnet.calibrate(x[:, :8], 0.1)
    assert goodnet.threshold_ is None
