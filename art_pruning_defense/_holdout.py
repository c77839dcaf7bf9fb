"""
The calibration split: the defender's clean data divided once, seeded, into a part that fits the defence (the sweep
and the fine-tuning of B') and a held-out part that only calibrates a detector's threshold, so that the calibration
scores are exchangeable with those of clean inputs the defence never saw (the premise of the conformal threshold,
:func:`art_pruning_defense._metrics.calibrate_threshold`). Numpy only, so that ``art-prune`` checks sizes before
TensorFlow is loaded.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from art_pruning_defense._metrics import min_calibration_samples


def check_calibration_fraction(value: object, what: str = "calibration_fraction") -> float:
    """
    :param value: A share of the clean data to hold out, in (0, 1).
    :param what: Its name, for the message.
    :return: It as a float.
    :raises TypeError: If it is not a real number.
    :raises ValueError: If it is NaN or not strictly between 0 and 1.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number in (0, 1), got {type(value).__name__} {value!r}.")
    fraction = float(value)
    if not (math.isfinite(fraction) and 0.0 < fraction < 1.0):
        raise ValueError(
            f"{what} must be in (0, 1) (the share of the clean data held out to calibrate), got {fraction:g}."
        )
    return fraction


def split_sizes(n: int, fraction: float) -> tuple[int, int]:
    """
    :param n: Number of clean samples.
    :param fraction: Share held out, in (0, 1).
    :return: ``(n_fit, n_calibration)``: the calibration part is ``fraction * n`` rounded to the nearest integer.
    """
    n_calibration = int(math.floor(fraction * n + 0.5))
    return n - n_calibration, n_calibration


def check_holdout(n: int, fraction: float, false_positive_rate: float | None, what: str = "x") -> None:
    """
    Refuse a split that leaves either part empty, or too few held-out samples for the rate.

    :param n: Number of clean samples.
    :param fraction: Share held out, in (0, 1).
    :param false_positive_rate: The rate the held-out part will calibrate (``None``: not known yet).
    :param what: The name of the data, for the message.
    :raises ValueError: Naming the number of samples needed.
    """
    n_fit, n_calibration = split_sizes(n, fraction)
    needed = 1 if false_positive_rate is None else min_calibration_samples(false_positive_rate)
    if n_calibration < needed:
        purpose = (
            "at least one"
            if false_positive_rate is None
            else f"at least {needed} (n >= 1/{false_positive_rate:g} - 1) at a false-positive rate of "
            f"{false_positive_rate:g}"
        )
        raise ValueError(
            f"{what} holds {n} samples, of which calibration_fraction={fraction:g} holds out {n_calibration} to "
            f"calibrate, but calibrating needs {purpose}: give at least {math.ceil(needed / fraction)} samples, or "
            f"a calibration_fraction of at least {min(needed / max(n, 1), 1.0):.3g}."
        )
    if n_fit < 1:
        raise ValueError(
            f"{what} holds {n} samples and calibration_fraction={fraction:g} holds out all of them: none is left "
            "to fit the defence; lower calibration_fraction."
        )


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """
    :param n: Number of clean samples.
    :param fraction: Share held out, in (0, 1).
    :param seed: Seed of the split (the same seed, size and fraction give the same split).
    :return: ``(fit indices, calibration indices)``: disjoint, together ``0 .. n − 1``, each increasing (so that
             HDF5 datasets can be read with them), the calibration part drawn uniformly at random.
    """
    _, n_calibration = split_sizes(n, fraction)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_calibration:]), np.sort(order[:n_calibration])
